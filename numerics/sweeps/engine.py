"""Running a sweep: the executor factory, resume, the tally and the results index.

The engine writes ``<results>/<name>/sweep.yaml`` (the sweep file, the swept keys and every run
with its parameters, for ``numerics compare``), skips runs that already ended (with
``--resume``; finished runs made by other code are stale and run again), and hands the rest
to an executor (``numerics.sweeps.executors``), counting completed / diverged / failed runs as
they come back and showing them (``numerics.sweeps.progress``).
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from numerics.errors import UserError
from numerics.files import atomic_write_text, jsonable
from numerics.provenance import provenance
from numerics.sweeps.executors.base import Executor, RunSpec, Summary
from numerics.sweeps.progress import INDEX, Progress, stale_keys
from numerics.sweeps.spec import EXECUTORS, Expansion, Sweep, SweepError, expand, upgrade_config
from numerics.train.rundir import CHECKPOINT, CONFIG, SUMMARY, RunDir

FAILED_SUMMARY = "summary.failed.json"
STALE = ".stale"  # stale run folders, moved aside


class ResultsExistError(UserError):
    """The sweep's results folder already holds runs and ``--resume`` was not given."""


def index(sweep: Sweep, expansion: Expansion) -> dict[str, Any]:
    """What ``sweep.yaml`` in the results folder holds (an evaluation's ``source_run`` too)."""
    return {
        "name": sweep.name,
        "sweep_file": sweep.path,
        "sweep": sweep.raw,
        "swept": expansion.swept,
        "runs": [
            {"run_id": s.run_id, "recipe": s.source, "params": s.params} | _evaluates(s)
            for s in expansion.runs
        ],
        "duplicates": expansion.duplicates,
    }


def _evaluates(spec: RunSpec) -> dict[str, Any]:
    """An evaluation job's source run (and calibration batches) for the index."""
    ev = spec.evaluates
    if ev is None:
        return {}
    return (
        {"source_run": ev.run}
        | ({"calibrate": ev.calibrate} if ev.calibrate else {})
        | ({"pvf": ev.pvf} if ev.pvf is not None else {})
    )


def write_index(sweep: Sweep, expansion: Expansion, folder: str | Path) -> Path:
    path = Path(folder) / INDEX
    atomic_write_text(path, yaml.safe_dump(jsonable(index(sweep, expansion)), sort_keys=False))
    return path


def make_executor(kind: str, jobs: int | None, options: Mapping[str, Any]) -> Executor:
    """The executor of ``kind`` (local | ray | slurm) with ``jobs`` and its other options."""
    opts = dict(options)
    if kind == "local":
        from numerics.sweeps.executors.local import LocalExecutor

        extra = sorted(set(opts) - {"threads"})
        if extra:
            raise SweepError(
                f"option(s) {', '.join(extra)} not accepted by the local executor; "
                "allowed: jobs, threads",
                key="executor",
                value=extra,
                allowed="jobs, threads",
            )
        return LocalExecutor(jobs=jobs, threads=opts.get("threads"))
    if jobs is not None:
        opts["jobs"] = jobs
    try:
        if kind == "ray":
            from numerics.sweeps.executors.ray_executor import RayExecutor

            known = [n for n in inspect.signature(RayExecutor).parameters if n != "fn"]
            extra = sorted(set(opts) - set(known))
            if extra:
                raise SweepError(
                    f"option(s) {', '.join(extra)} not accepted by the ray executor; "
                    f"allowed: {', '.join(known)}",
                    key="executor",
                    value=extra,
                    allowed=", ".join(known),
                )
            return RayExecutor(**opts)
        if kind == "slurm":
            from numerics.sweeps.executors.slurm import SlurmExecutor

            return SlurmExecutor(**opts)
    except ImportError as exc:
        raise SweepError(
            f"executor kind {kind} is not available: {exc} (pip install 'numerics[{kind}]')",
            value=kind,
        ) from None
    raise SweepError(
        f"unknown kind {kind!r}; allowed: {', '.join(EXECUTORS)}",
        key="executor",
        value=kind,
        allowed=", ".join(EXECUTORS),
    )


@dataclass
class Tally:
    """How the sweep's runs ended; ``skipped`` counts runs already finished before (resume),
    ``merged`` the points that resolved to the config of another run; ``notes`` are the
    expansion's (an evaluation sweep's source runs left out)."""

    total: int
    completed: int = 0
    diverged: int = 0
    failed: int = 0
    skipped: int = 0
    kept_stale: int = 0
    merged: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, status: Any) -> None:
        if status in ("completed", "diverged"):
            setattr(self, status, getattr(self, status) + 1)
        else:
            self.failed += 1

    @property
    def done(self) -> int:
        return self.completed + self.diverged + self.failed

    def line(self) -> str:
        notes = [f"{self.skipped} already done"] if self.skipped else []
        notes += [f"{self.kept_stale} of them made by other code, kept"] if self.kept_stale else []
        notes += [f"{self.merged} identical configs merged"] if self.merged else []
        notes += self.notes
        return (
            f"{self.done}/{self.total} runs: {self.completed} completed, {self.diverged} "
            f"diverged, {self.failed} failed" + (f" ({'; '.join(notes)})" if notes else "")
        )


