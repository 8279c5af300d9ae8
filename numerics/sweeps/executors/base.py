"""What every sweep executor runs: one ``RunSpec`` at a time through ``run_one``.

A sweep expands into ``RunSpec``s (a run id, its run directory and its fully resolved recipe;
for an evaluation sweep also the trained run it evaluates).
An executor (local processes, Ray, Slurm via submitit) only decides *where* ``run_one`` runs;
``run_one`` never raises: a run that fails (exception, divergence, out of memory) is recorded
in its own ``summary.json`` with its traceback and reported back as a summary, so one bad run
never stops a sweep. Runs are resumed where their run directory holds a checkpoint, and a run
that already finished is returned as it is, so re-running a sweep re-does only what is left.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from numerics.train.summary import RunSummary

Summary = RunSummary


@dataclass(frozen=True)
class Evaluation:
    """What an evaluation job evaluates: the trained run directory, and how many of its
    training batches calibrate the activation scales (0: none; ``numerics.nn.calibration``)."""

    run: str
    calibrate: int = 0
    pvf: dict[str, Any] | None = None  # numerics.train.pvf.Study's fields: a PVF study instead


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep. ``config`` is ``Recipe.to_dict()``; ``params`` the swept values;
    ``evaluates`` what an evaluation job evaluates under ``config`` (None: a training run)."""

    run_id: str
    out: str
    config: dict[str, Any]
    source: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    sweep: str | None = None
    evaluates: Evaluation | None = None


def run_one(spec: RunSpec, threads: int | None = None) -> Summary:
    """Train ``spec`` (resuming whatever its folder holds), or evaluate the trained run it
    names; never raises for the run's own failures: returns the summary, ``status: failed``
    with the traceback if it crashed."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    from numerics.train import recipe as recipes
    from numerics.train.rundir import RunDir
    from numerics.train.trainer import train

    try:
        if spec.evaluates is not None:
            from numerics.train.evaluate import run_evaluation

            ev = spec.evaluates
            if ev.pvf is not None:
                from numerics.train.pvf import Study, run_pvf

                return run_pvf(ev.run, spec.config, spec.out, Study.from_dict(ev.pvf))
            return run_evaluation(ev.run, spec.config, spec.out, calibrate=ev.calibrate)
        rec = recipes.from_dict(spec.config, source=spec.source)
        return train(rec, spec.out, resume=True, progress=False)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # MemoryError, SystemExit from a library, ...
        summary = RunDir(spec.out).read_summary()
        if summary is None or summary.status != "failed":
            summary = RunSummary.failed(exc, traceback.format_exc(), run_id=spec.run_id)
            RunDir(spec.out).write_summary(summary)
        return summary


def default_threads(jobs: int) -> int:
    """Torch threads per worker when ``jobs`` workers share the machine's cores."""
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


class Executor(Protocol):
    """Runs specs and calls ``on_done(spec, summary)`` once per spec, as each finishes (in any
    order). Ctrl-C stops it: finished runs stay intact, unfinished ones resume next time."""

    def run(
        self, specs: Sequence[RunSpec], on_done: Callable[[RunSpec, Summary], None]
    ) -> None: ...
