"""Every shipped sweep (sweeps/**/*.yaml) expands into valid runs, and the demo sweep runs end to
end at a reduced size (two steps per run, one seed) through the sweep engine and compare. The
evaluation sweeps expand over the demo sweep's runs, planted (config, checkpoint, summary)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from numerics.nn.periodic import PeriodicSpec
from numerics.nn.policy import LossScale, Policy
from numerics.rounding import Rounding
from numerics.sweeps import engine, spec
from numerics.sweeps.compare import aggregate, load_runs
from numerics.sweeps.executors.base import RunSpec, run_one
from numerics.train import recipe as recipes
from numerics.train.rundir import RunDir
from numerics.train.summary import RunSummary
from numerics.train.trainer import header
from tests.smallrun import small_overrides

ROOT = Path(__file__).resolve().parents[2]
SWEEPS = sorted((ROOT / "sweeps").rglob("*.yaml"))
# runs expected per sweep, counted by hand from the files: recipes x values
EXPECTED = {
    "demo": 3 * 8 * 3,
    "format_ladder_image": 15 * 3,
    "format_ladder_language": 15 * 3,
    "format_ladder_recsys": 15 * 3,
    "bf16_nomaster_updates": 2 * 2 * 2 * 2 * 2,
    "fp16_loss_scaling": 2 * 3 * 2,
    "batch_size_deepfm": 7 * 2 * 3,
    "periodic_bits": 3 * 3 * 2,
    "mx_scale_rules": 2 * 8 * 2,
    "embedding_cache": 3 * 3 * 2,
    "findings/bf16_kalamkar": 2 * 3 * 3,
    "findings/bf16_kalamkar_language": 3 * 3,
    "findings/bf16_nomaster_zamirai": 2 * 4 * 2 * 3,
    "findings/fixed_point_gupta": 14 * 3,
    "findings/periodic_naumov": 2 * 3 * 8,
    "findings/mx_ladder_rouhani": 10 * 3,
    "findings/mx_ladder_rouhani_language": 11 * 3,
    "findings/embedding_cache_yang": 7 * 3,
    "findings/embedding_cache_yang_sgd": 4 * 3,
    "findings/fp16_loss_scaling_micikevicius": 7 * 3,
    "findings/fp16_loss_scaling_micikevicius_recsys": 5 * 3,
    "findings/linear_scaling_goyal": 11 * 3,
    "findings/cowclip_zheng": 3 * 3 * 3,
    # evaluation sweeps: the demo's fp32-trained runs (3 recipes x 3 seeds) x formats
    "direct_cast_demo": 3 * 3 * 4,
    "findings/direct_cast_rouhani": 3 * 3 * 16,
    # a fault-injection study: the demo's fp32 DLRMs (3 seeds) x 3 weight storages
    "findings/pvf_dlrm_seeds": 3 * 3,
}


def _key(path: Path) -> str:
    return path.relative_to(ROOT / "sweeps").with_suffix("").as_posix()


def test_every_shipped_sweep_is_listed() -> None:
    assert {_key(p) for p in SWEEPS} == set(EXPECTED)


def plant_demo(results: Path, small: bool = False) -> list[RunSpec]:
    """The demo sweep's runs under ``results/demo``: each a config, a checkpoint and a completed
    summary, as evaluation sweeps find them; ``small``: only the first and the last fp32 run,
    really trained at a reduced size."""
    runs = spec.expand(spec.load_sweep(ROOT / "sweeps" / "demo.yaml"), results).runs
    if small:
        fp32 = [r for r in runs if r.params["numerics.format"] == "fp32"]
        picked = []
        for run in (fp32[0], fp32[-1]):
            sets = small_overrides(run.config["data"]["name"], results)
            config = recipes.from_dict(recipes.apply_overrides(run.config, sets)).to_dict()
            picked.append(RunSpec(run.run_id, run.out, config, run.source))
            assert run_one(picked[-1], threads=1).status == "completed"
        return picked
    for run in runs:
        rd = RunDir(run.out)
        rd.write_config(run.config)
        rd.checkpoint.write_bytes(b"")
        what = header(recipes.from_dict(run.config))
        rd.write_summary(RunSummary(status="completed", **what))
    return runs


@pytest.mark.parametrize("path", SWEEPS, ids=_key)
def test_shipped_sweep_expands(path: Path, tmp_path: Path) -> None:
    sw = spec.load_sweep(path)
    if sw.evaluate is not None:
        plant_demo(tmp_path)
    ex = spec.expand(sw, tmp_path)
    assert len(ex.runs) == EXPECTED[_key(path)]
    assert len({r.run_id for r in ex.runs}) == len(ex.runs)


def test_direct_cast_findings_keep_the_folders_the_docs_read(tmp_path: Path) -> None:
    """The findings' evaluation sweep names its jobs as ``numerics evaluate --results`` named
    the folders that docs/findings.md's tables read (results/findings_direct_cast)."""
    plant_demo(tmp_path)
    sw = spec.load_sweep(ROOT / "sweeps" / "findings" / "direct_cast_rouhani.yaml")
    ex = spec.expand(sw, tmp_path)
    assert sw.name == "findings_direct_cast"
    ids = {r.run_id for r in ex.runs}
    assert "image-resnet20-digits-fp32-s0-f43f8216--mxint8" in ids
    assert "recsys-dlrm-synthetic_criteo-fp32-s0-30bc517e--mxfp4_e2m1" in ids
    assert {r.evaluates.run.rsplit("-", 1)[0] for r in ex.runs if r.evaluates} == {
        str(tmp_path / "demo" / f"{t}-fp32-s{s}")
        for t in ("image-resnet20-digits", "language-gpt-stdlib", "recsys-dlrm-synthetic_criteo")
        for s in range(3)
    }