def existing_runs(folder: Path) -> list[Path]:
    """Run directories (config, summary or checkpoint inside) under a sweep's folder."""
    if not folder.is_dir():
        return []
    files = (CONFIG, SUMMARY, CHECKPOINT, FAILED_SUMMARY)
    return sorted(p for p in folder.iterdir() if any((p / f).is_file() for f in files))


def run_sweep(
    sweep: Sweep,
    results: str | Path = "results",
    executor: Executor | None = None,
    *,
    resume: bool = False,
    keep_stale: bool = False,
    progress: bool | None = None,
) -> Tally:
    """Expand and run ``sweep``; returns the tally. Without ``resume`` a results folder that
    holds runs is refused (``ResultsExistError``) and nothing is touched. With it, runs that
    completed or diverged are kept, failed ones re-run (their summary moved aside to
    ``summary.failed.json``) and interrupted ones resume from their checkpoints. A finished
    run made by other code (its summary's code fingerprint or torch differ from this
    process's, or it has no record) is stale: it is named, its folder moved aside to
    ``<sweep>/.stale/`` and the run made again, unless ``keep_stale``. Ctrl-C propagates as
    ``KeyboardInterrupt`` once the executor has stopped its runs. ``progress``: the live bar
    (True), a line per finished run (False), or by whether stderr is a terminal (None)."""
    from numerics.sweeps.executors.local import LocalExecutor

    expansion = expand(sweep, results)
    folder = Path(results) / sweep.name
    existing = existing_runs(folder)
    if existing and not resume:
        raise ResultsExistError(
            f"already holds {len(existing)} run folder(s); pass --resume to continue "
            "the sweep (finished runs are kept, failed and interrupted ones run again) or use "
            "another --results folder; nothing was touched",
            file=str(folder),
        )
    tally = Tally(len(expansion.runs), merged=len(expansion.duplicates), notes=expansion.notes)
    here = provenance()
    todo: list[RunSpec] = []
    stale: list[tuple[str, list[str]]] = []
    for spec in expansion.runs:
        rd = RunDir(spec.out)
        summary = rd.read_summary() if resume else None
        if summary is not None and summary.finished:
            why = stale_keys(summary, here)
            if not why or keep_stale:
                upgrade_config(rd.path, spec.config)  # one from before numerics.periodic
                tally.add(summary.status)
                tally.skipped += 1
                tally.kept_stale += bool(why)
                continue
            stale.append((spec.run_id, why))
            _move_aside(rd.path, folder / STALE, summary)
            todo.append(spec)
            continue
        if rd.summary.exists():  # failed (or unreadable): re-run; the checkpoint stays
            os.replace(rd.summary, rd.path / FAILED_SUMMARY)
        if resume:
            upgrade_config(rd.path, spec.config)
        todo.append(spec)
    if stale:
        names = ", ".join(r for r, _ in stale[:4]) + (", ..." if len(stale) > 4 else "")
        keys = sorted({k for _, why in stale for k in why})
        print(
            f"sweep {sweep.name}: {len(stale)} finished run(s) were made by other code "
            f"({'/'.join(keys)} differ): {names}; running them again (the old folders are in "
            f"{folder / STALE}; --keep-stale keeps them instead)",
            file=sys.stderr,
        )
        tally.notes.append(f"{len(stale)} stale run(s) made again")
    write_index(sweep, expansion, folder)
    view = Progress(sweep.name, tally.total, tally.done, terminal=progress)

    def on_done(spec: RunSpec, summary: Summary) -> None:
        tally.add(summary.status)
        view.done(spec.run_id, summary)

    try:
        (executor or LocalExecutor()).run(todo, on_done)
    finally:
        view.close()
    return tally


def _move_aside(run: Path, stale_dir: Path, summary: Summary) -> None:
    """Move a stale run folder to ``stale_dir/<run>-<its code>`` (never overwriting)."""
    code = (summary.provenance or {}).get("code") or "unrecorded"
    stale_dir.mkdir(parents=True, exist_ok=True)
    dest = stale_dir / f"{run.name}-{code}"
    n = 1
    while dest.exists():
        n += 1
        dest = stale_dir / f"{run.name}-{code}-{n}"
    os.replace(run, dest)
