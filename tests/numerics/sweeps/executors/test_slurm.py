"""The submitit executor: submitit's local executor (real subprocess jobs), its in-process debug
executor, and its Slurm executor against stand-in ``sbatch``/``srun``/``sacct``/``scancel``
commands that run the submitted job array on this machine the way Slurm would (one process per
array task, with Slurm's environment variables and ``%A_%a`` log names).

Stand-in run functions are closures, so submitit's cloudpickle ships them by value; the first
test trains for real through ``run_one``.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from numerics.sweeps.executors.base import RunSpec, Summary
from numerics.train.summary import RunSummary

pytest.importorskip("submitit")

from numerics.sweeps.executors.slurm import SlurmExecutor
from tests.smallrun import collect, tiny_config


def alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by its parent, counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_local_jobs_train_two_runs(tmp_path: Path) -> None:
    cfg = tiny_config()
    specs = [RunSpec(f"r{i}", str(tmp_path / "runs" / f"r{i}"), cfg) for i in range(2)]
    ex = SlurmExecutor(str(tmp_path / "jobs"), cluster="local", timeout_min=5)
    done = collect(ex, specs)
    assert sorted(done) == ["r0", "r1"]
    for spec in specs:
        on_disk = json.loads((Path(spec.out) / "summary.json").read_text())
        assert done[spec.run_id].status == on_disk["status"] == "completed"
        assert on_disk["steps"] == 3
        assert (Path(spec.out) / "metrics.jsonl").stat().st_size > 0
    assert len(list((tmp_path / "jobs").glob("*_result.pkl"))) == 2  # one submitit job each


def test_a_killed_job_fails_only_its_run(tmp_path: Path) -> None:
    def stand_in(spec: RunSpec, threads: int | None) -> Summary:
        if spec.run_id == "die":
            os._exit(3)  # the job's process dies: nothing run_one could catch
        time.sleep(1.0)
        return RunSummary(status="completed", extra={"threads": threads, "pid": os.getpid()})

    specs = [RunSpec(r, str(tmp_path / r), {}) for r in ("die", "ok")]
    ex = SlurmExecutor(str(tmp_path / "jobs"), threads=2, cluster="local", fn=stand_in)
    done = collect(ex, specs)
    assert done["ok"].status == "completed" and done["ok"].extra["threads"] == 2
    assert done["ok"].extra["pid"] != os.getpid()  # ran in a job process
    failed = json.loads((tmp_path / "die" / "summary.json").read_text())
    assert done["die"].to_dict() == failed
    assert failed["status"] == "failed" and failed["run_id"] == "die"
    assert failed["error"].startswith("JobDied") and "log.err" in failed["reason"]


def test_local_jobs_at_most_jobs_at_a_time(tmp_path: Path) -> None:
    def stand_in(spec: RunSpec, threads: int | None) -> Summary:
        t0 = time.time()
        time.sleep(0.3)
        return RunSummary(status="completed", extra={"span": [t0, time.time()]})

    specs = [RunSpec(f"r{i}", str(tmp_path / f"r{i}"), {}) for i in range(2)]
    ex = SlurmExecutor(str(tmp_path / "jobs"), jobs=1, cluster="local", fn=stand_in)
    first, second = sorted(s.extra["span"] for s in collect(ex, specs).values())
    assert first[1] <= second[0]  # the second job started after the first ended


def test_ctrl_c_cancels_the_running_job(tmp_path: Path) -> None:
    def stand_in(spec: RunSpec, threads: int | None) -> Summary:
        out = Path(spec.out)
        out.mkdir(parents=True, exist_ok=True)
        if spec.run_id == "long":
            (out / "pid").write_text(str(os.getpid()))
            for _ in range(300):  # 30 s, unless cancelled
                time.sleep(0.1)
            (out / "finished").touch()
        else:
            pid = out.parent / "long" / "pid"
            for _ in range(100):  # end only once the long run is running
                if pid.exists():
                    break
                time.sleep(0.1)
        return RunSummary(status="completed")

    specs = [RunSpec(r, str(tmp_path / r), {}) for r in ("long", "short")]
    seen: list[str] = []

    def on_done(spec: RunSpec, summary: Summary) -> None:
        seen.append(spec.run_id)
        raise KeyboardInterrupt  # Ctrl-C while the long run is running

    ex = SlurmExecutor(str(tmp_path / "jobs"), cluster="local", fn=stand_in)
    with pytest.raises(KeyboardInterrupt):
        ex.run(specs, on_done)
    assert seen == ["short"]
    pid = int((tmp_path / "long" / "pid").read_text())
    deadline = time.monotonic() + 10.0
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pid)  # cancelled: the job's process is gone, long before its 30 s
    assert not (tmp_path / "long" / "finished").exists()
    assert not (tmp_path / "long" / "summary.json").exists()  # not failed: it resumes


def test_debug_cluster_runs_in_this_process(tmp_path: Path) -> None:
    def stand_in(spec: RunSpec, threads: int | None) -> Summary:
        return RunSummary(status="completed", extra={"pid": os.getpid(), "threads": threads})

    specs = [RunSpec(f"r{i}", str(tmp_path / f"r{i}"), {}) for i in range(2)]
    ex = SlurmExecutor(str(tmp_path / "jobs"), cluster="debug", cpus_per_task=3, fn=stand_in)
    done = collect(ex, specs)
    assert [s.extra["pid"] for s in done.values()] == [os.getpid()] * 2
    assert {s.extra["threads"] for s in done.values()} == {3}  # torch threads = cpus_per_task


# --- Slurm, played by stand-in commands -------------------------------------------------------

SBATCH = """#!{python}
# sbatch FILE: keep a copy of FILE, start each array task as Slurm would, print the job id
import os, re, shlex, subprocess, sys
from pathlib import Path

