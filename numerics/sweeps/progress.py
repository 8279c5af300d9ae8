"""A sweep's progress: live while it runs, and read back from its folder from anywhere.

While ``numerics sweep`` runs, ``Progress`` shows one bar on a terminal (runs done of the
total, completed / diverged / failed, elapsed and the estimate left) and, off a terminal (a
log file, a CI job, a Slurm batch), one plain line per finished run with its primary metric
and its time, so a long sweep is never silent:

    [ 3/72] completed  image-resnet20-digits-fp32-s0-f43f8216  accuracy 0.9769  (41 s)

``sweep_status(folder)`` reads the same state from the run directories of a sweep running
elsewhere (Ray, Slurm, another shell): the sweep's index (``sweep.yaml``, written before any
run starts) lists the runs; each run's folder says whether it ended (its ``summary.json``),
started (a config, metrics or checkpoint but no summary: running, or interrupted) or has not
started. ``numerics sweep --status RESULTS_DIR`` prints it.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from numerics.errors import MissingInputError
from numerics.provenance import differences, provenance
from numerics.train.rundir import CHECKPOINT, CONFIG, METRICS, RunDir
from numerics.train.summary import RunSummary

INDEX = "sweep.yaml"  # a sweep's index in its results folder (numerics.sweeps.engine)


def metric_text(summary: RunSummary) -> str:
    """``accuracy 0.9769``: the run's primary metric (or its first), or the failure."""
    if summary.status == "failed":
        return (summary.error or "failed").splitlines()[0][:100]
    m = summary.primary_metric
    if m is None or m not in summary.metrics:
        m = next(iter(summary.metrics), None)
    if m is None:
        return summary.reason or ""
    return f"{m} {summary.metrics[m]:.4g}" + (f"  ({summary.reason})" if summary.reason else "")


class Progress:
    """The live view of one sweep: ``done`` after each run; ``close`` at the end."""

    def __init__(
        self,
        name: str,
        total: int,
        initial: int = 0,
        terminal: bool | None = None,
        out: TextIO | None = None,
    ) -> None:
        self.out = out or sys.stderr
        self.terminal = self.out.isatty() if terminal is None else terminal
        self.total, self.count = total, initial
        self.counts: Counter[str] = Counter()
        self._bar: Any = None
        if self.terminal:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, unit="run", desc=name, file=self.out)

    def done(self, run_id: str, summary: RunSummary) -> None:
        self.count += 1
        self.counts[summary.status] += 1
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(
                completed=self.counts["completed"],
                diverged=self.counts["diverged"],
                failed=self.counts["failed"],
            )
            return
        took = f"  ({summary.wall_s:.0f} s)" if summary.wall_s is not None else ""
        width = len(str(self.total))
        print(
            f"[{self.count:>{width}}/{self.total}] {summary.status:<9} {run_id}  "
            f"{metric_text(summary)}{took}",
            file=self.out,
            flush=True,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


@dataclass(frozen=True)
class RunState:
    """One run of a sweep as its folder shows it."""

    run_id: str
    state: str  # completed | diverged | failed | started | pending
    detail: str = ""
    stale: bool = False  # ended, but made by other code than this


def run_state(folder: Path, run_id: str, here: dict[str, Any] | None = None) -> RunState:
    """The state of run ``run_id`` in the sweep folder ``folder``."""
    rd = RunDir(folder / run_id)
    try:
        summary = rd.read_summary()
    except Exception as exc:  # an unreadable summary: say so, do not stop the table
        return RunState(run_id, "failed", f"unreadable summary.json: {exc}")
    if summary is not None:
        stale = here is not None and summary.finished and bool(stale_keys(summary, here))
        return RunState(run_id, summary.status, metric_text(summary), stale)
    if any((rd.path / f).exists() for f in (CONFIG, METRICS, CHECKPOINT)):
        return RunState(run_id, "started", "running, or interrupted (--resume continues it)")
    return RunState(run_id, "pending")


def stale_keys(summary: RunSummary, here: dict[str, Any]) -> list[str]:
    """What differs between the code and libraries that made ``summary`` and ``here`` (a
    ``provenance`` record), of the keys that make a run's results another code's: the code
    fingerprint and torch. A run without a record (made before they were kept) is stale."""
    return [k for k in differences(summary.provenance, here) if k in ("code", "torch")]


def sweep_status(folder: str | Path) -> list[RunState]:
    """Every run the index of the sweep in ``folder`` lists, in its order."""
    folder = Path(folder)
    index = folder / INDEX
    if not index.is_file():
        raise MissingInputError(
            "no sweep.yaml: not a sweep's results folder (numerics sweep writes it before the "
            "first run starts)",
            file=str(folder),
        )
    doc = yaml.safe_load(index.read_text()) or {}
    here = provenance()
    return [run_state(folder, r["run_id"], here) for r in doc.get("runs", [])]


def status_text(folder: str | Path) -> str:
    """The table ``numerics sweep --status`` prints: one line per run, then the counts."""
    states = sweep_status(folder)
    if not states:
        return f"{folder}: the sweep lists no runs"
    width = max(len(s.run_id) for s in states)
    lines = [
        f"{s.state:<9} {s.run_id:<{width}}  {s.detail}{'  [stale: other code]' if s.stale else ''}"
        .rstrip()
        for s in states
    ]  # fmt: skip
    c = Counter(s.state for s in states)
    order = ("completed", "diverged", "failed", "started", "pending")
    summary = ", ".join(f"{c[k]} {k}" for k in order if c[k])
    stale = sum(s.stale for s in states)
    lines.append(
        f"{folder}: {len(states)} runs: {summary}"
        + (f"; {stale} made by other code (--resume reruns them)" if stale else "")
    )
    return "\n".join(lines)
