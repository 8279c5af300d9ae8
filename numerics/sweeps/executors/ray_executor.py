"""Run a sweep's runs as Ray tasks: on an existing Ray cluster, or on a Ray started here.

Each run is one Ray task, ``fn(spec, threads)`` (``run_one``), that asks the scheduler for
``num_cpus_per_run`` CPUs and sets ``threads`` torch threads (default: those CPUs, at least
one). At most ``jobs`` tasks are in flight (default: the cluster's CPUs / ``num_cpus_per_run``,
counted when the sweep starts; pass ``jobs`` on an autoscaling cluster, whose CPU count grows
later); as each ends (``ray.wait``) the next is submitted, so the driver holds a small window
instead of queueing thousands of tasks at once.

Where the runs live. A task writes its run directory at ``spec.out`` *on the node that runs
it*; the driver reads and writes summaries at the same path. On a multi-node cluster the
results folder must therefore be on a filesystem every node shares (as on Slurm).

What the workers import. A task is ``run_one`` pickled by reference, so a worker must be able to
``import numerics``. Ray starts its workers with the Python of the node's ``ray start``; if that
is this project's venv (``numerics`` installed editable, ``pip install -e .``), nothing else is
needed. Otherwise ship the package with ``runtime_env={"py_modules": [...]}`` or
``{"working_dir": ...}`` through ``**init_options`` (they go to ``ray.init``).

Failures. ``run_one`` never raises for a run's own failure, so a Ray exception means the task
itself was lost: its worker process died (killed, segfault, out of memory: Ray's memory monitor
raises ``OutOfMemoryError``), its node died, or the task could not start (``numerics`` not
importable). That run gets a ``failed`` summary.json naming the Ray error, written by the driver
(``record_failure``, as the local executor does), and the sweep goes on. ``max_retries`` (default
0) is Ray's retry count for tasks whose worker died: a run that crashed its worker once is
likely to do it again, but on preemptible nodes a retry resumes from the run's checkpoint.

Ctrl-C. The outstanding tasks are cancelled (``ray.cancel``): a queued one never starts, a
running one gets ``KeyboardInterrupt``, which the trainer answers by saving a checkpoint at the
end of its current step. The driver waits up to ``cancel_grace_s`` for them to stop (a second
Ctrl-C stops waiting), reports runs that finished meanwhile, force-kills what is left, and
re-raises. Ray is shut down only if ``run`` called ``ray.init`` (for a cluster at ``address`` that
only disconnects this driver); a Ray session the caller opened is left as it is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import ray
import ray.exceptions as rex

from numerics.errors import UserError
from numerics.sweeps.executors.base import RunSpec, Summary, run_one
from numerics.sweeps.executors.local import record_failure
from numerics.train.summary import RunSummary

RunFn = Callable[[RunSpec, "int | None"], Summary]

# what each Ray error means for the run, most specific first (all derive from RayError)
_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (rex.OutOfMemoryError, "Ray's memory monitor killed its worker (out of memory)"),
    (rex.WorkerCrashedError, "the Ray worker process running it died (killed, segfault, OOM?)"),
    (rex.NodeDiedError, "the Ray node running it died"),
    (rex.TaskCancelledError, "its Ray task was cancelled"),
    (rex.RayTaskError, "its Ray task raised before or outside run_one"),
    (rex.RayError, "Ray lost its task"),
)


def _positive_int(name: str, value: Any, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        none = " or null" if allow_none else ""
        raise UserError(f"RayExecutor: {name}={value!r}; allowed: a positive integer{none}")


class RayExecutor:
    """Runs specs as Ray tasks on the cluster at ``address`` (``None``: start a local Ray).
    ``**init_options`` go to ``ray.init`` (``runtime_env``, ``namespace``, ``num_cpus`` of a
    local Ray, ...). ``fn`` is what a task runs (``run_one``)."""

    def __init__(
        self,
        address: str | None = None,
        jobs: int | None = None,
        threads: int | None = None,
        num_cpus_per_run: float = 1.0,
        *,
        max_retries: int = 0,
        cancel_grace_s: float = 30.0,
        fn: RunFn = run_one,
        **init_options: Any,
    ) -> None:
        if address is not None and (not isinstance(address, str) or not address):
            raise UserError(
                f"RayExecutor: address={address!r}; allowed: HOST:PORT, ray://HOST:PORT, 'auto' "
                "or null (start a local Ray)"
            )
        _positive_int("jobs", jobs)
        _positive_int("threads", threads)
        if (
            isinstance(num_cpus_per_run, bool)
            or not isinstance(num_cpus_per_run, int | float)
            or not num_cpus_per_run > 0
        ):
            raise UserError(
                f"RayExecutor: num_cpus_per_run={num_cpus_per_run!r}; allowed: a number > 0"
            )
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < -1:
            raise UserError(
                f"RayExecutor: max_retries={max_retries!r}; allowed: an integer >= 0 (-1: forever)"
            )
        if not isinstance(cancel_grace_s, int | float) or cancel_grace_s < 0:
            raise UserError(f"RayExecutor: cancel_grace_s={cancel_grace_s!r}; allowed: >= 0")
        if not callable(fn):
            raise UserError(f"RayExecutor: fn={fn!r}; allowed: a function (spec, threads)")
        self.address = address
        self.jobs = jobs
        self.num_cpus_per_run = float(num_cpus_per_run)
        self.threads = threads if threads is not None else max(1, int(num_cpus_per_run))
        self.max_retries = max_retries
        self.cancel_grace_s = float(cancel_grace_s)
        self.fn = fn
        self.init_options = init_options

    def run(self, specs: Sequence[RunSpec], on_done: Callable[[RunSpec, Summary], None]) -> None:
        specs = list(specs)
        if not specs:
            return
        connected_here = not ray.is_initialized()
        if connected_here:
            ray.init(address=self.address, **self.init_options)
        try:
            self._run(specs, on_done)
        finally:
            if connected_here:
                ray.shutdown()

    def cluster_jobs(self) -> int:
        """Runs that fit on the connected cluster at once: its CPUs / ``num_cpus_per_run``."""
        cpus = float(ray.cluster_resources().get("CPU", 0.0))
        return max(1, int(cpus / self.num_cpus_per_run + 1e-9))

    def _run(self, specs: list[RunSpec], on_done: Callable[[RunSpec, Summary], None]) -> None:
        task = ray.remote(self.fn).options(
            num_cpus=self.num_cpus_per_run, max_retries=self.max_retries, name="numerics-run"
        )
        jobs = self.jobs or self.cluster_jobs()
        queue = deque(specs)
        inflight: dict[ray.ObjectRef, RunSpec] = {}
        try:
            while queue or inflight:
                while queue and len(inflight) < jobs:
                    spec = queue.popleft()
                    inflight[task.remote(spec, self.threads)] = spec
                done, _ = ray.wait(list(inflight), num_returns=1)
                for ref in done:
                    spec = inflight.pop(ref)
                    on_done(spec, self._result(ref, spec))
        except KeyboardInterrupt:
            queue.clear()
            self._cancel(inflight, on_done)
            raise

    def _result(self, ref: ray.ObjectRef, spec: RunSpec) -> Summary:
        """The task's summary, or a ``failed`` one written for a task Ray lost."""
        try:
            summary = ray.get(ref)
        except rex.RayError as exc:
            reason = next(r for t, r in _REASONS if isinstance(exc, t))
            head = str(exc).strip().splitlines()
            error = f"{type(exc).__name__}: {head[0] if head else ''}"
            return record_failure(spec, error, reason, trace=str(exc))
        if not isinstance(summary, RunSummary):
            return record_failure(
                spec, f"TypeError: the task returned {type(summary).__name__}", "not a summary"
            )
        return summary

    def _cancel(
        self, inflight: dict[ray.ObjectRef, RunSpec], on_done: Callable[[RunSpec, Summary], None]
    ) -> None:
        """After Ctrl-C: cancel every task, let running trainers checkpoint, report finishers."""
        if not inflight:
            return
        for ref in inflight:
            ray.cancel(ref)
        try:
            ready, _ = ray.wait(
                list(inflight), num_returns=len(inflight), timeout=self.cancel_grace_s
            )
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
            ready = []
        for ref in ready:
            spec = inflight.pop(ref)
            try:
                summary = ray.get(ref)
            except rex.RayError:  # cancelled: it resumes from its checkpoint next time
                continue
            on_done(spec, summary)
        for ref in inflight:
            ray.cancel(ref, force=True)
