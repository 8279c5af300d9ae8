"""Sweep files: expansion (grid order, random draws), validation messages, run ids, the results
index, and the engine end to end on a tiny recipe (resume, failures, refusal, wandb export)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from numerics import recipe as recipes
from numerics import sweep as sw
from numerics.errors import MissingInputError
from numerics.executors.base import RunSpec, Summary, run_one
from numerics.executors.local import LocalExecutor

TINY = {
    "task": "image",
    "model": {"name": "mlp", "hidden": [16]},
    "data": {"name": "digits"},
    "train": {"steps": 3, "batch_size": 32, "lr": 0.05, "optimizer": "sgd"},
    "logging": {"progress": False},
}


def write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A folder with recipes/a.yaml (hidden [16]) and recipes/b.yaml (hidden [8])."""
    write(tmp_path / "recipes" / "a.yaml", TINY)
    write(tmp_path / "recipes" / "b.yaml", recipes.merge(TINY, {"model": {"hidden": [8]}}))
    return tmp_path


def sweep_file(folder: Path, **keys: Any) -> Path:
    data = {"name": "demo", "recipe": "recipes/a.yaml", **keys}
    return write(folder / "demo.yaml", data)


# --- expansion ----------------------------------------------------------------------------------
def test_grid_is_the_product_recipes_outermost_first_key_slowest(tiny: Path) -> None:
    path = sweep_file(
        tiny,
        recipe=["recipes/a.yaml", "recipes/b.yaml"],
        parameters={
            "numerics.format": {"values": ["fp32", "bf16"]},
            "train.seed": {"values": [0, 1]},
            "train.steps": {"value": 5},
        },
    )
    s = sw.load_sweep(path)
    a, b = str(tiny / "recipes" / "a.yaml"), str(tiny / "recipes" / "b.yaml")
    expected = [  # written out by hand
        (a, "fp32", 0), (a, "fp32", 1), (a, "bf16", 0), (a, "bf16", 1),
        (b, "fp32", 0), (b, "fp32", 1), (b, "bf16", 0), (b, "bf16", 1),
    ]  # fmt: skip
    got = [(r, p["numerics.format"], p["train.seed"]) for r, p in sw.points(s)]
    assert got == expected
    ex = sw.expand(s, tiny / "results")
    assert len(ex.runs) == 8 and not ex.duplicates
    hidden = {a: [16], b: [8]}
    for spec, (r, fmt, seed) in zip(ex.runs, expected, strict=True):
        assert spec.source == r
        assert spec.config["model"]["hidden"] == hidden[r]
        assert spec.config["numerics"]["format"] == fmt
        assert spec.config["train"]["seed"] == seed
        assert spec.config["train"]["steps"] == 5  # the constant reaches every run
        assert spec.params == {"numerics.format": fmt, "train.seed": seed, "train.steps": 5}
        assert Path(spec.out) == (tiny / "results" / "demo" / spec.run_id).resolve()
    assert ex.swept == ["recipe", "numerics.format", "train.seed"]  # not the constant


