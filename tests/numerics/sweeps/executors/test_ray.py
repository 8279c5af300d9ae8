"""The Ray executor against a real two-node Ray cluster on this machine.

The fixture starts a head node on 127.0.0.2 and a worker node on 127.0.0.3 with the venv's
``ray`` CLI (each node offers one CPU, so two runs in flight must land on both nodes), with token
authentication (``RAY_AUTH_MODE=token`` and a fresh ``RAY_AUTH_TOKEN``: Ray 2.5x+ asks for it),
no dashboard, no usage stats, free ports and its own short ``--temp-dir``. 127.0.0.1 is avoided on
purpose: Ray rewrites it to the machine's address. Each ``ray start`` runs in a new session, so
teardown ends exactly the processes it started (its process groups), never other Ray clusters
on the machine, which ``ray stop`` would. If the cluster cannot start, the cluster tests skip
with Ray's own output as the reason.

Stand-in run functions (closures, so that Ray pickles them by value: no need for the workers to
import this test module) play the crashed worker and the long run that Ctrl-C cancels; the first
test runs the real ``run_one``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from numerics.sweeps.executors.base import RunSpec, Summary, run_one
from numerics.train.summary import RunSummary

ray = pytest.importorskip("ray")

from numerics.sweeps.executors.ray_executor import RayExecutor  # noqa: E402
from tests.smallrun import collect, tiny_config  # noqa: E402

RAY_CLI = str(Path(sys.executable).with_name("ray"))
HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
START_TIMEOUT_S = 90


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _stop(groups: list[int]) -> None:
    """SIGTERM the process groups we started, then SIGKILL what is left (GCS ignores TERM)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
        if sig == signal.SIGTERM:
            time.sleep(2.0)


