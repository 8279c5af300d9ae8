"""Run a sweep's runs as Slurm jobs through submitit (or submitit's local / debug executors).

Each run is one submitit job that calls ``fn(spec, threads)`` (``run_one``): submitit pickles the
call into ``folder``, the job unpickles and runs it on a compute node with this interpreter
(``sys.executable``: the cluster's nodes must see the same venv and the same results folder,
which on Slurm means a shared filesystem), and pickles the summary back. The driver polls
``job.done()`` and calls ``on_done`` as each run ends.

Options. ``**slurm_options`` go to submitit's ``update_parameters`` unchanged: its generic names
(``timeout_min``, ``mem_gb``, ``cpus_per_task``, ``gpus_per_node``, ``nodes``, ``tasks_per_node``,
``name``) and cluster-specific ones with the cluster's prefix (``slurm_partition``,
``slurm_account``, ``slurm_qos``, ``slurm_constraint``, ``slurm_setup``,
``slurm_additional_parameters``, ...; a ``slurm_*`` option is ignored by the local executor, so a
sweep file written for Slurm can be tried locally). ``threads`` becomes ``cpus_per_task`` unless
that is given, and torch uses ``threads`` (else ``cpus_per_task``) threads. Set ``timeout_min``:
submitit's default kills a job after 5 minutes on Slurm (2 on the local executor).

Scheduling. On Slurm all runs go in one job array (``executor.batch()``: one ``sbatch``), with
``jobs`` as the array's parallelism (``--array=0-N%jobs``; default: all at once). The local
executor starts every job it is given at once, so there the driver submits ``jobs`` at a time
(default: all) and the next as each ends. ``cluster="debug"`` runs the jobs one by one in this
process (submitit's debugger mode: a crash there ends the sweep).

Failures. ``run_one`` never raises for a run's own failure, so a job without a result was lost
outside it: killed (``scancel``, time limit, out of memory, node failure) or unable to start
(``numerics`` not importable on the node). That run gets a ``failed`` summary.json (written by
the driver with ``record_failure``, as the local executor does) naming the job and its log
files, and the sweep goes on; ``numerics sweep --resume`` re-runs it from its last checkpoint.

Ctrl-C cancels every job still queued or running (``job.cancel()``: ``scancel``, or SIGINT to a
local job; a trainer that gets SIGINT/SIGTERM saves a checkpoint at the end of its step) and
re-raises; runs that finished before stay as they are.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import submitit
from submitit.core.utils import FailedJobError

from numerics.errors import UserError
from numerics.sweeps.executors.base import RunSpec, Summary, run_one
from numerics.sweeps.executors.local import record_failure
from numerics.train.summary import RunSummary

RunFn = Callable[[RunSpec, "int | None"], Summary]
CLUSTERS = (None, "slurm", "local", "debug")


def _positive_int(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise UserError(f"SlurmExecutor: {name}={value!r}; allowed: a positive integer or null")


class SlurmExecutor:
    """Runs specs as submitit jobs logged under ``folder``. ``cluster``: ``None`` (submitit
    picks: Slurm where ``srun`` exists, else local), ``"slurm"``, ``"local"`` (subprocesses on
    this machine) or ``"debug"`` (in this process). ``poll_s``: seconds between status checks
    (default 0.2 locally, 10 on Slurm). ``fn`` is what a job runs (``run_one``)."""

    def __init__(
        self,
        folder: str,
        jobs: int | None = None,
        threads: int | None = None,
        cluster: str | None = None,
        *,
        poll_s: float | None = None,
        fn: RunFn = run_one,
        **slurm_options: Any,
    ) -> None:
        if not isinstance(folder, str | os.PathLike) or not str(folder):
            raise UserError(f"SlurmExecutor: folder={folder!r}; allowed: a folder for job logs")
        _positive_int("jobs", jobs)
        _positive_int("threads", threads)
        if cluster not in CLUSTERS:
            raise UserError(
                f"SlurmExecutor: cluster={cluster!r}; allowed: null (auto), slurm, local, debug"
            )
        if poll_s is not None and (not isinstance(poll_s, int | float) or poll_s <= 0):
            raise UserError(f"SlurmExecutor: poll_s={poll_s!r}; allowed: a number > 0 or null")
        if not callable(fn):
            raise UserError(f"SlurmExecutor: fn={fn!r}; allowed: a function (spec, threads)")
        try:
            self.executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
        except (RuntimeError, ValueError) as exc:  # e.g. "slurm" where there is no srun
            raise UserError(f"SlurmExecutor: cluster={cluster!r}: {exc}") from None
        self.cluster: str = self.executor.cluster
        self.jobs = jobs
        self.fn = fn
        self.poll_s = poll_s if poll_s is not None else (10.0 if self.cluster == "slurm" else 0.2)
        for key in ("nodes", "tasks_per_node", "slurm_nodes", "slurm_ntasks_per_node"):
            if slurm_options.get(key, 1) != 1:
                raise UserError(
                    f"SlurmExecutor: {key}={slurm_options[key]!r}; allowed: 1 (a job is one "
                    "process training one run; more would write the same run directory at once)"
                )
        options = {"name": "numerics", **slurm_options}
        if threads is not None:
            options.setdefault("cpus_per_task", threads)
        self.threads: int | None = threads if threads is not None else options.get("cpus_per_task")
        self._own_parallelism = "slurm_array_parallelism" not in options
        self._update(options)
        self.options = options

    def _update(self, options: dict[str, Any]) -> None:
        try:
            self.executor.update_parameters(**options)
        except (AssertionError, NameError, TypeError, ValueError) as exc:
            raise UserError(f"SlurmExecutor: bad executor option(s): {exc}") from None

    def run(self, specs: Sequence[RunSpec], on_done: Callable[[RunSpec, Summary], None]) -> None:
        specs = list(specs)
        if not specs:
            return
        if self.cluster == "slurm":  # one array; Slurm holds back all but ``jobs`` of it
            if self._own_parallelism:
                self._update({"slurm_array_parallelism": self.jobs or len(specs)})
            window = len(specs)
        else:
            window = self.jobs or len(specs)
        queue = deque(specs)
        inflight: list[tuple[Any, RunSpec]] = []
        try:
            while queue or inflight:
                if queue and len(inflight) < window:
                    n = min(window - len(inflight), len(queue))
                    batch = [queue.popleft() for _ in range(n)]
                    inflight.extend(zip(self._submit(batch), batch, strict=True))
                finished = [(job, spec) for job, spec in inflight if job.done()]
                for job, spec in finished:
                    inflight.remove((job, spec))
                    on_done(spec, self._result(job, spec))
                if not finished:
                    time.sleep(self.poll_s)
        except KeyboardInterrupt:
            queue.clear()
            for job, _ in inflight:
                job.cancel(check=False)
            raise

    def _submit(self, batch: list[RunSpec]) -> list[Any]:
        """One job per spec; several at once go in one submission (a Slurm job array)."""
        if len(batch) == 1:
            return [self.executor.submit(self.fn, batch[0], self.threads)]
        with self.executor.batch():
            jobs = [self.executor.submit(self.fn, spec, self.threads) for spec in batch]
        return jobs

    def _result(self, job: Any, spec: RunSpec) -> Summary:
        """The job's summary, or a ``failed`` one written for a job that ended without one."""
        where = f"the {self.cluster} job {job.job_id}"
        if self.cluster == "local" and not job.paths.result_pickle.exists():
            # local files show up at once: no need for submitit's 15 s wait for a shared FS
            return record_failure(
                spec,
                f"JobDied: {where} ended without a result",
                f"its process was killed or died (log: {job.paths.stderr})",
            )
        try:
            summary = job.result()
        except Exception as exc:  # UncompletedJobError (killed), FailedJobError (raised)
            lines = str(exc).strip().splitlines()
            error = f"{type(exc).__name__}: {lines[0] if lines else ''}"
            if isinstance(exc, FailedJobError):
                reason = f"{where} raised outside run_one (log: {job.paths.stderr})"
            else:
                reason = (
                    f"{where} ended without a result: killed, timed out (timeout_min), out of "
                    f"memory, or could not start (log: {job.paths.stderr})"
                )
            return record_failure(spec, error, reason, trace=str(exc))
        if not isinstance(summary, RunSummary):
            return record_failure(
                spec, f"TypeError: {where} returned {type(summary).__name__}", "not a summary"
            )
        return summary