def test_recipe_path_relative_to_the_sweep_file_else_the_working_directory(
    tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    near = sweep_file(tiny / "sweeps", recipe="../recipes/a.yaml")
    assert sw.load_sweep(near).recipes == (str(tiny / "recipes" / "a.yaml"),)
    monkeypatch.chdir(tiny)
    cwd = sweep_file(tiny / "sweeps", recipe="recipes/b.yaml")  # not next to the sweep file
    assert sw.load_sweep(cwd).recipes == (os.path.join("recipes", "b.yaml"),)
    missing = sweep_file(tiny / "sweeps", recipe="recipes/nope.yaml")
    with pytest.raises(MissingInputError, match=r"demo.yaml: recipe: file not found: recipes/nope"):
        sw.load_sweep(missing)


RANDOM_PARAMS = {
    "train.lr": {"distribution": "log_uniform_values", "min": 1.0e-4, "max": 1.0e-1},
    "train.momentum": {"distribution": "uniform", "min": 0.5, "max": 0.9},
    "train.batch_size": {"distribution": "int_uniform", "min": 16, "max": 20},
    "numerics.format": {"values": ["fp32", "bf16", "fp16"]},
    "train.steps": {"value": 3},
}


def test_random_draws_count_runs_reproducibly_within_bounds(tiny: Path) -> None:
    s = sw.load_sweep(
        sweep_file(tiny, method="random", count=600, seed=7, parameters=RANDOM_PARAMS)
    )
    pts = sw.points(s)
    assert len(pts) == 600
    assert pts == sw.points(sw.load_sweep(tiny / "demo.yaml"))  # same seed, same runs
    other = sw.from_dict({**s.raw, "seed": 8}, str(tiny / "demo.yaml"))
    assert sw.points(other) != pts
    lr = [p["train.lr"] for _, p in pts]
    mom = [p["train.momentum"] for _, p in pts]
    bs = [p["train.batch_size"] for _, p in pts]
    assert all(1e-4 <= x <= 1e-1 for x in lr) and all(0.5 <= x <= 0.9 for x in mom)
    assert all(type(x) is int and 16 <= x <= 20 for x in bs)
    assert set(bs) == {16, 17, 18, 19, 20}  # both ends included (wandb's int_uniform)
    assert all(p["train.steps"] == 3 for _, p in pts)
    # log-uniform over 3 decades: ~1/3 of the draws in each decade (a uniform draw would put
    # 90% in the top one); binomial sd for n=600, p=1/3 is 11.5 -> allow +-4.5 sd
    decades = [sum(lo <= x < lo * 10 for x in lr) for lo in (1e-4, 1e-3, 1e-2)]
    assert all(abs(n - 200) < 52 for n in decades), decades
    assert abs(sum(mom) / len(mom) - 0.7) < 0.02  # uniform mean (sd of the mean 0.0047)
    formats = [p["numerics.format"] for _, p in pts]
    assert set(formats) == {"fp32", "bf16", "fp16"}  # only the given values, each drawn
    assert all(abs(formats.count(f) - 200) < 52 for f in ("fp32", "bf16", "fp16"))


def test_random_other_distributions(tiny: Path) -> None:
    params = {
        "train.batch_size": {"distribution": "q_uniform", "min": 16, "max": 128, "q": 16},
        "train.weight_decay": {"distribution": "log_normal", "mu": -7.0, "sigma": 0.5},
        "train.gamma": {"distribution": "normal", "mu": 0.5, "sigma": 0.01},
    }
    s = sw.load_sweep(sweep_file(tiny, method="random", count=400, parameters=params))
    pts = [p for _, p in sw.points(s)]
    bs = [p["train.batch_size"] for p in pts]
    assert all(type(x) is int and x % 16 == 0 and 16 <= x <= 128 for x in bs)
    logs = [math.log(p["train.weight_decay"]) for p in pts]
    assert abs(sum(logs) / 400 + 7.0) < 0.1  # log of a log-normal is normal(mu, sigma)
    assert abs(sum(p["train.gamma"] for p in pts) / 400 - 0.5) < 0.003


def test_random_picks_among_several_recipes(tiny: Path) -> None:
    path = sweep_file(
        tiny, recipe=["recipes/a.yaml", "recipes/b.yaml"], method="random", count=40,
        parameters={"train.seed": {"distribution": "int_uniform", "min": 0, "max": 1000}},
    )  # fmt: skip
    s = sw.load_sweep(path)
    ex = sw.expand(s, tiny / "results")
    assert {r.config["model"]["hidden"][0] for r in ex.runs} == {16, 8}
    # 40 draws from 2 x 1001 points: a repeated (recipe, seed) draw is the same run
    distinct = {(r, p["train.seed"]) for r, p in sw.points(s)}
    assert len(ex.runs) == len(distinct) and len(ex.runs) + len(ex.duplicates) == 40


# --- validation ---------------------------------------------------------------------------------
BAD: list[tuple[dict[str, Any], list[str]]] = [
    ({"metod": "grid"}, ["metod: unknown key; allowed: name, description", "did you mean method?"]),
    ({"method": "bayes"}, ["method: unknown method 'bayes'", "allowed: grid, random"]),
    ({"method": "random"}, ["count: required by method random"]),
    ({"method": "random", "count": 0}, ["count: must be a positive integer"]),
    ({"count": 3}, ["count: applies to method random only"]),
    (
        {"parameters": {"train.lr": {"min": 0.1, "max": 1.0}}},
        ["parameters.train.lr: needs value", "values", "distribution (one of constant,",
         "add distribution: uniform"],
    ),
    (
        {"method": "random", "count": 2,
         "parameters": {"train.lr": {"distribution": "uniform", "min": 1.0, "max": 0.1}}},
        ["parameters.train.lr: min (1.0) must be < max (0.1)"],
    ),
    (
        {"method": "random", "count": 2,
         "parameters": {"train.lr": {"distribution": "beta", "min": 0, "max": 1}}},
        ["parameters.train.lr: unknown distribution 'beta'", "allowed: constant, categorical"],
    ),
    (
        {"method": "random", "count": 2,
         "parameters": {"train.lr": {"distribution": "uniform", "min": 0, "max": 1, "q": 2}}},
        ["parameters.train.lr: unknown key 'q' for distribution uniform",
         "allowed: distribution, min, max"],
    ),
    (
        {"parameters": {"train.lr": {"distribution": "uniform", "min": 0.1, "max": 1.0}}},
        ["parameters.train.lr: distribution uniform needs method random"],
    ),
    (
        {"method": "random", "count": 2, "parameters": {
            "train.lr": {"distribution": "log_uniform_values", "min": 0.0, "max": 1.0}}},
        ["parameters.train.lr: log_uniform_values needs min > 0"],
    ),
    ({"parameters": {"train.lr": {"values": []}}}, ["parameters.train.lr: values must be a non"]),
    (
        {"parameters": {"train.lr": {"value": 1, "values": [2]}}},
        ["parameters.train.lr: give value (a constant) or values (a list), not both"],
    ),
    ({"executor": {"kind": "k8s"}}, ["executor.kind: unknown executor 'k8s'", "local, ray, slurm"]),
    ({"name": "a/b"}, ["name: 'a/b' is not a folder name"]),
    # caught by the recipe's own validation, reported against the sweep file and parameter
    (
        {"parameters": {"train.lrr": {"values": [0.1]}}},
        ["parameters.train.lrr:", "train.lrr: unknown key", "did you mean lr?"],
    ),
    (
        {"parameters": {"numerics.format": {"values": ["fp32", "fp99"]}}},
        ["parameters.numerics.format:", "fp99"],
    ),
    (
        {"parameters": {"train.lr": {"values": [0.1, -1]}}},
        ["parameters.train.lr:", "must be a number > 0, got -1"],
    ),
]  # fmt: skip


@pytest.mark.parametrize(("keys", "parts"), BAD)
def test_invalid_sweeps_name_the_file_key_and_what_is_allowed(
    tiny: Path, keys: dict[str, Any], parts: list[str]
) -> None:
    path = sweep_file(tiny, **keys)
    with pytest.raises(sw.SweepError) as err:
        sw.expand(sw.load_sweep(path), tiny / "results")
    msg = str(err.value)
    assert msg.startswith(str(path)), msg
    for part in parts:
        assert part in msg, msg


# --- run ids --------------------------------------------------------------------------------------
def test_run_ids_are_label_and_config_hash_stable_and_distinct(tiny: Path) -> None:
    params = {"numerics.format": {"values": ["fp32", "bf16"]}, "train.seed": {"values": [0, 3]}}
    path = sweep_file(tiny, parameters=params)
    first = sw.expand(sw.load_sweep(path), tiny / "results").runs
    again = sw.expand(sw.load_sweep(path), tiny / "elsewhere").runs
    assert [r.run_id for r in first] == [r.run_id for r in again]
    assert len({r.run_id for r in first}) == 4
    labels = ["image-mlp-digits-fp32-s0", "image-mlp-digits-fp32-s3",
              "image-mlp-digits-bf16-s0", "image-mlp-digits-bf16-s3"]  # fmt: skip
    for spec, label in zip(first, labels, strict=True):
        resolved = sw.hashed_config(
            recipes.load(tiny / "recipes" / "a.yaml", list(spec.params.items()))
        )
        digest = hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()
        assert spec.run_id == f"{label}-{digest[:8]}"
    # a change anywhere in the resolved config changes the id, not only the label's fields
    lr = sw.expand(sw.load_sweep(sweep_file(tiny, parameters={"train.lr": {"value": 0.07}})))
    base = sw.expand(sw.load_sweep(sweep_file(tiny)))
    assert lr.runs[0].run_id.rsplit("-", 1)[0] == base.runs[0].run_id.rsplit("-", 1)[0]
    assert lr.runs[0].run_id != base.runs[0].run_id


def test_identical_resolved_configs_collapse_into_one_run(tiny: Path) -> None:
    # c.yaml spells out momentum 0.9, which is a.yaml's default: the same run
    write(tiny / "recipes" / "c.yaml", recipes.merge(TINY, {"train": {"momentum": 0.9}}))
    path = sweep_file(
        tiny, recipe=["recipes/a.yaml", "recipes/c.yaml"],
        parameters={"train.lr": {"values": [0.05, 5.0e-2, 0.1]}},
    )  # fmt: skip
    ex = sw.expand(sw.load_sweep(path), tiny / "results")
    assert len(ex.runs) == 2  # 6 points: lr 0.05 (x4 spellings) and lr 0.1 (x2)
    assert [r.config["train"]["lr"] for r in ex.runs] == [0.05, 0.1]
    assert len(ex.duplicates) == 4
    assert {d["same_as"] for d in ex.duplicates} == {r.run_id for r in ex.runs}
    assert "4 identical configs merged" in run_cli(path, tiny, "--dry-run")[1]


# --- the engine -----------------------------------------------------------------------------------
def run_cli(path: Path, tiny: Path, *extra: str) -> tuple[int, str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = sw.main(["sweep", str(path), "--results", str(tiny / "results"), *extra])
    return rc, out.getvalue(), err.getvalue()


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
        assert done[run["run_id"]]["format"] == fmt and done[run["run_id"]]["steps"] == 3


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
    s = sw.load_sweep(four_runs(tiny))
    results = tiny / "results"
    calls: list[str] = []
    tally = sw.run_sweep(s, results, LocalExecutor(jobs=1, fn=counting(calls)), progress=False)
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
    tally = sw.run_sweep(
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
    sw.run_sweep(s, results, LocalExecutor(jobs=1, fn=counting(calls)), resume=True)
    assert calls == []


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
    ex = sw.make_executor("local", 3, {"threads": 2})
    assert isinstance(ex, LocalExecutor) and (ex.jobs, ex.threads) == (3, 2)
    with pytest.raises(sw.SweepError, match=r"option\(s\) partition not accepted by the local"):
        sw.make_executor("local", None, {"partition": "gpu"})
    with pytest.raises(sw.SweepError, match="unknown kind 'k8s'; allowed: local, ray, slurm"):
        sw.make_executor("k8s", None, {})


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


def test_upgrade_config_rewrites_a_config_from_before_numerics_periodic(tiny: Path) -> None:
    from numerics.rundir import RunDir, jsonable

    overrides = [("numerics.periodic", {"kind": "sin2", "bits": 3}), ("train.seed", 1)]
    config = recipes.load(tiny / "recipes" / "a.yaml", overrides).to_dict()
    old = sw.legacy_layout(config)
    assert old["numerics"]["format"] == "periodic_sin2_b3" and "periodic" not in old["numerics"]
    assert old["periodic"] == {"lambda_max": 1e-4, "start_fraction": 0.5, "ramp_fraction": 0.25}
    rd = RunDir(tiny / "run")
    rd.path.mkdir()
    assert not sw.upgrade_config(rd.path, config)  # no config.yaml: nothing to do
    rd.write_config(old)
    assert sw.upgrade_config(rd.path, config)
    assert yaml.safe_load(rd.config.read_text()) == jsonable(config)
    assert not sw.upgrade_config(rd.path, config)  # already today's layout
    other = recipes.load(tiny / "recipes" / "a.yaml", [("train.seed", 2)]).to_dict()
    rd.write_config(sw.legacy_layout(other))
    assert not sw.upgrade_config(rd.path, config)  # another run's config stays as it is
    assert yaml.safe_load(rd.config.read_text()) == jsonable(sw.legacy_layout(other))