def _reload_auth() -> None:
    """Make this process (already running, ray imported) see the RAY_AUTH_* it now has, as Ray's
    own ``_enable_token_auth`` does; a user's shell exports them before starting the driver."""
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """``HOST:PORT`` of a fresh two-node cluster; the auth env is set for this process too."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths live in it
    common = [
        "--num-cpus=1",
        f"--temp-dir={temp}",
        "--disable-usage-stats",
        "--object-store-memory=100000000",
        "--min-worker-port=0",  # random worker ports, not the shared 10002-19999 default
        "--max-worker-port=0",
    ]
    groups: list[int] = []
    try:
        port = free_port(HEAD_IP)
        head = [
            RAY_CLI, "start", "--head", f"--node-ip-address={HEAD_IP}", f"--port={port}",
            "--include-dashboard=false", f"--dashboard-port={free_port('127.0.0.1')}",
            f"--ray-client-server-port={free_port(HEAD_IP)}",
            f"--dashboard-agent-listen-port={free_port(HEAD_IP)}", *common,
        ]  # fmt: skip
        worker = [
            RAY_CLI, "start", f"--address={HEAD_IP}:{port}", f"--node-ip-address={WORKER_IP}",
            f"--dashboard-agent-listen-port={free_port(WORKER_IP)}", *common,
        ]  # fmt: skip
        for cmd in (head, worker):
            proc = subprocess.Popen(
                cmd, env=env, cwd=temp, start_new_session=True, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )  # fmt: skip
            groups.append(proc.pid)  # session leader: its pid is the group of all it starts
            try:
                out, _ = proc.communicate(timeout=START_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            if proc.returncode != 0:
                pytest.skip(f"could not start a Ray node ({' '.join(cmd[1:4])}): {out[-1500:]}")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("RAY_AUTH_MODE", "token")
            mp.setenv("RAY_AUTH_TOKEN", env["RAY_AUTH_TOKEN"])
            _reload_auth()
            yield f"{HEAD_IP}:{port}"
        _reload_auth()
    except OSError as exc:  # no 127.0.0.2/3 (not Linux loopback), no ray CLI
        pytest.skip(f"could not start a Ray cluster: {exc}")
    finally:
        if ray.is_initialized():
            ray.shutdown()
        _stop(groups)
        shutil.rmtree(temp, ignore_errors=True)


def test_two_runs_train_on_the_cluster(cluster: str, tmp_path: Path) -> None:
    cfg = tiny_config()
    specs = [RunSpec(f"r{i}", str(tmp_path / f"r{i}"), cfg) for i in range(2)]
    done = collect(RayExecutor(address=cluster), specs)
    assert sorted(done) == ["r0", "r1"]
    for spec in specs:
        on_disk = json.loads((Path(spec.out) / "summary.json").read_text())
        assert done[spec.run_id].status == on_disk["status"] == "completed"
        assert on_disk["steps"] == 3
        assert (Path(spec.out) / "config.yaml").is_file()
        assert (Path(spec.out) / "metrics.jsonl").stat().st_size > 0
    assert not ray.is_initialized()  # run() connected, so run() disconnected


def test_runs_spread_over_both_nodes_and_a_crashed_worker_fails_only_its_run(
    cluster: str, tmp_path: Path
) -> None:
    def stand_in(spec: RunSpec, threads: int | None) -> Summary:
        out = Path(spec.out)
        out.mkdir(parents=True, exist_ok=True)
        with (out / "attempts").open("a") as f:  # one line per attempt: no silent retry
            f.write(f"{ray.util.get_node_ip_address()} {time.time()}\n")
        if spec.run_id == "crash":
            os._exit(3)  # the worker process dies: nothing run_one could catch
        time.sleep(3.0)  # long enough that both runs are in flight together
        return RunSummary(status="completed", extra={"threads": threads})

    specs = [RunSpec(r, str(tmp_path / r), {}) for r in ("crash", "ok")]
    ray.init(address=cluster)  # a session the caller opened stays open
    try:
        ex = RayExecutor(fn=stand_in)
        assert ex.cluster_jobs() == 2  # two nodes x one CPU / one CPU per run
        done = collect(ex, specs)
        assert ray.is_initialized()
    finally:
        ray.shutdown()
    assert done["ok"].status == "completed" and done["ok"].extra == {
        "threads": 1
    }  # threads = CPUs per run
    failed = json.loads((tmp_path / "crash" / "summary.json").read_text())
    assert done["crash"].to_dict() == failed
    assert failed["status"] == "failed" and failed["run_id"] == "crash"
    assert failed["error"].startswith("WorkerCrashedError")
    attempts = [(tmp_path / r / "attempts").read_text().split() for r in ("crash", "ok")]
    assert [len(a) for a in attempts] == [2, 2]  # one attempt each (max_retries=0)
    assert {attempts[0][0], attempts[1][0]} == {HEAD_IP, WORKER_IP}  # one run per node


def test_ctrl_c_cancels_the_running_task(cluster: str, tmp_path: Path) -> None:
    def stand_in(spec: RunSpec, threads: int | None) -> Summary:
        out = Path(spec.out)
        out.mkdir(parents=True, exist_ok=True)
        if spec.run_id == "long":
            (out / "started").touch()
            for _ in range(200):  # 20 s in short steps, like a training loop: ray.cancel's
                time.sleep(0.1)  # KeyboardInterrupt lands between bytecodes, not in a sleep
            (out / "finished").touch()
            return RunSummary(status="completed")
        started = out.parent / "long" / "started"
        for _ in range(200):  # finish only once the long run is running
            if started.exists():
                break
            time.sleep(0.1)
        return run_one(spec, threads)

    specs = [
        RunSpec("long", str(tmp_path / "long"), {}),
        RunSpec("short", str(tmp_path / "short"), tiny_config()),
    ]
    seen: list[str] = []

    def on_done(spec: RunSpec, summary: Summary) -> None:
        seen.append(spec.run_id)
        raise KeyboardInterrupt  # Ctrl-C while the long run is running

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        RayExecutor(address=cluster, fn=stand_in).run(specs, on_done)
    elapsed = time.monotonic() - t0
    assert seen == ["short"]
    assert (tmp_path / "long" / "started").exists()
    # the driver waits for cancelled tasks to end: had the cancel not reached it, run() would
    # have waited out the 20 s sleep and the marker would be there
    assert not (tmp_path / "long" / "finished").exists()
    assert elapsed < 18.0
    assert not (tmp_path / "long" / "summary.json").exists()  # not marked failed: it resumes
    assert not ray.is_initialized()


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"jobs": 0}, "jobs"),
        ({"threads": -1}, "threads"),
        ({"num_cpus_per_run": 0}, "num_cpus_per_run"),
        ({"address": ""}, "address"),
        ({"max_retries": -2}, "max_retries"),
        ({"fn": "run_one"}, "fn"),
    ],
)
def test_bad_options_are_named(kwargs: dict[str, object], word: str) -> None:
    with pytest.raises(ValueError, match=word):
        RayExecutor(**kwargs)  # type: ignore[arg-type]
