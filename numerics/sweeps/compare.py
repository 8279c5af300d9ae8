"""Compare runs: one table of final metrics, recipes down and formats (or any recipe key) across.

A results folder holds run directories (``numerics.train.rundir``), one or two levels down (a sweep
writes ``results/<sweep>/<run-id>/``); a folder with ``config.yaml`` or ``summary.json`` is a run.
Each run falls in one cell of the table:

- the row is its recipe, ``task/model/data`` (``image/resnet20/digits``), from config.yaml;
  an evaluation (``numerics evaluate``, an evaluation sweep: its summary names the
  ``trained_format`` of its source run) is in the row of its source runs' training,
  ``image/resnet20/digits (trained fp32)``, so its cells pool the training seeds of one
  training configuration and its columns are the inference formats;
- the column is its format label (summary.json's ``format``: ``bf16``, ``mxfp8_e4m3``,
  ``bf16-nomaster-sr``), or with ``--by KEY`` the value of a dotted recipe key
  (``train.batch_size``, ``large_batch.rule``, ``numerics.update_method``); ``--by K1,K2``
  joins several keys' values (``int8 · 0.05``);
- a cell pools seeds only. Where the runs of a would-be cell differ in any other key of their
  config.yaml (or of the results folder's sweep.yaml ``swept`` list), that key joins the
  column's values for the whole row, the format label first if policies differ, then
  sweep.yaml's keys in its order, then the rest: the shipped embedding_cache sweep compares
  into ``fp32 · none · 0.01``, ``fp32 · int8 · 0.01``, ... Seed keys (``train.seed``,
  ``numerics.seed``) and logging keys (which record, not compute) never split a column;
  ``--pool KEY`` pools a key on purpose (``--pool format`` pools policies), which the legend
  then says.

A cell shows the metric's mean over the cell's runs (its seeds) with the half-width of its
confidence interval (Student t, ``--ci``, default 95%; none for one run: ``numerics.sweeps.stats``),
``n`` the runs averaged, and the difference to the baseline column of the same row (``Δ``;
``--baseline``, default ``fp32``: a column's label or its ``--by`` values; of several split
columns, the one that shares the column's other values) with the half-width of its interval:
paired by seed where both cells ran the same seeds, Welch's unequal-variance interval otherwise
(marked ``(Welch)``). A ``Δ`` whose interval contains 0 is marked ``≈`` (not significant at
that level); one with a single run on either side is ``(untested)``. The metric is the row's
``primary_metric`` (accuracy for image, bits_per_byte for language, auc for recsys) unless
``--metric`` names another, which is looked up in the summary's ``metrics`` and then among its
top-level numbers (``wall_s``, ``peak_memory_mb``). Only completed runs with a finite value
enter the mean; every other run is counted in its cell, never dropped: ``diverged``,
``failed``, ``unfinished`` (no summary.json yet: running, or killed), ``non-finite``
(completed with a NaN metric). A cell is marked best (``*``) only when it is significantly
better (higher for accuracy/auc, lower for the losses) than every other cell of its row that
has a mean, each pair compared as the deltas are; a row whose leader is within noise of
another cell has no mark. The intervals are per comparison, not corrected for the number of
cells in a row.

A malformed config.yaml or summary.json is skipped with a ``RunWarning`` naming the file (a
run whose summary cannot be read is skipped whole: its status is unknown).
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from numerics.errors import MissingInputError, UserError
from numerics.sweeps.progress import INDEX
from numerics.sweeps.stats import (
    DEFAULT_LEVEL,
    Difference,
    Interval,
    Pairing,
    check_level,
    difference,
    mean_interval,
)
from numerics.train.rundir import CONFIG, METRICS, SUMMARY, read_metrics
from numerics.train.summary import RunSummary, SummaryError

UNFINISHED = "unfinished"
NON_FINITE = "non-finite"
NO_METRIC = "no metric"
# the order in which a cell lists the runs that are not in its mean
EXCLUDED = ("diverged", "failed", UNFINISHED, NON_FINITE, NO_METRIC)

# metric -> higher is better; names not listed have no direction (no best is marked)
DIRECTION: dict[str, bool] = {
    "accuracy": True,
    "auc": True,
    "loss": False,
    "val_loss": False,
    "bits_per_byte": False,
    "logloss": False,
    "wall_s": False,
    "peak_memory_mb": False,
}
TASK_PRIMARY = {"image": "accuracy", "language": "bits_per_byte", "recsys": "auc"}
# recipe keys a summary also holds (for runs whose config.yaml is unreadable)
_SUMMARY_ALIASES = {"train.batch_size": "batch_size", "train.seed": "seed"}
_MISSING = object()


class RunWarning(UserWarning):
    """A run directory (or one of its files) that could not be read."""


def _warn(msg: str) -> None:
    warnings.warn(msg, RunWarning, stacklevel=3)


def _dig(d: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(d, dict) or part not in d:
            return _MISSING
        d = d[part]
    return d


def _number(v: Any) -> float | None:
    """A stored metric as a float ("nan"/"inf" strings included); None if it is not one."""
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        return None
    try:
        return float(v)
    except ValueError:
        return None


@dataclass
class Run:
    """One run directory: its resolved recipe, its summary (None while unfinished), its status
    (completed | diverged | failed | unfinished)."""

    path: Path
    config: dict[str, Any]
    summary: RunSummary | None
    status: str

    @functools.cached_property
    def _summary(self) -> dict[str, Any] | None:
        """The summary as its JSON object, for dotted lookups."""
        return None if self.summary is None else self.summary.to_dict()

    @property
    def provenance(self) -> dict[str, Any] | None:
        """The summary's record of the code and machine that made the run (None: none kept)."""
        return self.summary.provenance if self.summary is not None else None

    def get(self, key: str, default: Any = None) -> Any:
        """A dotted recipe key from config.yaml (``train.batch_size``), else from the summary;
        ``format`` is the format label."""
        if key == "format":
            return self.format
        v = _dig(self.config, key)
        if v is _MISSING and self._summary is not None:
            v = _dig(self._summary, _SUMMARY_ALIASES.get(key, key))
        return default if v is _MISSING else v

    def _name(self, section: str) -> str:
        v = _dig(self.config, f"{section}.name")
        if v is _MISSING and self._summary is not None:
            v = self._summary.get(section, _MISSING)
        return "?" if v is _MISSING else str(v)

    @functools.cached_property
    def flat(self) -> dict[str, str]:
        """config.yaml as dotted key -> the value's repr, for telling configurations apart."""
        return _flat(self.config)

    @property
    def task(self) -> str:
        return str(self.get("task", "?"))

    @property
    def trained_format(self) -> str | None:
        """An evaluation's source run's training format label (None: a training run)."""
        v = self._summary.get("trained_format") if self._summary is not None else None
        return None if v is None else str(v)

    @property
    def recipe(self) -> str:
        """The row label: ``task/model/data``, and ``(trained F)`` for an evaluation."""
        row = f"{self.task}/{self._name('model')}/{self._name('data')}"
        trained = self.trained_format
        return row if trained is None else f"{row} (trained {trained})"

    @property
    def format(self) -> str:
        """The numerics policy's label, from the summary or else rebuilt from config.yaml."""
        if self.summary is not None and isinstance(self.summary.format, str):
            return self.summary.format
        numerics = self.config.get("numerics")
        if isinstance(numerics, dict):
            from numerics.nn.policy import from_dict

            try:
                return from_dict(numerics).label()
            except (ValueError, TypeError, KeyError):
                return str(numerics.get("format", "?"))
        return str(numerics) if isinstance(numerics, str) else "?"

    @property
    def seed(self) -> Any:
        return self.get("train.seed")

    @property
    def primary_metric(self) -> str | None:
        p = self.summary.primary_metric if self.summary else None
        return str(p) if p else TASK_PRIMARY.get(self.task)

    def metric(self, name: str) -> float | None:
        """The final value of ``name`` (summary ``metrics``, then a top-level number, then a
        dotted path into the summary: ``hardening.mean_distance_steps``)."""
        if self._summary is None:
            return None
        metrics = self._summary.get("metrics")
        if isinstance(metrics, dict) and name in metrics:
            return _number(metrics[name])
        if name in self._summary:
            return _number(self._summary[name])
        v = _dig(self._summary, name)
        return None if v is _MISSING else _number(v)

    @property
    def error(self) -> str | None:
        """Why the run is not in the means: a failed run's error line, a diverged run's reason."""
        if self.summary is None:
            return None
        for line in (self.summary.error, self.summary.reason):
            if line:
                return str(line).strip().splitlines()[-1]
        tb = str(self.summary.traceback or "").strip()
        return tb.splitlines()[-1] if tb else None

    def curve(self, name: str = "loss", split: str = "train") -> list[tuple[int, float]]:
        """(step, value) of ``name`` under ``split`` in metrics.jsonl; torn lines skipped."""
        out: list[tuple[int, float]] = []
        try:
            for r in read_metrics(self.path / METRICS):
                v = _number(r["value"])
                if r["split"] == split and r["name"] == name and v is not None:
                    out.append((int(r["step"]), v))
        except (OSError, UnicodeDecodeError, TypeError, ValueError) as exc:
            _warn(f"{self.path / METRICS}: unreadable ({exc}); no training curve")
        return out


