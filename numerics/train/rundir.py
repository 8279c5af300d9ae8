"""The run directory: what a training run leaves behind, written so that nothing is half-written.

    <run>/config.yaml      the fully resolved recipe (re-runnable: ``numerics train config.yaml``)
    <run>/metrics.jsonl    one JSON object per line: {"step", "split", "name", "value"}; step
                           counts the optimizer steps done (1 after the first)
    <run>/summary.json     numerics.train.summary.RunSummary: status (completed | diverged |
                           failed), task, recipe, format, numerics, seed, metrics, steps, wall_s,
                           peak memory, ...; written once, at the end
    <run>/checkpoint.pt    the run's stateful parts (model, optimizer, loss scale, generators,
                           progress): what --resume needs; tensors and plain data only

config.yaml, summary.json and checkpoint.pt are written to a temporary file in the same folder
and renamed over the old one (``os.replace`` is atomic on POSIX), so a reader sees the old file
or the new one, never a torn one. metrics.jsonl is appended one whole line per ``write`` and
flushed; a reader skips a torn last line (``read_metrics``), and a resumed run rewrites the file
(atomically) without the lines past its checkpoint, so no record is counted twice.
Non-finite values are stored as the strings "nan", "inf", "-inf" (JSON has no such numbers).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import torch
import yaml

from numerics.files import atomic_write, atomic_write_json, atomic_write_text, jsonable
from numerics.train.summary import STATUSES, RunSummary, SummaryError

__all__ = ["STATUSES", "RunDir", "RunSummary"]

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.pt"


def atomic_torch_save(path: Path, obj: Any) -> None:
    def write(f: IO[bytes]) -> None:
        buf = io.BytesIO()
        torch.save(obj, buf)
        f.write(buf.getbuffer())

    atomic_write(path, write, binary=True)


def metric_value(v: Any) -> float:
    """A stored metric value back as a float ("inf" -> inf)."""
    return float(v)


class RunDir:
    """Paths and readers/writers of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_text(self.config, yaml.safe_dump(jsonable(config), sort_keys=False))

    def write_summary(self, summary: RunSummary) -> None:
        atomic_write_json(self.summary, summary.to_dict())

    def read_summary(self) -> RunSummary | None:
        """The run's summary; None while there is none, or when it is torn or malformed."""
        try:
            return RunSummary.from_dict(json.loads(self.summary.read_text()))
        except (FileNotFoundError, json.JSONDecodeError, SummaryError, TypeError):
            return None

    def read_metrics(self) -> list[dict[str, Any]]:
        return list(read_metrics(self.metrics))

    def truncate_metrics(self, last_step: int) -> None:
        """Keep only the records with step <= ``last_step`` (a resumed run's checkpoint)."""
        kept = [r for r in read_metrics(self.metrics) if r["step"] <= last_step]
        atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in kept))


def read_metrics(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a metrics.jsonl; a torn line (a crash mid-write) is skipped."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and {"step", "split", "name", "value"} <= rec.keys():
            yield rec


class MetricsWriter:
    """Appends records to metrics.jsonl, one ``write`` per line, flushed per call."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = path.open("a")

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        lines = "".join(
            json.dumps(
                {"step": step, "split": split, "name": k, "value": jsonable(float(v))},
                allow_nan=False,
            )
            + "\n"
            for k, v in values.items()
        )
        if lines:
            self._f.write(lines)
            self._f.flush()

    def close(self) -> None:
        self._f.close()


def last_values(records: Iterable[dict[str, Any]], split: str) -> dict[str, float]:
    """The latest value of every metric logged under ``split``."""
    out: dict[str, float] = {}
    for r in records:
        if r["split"] == split:
            out[r["name"]] = metric_value(r["value"])
    return out
