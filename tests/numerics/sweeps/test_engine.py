"""The sweep engine (``numerics.sweeps.engine``) end to end on a tiny recipe, through its command
line: resume, failures, refusal, executors, wandb export."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from numerics.provenance import provenance
from numerics.sweeps import engine, spec
from numerics.sweeps.executors.base import RunSpec, Summary, run_one
from numerics.sweeps.executors.local import LocalExecutor
from numerics.sweeps.progress import Progress, status_text, sweep_status
from numerics.train import recipe as recipes
from numerics.train.rundir import RunDir
from numerics.train.summary import RunSummary
from tests.numerics.sweeps.test_spec import TINY, run_cli, sweep_file, write


def four_runs(tiny: Path, **keys: Any) -> Path:
    params = {"numerics.format": {"values": ["fp32", "bf16"]}, "train.seed": {"values": [0, 1]}}
    return sweep_file(tiny, parameters=params, executor={"kind": "local", "jobs": 1}, **keys)


def summaries(folder: Path) -> dict[str, dict[str, Any]]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(folder.glob("*/summary.json"))}


def test_dry_run_lists_the_runs_and_runs_nothing(tiny: Path) -> None:
    path = four_runs(tiny)
    rc, out, _ = run_cli(path, tiny, "--dry-run")
    assert rc == 0
    assert "sweep demo: 4 runs" in out
    assert "image-mlp-digits-fp32-s0-" in out and 'numerics.format="fp32" train.seed=0' in out
    assert not (tiny / "results").exists()


def test_local_sweep_with_two_workers_end_to_end(tiny: Path) -> None:
    path = four_runs(tiny)
    rc, out, _ = run_cli(path, tiny, "--jobs", "2")
    assert rc == 0, out
    folder = tiny / "results" / "demo"
    done = summaries(folder)
    assert len(done) == 4 and {s["status"] for s in done.values()} == {"completed"}
    assert "4/4 runs: 4 completed, 0 diverged, 0 failed" in out and str(folder) in out
    index = yaml.safe_load((folder / "sweep.yaml").read_text())
    assert index["name"] == "demo"
    assert index["sweep"] == yaml.safe_load(path.read_text())  # the file as given
    assert index["swept"] == ["numerics.format", "train.seed"]
    expected = [("fp32", 0), ("fp32", 1), ("bf16", 0), ("bf16", 1)]
    got = [(r["params"]["numerics.format"], r["params"]["train.seed"]) for r in index["runs"]]
    assert got == expected
    for run, (fmt, seed) in zip(index["runs"], expected, strict=True):
        config = yaml.safe_load((folder / run["run_id"] / "config.yaml").read_text())
        assert config["numerics"]["format"] == fmt and config["train"]["seed"] == seed
        label = {"bf16": "bf16-opt:bf16-comm:bf16"}.get(fmt, fmt)  # "bf16" is the preset's
        assert done[run["run_id"]]["format"] == label and done[run["run_id"]]["steps"] == 3


def test_a_failing_run_is_isolated(tiny: Path) -> None:
    # hidden [0] passes the recipe check (a list[int]) but the model constructor rejects it
    path = sweep_file(
        tiny, parameters={"model.hidden": {"values": [[16], [0], [8]]}},
        executor={"kind": "local", "jobs": 1},
    )  # fmt: skip
    rc, out, _ = run_cli(path, tiny)
    assert rc == 1
    assert "3/3 runs: 2 completed, 0 diverged, 1 failed" in out
    done = summaries(tiny / "results" / "demo")
    status = {tuple(yaml.safe_load(
        (tiny / "results" / "demo" / k / "config.yaml").read_text())["model"]["hidden"]): v
        for k, v in done.items()}  # fmt: skip
    assert status[(16,)]["status"] == status[(8,)]["status"] == "completed"
    assert status[(0,)]["status"] == "failed"
    assert "hidden[0]" in status[(0,)]["traceback"] and "Traceback" in status[(0,)]["traceback"]


def counting(calls: list[str]) -> Callable[[RunSpec, int | None], Summary]:
    def fn(spec: RunSpec, threads: int | None) -> Summary:
        calls.append(spec.run_id)
        return run_one(spec, threads)

    return fn


def test_resume_reruns_exactly_the_unfinished_runs(tiny: Path) -> None:
    s = spec.load_sweep(four_runs(tiny))
    results = tiny / "results"
    calls: list[str] = []
    tally = engine.run_sweep(s, results, LocalExecutor(jobs=1, fn=counting(calls)), progress=False)
    assert (tally.completed, tally.failed) == (4, 0) and len(calls) == 4
    folder = results / "demo"
    ids = list(calls)
    interrupted, failed, kept = ids[1], ids[2], [ids[0], ids[3]]
    (folder / interrupted / "summary.json").unlink()  # checkpoint, no summary: killed
    bad = {"status": "failed", "error": "RuntimeError: boom", "traceback": "..."}
    (folder / failed / "summary.json").write_text(json.dumps(bad))
    mtimes = {k: (folder / k / "summary.json").stat().st_mtime_ns for k in kept}

    # without --resume: refused, nothing touched
    rc, _, err = run_cli(tiny / "demo.yaml", tiny)
    assert rc == 2 and "--resume" in err and "nothing was touched" in err
    assert not (folder / interrupted / "summary.json").exists()
    assert json.loads((folder / failed / "summary.json").read_text()) == bad

    calls.clear()
    tally = engine.run_sweep(
        s, results, LocalExecutor(jobs=1, fn=counting(calls)), resume=True, progress=False
    )
    assert sorted(calls) == sorted([interrupted, failed])
    assert (tally.completed, tally.failed, tally.skipped) == (4, 0, 2)
    assert {k: (folder / k / "summary.json").stat().st_mtime_ns for k in kept} == mtimes
    done = summaries(folder)
    assert {v["status"] for v in done.values()} == {"completed"}
    assert done[interrupted]["resumes"] == 1  # continued from its checkpoint
    assert json.loads((folder / failed / "summary.failed.json").read_text()) == bad

    calls.clear()  # all finished: a second resume runs nothing
    engine.run_sweep(s, results, LocalExecutor(jobs=1, fn=counting(calls)), resume=True)
    assert calls == []


def test_resume_brings_a_finished_runs_old_config_to_todays_layout(tiny: Path) -> None:
    """A run finished before numerics.periodic keeps its result, and its config.yaml is
    rewritten in today's layout, so tables made with today's keys find it."""
    from numerics.sweeps.executors.base import RunSpec as Spec

    params = {"numerics.periodic": {"value": {"kind": "sin2", "bits": 3}}}
    s = spec.load_sweep(sweep_file(tiny, parameters=params, executor={"kind": "local"}))
    (run,) = spec.expand(s, tiny / "results").runs
    d = Path(run.out)
    d.mkdir(parents=True)
    old = spec.legacy_layout(run.config)
    (d / "config.yaml").write_text(yaml.safe_dump(old))
    here = provenance()  # made by this code: not stale
    (d / "summary.json").write_text(
        json.dumps({"status": "completed", "metrics": {}, "provenance": here})
    )
    calls: list[str] = []

    def never(spec_: Spec, threads: int | None) -> Summary:
        calls.append(spec_.run_id)
        raise AssertionError("a finished run was run again")

    engine.run_sweep(s, tiny / "results", LocalExecutor(jobs=1, fn=never), resume=True)
    assert calls == []
    new = yaml.safe_load((d / "config.yaml").read_text())
    assert new["numerics"]["periodic"]["bits"] == 3 and "periodic" not in new
    assert new != old


def test_refuses_to_run_over_existing_results(tiny: Path) -> None:
    path = four_runs(tiny)
    old = tiny / "results" / "demo" / "some-run"
    write(old / "config.yaml", TINY)
    rc, out, err = run_cli(path, tiny)
    assert rc == 2 and out == ""
    assert str(tiny / "results" / "demo") in err and "pass --resume" in err
    assert sorted(p.name for p in (tiny / "results" / "demo").iterdir()) == ["some-run"]
    assert sorted(p.name for p in old.iterdir()) == ["config.yaml"]


def test_make_executor(tiny: Path) -> None:
    ex = engine.make_executor("local", 3, {"threads": 2})
    assert isinstance(ex, LocalExecutor) and (ex.jobs, ex.threads) == (3, 2)
    with pytest.raises(spec.SweepError, match=r"option\(s\) partition not accepted by the local"):
        engine.make_executor("local", None, {"partition": "gpu"})
    with pytest.raises(spec.SweepError, match="unknown kind 'k8s'; allowed: local, ray, slurm"):
        engine.make_executor("k8s", None, {})


# --- wandb export ---------------------------------------------------------------------------------
def test_export_wandb_writes_an_equivalent_agent_config(tiny: Path) -> None:
    utils = pytest.importorskip("wandb.sdk.launch.sweeps.utils")
    params = {
        "numerics.format": {"values": ["fp32", "bf16"]},
        "train.lr": {"distribution": "log_uniform_values", "min": 1.0e-4, "max": 1.0e-1},
        "model.hidden": {"value": [16, 8]},
        "train.nesterov": {"value": True},
    }
    path = sweep_file(tiny, method="random", count=6, parameters=params)
    out = tiny / "wandb.yaml"
    rc, _, _ = run_cli(path, tiny, "--export-wandb", str(out))
    assert rc == 0 and not (tiny / "results").exists()
    cfg = yaml.safe_load(out.read_text())
    assert cfg["method"] == "random" and cfg["run_cap"] == 6
    assert cfg["parameters"] == yaml.safe_load(path.read_text())["parameters"]
    assert cfg["metric"] == {"name": "eval/accuracy", "goal": "maximize"}

    # Run the command as wandb's agent builds it (its own formatting of one run's values) with
    # a stand-in `numerics` that records its argv.
    values = {"numerics.format": "bf16", "train.lr": 0.00123, "model.hidden": [16, 8],
              "train.nesterov": True}  # fmt: skip
    words = utils.create_sweep_command_args({"args": {k: {"value": v} for k, v in values.items()}})
    argv: list[str] = []
    for chunk in cfg["command"]:
        if chunk == "${env}":
            argv.append("/usr/bin/env")
        elif chunk.startswith("${"):
            argv += words[chunk[2:-1]]
        else:
            argv.append(chunk)
    bin_dir = tiny / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "numerics"
    fake.write_text(
        '#!/bin/sh\nexec "$PYTHON" -c \'import json, sys; print(json.dumps(sys.argv[1:]))\' "$@"\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "WANDB_RUN_ID": "abc123",
           "PYTHON": sys.executable}  # fmt: skip
    got = json.loads(subprocess.run(argv, env=env, capture_output=True, check=True).stdout)
    recipe = str(tiny / "recipes" / "a.yaml")
    sets = ["numerics.format=bf16", "train.lr=0.00123", "model.hidden=[16, 8]",
            "train.nesterov=True"]  # fmt: skip
    assert got[:6] == ["train", recipe, "--out", "results/demo/wandb-abc123", "--set",
                       "logging.wandb=online"]  # fmt: skip
    assert got[6:] == [w for kv in sets for w in ("--set", kv)]
    # the words wandb produces parse back to the values (same resolved recipe)
    rec = recipes.load(recipe, sets)
    assert rec == recipes.load(recipe, list(values.items()))
    assert rec.model["hidden"] == [16, 8] and rec.train.nesterov is True

    two = sweep_file(tiny, recipe=["recipes/a.yaml", "recipes/b.yaml"])
    rc, _, err = run_cli(two, tiny, "--export-wandb", str(out))
    assert rc == 2 and "needs a single recipe, got 2" in err


def test_a_run_made_by_other_code_is_stale_and_made_again(tiny: Path) -> None:
    s = spec.load_sweep(four_runs(tiny))
    results = tiny / "results"
    calls: list[str] = []
    engine.run_sweep(s, results, LocalExecutor(jobs=1, fn=counting(calls)), progress=False)
    folder = results / "demo"
    old, also, *_ = calls
    for run, record in ((old, {**provenance(), "code": "0123456789ab"}), (also, None)):
        path = folder / run / "summary.json"
        doc = json.loads(path.read_text())
        doc["provenance"] = record  # other code; no record at all (an older run)
        path.write_text(json.dumps(doc))
    before = (folder / old / "summary.json").read_text()
    assert [st.stale for st in sweep_status(folder)] == [True, True, False, False]
    text = status_text(folder)
    assert text.count("[stale: other code]") == 2 and "2 made by other code" in text
    calls.clear()  # --keep-stale: nothing runs, the two are counted as kept
    tally = engine.run_sweep(s, results, LocalExecutor(jobs=1, fn=counting(calls)),
                             resume=True, keep_stale=True, progress=False)  # fmt: skip
    assert calls == [] and (tally.skipped, tally.kept_stale) == (4, 2)
    calls.clear()  # a plain resume makes exactly those two again and keeps their old folders
    tally = engine.run_sweep(s, results, LocalExecutor(jobs=1, fn=counting(calls)),
                             resume=True, progress=False)  # fmt: skip
    assert sorted(calls) == sorted([old, also]) and tally.skipped == 2
    assert (folder / ".stale" / f"{old}-0123456789ab" / "summary.json").read_text() == before
    assert (folder / ".stale" / f"{also}-unrecorded" / "config.yaml").exists()
    fresh = json.loads((folder / old / "summary.json").read_text())
    assert fresh["provenance"]["code"] == provenance()["code"]
    assert not any(st.stale for st in sweep_status(folder))
    assert [p.name for p in engine.existing_runs(folder)] == sorted(
        st.run_id for st in sweep_status(folder)
    )  # the moved folders are not runs of the sweep


def test_progress_off_a_terminal_is_one_line_per_run(tiny: Path) -> None:
    import io

    out = io.StringIO()
    view = Progress("demo", total=3, initial=1, terminal=False, out=out)
    view.done(
        "run-a",
        RunSummary(
            "completed", metrics={"accuracy": 0.97689}, primary_metric="accuracy", wall_s=41.2
        ),
    )
    view.done("run-b", RunSummary.failed(ValueError("bad hidden size")))
    view.close()
    assert out.getvalue().splitlines() == [
        "[2/3] completed run-a  accuracy 0.9769  (41 s)",
        "[3/3] failed    run-b  ValueError: bad hidden size",
    ]


def test_status_reads_a_sweep_running_elsewhere(tiny: Path) -> None:
    s = spec.load_sweep(four_runs(tiny))
    results = tiny / "results"
    runs = spec.expand(s, results).runs
    folder = results / "demo"
    engine.write_index(s, spec.expand(s, results), folder)  # as the engine does first
    a, b, c, _ = runs
    done = RunSummary("completed", metrics={"accuracy": 0.5}, primary_metric="accuracy")
    done.provenance = provenance()
    RunDir(a.out).write_summary(done)
    RunDir(b.out).write_summary(RunSummary.failed("RuntimeError: out of memory"))
    RunDir(c.out).write_config(c.config)  # started, no summary yet
    states = [(st.run_id, st.state) for st in sweep_status(folder)]
    assert states == [(a.run_id, "completed"), (b.run_id, "failed"), (c.run_id, "started"),
                      (runs[3].run_id, "pending")]  # fmt: skip
    text = status_text(folder)
    assert "accuracy 0.5" in text and "RuntimeError: out of memory" in text
    assert text.splitlines()[-1].endswith("4 runs: 1 completed, 1 failed, 1 started, 1 pending")
    rc, out, err = run_cli_status(folder, tiny)
    assert rc == 0 and out.strip() == text
    rc, _, err = run_cli_status(tiny / "nowhere", tiny)
    assert rc == 2 and "no sweep.yaml" in err


def run_cli_status(folder: Path, cwd: Path) -> tuple[int, str, str]:
    p = subprocess.run([sys.executable, "-m", "numerics.cli", "sweep", "--status", str(folder)],
                       cwd=cwd, capture_output=True, text=True)  # fmt: skip
    return p.returncode, p.stdout, p.stderr