# --- loading ----------------------------------------------------------------------------------
def _is_run(d: Path) -> bool:
    return (d / CONFIG).is_file() or (d / SUMMARY).is_file()


def _run_dirs(root: Path, depth: int) -> list[Path]:
    if _is_run(root):
        return [root]
    if depth == 0:
        return []
    out: list[Path] = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        out += _run_dirs(d, depth - 1)
    return out


def _read_mapping(path: Path, parse: Any) -> dict[str, Any] | None:
    """The file's mapping; None (with a warning naming the file) if it is not one."""
    try:
        data = parse(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _warn(f"{path}: malformed ({first})")
        return None
    if not isinstance(data, dict):
        _warn(f"{path}: malformed (expected a mapping, got {type(data).__name__})")
        return None
    return data


def load_run(d: Path) -> Run | None:
    """The run in folder ``d``; None (with a RunWarning) when its summary is unreadable."""
    import json

    from numerics.train.recipe import YamlLoader

    config = _read_mapping(d / CONFIG, lambda s: yaml.load(s, Loader=YamlLoader)) or {}
    if not (d / SUMMARY).exists():
        return Run(d, config, None, UNFINISHED)
    data = _read_mapping(d / SUMMARY, json.loads)
    if data is None:
        _warn(f"{d}: run skipped (its {SUMMARY} is unreadable)")
        return None
    try:
        summary = RunSummary.from_dict(data)
    except (SummaryError, TypeError) as exc:
        _warn(f"{d / SUMMARY}: malformed ({exc}); run skipped")
        return None
    return Run(d, config, summary, summary.status)


def load_runs(path: str | Path) -> list[Run]:
    """Every run under ``path`` (``path`` itself, or folders one or two levels down)."""
    root = Path(path)
    if not root.is_dir():
        raise MissingInputError(f"results directory {root}: no such folder", value=str(root))
    runs = [load_run(d) for d in _run_dirs(root, depth=2)]
    return [r for r in runs if r is not None]


def swept_keys(path: str | Path) -> list[str]:
    """The keys the ``sweep.yaml`` files in ``path`` or one level down list as swept (written
    by ``numerics sweep``; optional: the table itself needs only the runs)."""
    root, keys = Path(path), []
    for f in sorted([root / INDEX, *root.glob(f"*/{INDEX}")]):
        if not f.is_file():
            continue
        d = _read_mapping(f, yaml.safe_load)
        swept = d.get("swept") if d else None
        if isinstance(swept, list):
            keys += [str(k) for k in swept if str(k) not in keys]
        elif d is not None:
            _warn(f"{f}: no list of swept keys ('swept'); ignored")
    return keys


# --- aggregation ------------------------------------------------------------------------------
def _num(v: float) -> str:
    return f"{v:.4f}" if 0.01 <= abs(v) < 1000 or v == 0 else f"{v:.4g}"


def _half(v: float) -> str:
    """A half-width, to the mean's four decimals (two significant digits below 0.0001)."""
    return f"{v:.4f}" if v == 0 or 1e-4 <= abs(v) < 1000 else f"{v:.2g}"


def _delta(v: float) -> str:
    return f"{v:+.4f}" if abs(v) < 1000 else f"{v:+.5g}"


def value_label(v: Any) -> str:
    """A recipe value as a column label (as YAML writes scalars)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


#: what a cell's provenance lists, and which of those a cell must not mix without a warning
PROVENANCE_KEYS = ("code", "torch", "cpu", "threads")
MIXING_KEYS = ("code", "cpu")


@dataclass
class Cell:
    """One (recipe, column) cell: the runs in it, the metric of each completed one (``values``,
    with the run's seed label in ``seeds``), their mean, sample std and confidence interval, the
    difference to the baseline cell, and the runs left out of the mean counted by reason
    (``EXCLUDED``)."""

    runs: list[Run]
    values: list[float]
    counts: dict[str, int]
    seeds: list[str] = field(default_factory=list)
    level: float = DEFAULT_LEVEL
    interval: Interval | None = None
    diff: Difference | None = None
    best: bool = False

    @property
    def mean(self) -> float | None:
        return self.interval.mean if self.interval is not None else None

    @property
    def std(self) -> float | None:
        """The sample standard deviation (ddof=1; None below two runs)."""
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def half(self) -> float | None:
        """The half-width of the mean's confidence interval (None for one run)."""
        return self.interval.half if self.interval is not None else None

    @property
    def delta(self) -> float | None:
        return self.diff.delta if self.diff is not None else None

    @property
    def paired(self) -> list[tuple[str, float]]:
        return list(zip(self.seeds, self.values, strict=True))

    @property
    def delta_text(self) -> str:
        """``Δ-0.0100 ± 0.0080``, ``Δ-0.0100 ± 0.0150 ≈`` (interval holds 0), ``Δ-0.11
        (untested)`` (one run on a side); ``(Welch)`` where the seeds could not be paired."""
        d = self.diff
        if d is None:
            return ""
        if d.half is None:
            return f"Δ{_delta(d.delta)} (untested)"
        s = f"Δ{_delta(d.delta)} ± {_half(d.half)}" + ("" if d.significant else " ≈")
        return s + (" (Welch)" if d.pairing is Pairing.WELCH else "")

    @property
    def provenance(self) -> dict[str, list[str]]:
        """What the cell's finished runs were made with, per key that can change numbers
        (``code``, ``torch``, ``cpu``, ``threads``): the distinct values recorded, in run
        order; runs without a record (made before records were kept) add nothing."""
        out: dict[str, list[str]] = {}
        for r in self.runs:
            rec = r.provenance
            if r.status not in ("completed", "diverged") or not rec:
                continue
            for key in PROVENANCE_KEYS:
                v = rec.get(key)
                if v is not None and str(v) not in out.setdefault(key, []):
                    out[key].append(str(v))
        return out

    @property
    def mixed(self) -> list[str]:
        """The keys (code, cpu) on which the cell's runs disagree: a mean over them mixes runs
        that another machine or other code made, whose last digits may differ."""
        prov = self.provenance
        return [k for k in MIXING_KEYS if len(prov.get(k, [])) > 1]

    @property
    def text(self) -> str:
        """``0.9100 ± 0.0141 (n=3, 1 diverged) Δ-0.0100 ± 0.0080 *``, ``diverged (2)``, ``—``."""
        extra = [f"{self.counts[k]} {k}" for k in EXCLUDED if self.counts.get(k)]
        if self.mean is None:
            if self.counts.get(NO_METRIC):  # completed runs that lack the metric
                rest = [e for e in extra if not e.endswith(NO_METRIC)]
                return "—" + (f" ({', '.join(rest)})" if rest else "")
            return ", ".join(f"{k} ({self.counts[k]})" for k in EXCLUDED if self.counts.get(k))
        s = _num(self.mean) + (f" ± {_half(self.half)}" if self.half is not None else "")
        s += f" (n={', '.join([str(self.n), *extra])})"
        if self.diff is not None:
            s += " " + self.delta_text
        return s + (" *" if self.best else "")


def make_cell(runs: list[Run], metric: str | None, level: float = DEFAULT_LEVEL) -> Cell:
    values: list[float] = []
    seeds: list[str] = []
    counts: Counter[str] = Counter()
    for r in runs:
        v = r.metric(metric) if metric and r.status == "completed" else None
        if r.status != "completed":
            counts[r.status] += 1
        elif v is None:
            counts[NO_METRIC] += 1
        elif not math.isfinite(v):
            counts[NON_FINITE] += 1
        else:
            values.append(v)
            seeds.append(value_label(r.seed))
    cell = Cell(runs, values, dict(counts), seeds, level)
    if values:
        cell.interval = mean_interval(values, level)
    return cell


@dataclass
class Table:
    """Rows (recipes) by columns (values of ``by``, then of the row's ``split`` keys);
    ``cells[(row, column)]``; each row's metric and direction; ``baseline`` is None when no
    column has that value (as its label or as its ``by`` values)."""

    rows: list[str]
    columns: list[str]
    cells: dict[tuple[str, str], Cell]
    metrics: dict[str, str | None]
    higher_is_better: dict[str, bool | None]
    by: str = "format"
    baseline: str | None = None
    requested_baseline: str | None = None
    level: float = DEFAULT_LEVEL  # of every confidence interval in the table
    pooled: list[str] = field(default_factory=list)  # --pool keys that differ inside a cell
    swept: list[str] = field(default_factory=list)  # keys sweep.yaml files say were swept
    split: dict[str, list[str]] = field(default_factory=dict)  # row -> keys added to ``by``
    heads: dict[str, str] = field(default_factory=dict)  # column -> its ``by`` values
    tails: dict[str, str] = field(default_factory=dict)  # column -> its split keys' values

    def cell(self, row: str, column: str) -> Cell | None:
        return self.cells.get((row, column))


def _flat(d: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(d, dict):
        out: dict[str, str] = {}
        for k, v in d.items():
            out |= _flat(v, f"{prefix}{k}.")
        return out
    return {prefix.rstrip("."): repr(d)}


def _under(key: str, keys: list[str]) -> bool:
    """Whether ``key`` is one of ``keys`` or inside one (``numerics.weights.format`` is inside
    ``numerics``); ``format``, the policy's label, and ``numerics`` stand for each other."""
    if "format" in keys or "numerics" in keys:
        keys = [*keys, "format", "numerics"]
    return any(key == k or key.startswith(k + ".") for k in keys)


def is_seed(key: str) -> bool:
    """Seed keys (``train.seed``, ``numerics.seed``): a cell pools its runs over them."""
    return key.rsplit(".", 1)[-1].endswith("seed")


def _differing(cells: list[list[Run]], swept: list[str], pool: list[str]) -> set[str]:
    """The recipe keys whose values differ among the runs of one of ``cells``: dotted keys of
    config.yaml, and ``swept`` keys (read with ``Run.get``, so a run whose config is unreadable
    counts by its summary); seeds, logging (which records, not computes) and ``pool`` aside."""
    out: set[str] = set()
    for runs in cells:
        flats = [r.flat for r in runs if r.config]
        for k in set().union(*flats) if flats else ():
            if len({f.get(k) for f in flats}) > 1:
                out.add(k)
        for k in swept:  # a section (a dict) is left to its own keys
            values = [r.get(k, _MISSING) for r in runs]
            if not any(isinstance(v, dict) for v in values) and len(set(map(_text, values))) > 1:
                out.add(k)
    return {
        k for k in out
        if not (is_seed(k) or k.startswith("logging.") or k == "recipe" or _under(k, pool))
    }  # fmt: skip


def _text(v: Any) -> str:
    return "(unset)" if v is _MISSING else value_label(v)


def _label(run: Run, keys: list[str]) -> str:
    """The run's values of ``keys`` as a column label (``int8 · 0.05``)."""
    return " · ".join(_text(run.get(k, _MISSING)) for k in keys)


def _cells(runs: list[Run], keys: list[str]) -> list[list[Run]]:
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(_label(r, keys), []).append(r)
    return list(groups.values())


def split_keys(runs: list[Run], by: list[str], pool: list[str], swept: list[str]) -> list[str]:
    """The keys besides ``by`` that the columns of one row (``runs``) need so that no cell
    pools two configurations: ``format`` first when policies differ inside a cell (and
    ``format`` is not pooled), then each key that still differs inside one (``swept`` keys in
    their order, then the rest sorted). Seeds, logging and ``pool`` keys are never added."""
    keys = list(by)
    diff = _differing(_cells(runs, keys), swept, pool)
    if "format" not in keys and any(_under(k, ["numerics"]) for k in diff):
        keys.append("format")  # the policy's label, rather than its keys one by one
        diff = _differing(_cells(runs, keys), swept, pool)
    rest = [k for k in swept if k in diff] + sorted(diff.difference(swept))
    return keys[len(by) :] + rest


def _natural(label: str) -> tuple[tuple[int, float, str], ...]:
    """Sort key of a column label: each `` · `` part a number where it reads as one, so
    ``128 · linear`` comes before ``1024 · linear``."""
    key = []
    for part in label.split(" · "):
        try:
            key.append((0, float(part), ""))
        except ValueError:
            key.append((1, 0.0, part))
    return tuple(key)


def _column_order(labels: dict[str, Any], heads: dict[str, str], baseline: str | None) -> list[str]:
    """Numbers by value (one ``by`` key, nothing split); else the baseline's columns first, then
    the rest, each part of a label compared as a number where it reads as one."""
    raw = list(labels.values())
    if raw and all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw):
        return sorted(labels, key=lambda k: float(labels[k]))
    first = [k for k in labels if baseline is not None and baseline in (k, heads[k])]
    rest = [k for k in labels if k not in first]
    return sorted(first, key=_natural) + sorted(rest, key=_natural)


def where(runs: list[Run], conditions: list[str]) -> list[Run]:
    """The runs whose dotted recipe key has the given value, for each ``KEY=VALUE`` (the
    value as the table labels it: ``--where train.lr=0.01``, ``--where format=bf16``)."""
    out = runs
    for cond in conditions:
        key, sep, value = cond.partition("=")
        if not sep or not key:
            raise UserError(
                "expected KEY=VALUE, e.g. train.lr=0.01", key=f"--where {cond!r}", value=cond
            )
        out = [r for r in out if value_label(r.get(key, _MISSING)) == value]
    return out


def aggregate(
    runs: list[Run],
    metric: str | None = None,
    by: str | None = None,
    baseline: str | None = "fp32",
    level: float = DEFAULT_LEVEL,
    pool: list[str] | None = None,
    swept: list[str] | None = None,
) -> Table:
    """The comparison table of ``runs``: rows by recipe, columns by the value of ``by`` (dotted
    recipe keys joined by commas; default the format label) and of every other key that
    differs among a cell's runs (``split_keys``; ``swept``: sweep.yaml's keys, which come
    first), cells over seeds (and the ``pool`` keys) with intervals at ``level``; see the
    module docstring."""
    level = check_level(level)
    key = by or "format"
    keys, swept = key.split(","), list(swept or [])
    pool = [k.strip() for p in pool or [] for k in p.split(",") if k.strip()]
    clash = [k for k in keys if _under(k, pool)]
    if clash:
        raise UserError(
            f"{', '.join(clash)} is both a column key (--by, default format) and pooled; to pool "
            "it, give the columns another --by",
            key="--pool",
            value=",".join(pool),
        )
    by_recipe: dict[str, list[Run]] = {}
    for r in runs:
        by_recipe.setdefault(r.recipe, []).append(r)
    groups: dict[tuple[str, str], list[Run]] = {}
    labels: dict[str, Any] = {}
    heads: dict[str, str] = {}  # column -> its ``by`` part (the rest tells split columns apart)
    tails: dict[str, str] = {}
    split: dict[str, list[str]] = {}
    pooled: set[str] = set()
    for row, in_row in sorted(by_recipe.items()):
        extra = split_keys(in_row, keys, pool, swept)
        if extra:
            split[row] = extra
        for r in in_row:
            head, tail = _label(r, keys), _label(r, extra) if extra else ""
            label = f"{head} · {tail}" if tail else head
            value = r.get(keys[0], _MISSING)
            labels.setdefault(label, value if len(keys) == 1 and not tail else label)
            heads[label], tails[label] = head, tail
            groups.setdefault((row, label), []).append(r)
        inside = _differing(_cells(in_row, keys + extra), swept, [])
        pooled.update(p for p in pool if any(_under(k, [p]) for k in inside))
    rows = sorted(by_recipe)
    base = baseline if baseline is not None and baseline in {*labels, *heads.values()} else None
    table = Table(rows, _column_order(labels, heads, base), {}, {}, {}, key, base, baseline,
                  level, sorted(pooled), [], split, heads, tails)  # fmt: skip
    for row in rows:
        m = metric
        if m is None:  # the primary metric most of the row's runs name
            names = Counter(p for r in by_recipe[row] if (p := r.primary_metric))
            m = names.most_common(1)[0][0] if names else None
        table.metrics[row] = m
        table.higher_is_better[row] = DIRECTION.get(m.rsplit(".", 1)[-1]) if m else None
        for col in table.columns:
            if (row, col) in groups:
                table.cells[(row, col)] = make_cell(groups[(row, col)], m, level)
        _mark(table, row)
    return table


def reference(table: Table, row: str, column: str) -> str | None:
    """The column of ``row`` that ``column``'s delta is taken to: the baseline column; where
    split columns give several with the baseline's ``by`` value, the one that shares
    ``column``'s split values (none if the row has no such column)."""
    if table.baseline is None:
        return None
    here = [c for c in table.columns if (row, c) in table.cells]
    if table.baseline in here:
        return table.baseline
    named = [c for c in here if table.heads.get(c) == table.baseline]
    if len(named) == 1:
        return named[0]
    return next((c for c in named if table.tails.get(c) == table.tails.get(column)), None)


def better(a: Cell, b: Cell, higher: bool) -> bool:
    """Whether ``a`` is significantly better than ``b`` (both with a mean): the interval of
    their difference lies wholly on the better side of 0."""
    d = difference(a.paired, b.paired, a.level)
    if d.low is None or d.high is None:
        return False
    return d.low > 0 if higher else d.high < 0


def _mark(table: Table, row: str) -> None:
    """Differences to the baseline, and the best cell of ``row``: one significantly better
    than every other cell with a mean (none when the leader is within noise of another)."""
    cells = {c: table.cells[(row, c)] for c in table.columns if (row, c) in table.cells}
    for col, cell in cells.items():
        ref = cells.get(reference(table, row, col) or "")
        if ref is not None and ref.mean is not None and cell.mean is not None and cell is not ref:
            cell.diff = difference(cell.paired, ref.paired, table.level)
    with_mean = [c for c in cells.values() if c.mean is not None]
    higher = table.higher_is_better[row]
    if len(with_mean) < 2 or higher is None:
        return
    for cell in with_mean:
        cell.best = all(better(cell, o, higher) for o in with_mean if o is not cell)


# --- the plain-text table ---------------------------------------------------------------------
def metric_label(table: Table, row: str) -> str:
    m = table.metrics[row] or "?"
    higher = table.higher_is_better[row]
    return m + ("" if higher is None else " ↑" if higher else " ↓")


def table_grid(table: Table) -> list[list[str]]:
    """The table as rows of strings, the header first (``recipe``, ``metric``, columns)."""
    grid = [["recipe", "metric", *table.columns]]
    for row in table.rows:
        cells = [
            table.cells[(row, c)].text if (row, c) in table.cells else "" for c in table.columns
        ]
        grid.append([row, metric_label(table, row), *cells])
    return grid


def legend(table: Table) -> list[str]:
    """The lines under the table: what ``*``, the arrows and ``Δ`` mean, and pooling notes."""
    pct = interval_name(table.level)
    lines = [
        f"mean ± half-width of its {pct} (n: completed runs averaged; none for n=1)",
        f"* significantly better ({pct} of the difference) than every other cell of its row "
        "(↑ higher is better, ↓ lower); no mark where the leader is within noise",
    ]
    deltas = any(c.diff is not None for c in table.cells.values())
    if table.baseline is not None and table.baseline not in table.columns and not deltas:
        lines.append(
            f"no deltas: the {table.baseline!r} columns differ in their other values, each the "
            "baseline of its own (--by KEY --baseline VALUE takes deltas along one key)"
        )
    elif table.baseline is not None:
        several = "" if table.baseline in table.columns else (
            " (of several, the one with the column's other values)"
        )  # fmt: skip
        lines.append(
            f"Δ ± half-width: mean minus the mean of the {table.baseline!r} column of the same "
            f"row{several}, {pct} of the difference, paired by seed where both cells ran the "
            "same seeds, Welch's unequal-variance interval where not (marked (Welch)); ≈: the "
            "interval holds 0, not significant; (untested): one run on a side"
        )
    elif table.requested_baseline is not None:
        lines.append(f"no {table.requested_baseline!r} column (--baseline): no deltas")
    if table.swept:
        lines.append(f"swept (sweep.yaml): {', '.join(table.swept)}")
    splits = {tuple(keys) for keys in table.split.values()}
    if splits:
        by = " · ".join(table.by.split(","))
        where = [
            ", ".join(keys) + ("" if len(splits) == 1 else f" ({row})")
            for row, keys in table.split.items()
        ]
        but = "their seeds" + (" and the pooled keys" if table.pooled else "")
        lines.append(
            f"columns by {by}, then {'; '.join(sorted(set(where)))}: the runs of a cell differ "
            f"in nothing but {but} (--pool KEY pools a key on purpose)"
        )
    if table.pooled:
        lines.append(
            f"pooled on purpose (--pool): {', '.join(table.pooled)}: a cell's mean mixes runs "
            "that differ in these keys"
        )
    lines += mixing_warnings(table)
    return lines


def mixing_warnings(table: Table) -> list[str]:
    """One line per cell whose runs were made by different code or on different CPU models
    (their summaries' ``provenance``), naming what differs."""
    out = []
    for (row, col), cell in table.cells.items():
        mixed = cell.mixed
        if mixed:
            prov = cell.provenance
            what = "; ".join(f"{k}: {', '.join(prov[k])}" for k in mixed)
            out.append(
                f"warning: {row} / {col} mixes runs made by different "
                f"{' and '.join('code' if k == 'code' else 'CPU models' for k in mixed)} "
                f"({what}): its last digits may not repeat on one machine"
            )
    return out


def run_counts(runs: list[Run]) -> str:
    counts = Counter(r.status for r in runs)
    order = ("completed", "diverged", "failed", UNFINISHED)
    parts = [f"{counts[s]} {s}" for s in order if counts.get(s)]
    return f"{len(runs)} runs: {', '.join(parts)}" if runs else "0 runs"


def interval_name(level: float) -> str:
    """``95% CI (Student t, over seeds)`` for level 0.95."""
    return f"{level * 100:g}% CI (Student t, over seeds)"


def format_table(table: Table) -> str:
    """The aligned plain-text table with its legend."""
    grid = table_grid(table)
    widths = [max(len(r[i]) for r in grid) for i in range(len(grid[0]))]
    out = []
    for i, r in enumerate(grid):
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    splits = {tuple(keys) for keys in table.split.values()}
    keys = [*table.by.split(","), *(next(iter(splits)) if len(splits) == 1 else ())]
    rest = " · (keys that differ per row: see below)" if len(splits) > 1 else ""
    by = "" if keys == ["format"] and not splits else f"columns: {' · '.join(keys)}{rest}\n"
    return by + "\n".join(out) + "\n\n" + "\n".join(legend(table))


# --- the command ------------------------------------------------------------------------------
def add_table_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments that choose a table: the results folder, metric, columns, filters,
    baseline and confidence level (``numerics compare`` and the docs' blocks share them)."""
    p.add_argument("results", help="a results folder (runs one or two levels down) or a run")
    p.add_argument("--metric", help="metric to compare (default: each recipe's primary metric)")
    p.add_argument("--baseline", default="fp32", help="column the deltas are taken to (fp32): "
                   "its label, or its --by values where the columns are split further")  # fmt: skip
    p.add_argument("--by", help="columns by this dotted recipe key, e.g. train.batch_size, "
                   "or several joined by commas (default: the format label)")  # fmt: skip
    p.add_argument("--pool", action="append", default=[], metavar="KEY",
                   help="pool the runs that differ in this recipe key into one cell, as seeds "
                   "are (repeatable, or joined by commas; 'format' pools policies); without it "
                   "every key that differs inside a cell splits the column")  # fmt: skip
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="only runs whose recipe key has this value (repeatable)")  # fmt: skip
    p.add_argument("--ci", type=float, default=DEFAULT_LEVEL, metavar="LEVEL",
                   help="confidence level of the intervals, in (0, 1) (0.95)")  # fmt: skip


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``compare`` to an argparse subparsers object."""
    p: argparse.ArgumentParser = sub.add_parser(
        "compare",
        help="tabulate and plot the runs of a results folder",
        description="One table of final metrics (recipes by formats, mean and confidence "
        "interval over seeds, difference to a baseline with its interval and significance), "
        "written with plots to report.md / report.html.",
    )
    add_table_arguments(p)
    p.add_argument("--out", help="folder for report.md, report.html and plots (default RESULTS)")
    p.set_defaults(func=cmd_compare)
    return p


def cmd_compare(args: argparse.Namespace) -> int:
    from numerics.sweeps.report import write_report

    try:
        level = check_level(args.ci)
    except ValueError as exc:
        raise UserError(str(exc), key="--ci", value=args.ci) from None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RunWarning)
        runs = where(load_runs(args.results), args.where)
        swept = swept_keys(args.results)
        table = aggregate(runs, args.metric, args.by, args.baseline, level, args.pool, swept)
        table.swept = swept
    for w in caught:
        print(f"numerics compare: warning: {w.message}", file=sys.stderr)
    for line in mixing_warnings(table):
        print(f"numerics compare: {line}", file=sys.stderr)
    if not runs:
        print(
            f"numerics compare: no runs (folders with {CONFIG} or {SUMMARY}) in {args.results} "
            "or one or two levels below it",
            file=sys.stderr,
        )
        return 1
    print(format_table(table))
    print(run_counts(runs))
    for r in runs:
        if r.status in ("failed", "diverged"):
            print(f"  {r.status}: {r.path}: {r.error or '(no error recorded)'}")
    written = write_report(table, runs, Path(args.out) if args.out else Path(args.results))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