# run ids of shipped sweeps as they were before the periodic regularizer moved from a format
# name (numerics.format: periodic_sin2_b3, periodic.lambda_max) into numerics.periodic: the
# results folders made then must keep their ids (sweep.hashed_config)
KNOWN_IDS = {
    "demo": ["image-resnet20-digits-fp32-s0-f43f8216"],
    "findings/periodic_naumov": [
        "image-resnet20-digits-periodic_sin2_b3-s0-dadca331",
        "image-resnet20-digits-periodic_sin2_b3-s1-ba2da7be",
    ],
}


@pytest.mark.parametrize("name", sorted(KNOWN_IDS))
def test_run_ids_survive_the_move_of_periodic_into_the_policy(name: str, tmp_path: Path) -> None:
    ex = spec.expand(spec.load_sweep(ROOT / "sweeps" / f"{name}.yaml"), tmp_path)
    ids = [r.run_id for r in ex.runs]
    assert ids[: len(KNOWN_IDS[name])] == KNOWN_IDS[name]


# folders that labels unique to the policy keep: the demo's (format + fp32 optimizer state),
# the bf16 preset's and a hand-written name's (findings/bf16_kalamkar)
KEPT_IDS = {
    "demo": ["image-resnet20-digits-bf16-opt_fp32-s0-ce1ae2a1"],
    "findings/bf16_kalamkar": [
        "image-resnet20-digits-bf16-s0-0fdd1e3f",
        "image-resnet20-digits-bf16-truncate-s0-86c395cc",
    ],
}


@pytest.mark.parametrize("name", sorted(KEPT_IDS))
def test_run_ids_survive_labels_unique_to_the_policy(name: str, tmp_path: Path) -> None:
    ex = spec.expand(spec.load_sweep(ROOT / "sweeps" / f"{name}.yaml"), tmp_path)
    assert set(KEPT_IDS[name]) <= {r.run_id for r in ex.runs}


def _in_effect(policy: Policy) -> str:
    """The policy as it computes, less what its label leaves out by design (the seed, the name,
    the update fields master weights ignore, loss-scale factors, the periodic schedule)."""
    p = dataclasses.replace(policy, name=None, seed=0, loss_scale=LossScale(policy.loss_scale.kind))
    if p.master_weights:
        p = dataclasses.replace(p, update_rounding=Rounding.NEAREST_EVEN, update_method="round")
    elif p.update_method == "kahan":
        p = dataclasses.replace(p, update_rounding=Rounding.NEAREST_EVEN)
    if p.periodic is not None:
        p = dataclasses.replace(p, periodic=PeriodicSpec(p.periodic.kind, p.periodic.bits))
    return json.dumps(p.to_dict(), sort_keys=True)


