"""Evaluation sweeps (``numerics.sweeps.evalsweep``): trained runs found and filtered, expanded
over a grid of inference policies, run through the executors like training runs (parallel,
isolated, resumable) and tabled by compare; every evaluation equals ``numerics evaluate`` of
the same run and policy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from numerics.sweeps import engine, spec
from numerics.sweeps.compare import aggregate, load_runs
from numerics.sweeps.executors.base import Evaluation
from numerics.sweeps.executors.local import LocalExecutor
from numerics.train import recipe as recipes
from numerics.train.evaluate import evaluate
from numerics.train.trainer import train
from tests.numerics.sweeps.test_engine import counting
from tests.numerics.sweeps.test_spec import TINY, run_cli, write

FP32_RUNS = ("a-fp32-s0", "a-fp32-s1")  # source folders, as a training sweep names them
BF16 = "bf16-opt:bf16-comm:bf16"  # numerics.format=bf16's label ("bf16" is the preset's)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training sweep's results folder: two fp32 runs (seeds 0, 1), one bf16 run, and a
    run that failed before its first checkpoint."""
    root = tmp_path_factory.mktemp("trained")
    for name, fmt, seed in [(*FP32_RUNS[:1], "fp32", 0), (FP32_RUNS[1], "fp32", 1),
                            ("a-bf16-s0", "bf16", 0)]:  # fmt: skip
        d = recipes.merge(TINY, {"numerics": {"format": fmt}, "train": {"seed": seed}})
        train(recipes.from_dict(d), root / name)
    failed = root / "a-fp32-s2"
    failed.mkdir()
    shutil.copy(root / FP32_RUNS[0] / "config.yaml", failed / "config.yaml")
    (failed / "summary.json").write_text(json.dumps({"status": "failed", "error": "boom"}))
    return root


@pytest.fixture
def tiny(tmp_path: Path, trained: Path) -> Path:
    """A working folder whose results root holds the trained runs under ``src``."""
    shutil.copytree(trained, tmp_path / "results" / "src")
    return tmp_path


def eval_sweep(folder: Path, **keys: Any) -> Path:
    data = {
        "name": "evals",
        "evaluate": {"runs": ["src"], "where": {"format": "fp32"}},
        "parameters": {"numerics.format": {"values": ["fp32", "bf16"]}},
        "executor": {"kind": "local", "jobs": 1},
        **keys,
    }
    return write(folder / "evals.yaml", data)


# --- expansion --------------------------------------------------------------------------------
def test_sources_times_grid_sources_outermost(tiny: Path) -> None:
    ex = spec.expand(spec.load_sweep(eval_sweep(tiny)), tiny / "results")
    expected = [f"{s}--{f}" for s in FP32_RUNS for f in ("fp32", BF16)]  # by hand
    assert [r.run_id for r in ex.runs] == expected
    src = tiny / "results" / "src"
    for r in ex.runs:
        source, label = r.run_id.split("--")
        fmt = "bf16" if label == BF16 else label
        assert r.evaluates == Evaluation(str(src / source)) and r.params == {"numerics.format": fmt}
        assert r.out == str((tiny / "results" / "evals" / r.run_id).resolve())
        assert r.config["numerics"]["format"] == fmt and r.config["train"]["steps"] == 3
    assert ex.swept == ["numerics.format"]
    # the bf16-trained run is filtered out by where, the failed one has no checkpoint
    assert ex.notes == ["skipped 2 source runs: 1 without checkpoint.pt, 1 not matching where"]


def test_runs_may_be_globs_lists_of_where_values_and_paths_from_the_working_dir(
    tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tiny)  # "results/src/..." is found in the working directory
    path = eval_sweep(
        tiny,
        evaluate={"runs": ["results/src/a-*-s0"], "where": {"format": ["fp32", BF16]}},
        parameters={"numerics.format": {"value": "mxint8"}},
    )
    ex = spec.expand(spec.load_sweep(path), tiny / "elsewhere")
    assert [r.run_id for r in ex.runs] == ["a-bf16-s0--mxint8", "a-fp32-s0--mxint8"]
    assert ex.runs[0].evaluates == Evaluation(str(Path("results") / "src" / "a-bf16-s0"))
    assert ex.notes == []


