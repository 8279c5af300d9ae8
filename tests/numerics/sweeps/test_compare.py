"""numerics compare: run directories planted by hand with known metrics, the table's numbers
checked against values computed by hand; one real (3-step) run read end to end."""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from numerics.cli import main as cli_main
from numerics.errors import MissingInputError, UserError
from numerics.sweeps import engine, spec
from numerics.sweeps.compare import (
    RunWarning,
    add_parser,
    aggregate,
    cmd_compare,
    format_table,
    load_runs,
    swept_keys,
    where,
)
from numerics.sweeps.executors.base import RunSpec
from numerics.train import recipe as recipes
from numerics.train.rundir import RunDir
from numerics.train.summary import RunSummary
from numerics.train.trainer import header, train

IMG, LANG = "image/mlp/digits", "language/gpt/stdlib"
LN2 = math.log(2.0)


def write_run(
    root: Path,
    name: str,
    *,
    task: str = "image",
    model: str = "mlp",
    data: str = "digits",
    fmt: str = "fp32",
    seed: int = 0,
    status: str = "completed",
    metrics: dict[str, Any] | None = None,
    batch_size: int = 32,
    rule: str = "none",
    lr_scaling: str = "linear",
    curve: list[tuple[int, Any]] | None = None,
    model_width: int | None = None,
    **summary_extra: Any,
) -> Path:
    """A run directory as the trainer leaves it (``status`` unfinished: no summary.json)."""
    d = root / name
    d.mkdir(parents=True)
    config = {
        "task": task,
        "model": {"name": model} | ({"width": model_width} if model_width else {}),
        "data": {"name": data},
        "train": {"seed": seed, "batch_size": batch_size, "lr": 0.05, "lr_scaling": lr_scaling},
        "numerics": {"format": fmt},
        "large_batch": {"rule": rule},
        "logging": {"progress": False},
    }
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    if curve is not None:
        lines = [{"step": s, "split": "train", "name": "loss", "value": v} for s, v in curve]
        lines.append({"step": 99, "split": "eval", "name": "loss", "value": 123.0})  # not train
        (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if status != "unfinished":
        primary = {"image": "accuracy", "language": "bits_per_byte"}[task]
        summary = {"status": status, "task": task, "model": model, "data": data, "format": fmt,
                   "seed": seed, "metrics": metrics or {}, "primary_metric": primary,
                   "batch_size": batch_size, "wall_s": 1.0, **summary_extra}  # fmt: skip
        (d / "summary.json").write_text(json.dumps(summary))
    return d


def img(acc: float, loss: float = 0.5) -> dict[str, float]:
    return {"accuracy": acc, "loss": loss}


def lang(bpb: float) -> dict[str, float]:
    return {"val_loss": bpb * LN2, "bits_per_byte": bpb}


def build_results(root: Path) -> Path:
    """Image runs two levels down (a sweep folder), language runs one level down."""
    s = root / "sweep-a"
    write_run(s, "fp32-0", metrics=img(0.90, 0.30), curve=[(10, 2.0), (20, 1.0)])
    write_run(s, "fp32-1", seed=1, metrics=img(0.92, 0.34), curve=[(10, 1.6), (20, 0.8)])
    write_run(s, "fp32-2", seed=2, status="unfinished", curve=[(10, 5.0)])
    write_run(s, "bf16-0", fmt="bf16", metrics=img(0.89, 0.28))
    write_run(s, "bf16-1", fmt="bf16", seed=1, metrics=img(0.91, 0.30))
    write_run(s, "bf16-2", fmt="bf16", seed=2, status="failed", error="RuntimeError: boom",
              traceback="Traceback...\nRuntimeError: boom\n")  # fmt: skip
    write_run(s, "e4m3-0", fmt="fp8_e4m3", status="diverged", metrics=img(0.10, 9.0),
              reason="loss nan at step 2", curve=[(10, 9.0), (20, "nan")])  # fmt: skip
    write_run(s, "e4m3-1", fmt="fp8_e4m3", seed=1, metrics=img(0.80, 0.6),
              curve=[(10, 2.5), (20, 1.5)])  # fmt: skip
    for seed in (0, 1):
        write_run(s, f"e5m2-{seed}", fmt="fp8_e5m2", seed=seed, status="diverged",
                  metrics={"accuracy": "nan"}, curve=[(10, 3.0), (20, "inf")])  # fmt: skip
    lm: dict[str, Any] = {"task": "language", "model": "gpt", "data": "stdlib"}
    write_run(root, "lm-fp32-0", **lm, metrics=lang(2.0))
    write_run(root, "lm-fp32-1", **lm, seed=1, metrics=lang(2.2))
    write_run(root, "lm-bf16-0", **lm, fmt="bf16", metrics=lang(1.9))
    write_run(root, "lm-bf16-1", **lm, fmt="bf16", seed=1, metrics=lang(2.1))
    return root


def build_batch_sweep(root: Path) -> Path:
    """fp32 at batch 32 and 128 (two seeds each), one bf16 run at 128, rule lars at 128."""
    write_run(root, "b32-0", batch_size=32, metrics=img(0.90))
    write_run(root, "b32-1", batch_size=32, seed=1, metrics=img(0.92))
    write_run(root, "b128-0", batch_size=128, metrics=img(0.85))
    write_run(root, "b128-1", batch_size=128, seed=1, metrics=img(0.87))
    write_run(root, "b128-bf16", batch_size=128, fmt="bf16", metrics=img(0.84))
    write_run(root, "b128-lars", batch_size=128, rule="lars", metrics=img(0.95))
    return root


SD2 = math.sqrt(2 * 0.01**2)  # sample std of two values 0.02 apart


# --- loading ----------------------------------------------------------------------------------
def test_load_runs_finds_runs_one_and_two_levels_down(tmp_path: Path) -> None:
    runs = load_runs(build_results(tmp_path))
    assert len(runs) == 14
    by_name = {r.path.name: r for r in runs}
    assert by_name["fp32-2"].status == "unfinished" and by_name["fp32-2"].summary is None
    assert by_name["fp32-2"].format == "fp32"  # rebuilt from config.yaml's numerics
    assert by_name["bf16-2"].status == "failed"
    assert by_name["bf16-2"].error == "RuntimeError: boom"
    assert by_name["e4m3-0"].error == "loss nan at step 2"
    assert by_name["lm-bf16-1"].recipe == LANG
    with pytest.raises(MissingInputError, match="nowhere"):
        load_runs(tmp_path / "nowhere")


def test_malformed_files_are_skipped_with_a_warning_naming_them(tmp_path: Path) -> None:
    write_run(tmp_path, "good", metrics=img(0.9))
    bad = write_run(tmp_path, "bad-summary", metrics=img(0.5))
    (bad / "summary.json").write_text('{"status": "completed", "metrics": {')  # torn
    listed = write_run(tmp_path, "list-summary", metrics=img(0.5))
    (listed / "summary.json").write_text("[1, 2]")
    odd = write_run(tmp_path, "odd-status", status="weird", metrics=img(0.5))
    cfg = write_run(tmp_path, "bad-config", seed=1, metrics=img(0.7))
    (cfg / "config.yaml").write_text("task: [image\n  model: {")
    with pytest.warns(RunWarning) as rec:
        runs = load_runs(tmp_path)
    messages = [str(w.message) for w in rec]
    assert any(str(bad / "summary.json") in m for m in messages)
    assert any(str(listed / "summary.json") in m and "mapping" in m for m in messages)
    assert any(str(odd / "summary.json") in m and "weird" in m for m in messages)
    assert any(str(cfg / "config.yaml") in m for m in messages)
    # the torn/odd summaries drop their runs; the bad config falls back on the summary
    assert sorted(r.path.name for r in runs) == ["bad-config", "good"]
    t = aggregate(runs)
    cell = t.cells[(IMG, "fp32")]
    assert cell.n == 2 and cell.mean == pytest.approx(0.8)


# --- the numbers ------------------------------------------------------------------------------
T1, T2 = 12.706205, 4.302653  # two-sided 95% t critical values for 1 and 2 degrees of freedom


def test_cells_mean_interval_delta_best_and_counts(tmp_path: Path) -> None:
    t = aggregate(load_runs(build_results(tmp_path)))
    assert t.rows == [IMG, LANG]
    assert t.columns == ["fp32", "bf16", "fp8_e4m3", "fp8_e5m2"]  # baseline first
    assert t.baseline == "fp32" and t.metrics == {IMG: "accuracy", LANG: "bits_per_byte"}
    assert t.level == 0.95

    fp32 = t.cells[(IMG, "fp32")]  # 0.90 and 0.92: the interval is t(1) * s / sqrt(2)
    assert (fp32.mean, fp32.n) == (pytest.approx(0.91), 2)
    assert fp32.std == pytest.approx(SD2)
    assert fp32.half == pytest.approx(T1 * SD2 / math.sqrt(2), rel=1e-6)
    assert fp32.counts == {"unfinished": 1} and fp32.delta is None
    # fp32 beats bf16 by 0.01 on both seeds (paired: significant) but is untested against
    # fp8_e4m3's single run, so it is not significantly best: no mark in the row
    assert not fp32.best
    assert fp32.text == "0.9100 ± 0.1271 (n=2, 1 unfinished)"

    bf16 = t.cells[(IMG, "bf16")]
    assert bf16.mean == pytest.approx(0.90) and bf16.std == pytest.approx(SD2)
    assert bf16.delta == pytest.approx(-0.01) and not bf16.best
    assert bf16.diff is not None and bf16.diff.pairing.value == "paired"
    assert bf16.diff.significant  # the same shift on every seed: no spread
    assert bf16.text == "0.9000 ± 0.1271 (n=2, 1 failed) Δ-0.0100 ± 0.0000"

    e4m3 = t.cells[(IMG, "fp8_e4m3")]  # the diverged run's planted 0.10 is not averaged
    assert (e4m3.mean, e4m3.std, e4m3.half, e4m3.n) == (pytest.approx(0.80), None, None, 1)
    assert e4m3.delta == pytest.approx(-0.11)
    assert e4m3.text == "0.8000 (n=1, 1 diverged) Δ-0.1100 (untested)"

    e5m2 = t.cells[(IMG, "fp8_e5m2")]
    assert e5m2.mean is None and e5m2.counts == {"diverged": 2} and e5m2.text == "diverged (2)"
    assert len(e5m2.runs) == 2

    # bits_per_byte: lower is better, so bf16 (2.0) beats fp32 (2.1) on both seeds
    lm32, lm16 = t.cells[(LANG, "fp32")], t.cells[(LANG, "bf16")]
    assert lm32.mean == pytest.approx(2.1) and lm32.std == pytest.approx(math.sqrt(0.02))
    assert lm16.delta == pytest.approx(-0.1)
    assert lm16.best and not lm32.best
    assert lm16.text.endswith("Δ-0.1000 ± 0.0000 *")
    assert t.higher_is_better == {IMG: True, LANG: False}
    assert t.cell(LANG, "fp8_e4m3") is None  # no such runs: an empty cell


def plant_columns(root: Path, columns: dict[str, list[float]], seeds: list[int] | None = None,
                  **kw: Any) -> Path:  # fmt: skip
    for fmt, values in columns.items():
        for seed, v in zip(seeds or range(len(values)), values, strict=True):
            write_run(root, f"{fmt}-{seed}", fmt=fmt, seed=seed, metrics=img(v), **kw)
    return root


def test_planted_columns_same_distribution_and_5_standard_errors_apart(tmp_path: Path) -> None:
    """Planted data: a column drawn from the baseline's distribution is shown as not different
    (≈, no best); one 5 standard errors of the difference above both is different and best."""
    rng = random.Random(3)
    n, sd = 6, 0.01
    base = [rng.gauss(0.90, sd) for _ in range(n)]
    same = [rng.gauss(0.90, sd) for _ in range(n)]
    se = statistics.stdev([a - b for a, b in zip(same, base, strict=True)]) / math.sqrt(n)
    up = [b + 5 * se + (a - b) for a, b in zip(same, base, strict=True)]  # same + 5 SE
    t = aggregate(load_runs(plant_columns(tmp_path, {"fp32": base, "bf16": same})))
    cell = t.cells[(IMG, "bf16")]
    assert cell.diff is not None and cell.diff.significant is False
    assert cell.text.endswith("≈") and not any(c.best for c in t.cells.values())

    t = aggregate(load_runs(plant_columns(tmp_path / "b", {"fp32": base, "bf16": same, "mx": up})))
    mx = t.cells[(IMG, "mx")]
    assert mx.delta == pytest.approx(5 * se + statistics.fmean(same) - statistics.fmean(base))
    assert mx.diff is not None and mx.diff.significant and "≈" not in mx.text
    assert mx.best and mx.text.endswith("*")  # also significantly above bf16 (by 5 SE)
    assert not t.cells[(IMG, "fp32")].best and not t.cells[(IMG, "bf16")].best
    assert "95% CI (Student t, over seeds)" in format_table(t)


def test_best_needs_significance_against_every_cell(tmp_path: Path) -> None:
    # "hi" leads both others on average; it is clearly above "lo" but within noise of "mid"
    cols = {"fp32": [0.80, 0.81, 0.79], "mid": [0.86, 0.91, 0.84], "hi": [0.90, 0.89, 0.88]}
    t = aggregate(load_runs(plant_columns(tmp_path, cols)))
    assert not any(c.best for c in t.cells.values())
    hi, mid = t.cells[(IMG, "hi")], t.cells[(IMG, "mid")]
    assert hi.diff is not None and hi.diff.significant
    assert mid.diff is not None and mid.diff.significant
    # a tighter level (50%) narrows the intervals enough for "hi" to beat "mid"
    t50 = aggregate(load_runs(tmp_path), level=0.5)
    assert t50.cells[(IMG, "hi")].best and "50% CI" in format_table(t50)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        aggregate(load_runs(tmp_path), level=95)


def test_deltas_are_welch_when_the_seeds_differ(tmp_path: Path) -> None:
    plant_columns(tmp_path, {"fp32": [0.90, 0.91, 0.92]}, seeds=[0, 1, 2])
    plant_columns(tmp_path, {"bf16": [0.80, 0.82, 0.81]}, seeds=[3, 4, 5])
    cell = aggregate(load_runs(tmp_path)).cells[(IMG, "bf16")]
    a, b = [0.80, 0.82, 0.81], [0.90, 0.91, 0.92]
    half = T2 * math.sqrt(statistics.variance(a) / 3 + statistics.variance(b) / 3)
    assert cell.diff is not None and cell.diff.pairing.value == "welch"
    assert cell.diff.df == pytest.approx(4.0)  # equal variances and sizes: 2(n-1)
    # t(0.975, 4) = 2.776 with the Welch-Satterthwaite df of 4
    assert cell.diff.half == pytest.approx(half * 2.776445 / T2, rel=1e-5)
    assert cell.text.endswith("(Welch)")


def plant_evaluations(root: Path) -> Path:
    """Evaluation folders as ``numerics evaluate`` and evaluation sweeps write them: the
    inference format in ``format``, the source run's training format in ``trained_format``."""
    planted = {  # (trained, seed) -> {inference format: accuracy}; None: the evaluation failed
        ("fp32", 0): {"fp32": 0.90, "mxfp4": 0.80},
        ("fp32", 1): {"fp32": 0.92, "mxfp4": 0.83},
        ("fp32", 2): {"fp32": 0.94, "mxfp4": 0.83},
        ("bf16", 0): {"fp32": 0.91, "mxfp4": 0.70},
        ("bf16", 1): {"fp32": 0.93, "mxfp4": None},
    }
    for (trained, seed), accs in planted.items():
        for fmt, acc in accs.items():
            source = f"src/{trained}-s{seed}"
            status = "completed" if acc is not None else "failed"
            write_run(root, f"{trained}-s{seed}--{fmt}", fmt=fmt, seed=seed, status=status,
                      metrics=img(acc or 0.0), trained_format=trained,
                      source_run=source)  # fmt: skip
    write_run(root, "a-training-run", fmt="fp32", metrics=img(0.5))  # not an evaluation
    return root


def test_evaluations_rows_are_the_source_training_and_columns_the_inference_format(
    tmp_path: Path,
) -> None:
    t = aggregate(load_runs(plant_evaluations(tmp_path)))
    fp32_row, bf16_row = f"{IMG} (trained fp32)", f"{IMG} (trained bf16)"
    assert t.rows == [IMG, bf16_row, fp32_row]  # the two trainings are never pooled
    assert t.columns == ["fp32", "mxfp4"]
    # by hand: trained fp32 in fp32: 0.90, 0.92, 0.94 -> 0.92 ± t(2) * 0.02 / sqrt(3)
    c = t.cells[(fp32_row, "fp32")]
    assert (c.mean, c.n) == (pytest.approx(0.92), 3)
    assert c.half == pytest.approx(T2 * 0.02 / math.sqrt(3), rel=1e-6)
    # in mxfp4: 0.80, 0.83, 0.83 -> 0.82; paired by training seed: -0.10, -0.09, -0.11
    c = t.cells[(fp32_row, "mxfp4")]
    assert (c.mean, c.n) == (pytest.approx(0.82), 3)
    assert c.delta == pytest.approx(-0.10)
    assert c.diff is not None and c.diff.pairing.value == "paired"
    assert c.diff.half == pytest.approx(T2 * 0.01 / math.sqrt(3), rel=1e-5)
    # trained bf16: 0.91, 0.93 in fp32; 0.70 and a failed evaluation in mxfp4
    c = t.cells[(bf16_row, "fp32")]
    assert (c.mean, c.n) == (pytest.approx(0.92), 2)
    assert c.half == pytest.approx(T1 * SD2 / math.sqrt(2), rel=1e-6)
    c = t.cells[(bf16_row, "mxfp4")]
    assert (c.mean, c.n, c.counts) == (pytest.approx(0.70), 1, {"failed": 1})
    assert c.text == "0.7000 (n=1, 1 failed) Δ-0.2200 (untested)"  # 0.70 - mean(0.91, 0.93)
    assert t.cells[(IMG, "fp32")].mean == pytest.approx(0.5)  # the training run, on its own
    # the training format is a key to filter or split by
    only = aggregate(where(load_runs(tmp_path), ["trained_format=bf16"]))
    assert only.rows == [bf16_row]
    assert not t.pooled


def test_metric_override_and_rows_lacking_it(tmp_path: Path) -> None:
    runs = load_runs(build_results(tmp_path))
    t = aggregate(runs, metric="loss")  # image planted losses; language has no "loss"
    assert t.metrics == {IMG: "loss", LANG: "loss"}
    fp32, bf16 = t.cells[(IMG, "fp32")], t.cells[(IMG, "bf16")]
    assert fp32.mean == pytest.approx(0.32) and bf16.mean == pytest.approx(0.29)
    # lower is better for loss; 0.28/0.30 against 0.30/0.34: better on both seeds, but the
    # paired differences (-0.02, -0.04) over two seeds leave an interval that holds 0
    assert not bf16.best and not fp32.best
    assert bf16.diff is not None and bf16.diff.significant is False
    assert bf16.delta == pytest.approx(-0.03)
    assert t.cells[(LANG, "fp32")].text == "—" and t.cells[(LANG, "fp32")].mean is None
    assert t.cells[(LANG, "bf16")].counts == {"no metric": 2}

    v = aggregate(runs, metric="val_loss")
    assert v.cells[(IMG, "fp32")].text == "— (1 unfinished)"
    assert v.cells[(IMG, "fp8_e5m2")].text == "diverged (2)"
    assert v.cells[(LANG, "bf16")].mean == pytest.approx(2.0 * LN2)
    assert v.cells[(LANG, "bf16")].best  # 0.1 lower on both seeds: significant

    w = aggregate(runs, metric="wall_s")  # a top-level summary number
    assert w.cells[(IMG, "bf16")].mean == pytest.approx(1.0) and w.higher_is_better[IMG] is False


def test_where_filters_runs_and_dotted_metrics_reach_into_the_summary(tmp_path: Path) -> None:
    write_run(tmp_path, "a", metrics=img(0.9), hardening={"mean_distance_steps": 0.25})
    write_run(tmp_path, "b", seed=1, metrics=img(0.8), hardening={"mean_distance_steps": 0.05})
    write_run(tmp_path, "c", fmt="bf16", metrics=img(0.7))
    runs = load_runs(tmp_path)
    assert [r.path.name for r in where(runs, ["train.seed=1"])] == ["b"]
    assert [r.path.name for r in where(runs, ["format=bf16"])] == ["c"]
    assert where(runs, ["format=fp32", "train.seed=0"])[0].path.name == "a"
    with pytest.raises(ValueError, match="KEY=VALUE"):
        where(runs, ["train.seed"])
    t = aggregate(where(runs, ["format=fp32"]), metric="hardening.mean_distance_steps")
    assert t.cells[(IMG, "fp32")].mean == pytest.approx(0.15)
    assert t.higher_is_better[IMG] is None  # no direction known for it: no best
    t = aggregate(runs, metric="metrics.loss")
    assert t.cells[(IMG, "bf16")].mean == pytest.approx(0.5)
    assert t.higher_is_better[IMG] is False  # the last part, "loss", sets the direction


def test_missing_baseline_gives_no_deltas(tmp_path: Path) -> None:
    t = aggregate(load_runs(build_results(tmp_path)), baseline="fp64")
    assert t.baseline is None
    assert all(c.delta is None for c in t.cells.values())
    assert t.cells[(LANG, "bf16")].best  # best marking does not need a baseline
    assert "no 'fp64' column" in format_table(t)
    b = aggregate(load_runs(tmp_path), baseline="bf16")
    assert b.columns[0] == "bf16" and b.cells[(IMG, "fp32")].delta == pytest.approx(0.01)


def test_by_batch_size_columns_sorted_numerically(tmp_path: Path) -> None:
    runs = load_runs(build_batch_sweep(tmp_path))
    pooled = aggregate(runs, by="train.batch_size", pool=["format", "large_batch.rule"])
    assert pooled.by == "train.batch_size" and pooled.columns == ["32", "128"]
    assert pooled.baseline is None and all(c.delta is None for c in pooled.cells.values())
    c32, c128 = pooled.cells[(IMG, "32")], pooled.cells[(IMG, "128")]
    assert c32.mean == pytest.approx(0.91) and c32.n == 2
    assert c128.mean == pytest.approx((0.85 + 0.87 + 0.84 + 0.95) / 4) and c128.n == 4
    # pooled on purpose: the legend names the keys
    assert pooled.pooled == ["format", "large_batch.rule"] and not pooled.split
    assert "pooled on purpose (--pool): format, large_batch.rule" in format_table(pooled)

    t2 = aggregate(runs, by="train.batch_size", baseline="32", pool=["format,large_batch.rule"])
    assert t2.cells[(IMG, "128")].delta == pytest.approx(0.8775 - 0.91)

    two = aggregate(runs, by="train.batch_size,large_batch.rule", baseline="32 · none")
    # the bf16 run would share "128 · none" with fp32 runs: the format splits it off
    assert two.split == {IMG: ["format"]}
    assert two.columns == ["32 · none · fp32", "128 · lars · fp32", "128 · none · bf16",
                           "128 · none · fp32"]  # baseline first, then numbers  # fmt: skip
    assert two.cells[(IMG, "128 · none · fp32")].mean == pytest.approx((0.85 + 0.87) / 2)
    assert two.cells[(IMG, "128 · none · bf16")].n == 1
    assert two.cells[(IMG, "128 · lars · fp32")].delta == pytest.approx(0.95 - 0.91)
    assert "columns: train.batch_size · large_batch.rule · format" in format_table(two)
    write_run(tmp_path, "b1024", batch_size=1024, metrics=img(0.5))
    every = aggregate(load_runs(tmp_path), by="train.batch_size,large_batch.rule", baseline=None,
                      pool=["format"])  # fmt: skip
    assert every.columns == ["32 · none", "128 · lars", "128 · none", "1024 · none"]  # numbers


def test_a_cell_pools_seeds_only(tmp_path: Path) -> None:
    """Columns split by whatever else differs inside a cell, for the whole row; each cell then
    holds one configuration; the baseline of a split column is the one with its values."""
    runs = load_runs(build_batch_sweep(tmp_path))
    r = aggregate(runs, by="large_batch.rule")
    assert r.split == {IMG: ["format", "train.batch_size"]}
    assert r.columns == ["lars · fp32 · 128", "none · bf16 · 128", "none · fp32 · 32",
                         "none · fp32 · 128"]  # fmt: skip
    assert r.cells[(IMG, "lars · fp32 · 128")].mean == pytest.approx(0.95)

    t = aggregate(runs)  # columns by format, then what else differs inside a format's cell
    assert t.split == {IMG: ["large_batch.rule", "train.batch_size"]} and not t.pooled
    assert t.columns == ["fp32 · lars · 128", "fp32 · none · 32", "fp32 · none · 128",
                         "bf16 · none · 128"]  # the baseline's columns first  # fmt: skip
    planted = {"fp32 · none · 32": (0.91, 2), "fp32 · none · 128": (0.86, 2),
               "fp32 · lars · 128": (0.95, 1), "bf16 · none · 128": (0.84, 1)}  # fmt: skip
    for col, (mean, n) in planted.items():
        assert (t.cells[(IMG, col)].mean, t.cells[(IMG, col)].n) == (pytest.approx(mean), n)
    # bf16 at 128 against fp32 at 128 (not at 32, not with lars)
    assert t.cells[(IMG, "bf16 · none · 128")].delta == pytest.approx(0.84 - 0.86)
    assert t.cells[(IMG, "fp32 · none · 32")].delta is None  # a baseline column itself
    text = format_table(t)
    assert text.startswith("columns: format · large_batch.rule · train.batch_size\n")
    assert "the one with the column's other values" in text
    assert "the runs of a cell differ in nothing but their seeds" in text
    assert "note:" not in text and "pooled on purpose" not in text
    # the baseline named in full; --pool format pools the policies (only with another --by)
    full = aggregate(runs, baseline="fp32 · none · 32")
    assert full.cells[(IMG, "bf16 · none · 128")].delta == pytest.approx(0.84 - 0.91)
    with pytest.raises(UserError, match="format is both a column key"):
        aggregate(runs, pool=["format"])
    with pytest.raises(UserError, match=r"train\.batch_size is both"):
        aggregate(runs, by="train.batch_size", pool=["train"])


def test_seed_and_logging_keys_never_split_and_swept_keys_count_without_configs(
    tmp_path: Path,
) -> None:
    for seed in (0, 1):
        d = write_run(tmp_path, f"s{seed}", seed=seed, metrics=img(0.9 + seed / 100))
        config = yaml.safe_load((d / "config.yaml").read_text())
        config["numerics"]["seed"] = seed  # the stochastic-rounding seed is a seed too
        config["logging"]["progress"] = bool(seed)
        (d / "config.yaml").write_text(yaml.safe_dump(config))
    t = aggregate(load_runs(tmp_path))
    assert t.columns == ["fp32"] and t.cells[(IMG, "fp32")].n == 2 and not t.split

    # config.yaml unreadable: the summary's batch size still tells the runs apart when
    # sweep.yaml says the batch size was swept (the table would pool them otherwise)
    other = tmp_path / "other"
    for bs in (32, 128):
        (write_run(other, f"b{bs}", batch_size=bs, metrics=img(0.9)) / "config.yaml").unlink()
    assert aggregate(load_runs(other)).columns == ["fp32"]
    t = aggregate(load_runs(other), swept=["train.batch_size", "train.seed"])
    assert t.columns == ["fp32 · 32", "fp32 · 128"] and t.split == {IMG: ["train.batch_size"]}


# --- shipped sweeps, planted as the engine leaves them ------------------------------------------
ROOT = Path(__file__).resolve().parents[3]


def plant_sweep(sw: spec.Sweep, results: Path, metric: Callable[[RunSpec], float]) -> Path:
    """The sweep's runs under ``results/<name>`` as the engine and trainer leave them: its
    sweep.yaml, each run's config.yaml and a completed summary.json whose primary metric is
    ``metric(run)``; returns the sweep's results folder."""
    ex = spec.expand(sw, results)
    folder = results / sw.name
    engine.write_index(sw, ex, folder)
    for run in ex.runs:
        rd = RunDir(run.out)
        rd.write_config(run.config)
        what = header(recipes.from_dict(run.config))
        primary = {"image": "accuracy", "recsys": "auc"}[what["task"]]
        rd.write_summary(RunSummary(status="completed", metrics={primary: metric(run)}, **what))
    return folder


CACHE_LOSS = {"none": 0.0, "int8": 0.01, "int4": 0.03}


def cache_auc(run: RunSpec) -> float:
    p = run.params
    return 0.7 - CACHE_LOSS[p["model.embedding_cache"]] + p["model.cache_fraction"] / 10 + (
        p["train.seed"] / 1000
    )  # fmt: skip


def test_the_embedding_cache_sweep_compares_into_one_column_per_cache_and_fraction(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """sweeps/embedding_cache.yaml: no cache, int8 and int4 tables at three cache fractions,
    two seeds, all fp32. Nine columns of two runs each, never one column of eighteen."""
    folder = plant_sweep(spec.load_sweep(ROOT / "sweeps" / "embedding_cache.yaml"),
                         tmp_path, cache_auc)  # fmt: skip
    row = "recsys/dlrm/synthetic_criteo"
    t = aggregate(load_runs(folder), swept=swept_keys(folder))
    fractions = ("0.01", "0.05", "0.2")
    assert t.columns == [f"fp32 · {c} · {f}" for c in ("int4", "int8", "none") for f in fractions]
    assert t.split == {row: ["model.embedding_cache", "model.cache_fraction"]}  # sweep.yaml's order
    for cache in CACHE_LOSS:
        for f in fractions:
            cell = t.cells[(row, f"fp32 · {cache} · {f}")]
            expected = 0.7 - CACHE_LOSS[cache] + float(f) / 10 + 0.0005  # seeds 0 and 1
            assert (cell.n, cell.mean) == (2, pytest.approx(expected))
            assert cell.delta is None  # every column is an fp32 column of its own cache
    assert "no deltas: the 'fp32' columns differ in their other values" in format_table(t)

    args = _args(str(folder), "--by", "model.embedding_cache", "--baseline", "none",
                 "--out", str(tmp_path / "report"))  # fmt: skip
    assert cmd_compare(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("columns: model.embedding_cache · model.cache_fraction\n")
    assert "(n=6)" not in out and "pooled" not in out
    t = aggregate(load_runs(folder), by="model.embedding_cache", baseline="none",
                  swept=swept_keys(folder))  # fmt: skip
    assert t.columns[:3] == ["none · 0.01", "none · 0.05", "none · 0.2"]
    int8 = t.cells[(row, "int8 · 0.05")]  # to none at 0.05, paired by seed
    assert int8.delta == pytest.approx(-0.01) and int8.diff is not None
    assert int8.diff.pairing.value == "paired"

    # pooling a key is a choice the legend states
    t = aggregate(load_runs(folder), by="model.embedding_cache", baseline="none",
                  pool=["model.cache_fraction"], swept=swept_keys(folder))  # fmt: skip
    assert t.columns == ["none", "int4", "int8"] and t.pooled == ["model.cache_fraction"]
    assert t.cells[(row, "int4")].n == 6
    assert "pooled on purpose (--pool): model.cache_fraction" in format_table(t)


def test_the_two_bf16_policies_compare_into_two_columns(tmp_path: Path) -> None:
    """The bf16 preset (Adam state and all-reduce in fp32) and numerics.format=bf16 (bf16
    throughout): two labels, two columns; and two columns still where the runs were made when
    both were labelled bf16, told apart by their configs."""
    raw = {"name": "bf16s", "recipe": "../recipes/image/digits_resnet.yaml",
           "parameters": {"numerics": {"values": [{"preset": "bf16"}, {"format": "bf16"}]},
                          "train.seed": {"values": [0, 1]}}}  # fmt: skip
    sw = spec.from_dict(raw, str(ROOT / "sweeps" / "bf16s.yaml"))
    planted = {"bf16": 0.90, "bf16-opt:bf16-comm:bf16": 0.80}
    folder = plant_sweep(sw, tmp_path, lambda r: 0.9 if "preset" in r.params["numerics"] else 0.8)
    row = "image/resnet20/digits"
    t = aggregate(load_runs(folder), swept=swept_keys(folder))
    assert t.columns == list(planted) and not t.split
    for col, acc in planted.items():
        assert (t.cells[(row, col)].n, t.cells[(row, col)].mean) == (2, pytest.approx(acc))

    for summary in folder.glob("*/summary.json"):  # as runs made before the labels changed
        data = json.loads(summary.read_text())
        summary.write_text(json.dumps(data | {"format": "bf16"}))
    old = aggregate(load_runs(folder), swept=swept_keys(folder))
    assert "numerics.optimizer_state.format" in old.split[row]
    assert len(old.columns) == 2 and all(c.n == 2 for c in old.cells.values())
    assert sorted(c.mean for c in old.cells.values()) == [pytest.approx(0.8), pytest.approx(0.9)]


def test_format_table_is_aligned(tmp_path: Path) -> None:
    t = aggregate(load_runs(build_results(tmp_path)))
    lines = format_table(t).splitlines()
    header = lines[0]
    assert header.split() == ["recipe", "metric", *t.columns]
    assert set(lines[1]) == {"-", " "}
    for row, line in zip(t.rows, lines[2:4], strict=True):
        assert line.startswith(row)
        for col in t.columns:
            start = header.index(col)
            cell = t.cell(row, col)
            text = cell.text if cell is not None else ""
            assert line[start : start + len(text)] == text
            assert line[start - 2 : start] in ("  ", "")  # two spaces before every column
    assert "* significantly better" in format_table(t)


# --- the command ------------------------------------------------------------------------------
def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["compare", *argv])


def test_cmd_compare_end_to_end_on_a_real_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = recipes.from_dict({
        "task": "image",
        "model": {"name": "mlp", "hidden": [16]},
        "data": {"name": "digits"},
        "train": {"steps": 3, "batch_size": 32, "lr": 0.05, "optimizer": "sgd"},
        "logging": {"progress": False},
    })  # fmt: skip
    res = tmp_path / "results"
    train(rec, res / "sweep" / "run-a")
    # sweep.yaml as numerics.sweeps.engine writes it: only its "swept" list is read
    swept = {"name": "sweep", "swept": ["numerics.format", "train.lr"], "runs": []}
    (res / "sweep" / "sweep.yaml").write_text(yaml.safe_dump(swept))
    write_run(res, "broken", metrics=img(0.5))
    (res / "broken" / "summary.json").write_text("{")
    summary = json.loads((res / "sweep" / "run-a" / "summary.json").read_text())

    args = _args(str(res), "--out", str(tmp_path / "report"))
    assert args.func is cmd_compare
    assert cmd_compare(args) == 0
    out, err = capsys.readouterr()
    assert "broken" in err and "summary.json" in err and "warning" in err
    row = next(line for line in out.splitlines() if line.startswith(IMG))
    assert f"{summary['metrics']['accuracy']:.4f} (n=1)" in row
    assert "fp32" in out.splitlines()[0]
    assert "1 runs: 1 completed" in out
    assert "swept (sweep.yaml): numerics.format, train.lr" in out
    names = {p.name for p in (tmp_path / "report").iterdir()}
    assert {"report.md", "report.html", "metric.png", "curves.png"} <= names

    assert cmd_compare(_args(str(res), "--ci", "0.9", "--out", str(tmp_path / "r90"))) == 0
    assert "90% CI (Student t, over seeds)" in capsys.readouterr().out
    assert "90% CI" in (tmp_path / "r90" / "report.md").read_text()
    assert cli_main(["compare", str(res), "--ci", "95"]) == 2
    err = capsys.readouterr().err
    assert "--ci" in err and "95" in err and "strictly between 0 and 1" in err

    assert cli_main(["compare", str(tmp_path / "missing")]) == 2
    assert "missing: no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cmd_compare(_args(str(tmp_path / "empty"))) == 1
    assert "no runs" in capsys.readouterr().err


def _prov(code: str, cpu: str = "CPU A") -> dict[str, Any]:
    return {"code": code, "torch": "2.13.0", "cpu": cpu, "threads": 1}


def test_a_cell_that_mixes_code_or_cpu_models_is_flagged(tmp_path: Path, capsys: Any) -> None:
    write_run(tmp_path, "fp32-0", metrics=img(0.90), provenance=_prov("aaaa"))
    write_run(tmp_path, "fp32-1", seed=1, metrics=img(0.92), provenance=_prov("bbbb"))
    write_run(tmp_path, "bf16-0", fmt="bf16", metrics=img(0.89), provenance=_prov("aaaa"))
    write_run(tmp_path, "bf16-1", fmt="bf16", seed=1, metrics=img(0.91),
              provenance=_prov("aaaa", "CPU B"))  # fmt: skip
    write_run(tmp_path, "e4m3-0", fmt="fp8_e4m3", metrics=img(0.80), provenance=_prov("aaaa"))
    write_run(tmp_path, "e4m3-1", fmt="fp8_e4m3", seed=1, metrics=img(0.82))  # no record
    table = aggregate(load_runs(tmp_path))
    assert table.cells[(IMG, "fp32")].mixed == ["code"]
    assert table.cells[(IMG, "bf16")].mixed == ["cpu"]
    assert table.cells[(IMG, "fp8_e4m3")].mixed == []  # an unrecorded run adds nothing
    want = {"code": ["aaaa"], "torch": ["2.13.0"], "cpu": ["CPU A", "CPU B"], "threads": ["1"]}
    assert table.cells[(IMG, "bf16")].provenance == want
    text = format_table(table)
    assert f"warning: {IMG} / fp32 mixes runs made by different code (code: aaaa, bbbb)" in text
    assert (
        f"warning: {IMG} / bf16 mixes runs made by different CPU models (cpu: CPU A, CPU B)" in text
    )
    assert "fp8_e4m3 mixes" not in text
    args = add_parser_args([str(tmp_path)])
    assert cmd_compare(args) == 0
    err = capsys.readouterr().err
    assert err.count("numerics compare: warning:") == 2
    page = (tmp_path / "report.html").read_text()
    assert 'title="made with code aaaa, bbbb; torch 2.13.0; cpu CPU A; threads 1"' in page
    assert page.count('class="mixed"') == 2 * 2  # the page holds both orientations


def add_parser_args(argv: list[str]) -> Any:
    import argparse

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["compare", *argv])