def test_no_label_of_a_shipped_sweep_names_two_policies(tmp_path: Path) -> None:
    """Within each shipped training sweep a label names one policy. Across them the only
    shared labels are two hand-written names in findings/bf16_nomaster_zamirai (the bf16
    preset without master weights, fp32 optimizer state), which bf16_nomaster_updates'
    numerics.format=bf16 policies (bf16 optimizer state) generate: compare tells them apart by
    their configs; renaming them would move 24 findings runs to new folders."""
    seen: dict[str, dict[str, set[str]]] = {}
    for path in SWEEPS:
        sw = spec.load_sweep(path)
        if sw.evaluate is not None:
            continue
        mine: dict[str, str] = {}
        for run in spec.expand(sw, tmp_path).runs:
            policy = recipes.from_dict(run.config).numerics
            effect = _in_effect(policy)
            assert mine.setdefault(policy.label(), effect) == effect, (_key(path), run.run_id)
            seen.setdefault(policy.label(), {}).setdefault(effect, set()).add(_key(path))
    shared = {label: sorted(map(sorted, w.values())) for label, w in seen.items() if len(w) > 1}
    zamirai, updates = ["findings/bf16_nomaster_zamirai"], ["bf16_nomaster_updates"]
    assert shared == {
        "bf16-nomaster-kahan": [updates, zamirai],
        "bf16-nomaster-sr": [updates, zamirai],
    }


def test_demo_sweep_runs_reduced_and_compares(tmp_path: Path) -> None:
    raw = spec.load_sweep(ROOT / "sweeps" / "demo.yaml").raw
    params = dict(raw["parameters"])
    params["numerics.format"] = {"values": ["fp32", "bf16", "mxfp4_e2m1"]}
    params["train.seed"] = {"value": 0}
    params["train.steps"] = {"value": 2}
    params["train.warmup"] = {"value": 0}
    params["train.max_eval_batches"] = {"value": 1}
    params["train.eval_batch_size"] = {"value": 64}
    params["logging.progress"] = {"value": False}
    small = {**raw, "parameters": params, "executor": {"kind": "local", "jobs": 1}}
    sw = spec.from_dict(small, str(ROOT / "sweeps" / "demo.yaml"))
    tally = engine.run_sweep(sw, tmp_path, progress=False)
    assert tally.total == 9 and tally.completed == 9
    runs = load_runs(tmp_path / "demo")
    table = aggregate(runs)
    assert set(table.columns) == {"fp32", "bf16-opt:fp32", "mxfp4_e2m1-opt:fp32"}
    assert len(table.rows) == 3


@pytest.mark.parametrize("path", SWEEPS, ids=_key)
def test_shipped_sweep_runs_reduced_and_compares(path: Path, tmp_path: Path) -> None:
    """The first and the last run of every shipped sweep, shrunk to two steps on small data,
    run through the executor's run function and come out in the comparison (an evaluation
    sweep: the first and last job over two demo runs trained at that size)."""
    sw = spec.load_sweep(path)
    results = tmp_path / "results"
    if sw.evaluate is not None:
        plant_demo(results, small=True)
    ex = spec.expand(sw, results)
    picked = [ex.runs[0], ex.runs[-1]]
    for run in picked:
        config = run.config
        if run.evaluates is None:  # an evaluation keeps its small source's sizes
            sets = small_overrides(run.config["data"]["name"], tmp_path)
            config = recipes.from_dict(recipes.apply_overrides(config, sets)).to_dict()
        job = run.evaluates
        if job is not None and job.pvf is not None:  # a fault-injection study: a few faults
            job = dataclasses.replace(job, pvf={**job.pvf, "faults": 2, "examples": 8})
        small = RunSpec(run.run_id, run.out, config, run.source, evaluates=job)
        summary = run_one(small, threads=1)
        assert summary.status in ("completed", "diverged"), summary.error
    table = aggregate(load_runs(results / sw.name))
    assert table.rows and sum(len(c.runs) for c in table.cells.values()) == 2