BAD: list[tuple[dict[str, Any], str]] = [
    ({"parameters": {"train.lr": {"value": 0.1}}},
     r"evals.yaml: parameters.train.lr: an evaluation sweep changes only the inference side.*"
     r"allowed: numerics, train.eval_batch_size, train.max_eval_batches"),
    ({"method": "random", "count": 2}, r"evals.yaml: method: an evaluation sweep takes method"),
    ({"recipe": "recipes/a.yaml"}, r"evals.yaml: evaluate: a sweep trains recipes .* not both"),
    ({"evaluate": {"runs": []}}, r"evals.yaml: evaluate.runs: required"),
    ({"evaluate": {"runs": ["src"], "wher": {}}}, r"evaluate.wher: unknown key.*where"),
    ({"evaluate": {"runs": ["src"], "calibrate": -1}},
     r"evals.yaml: evaluate.calibrate: must be an integer >= 0, got -1"),
]  # fmt: skip


@pytest.mark.parametrize(("keys", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_a_bad_file_is_refused_when_read(tiny: Path, keys: dict[str, Any], message: str) -> None:
    with pytest.raises(spec.SweepError, match=message):
        spec.load_sweep(eval_sweep(tiny, **keys))


EXPAND_BAD: list[tuple[dict[str, Any], str]] = [
    ({"evaluate": {"runs": ["nowhere"]}},
     r"evals.yaml: evaluate.runs: 'nowhere' matches no folder \(looked under the results root"),
    ({"evaluate": {"runs": ["src/a-fp32-s2"]}},
     r"evaluate.runs: .*a-fp32-s2 is a run folder that cannot be evaluated \(without "
     r"checkpoint.pt"),
    ({"evaluate": {"runs": ["src"], "where": {"format": "fp8"}}},
     r"evals.yaml: evaluate.where: no source run to evaluate \(skipped 4 source runs: "
     r"3 not matching where, 1 without checkpoint.pt\)"),
    ({"evaluate": {"runs": ["."]}}, r"evaluate.runs: .* neither a run folder nor a folder of them"),
    ({"parameters": {"numerics.format": {"values": ["fp32", "fp7"]}}},
     r"evals.yaml: parameters.numerics.format: .*fp7"),
    ({"parameters": {"train.max_eval_batches": {"values": [1, 2]}}},
     r"evals.yaml: parameters: two jobs would share the folder a-fp32-s0--fp32"),
]  # fmt: skip


@pytest.mark.parametrize(("keys", "message"), EXPAND_BAD, ids=[m[:40] for _, m in EXPAND_BAD])
def test_bad_sources_and_values_are_named_with_the_file_and_key(
    tiny: Path, keys: dict[str, Any], message: str
) -> None:
    path = eval_sweep(tiny, **keys)
    with pytest.raises(spec.SweepError, match=message):
        spec.expand(spec.load_sweep(path), tiny / "results")
    rc, _, err = run_cli(path, tiny, "--dry-run")
    assert rc == 2 and "numerics sweep: " in err and err.count("\n") == 1  # one line
    assert not (tiny / "results" / "evals").exists()


# --- running ----------------------------------------------------------------------------------
def summaries(folder: Path) -> dict[str, dict[str, Any]]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(folder.glob("*/summary.json"))}


def test_two_workers_end_to_end_each_equal_to_numerics_evaluate(tiny: Path) -> None:
    path = eval_sweep(tiny, parameters={
        "numerics.format": {"values": ["fp32", "mxfp4_e2m1"]},
        "train.max_eval_batches": {"value": 2},
    })  # fmt: skip
    rc, out, _ = run_cli(path, tiny, "--jobs", "2")
    assert rc == 0, out
    assert "4/4 runs: 4 completed, 0 diverged, 0 failed (skipped 2 source runs:" in out
    folder = tiny / "results" / "evals"
    done = summaries(folder)
    assert sorted(done) == sorted(f"{s}--{f}" for s in FP32_RUNS for f in ("fp32", "mxfp4_e2m1"))
    src = tiny / "results" / "src"
    for run_id, s in done.items():
        source, fmt = run_id.split("--")
        sets = [f"numerics.format={fmt}", "train.max_eval_batches=2"]
        direct = evaluate(src / source, sets, tiny / "direct" / run_id)
        assert s["metrics"] == direct.metrics  # bit for bit: the building block, per job
        assert s["source_run"] == str(src / source) and s["trained_format"] == "fp32"
        assert s["format"] == fmt
    index = yaml.safe_load((folder / "sweep.yaml").read_text())
    assert [r["source_run"] for r in index["runs"]] == [str(src / s) for s in FP32_RUNS
                                                        for _ in range(2)]  # fmt: skip
    table = aggregate(load_runs(folder))
    assert table.rows == ["image/mlp/digits (trained fp32)"]
    assert table.columns == ["fp32", "mxfp4_e2m1"]
    assert all(c.n == 2 for c in table.cells.values())  # pooled over the training seeds


def test_resume_redoes_exactly_the_failed_and_unfinished_evaluations(tiny: Path) -> None:
    s = spec.load_sweep(eval_sweep(tiny))
    results = tiny / "results"
    calls: list[str] = []
    tally = engine.run_sweep(s, results, LocalExecutor(jobs=1, fn=counting(calls)), progress=False)
    assert (tally.completed, tally.failed, len(calls)) == (4, 0, 4)
    folder = results / "evals"
    interrupted, failed, kept = calls[1], calls[2], [calls[0], calls[3]]
    (folder / interrupted / "summary.json").unlink()
    bad = {"status": "failed", "error": "RuntimeError: boom"}
    (folder / failed / "summary.json").write_text(json.dumps(bad))
    mtimes = {k: (folder / k / "summary.json").stat().st_mtime_ns for k in kept}
    with pytest.raises(engine.ResultsExistError):
        engine.run_sweep(s, results, LocalExecutor(jobs=1), progress=False)
    calls.clear()
    tally = engine.run_sweep(
        s, results, LocalExecutor(jobs=1, fn=counting(calls)), resume=True, progress=False
    )
    assert sorted(calls) == sorted([interrupted, failed])
    assert (tally.completed, tally.skipped) == (4, 2)
    assert {k: (folder / k / "summary.json").stat().st_mtime_ns for k in kept} == mtimes
    assert json.loads((folder / failed / "summary.failed.json").read_text()) == bad


def test_a_failed_evaluation_is_isolated_and_counted_in_its_row(tiny: Path) -> None:
    path = eval_sweep(tiny)
    s = spec.load_sweep(path)
    # the second source's checkpoint goes bad after the sweep was planned
    (tiny / "results" / "src" / FP32_RUNS[1] / "checkpoint.pt").write_bytes(b"not a checkpoint")
    tally = engine.run_sweep(s, tiny / "results", LocalExecutor(jobs=1), progress=False)
    assert (tally.completed, tally.failed) == (2, 2)
    done = summaries(tiny / "results" / "evals")
    bad = done[f"{FP32_RUNS[1]}--{BF16}"]
    assert bad["status"] == "failed" and "Traceback" in bad["traceback"]
    assert bad["trained_format"] == "fp32" and bad["format"] == BF16  # still placed
    table = aggregate(load_runs(tiny / "results" / "evals"))
    assert table.rows == ["image/mlp/digits (trained fp32)"]
    cell = table.cells[("image/mlp/digits (trained fp32)", BF16)]
    assert (cell.n, cell.counts) == (1, {"failed": 1})


def test_calibrated_jobs_are_named_and_equal_to_numerics_evaluate_calibrate(tiny: Path) -> None:
    path = eval_sweep(
        tiny,
        evaluate={"runs": ["src/a-fp32-s0"], "calibrate": 2},
        parameters={"numerics.format": {"values": ["int8", "mxint8"]}},
    )
    sw = spec.load_sweep(path)
    ex = spec.expand(sw, tiny / "results")
    src = tiny / "results" / "src" / "a-fp32-s0"
    # int8's activation scales are calibrated: its label says so; mxint8 has none to fix
    assert [r.run_id for r in ex.runs] == ["a-fp32-s0--int8-cal2", "a-fp32-s0--mxint8"]
    assert {r.evaluates for r in ex.runs} == {Evaluation(str(src), 2)}
    tally = engine.run_sweep(sw, tiny / "results", LocalExecutor(jobs=1), progress=False)
    assert tally.completed == 2
    done = summaries(tiny / "results" / "evals")
    for run_id, fmt in [("a-fp32-s0--int8-cal2", "int8"), ("a-fp32-s0--mxint8", "mxint8")]:
        direct = evaluate(src, [f"numerics.format={fmt}"], tiny / "direct" / run_id, calibrate=2)
        assert done[run_id]["metrics"] == direct.metrics and done[run_id]["format"] == direct.format
    assert done["a-fp32-s0--int8-cal2"]["calibration_batches"] == 2
    assert done["a-fp32-s0--mxint8"]["calibration_batches"] == 0
    index = yaml.safe_load((tiny / "results" / "evals" / "sweep.yaml").read_text())
    assert [r["calibrate"] for r in index["runs"]] == [2, 2]


# --- fault injection --------------------------------------------------------------------------
def test_a_pvf_study_runs_as_sweep_jobs_each_equal_to_numerics_pvf(tiny: Path) -> None:
    from numerics.train.pvf import pvf

    study = {"faults": 6, "examples": 16, "seed": 3, "fields": ["element", "scale"],
             "bits": [7, "any"]}  # fmt: skip
    path = eval_sweep(
        tiny,
        evaluate={"runs": ["src"], "where": {"format": "fp32"}, "pvf": study},
        parameters={"numerics.weights": {"values": ["mxint8", "mxfp4_e2m1"]}},
    )
    ex = spec.expand(spec.load_sweep(path), tiny / "results")
    assert ex.runs[0].evaluates is not None and ex.runs[0].evaluates.pvf == {
        "faults": 6, "examples": 16, "seed": 3, "flips": 1, "fields": ["element", "scale"],
        "bits": [7, None], "components": []}  # fmt: skip
    rc, out, _ = run_cli(path, tiny, "--jobs", "2")
    assert rc == 0, out
    assert "4/4 runs: 4 completed" in out
    folder = tiny / "results" / "evals"
    src = tiny / "results" / "src"
    for r in ex.runs:
        source, label = r.run_id.split("--")
        fmt = label.split("w:")[1]
        direct = pvf(
            src / source, tiny / "direct" / r.run_id, overrides=[f"numerics.weights={fmt}"],
            fields=["element", "scale"], bits=[7, None], faults=6, examples=16, seed=3,
        )  # fmt: skip
        got = json.loads((folder / r.run_id / "summary.json").read_text())
        assert got["metrics"] == direct.metrics and got["source_run"] == str(src / source)
        cells = json.loads((folder / r.run_id / "pvf.json").read_text())["cells"]
        assert {(c["field"], c["bit"]) for c in cells} == {
            (f, b) for f in ("element", "scale") for b in (7, None)}  # fmt: skip
    index = yaml.safe_load((folder / "sweep.yaml").read_text())
    assert index["runs"][0]["pvf"]["faults"] == 6


@pytest.mark.parametrize(
    ("pvf", "message"),
    [({"fields": ["exponent"]}, r"evaluate.pvf.fields: unknown 'exponent'"),
     ({"bits": [-1]}, r"evaluate.pvf.bits: each bit is an integer >= 0 or any"),
     ({"faults": 0}, r"evaluate.pvf.faults: must be a positive integer, got 0"),
     ({"fault": 3}, r"evaluate.pvf.fault: unknown key")],
)  # fmt: skip
def test_a_bad_pvf_section_is_named(tiny: Path, pvf: dict[str, Any], message: str) -> None:
    with pytest.raises(spec.SweepError, match=message):
        spec.load_sweep(eval_sweep(tiny, evaluate={"runs": ["src"], "pvf": pvf}))
