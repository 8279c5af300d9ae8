"""The local executor with stand-in run functions (no training): parallel workers, a worker that
dies, an exception, the in-process path, and Ctrl-C reaching the workers.

The stand-ins are module-level so that spawned workers can import them from this module.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from numerics.sweeps.executors.base import RunSpec, Summary, default_threads
from numerics.sweeps.executors.local import LocalExecutor
from numerics.train.summary import RunSummary
from tests.smallrun import collect

ROOT = Path(__file__).resolve().parents[4]


def fake_run(spec: RunSpec, threads: int | None) -> Summary:
    """Sleeps a little, or dies the way ``spec.params['how']`` says."""
    how = spec.params.get("how")
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "wrote-then-exit":  # finished its summary, then the process died on the way out
        Path(spec.out).mkdir(parents=True)
        (Path(spec.out) / "summary.json").write_text(json.dumps({"status": "diverged"}))
        os._exit(3)
    if how == "raise":
        raise RuntimeError("not a run_one: raised")
    time.sleep(spec.params.get("sleep", 0.3))
    return RunSummary(status="completed", extra={"pid": os.getpid(), "threads": threads})


def sleeper(spec: RunSpec, threads: int | None) -> Summary:
    """Runs ~30 s unless Ctrl-C stops it; notes its pid, and that it stopped cleanly."""
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pid").write_text(str(os.getpid()))
    try:
        for _ in range(300):
            time.sleep(0.1)
    except KeyboardInterrupt:
        (out / "stopped").write_text("saved a checkpoint")
        raise
    return RunSummary(status="completed")


def specs(tmp_path: Path, params: list[dict[str, Any]]) -> list[RunSpec]:
    return [RunSpec(f"r{i}", str(tmp_path / f"r{i}"), {}, params=p) for i, p in enumerate(params)]


def test_runs_every_spec_across_worker_processes(tmp_path: Path) -> None:
    ex = LocalExecutor(jobs=2, fn=fake_run)
    assert ex.threads == default_threads(2) == max(1, (os.cpu_count() or 1) // 2)
    done = collect(ex, specs(tmp_path, [{"sleep": 0.5}] * 4))
    assert sorted(done) == ["r0", "r1", "r2", "r3"]
    pids = {s.extra["pid"] for s in done.values()}
    assert len(pids) == 2 and os.getpid() not in pids  # two workers, neither this process
    assert {s.extra["threads"] for s in done.values()} == {ex.threads}


def test_a_dead_worker_fails_only_its_own_run(tmp_path: Path) -> None:
    runs = specs(
        tmp_path,
        [{"how": "sigkill"}, {"sleep": 1.0}, {"how": "wrote-then-exit"}, {"how": "raise"}, {}],
    )
    done = collect(LocalExecutor(jobs=2, fn=fake_run), runs)
    assert sorted(done) == ["r0", "r1", "r2", "r3", "r4"]  # the sweep went on
    killed = json.loads((tmp_path / "r0" / "summary.json").read_text())
    assert done["r0"].to_dict() == killed and killed["status"] == "failed"
    assert "SIGKILL" in killed["reason"] and "BrokenProcessPool" in killed["error"]
    assert done["r1"].status == done["r4"].status == "completed"  # the neighbour lived
    assert done["r2"].status == "diverged"  # it wrote its own summary: kept
    raised = json.loads((tmp_path / "r3" / "summary.json").read_text())
    assert raised["status"] == "failed" and "RuntimeError: not a run_one" in raised["error"]
    assert "Traceback" in raised["traceback"]


def test_one_job_runs_in_this_process(tmp_path: Path) -> None:
    import torch

    before = torch.get_num_threads()
    done = collect(LocalExecutor(jobs=1, threads=1, fn=fake_run), specs(tmp_path, [{}, {}]))
    assert [s.extra["pid"] for s in done.values()] == [os.getpid()] * 2
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"jobs": 0}, "jobs=0; allowed: a positive integer"),
     ({"jobs": 2, "threads": 0}, "threads=0; allowed: a positive integer or null")],
)  # fmt: skip
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LocalExecutor(**kwargs)


def test_ctrl_c_stops_the_workers_and_reraises(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from numerics.sweeps.executors.base import RunSpec
        from numerics.sweeps.executors.local import LocalExecutor
        from tests.numerics.sweeps.executors.test_local import sleeper
        root = Path({str(tmp_path)!r})
        runs = [RunSpec(f"r{{i}}", str(root / f"r{{i}}"), {{}}) for i in range(4)]
        try:
            LocalExecutor(jobs=2, fn=sleeper).run(runs, lambda s, m: print("done", s.run_id))
        except KeyboardInterrupt:
            print("KeyboardInterrupt", flush=True)
            sys.exit(130)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / r / "pid").exists() for r in ("r0", "r1")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        pids = [int((tmp_path / r / "pid").read_text()) for r in ("r0", "r1")]
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130 and out.strip() == "KeyboardInterrupt", (out, err)
    for r in ("r0", "r1"):
        assert (tmp_path / r / "stopped").exists()  # the run saved before stopping
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()  # not submitted
    for pid in pids:  # no worker left behind
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
