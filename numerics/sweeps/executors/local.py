"""Run a sweep's runs on this machine: ``jobs`` worker processes, one run each at a time.

Each worker slot is its own single-process ``ProcessPoolExecutor`` (spawn context: a fresh
interpreter, so no forked torch/OpenMP state). One pool with ``jobs`` workers would be simpler,
but when one of its workers dies (killed, segfault, the out-of-memory killer) the pool marks
*every* pending future broken and terminates the other workers, so one bad run would take its
neighbours down with it and we could not tell which run was the culprit. With a pool per slot a
``BrokenProcessPool`` names exactly one run: it is recorded as ``failed`` (reason and exit
signal in its ``summary.json``) and the slot gets a fresh pool for the next run. A worker runs
``run_one(spec, threads)``, which sets its torch threads (``default_threads(jobs)`` unless told)
and never raises for the run's own failures.

Ctrl-C reaches the workers too (same process group). Idle workers ignore SIGINT; a worker that
is training reacts through the trainer, which saves a checkpoint at the end of its current step
and stops. The executor stops submitting, waits for the running workers to exit (no orphans or
zombies: every pool is shut down and joined), reports the runs that finished meanwhile, and
re-raises ``KeyboardInterrupt``; the interrupted runs resume from their checkpoints next time. A
second Ctrl-C stops the trainers at once (their own rule) and kills any worker still alive.

``jobs=1`` runs in this process (still through ``run_one``): no start-up cost, but a crash that
kills the interpreter ends the sweep.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from numerics.errors import UserError
from numerics.sweeps.executors.base import RunSpec, Summary, default_threads, run_one
from numerics.train.summary import RunSummary

RunFn = Callable[[RunSpec, "int | None"], Summary]


def _ignore_sigint() -> None:
    """Pool initializer: an idle worker ignores Ctrl-C (``_work`` re-enables it per run)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _work(fn: RunFn, spec: RunSpec, threads: int | None) -> Summary | None:
    """What a worker process runs: ``fn(spec, threads)``; ``None`` if Ctrl-C stopped it."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return fn(spec, threads)
    except KeyboardInterrupt:
        return None
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _how_it_died(procs: Sequence[Any]) -> str:
    codes = [p.exitcode for p in procs if p.exitcode is not None]
    if not codes:
        return "exit status unknown"
    code = codes[0]
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        oom = " (the out-of-memory killer?)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{oom}"
    return f"exit code {code}"


def record_failure(spec: RunSpec, error: str, reason: str, trace: str = "") -> Summary:
    """The run's own final summary if it wrote one, else a ``failed`` one written for it."""
    from numerics.train.rundir import RunDir

    rd = RunDir(spec.out)
    summary = rd.read_summary()
    if summary is not None:
        return summary
    summary = RunSummary.failed(error, trace, run_id=spec.run_id, reason=reason)
    rd.write_summary(summary)
    return summary


@dataclass
class _Slot:
    """One worker: its single-process pool and the run it is doing."""

    pool: ProcessPoolExecutor | None = None
    future: Future[Summary | None] | None = None
    spec: RunSpec | None = None
    procs: list[Any] = field(default_factory=list)


class LocalExecutor:
    """Runs specs in ``jobs`` worker processes (default: one per CPU core), each with
    ``threads`` torch threads (default ``default_threads(jobs)``). ``fn`` is what a worker runs
    (``run_one``; a module-level function, so that it pickles)."""

    def __init__(
        self, jobs: int | None = None, threads: int | None = None, *, fn: RunFn = run_one
    ) -> None:
        if jobs is None:
            jobs = os.cpu_count() or 1
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise UserError(f"LocalExecutor: jobs={jobs!r}; allowed: a positive integer")
        if threads is not None and (
            isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
        ):
            raise UserError(
                f"LocalExecutor: threads={threads!r}; allowed: a positive integer or null"
            )
        self.jobs = jobs
        self.threads = default_threads(jobs) if threads is None else threads
        self.fn = fn

    def run(self, specs: Sequence[RunSpec], on_done: Callable[[RunSpec, Summary], None]) -> None:
        specs = list(specs)
        if not specs:
            return
        if self.jobs == 1:
            self._run_inline(specs, on_done)
        else:
            self._run_pool(specs, on_done)

    # --- jobs == 1: in this process ------------------------------------------------------------
    def _run_inline(
        self, specs: list[RunSpec], on_done: Callable[[RunSpec, Summary], None]
    ) -> None:
        import torch

        before = torch.get_num_threads()
        try:
            for spec in specs:
                on_done(spec, self.fn(spec, self.threads))
        finally:
            torch.set_num_threads(before)

    # --- jobs > 1: worker processes ------------------------------------------------------------
    def _submit(self, slot: _Slot, spec: RunSpec) -> None:
        if slot.pool is None:
            slot.pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_ignore_sigint,
            )
        slot.future = slot.pool.submit(_work, self.fn, spec, self.threads)
        slot.spec = spec
        # the worker is started by submit; keep its handle to read its exit code if it dies
        slot.procs = list(getattr(slot.pool, "_processes", {}).values())

    def _collect(self, slot: _Slot, interrupted: bool = False) -> Summary | None:
        """The finished run's summary (``None``: it was interrupted); frees the slot."""
        fut, spec = slot.future, slot.spec
        assert fut is not None and spec is not None
        slot.future = slot.spec = None
        try:
            return fut.result()
        except BrokenProcessPool as exc:
            assert slot.pool is not None
            slot.pool.shutdown(wait=True)  # joins the dead worker: no zombie
            slot.pool = None  # the next run gets a fresh one
            if interrupted:
                return None
            how = _how_it_died(slot.procs)
            reason = f"the worker process running it died ({how})"
            return record_failure(spec, f"BrokenProcessPool: {exc}", reason)
        except Exception as exc:  # run_one never raises: the worker could not run it at all
            trace = traceback.format_exc()
            return record_failure(spec, f"{type(exc).__name__}: {exc}", "worker error", trace)

    def _run_pool(self, specs: list[RunSpec], on_done: Callable[[RunSpec, Summary], None]) -> None:
        queue = deque(specs)
        slots = [_Slot() for _ in range(min(self.jobs, len(specs)))]
        try:
            for slot in slots:
                self._submit(slot, queue.popleft())
            while busy := {s.future: s for s in slots if s.future is not None}:
                done, _ = wait(busy, return_when=FIRST_COMPLETED)
                for fut in done:
                    slot = busy[fut]
                    spec = slot.spec
                    summary = self._collect(slot)
                    if summary is not None and spec is not None:
                        on_done(spec, summary)
                    if queue:
                        self._submit(slot, queue.popleft())
        except KeyboardInterrupt:
            queue.clear()
            self._drain(slots, on_done)
            raise
        finally:
            for slot in slots:
                if slot.pool is not None:
                    slot.pool.shutdown(wait=True, cancel_futures=True)

    def _drain(self, slots: list[_Slot], on_done: Callable[[RunSpec, Summary], None]) -> None:
        """After Ctrl-C: wait for the running workers to stop (they got the SIGINT too)."""
        while busy := {s.future: s for s in slots if s.future is not None}:
            try:
                done, _ = wait(busy, return_when=FIRST_COMPLETED)
            except KeyboardInterrupt:  # a second Ctrl-C: stop at once
                for slot in busy.values():
                    for p in slot.procs:
                        if p.is_alive():
                            p.kill()
                continue
            for fut in done:
                slot = busy[fut]
                spec = slot.spec
                summary = self._collect(slot, interrupted=True)
                if summary is not None and spec is not None:
                    on_done(spec, summary)
