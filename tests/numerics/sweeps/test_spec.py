"""The sweep file (``numerics.sweeps.spec``): expansion (grid order, random draws), validation
messages, run ids and the config layout they hash."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from numerics.errors import MissingInputError
from numerics.sweeps import cli, spec
from numerics.train import recipe as recipes

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
    s = spec.load_sweep(path)
    a, b = str(tiny / "recipes" / "a.yaml"), str(tiny / "recipes" / "b.yaml")
    expected = [  # written out by hand
        (a, "fp32", 0), (a, "fp32", 1), (a, "bf16", 0), (a, "bf16", 1),
        (b, "fp32", 0), (b, "fp32", 1), (b, "bf16", 0), (b, "bf16", 1),
    ]  # fmt: skip
    got = [(r, p["numerics.format"], p["train.seed"]) for r, p in spec.points(s)]
    assert got == expected
    ex = spec.expand(s, tiny / "results")
    assert len(ex.runs) == 8 and not ex.duplicates
    hidden = {a: [16], b: [8]}
    for run, (r, fmt, seed) in zip(ex.runs, expected, strict=True):
        assert run.source == r
        assert run.config["model"]["hidden"] == hidden[r]
        assert run.config["numerics"]["format"] == fmt
        assert run.config["train"]["seed"] == seed
        assert run.config["train"]["steps"] == 5  # the constant reaches every run
        assert run.params == {"numerics.format": fmt, "train.seed": seed, "train.steps": 5}
        assert Path(run.out) == (tiny / "results" / "demo" / run.run_id).resolve()
    assert ex.swept == ["recipe", "numerics.format", "train.seed"]  # not the constant


def test_recipe_path_relative_to_the_sweep_file_else_the_working_directory(
    tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    near = sweep_file(tiny / "sweeps", recipe="../recipes/a.yaml")
    assert spec.load_sweep(near).recipes == (str(tiny / "recipes" / "a.yaml"),)
    monkeypatch.chdir(tiny)
    cwd = sweep_file(tiny / "sweeps", recipe="recipes/b.yaml")  # not next to the sweep file
    assert spec.load_sweep(cwd).recipes == (os.path.join("recipes", "b.yaml"),)
    missing = sweep_file(tiny / "sweeps", recipe="recipes/nope.yaml")
    with pytest.raises(MissingInputError, match=r"demo.yaml: recipe: file not found: recipes/nope"):
        spec.load_sweep(missing)


RANDOM_PARAMS = {
    "train.lr": {"distribution": "log_uniform_values", "min": 1.0e-4, "max": 1.0e-1},
    "train.momentum": {"distribution": "uniform", "min": 0.5, "max": 0.9},
    "train.batch_size": {"distribution": "int_uniform", "min": 16, "max": 20},
    "numerics.format": {"values": ["fp32", "bf16", "fp16"]},
    "train.steps": {"value": 3},
}


def test_random_draws_count_runs_reproducibly_within_bounds(tiny: Path) -> None:
    s = spec.load_sweep(
        sweep_file(tiny, method="random", count=600, seed=7, parameters=RANDOM_PARAMS)
    )
    pts = spec.points(s)
    assert len(pts) == 600
    assert pts == spec.points(spec.load_sweep(tiny / "demo.yaml"))  # same seed, same runs
    other = spec.from_dict({**s.raw, "seed": 8}, str(tiny / "demo.yaml"))
    assert spec.points(other) != pts
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
    s = spec.load_sweep(sweep_file(tiny, method="random", count=400, parameters=params))
    pts = [p for _, p in spec.points(s)]
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
    s = spec.load_sweep(path)
    ex = spec.expand(s, tiny / "results")
    assert {r.config["model"]["hidden"][0] for r in ex.runs} == {16, 8}
    # 40 draws from 2 x 1001 points: a repeated (recipe, seed) draw is the same run
    distinct = {(r, p["train.seed"]) for r, p in spec.points(s)}
    assert len(ex.runs) == len(distinct) and len(ex.runs) + len(ex.duplicates) == 40


def run_cli(path: Path, tiny: Path, *extra: str) -> tuple[int, str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(["sweep", str(path), "--results", str(tiny / "results"), *extra])
    return rc, out.getvalue(), err.getvalue()


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
    with pytest.raises(spec.SweepError) as err:
        spec.expand(spec.load_sweep(path), tiny / "results")
    msg = str(err.value)
    assert msg.startswith(str(path)), msg
    for part in parts:
        assert part in msg, msg


# --- run ids --------------------------------------------------------------------------------------
def test_run_ids_are_label_and_config_hash_stable_and_distinct(tiny: Path) -> None:
    params = {"numerics.format": {"values": ["fp32", "bf16"]}, "train.seed": {"values": [0, 3]}}
    path = sweep_file(tiny, parameters=params)
    first = spec.expand(spec.load_sweep(path), tiny / "results").runs
    again = spec.expand(spec.load_sweep(path), tiny / "elsewhere").runs
    assert [r.run_id for r in first] == [r.run_id for r in again]
    assert len({r.run_id for r in first}) == 4
    # numerics.format=bf16 keeps Adam's state in bf16: not the bf16 preset, which owns "bf16"
    labels = ["image-mlp-digits-fp32-s0", "image-mlp-digits-fp32-s3",
              "image-mlp-digits-bf16-opt_bf16-comm_bf16-s0",
              "image-mlp-digits-bf16-opt_bf16-comm_bf16-s3"]  # fmt: skip
    for run, label in zip(first, labels, strict=True):
        resolved = spec.hashed_config(
            recipes.load(tiny / "recipes" / "a.yaml", list(run.params.items()))
        )
        digest = hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()
        assert run.run_id == f"{label}-{digest[:8]}"
    # a change anywhere in the resolved config changes the id, not only the label's fields
    lr = spec.expand(spec.load_sweep(sweep_file(tiny, parameters={"train.lr": {"value": 0.07}})))
    base = spec.expand(spec.load_sweep(sweep_file(tiny)))
    assert lr.runs[0].run_id.rsplit("-", 1)[0] == base.runs[0].run_id.rsplit("-", 1)[0]
    assert lr.runs[0].run_id != base.runs[0].run_id


def test_identical_resolved_configs_collapse_into_one_run(tiny: Path) -> None:
    # c.yaml spells out momentum 0.9, which is a.yaml's default: the same run
    write(tiny / "recipes" / "c.yaml", recipes.merge(TINY, {"train": {"momentum": 0.9}}))
    path = sweep_file(
        tiny, recipe=["recipes/a.yaml", "recipes/c.yaml"],
        parameters={"train.lr": {"values": [0.05, 5.0e-2, 0.1]}},
    )  # fmt: skip
    ex = spec.expand(spec.load_sweep(path), tiny / "results")
    assert len(ex.runs) == 2  # 6 points: lr 0.05 (x4 spellings) and lr 0.1 (x2)
    assert [r.config["train"]["lr"] for r in ex.runs] == [0.05, 0.1]
    assert len(ex.duplicates) == 4
    assert {d["same_as"] for d in ex.duplicates} == {r.run_id for r in ex.runs}
    assert "4 identical configs merged" in run_cli(path, tiny, "--dry-run")[1]


def test_upgrade_config_rewrites_a_config_from_before_numerics_periodic(tiny: Path) -> None:
    from numerics.files import jsonable
    from numerics.train.rundir import RunDir

    overrides = [("numerics.periodic", {"kind": "sin2", "bits": 3}), ("train.seed", 1)]
    config = recipes.load(tiny / "recipes" / "a.yaml", overrides).to_dict()
    old = spec.legacy_layout(config)
    assert old["numerics"]["format"] == "periodic_sin2_b3" and "periodic" not in old["numerics"]
    assert old["periodic"] == {"lambda_max": 1e-4, "start_fraction": 0.5, "ramp_fraction": 0.25}
    rd = RunDir(tiny / "run")
    rd.path.mkdir()
    assert not spec.upgrade_config(rd.path, config)  # no config.yaml: nothing to do
    rd.write_config(old)
    assert spec.upgrade_config(rd.path, config)
    assert yaml.safe_load(rd.config.read_text()) == jsonable(config)
    assert not spec.upgrade_config(rd.path, config)  # already today's layout
    other = recipes.load(tiny / "recipes" / "a.yaml", [("train.seed", 2)]).to_dict()
    rd.write_config(spec.legacy_layout(other))
    assert not spec.upgrade_config(rd.path, config)  # another run's config stays as it is
    assert yaml.safe_load(rd.config.read_text()) == jsonable(spec.legacy_layout(other))