record = Path({record!r})
jid = str(1000 + len(list(record.glob("*.sh"))))
script = Path(sys.argv[1]).read_text()
(record / f"{{jid}}.sh").write_text(script)
m = re.search(r"^#SBATCH --array=(\\d+)-(\\d+)%(\\d+)$", script, re.M)
line = next(x for x in script.splitlines() if x.startswith("srun "))
args = shlex.split(line)[1:]
out = err = None
while args[0].startswith("--"):
    flag = args.pop(0)
    if flag == "--output":
        out = args.pop(0)
    elif flag == "--error":
        err = args.pop(0)
tasks = range(int(m.group(1)), int(m.group(2)) + 1) if m else [None]
for i in tasks:
    env = dict(os.environ, SUBMITIT_EXECUTOR="slurm", SLURM_NTASKS="1", SLURM_JOB_NUM_NODES="1",
               SLURM_NODEID="0", SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_JOB_NODELIST="node1",
               SLURM_JOB_ID=jid if i is None else f"{{jid}}{{i}}")
    if i is not None:
        env.update(SLURM_ARRAY_JOB_ID=jid, SLURM_ARRAY_TASK_ID=str(i))
    def name(p):
        p = p.replace("%A", jid).replace("%j", jid).replace("%t", "0")
        return p.replace("%a", str(i))
    subprocess.Popen(args, env=env, stdout=open(name(out), "a"), stderr=open(name(err), "a"),
                     start_new_session=True)
print(f"Submitted batch job {{jid}}")
"""


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Puts stand-in Slurm commands first on PATH; returns the folder of submitted scripts."""
    bin_dir, record = tmp_path / "bin", tmp_path / "sbatch"
    bin_dir.mkdir()
    record.mkdir()
    scripts = {
        "sbatch": SBATCH.format(python=sys.executable, record=str(record)),
        "srun": "#!/bin/sh\nexit 1\n",  # only looked up (submitit's cluster detection)
        "sacct": "#!/bin/sh\necho 'JobID|State|NodeList'\n",  # no news: results decide
        "scancel": "#!/bin/sh\nexit 0\n",
    }
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return record


def test_slurm_runs_go_in_one_job_array(tmp_path: Path, fake_slurm: Path) -> None:
    def stand_in(spec: RunSpec, threads: int | None) -> Summary:
        env = os.environ
        return RunSummary(
            status="completed", extra={"threads": threads, "array": env["SLURM_ARRAY_JOB_ID"]}
        )

    specs = [RunSpec(f"r{i}", str(tmp_path / f"r{i}"), {}) for i in range(3)]
    ex = SlurmExecutor(
        str(tmp_path / "jobs"), jobs=2, threads=4, fn=stand_in, poll_s=0.2,
        timeout_min=30, mem_gb=8, slurm_partition="dev",
    )  # fmt: skip
    assert ex.cluster == "slurm"  # auto-detected from srun on PATH
    done = collect(ex, specs)
    assert sorted(done) == ["r0", "r1", "r2"]
    assert {s.extra["array"] for s in done.values()} == {"1000"}  # one sbatch: one array
    assert {s.extra["threads"] for s in done.values()} == {4}
    (script,) = [p.read_text().splitlines() for p in fake_slurm.glob("*.sh")]
    for directive in (
        "--array=0-2%2",  # three runs, at most jobs=2 at a time
        "--cpus-per-task=4",  # threads
        "--time=30",
        "--mem=8GB",
        "--partition=dev",
        "--job-name=numerics",
    ):
        assert f"#SBATCH {directive}" in script


def test_slurm_without_jobs_runs_the_whole_array_at_once(tmp_path: Path, fake_slurm: Path) -> None:
    def stand_in(spec: RunSpec, threads: int | None) -> Summary:
        return RunSummary(status="completed")

    specs = [RunSpec(f"r{i}", str(tmp_path / f"r{i}"), {}) for i in range(3)]
    ex = SlurmExecutor(str(tmp_path / "jobs"), cluster="slurm", fn=stand_in, poll_s=0.2)
    assert set(collect(ex, specs)) == {"r0", "r1", "r2"}
    (script,) = [p.read_text() for p in fake_slurm.glob("*.sh")]
    assert "#SBATCH --array=0-2%3\n" in script


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"jobs": 0}, "jobs"),
        ({"threads": 1.5}, "threads"),
        ({"cluster": "pbs"}, "cluster"),
        ({"folder": ""}, "folder"),
        ({"walltime": 60}, "walltime"),  # not submitit's: Slurm's own go as slurm_<name>
        ({"slurm_partion": "dev"}, "partion"),
        ({"timeout_min": "1h"}, "timeout_min"),
        ({"poll_s": 0}, "poll_s"),
        ({"tasks_per_node": 2}, "tasks_per_node"),  # two processes would train one run dir
    ],
)
def test_bad_options_are_named(tmp_path: Path, kwargs: dict[str, object], word: str) -> None:
    args: dict[str, object] = {"folder": str(tmp_path / "jobs"), "cluster": "local", **kwargs}
    with pytest.raises(ValueError, match=word):
        SlurmExecutor(**args)  # type: ignore[arg-type]


def test_slurm_where_there_is_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun
    with pytest.raises(ValueError, match="cluster='slurm'"):
        SlurmExecutor(str(tmp_path / "jobs"), cluster="slurm")
