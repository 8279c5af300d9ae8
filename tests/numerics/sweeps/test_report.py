"""The comparison report: markdown and self-contained HTML holding the table, PNG plots, the
curves and batch-size series the plots draw (checked against planted values)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from numerics.sweeps.compare import aggregate, load_runs
from numerics.sweeps.report import batch_size_series, mean_curves, write_report
from tests.numerics.sweeps.test_compare import IMG, build_batch_sweep, build_results, img, write_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_report_files_markdown_and_self_contained_html(tmp_path: Path) -> None:
    runs = load_runs(build_results(tmp_path / "res"))
    table = aggregate(runs)
    out = tmp_path / "out"
    written = write_report(table, runs, out)
    names = [p.name for p in written]
    assert names == ["report.md", "report.html", "metric.png", "curves.png"]
    assert not (out / "batch_size.png").exists()  # one batch size only: no batch-size plot
    assert sorted(p.name for p in out.iterdir()) == sorted(names)  # no temp files left over
    for p in written[2:]:
        assert p.read_bytes().startswith(PNG_MAGIC)

    md = (out / "report.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| image/mlp/digits |")]
    assert len(rows) == 1
    assert "| 0.9100 ± 0.1271 (n=2, 1 unfinished) |" in rows[0]  # not significantly best
    assert "0.9000 ± 0.1271 (n=2, 1 failed) Δ-0.0100 ± 0.0000" in rows[0]
    assert "diverged (2)" in rows[0]
    lm = next(line for line in md.splitlines() if line.startswith("| language/gpt/stdlib |"))
    assert "| **2.0000 ± 1.2706 (n=2) " in lm  # best: bold
    assert "Δ-0.1000 ± 0.0000 \\***" in lm
    assert "95% CI (Student t, over seeds)" in md
    failed = next(line for line in md.splitlines() if line.startswith("- failed:"))
    assert "sweep-a/bf16-2" in failed and "RuntimeError: boom" in failed
    assert "loss nan at step 2" in md and "sweep-a/fp32-2" in md
    assert "![" in md and "(metric.png)" in md

    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2
    assert 'src="http' not in page and "<script" not in page and "<link" not in page
    assert "url(" not in page  # no external fonts or images from CSS
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        assert base64.b64decode(data).startswith(PNG_MAGIC)
    assert '<td class="best">2.0000 ± 1.2706 (n=2) Δ-0.1000 ± 0.0000 *</td>' in page
    assert "RuntimeError: boom" in page
    assert page.count("<table>") == page.count("</table>") == 2

    again = write_report(aggregate(runs, baseline="fp64"), runs, out)  # overwrite in place
    assert "Δ" not in (out / "report.md").read_text().split("## Runs")[0]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in again)


def test_mean_curves_average_completed_runs_only(tmp_path: Path) -> None:
    curves = mean_curves(aggregate(load_runs(build_results(tmp_path))))
    steps, mean, complete = curves[IMG]["fp32"]  # the unfinished run's 5.0 is left out
    assert (steps, complete) == ([10, 20], True)
    assert mean == pytest.approx([1.8, 0.9])
    assert curves[IMG]["fp8_e4m3"][:2] == ([10, 20], pytest.approx([2.5, 1.5]))
    steps, mean, complete = curves[IMG]["fp8_e5m2"]  # none completed: the diverged, dashed
    assert (steps, mean, complete) == ([10], [3.0], False)  # the "inf" at step 20 dropped
    assert "bf16" not in curves[IMG] and "language/gpt/stdlib" not in curves  # no metrics.jsonl


def test_batch_size_series_lines_per_rule(tmp_path: Path) -> None:
    root = build_batch_sweep(tmp_path / "a")
    write_run(root, "b512-lars", batch_size=512, rule="lars", metrics=img(0.93))
    table = aggregate(load_runs(root), by="train.batch_size")
    key, lines = batch_size_series(table)[IMG]
    assert key == "large_batch.rule"
    assert set(lines) == {"lars · fp32", "none · fp32", "none · bf16"}  # two formats mixed
    (b32, m32, s32, n32), (b128, m128, s128, n128) = lines["none · fp32"]
    assert (b32, n32, b128, n128) == (32, 2, 128, 2)
    # the error bars are the means' 95% intervals: t(0.975, 1) * s / sqrt(2), s = sqrt(2) / 100
    assert m32 == pytest.approx(0.91) and s32 == pytest.approx(12.706205 * 0.01, rel=1e-6)
    assert m128 == pytest.approx(0.86) and s128 == pytest.approx(12.706205 * 0.01, rel=1e-6)
    assert lines["lars · fp32"] == [(128, 0.95, None, 1), (512, 0.93, None, 1)]
    assert write_report(table, load_runs(root), tmp_path / "o")[-1].name == "batch_size.png"
    assert (tmp_path / "o" / "batch_size.png").read_bytes().startswith(PNG_MAGIC)

    # no rule set anywhere: the lines are the lr scaling rules
    b = tmp_path / "b"
    for bs, scaling, acc in ((64, "linear", 0.9), (256, "linear", 0.8), (256, "sqrt", 0.85)):
        write_run(b, f"{scaling}-{bs}", batch_size=bs, lr_scaling=scaling, metrics=img(acc))
    key, lines = batch_size_series(aggregate(load_runs(b)))[IMG]
    assert key == "train.lr_scaling"
    assert lines == {"linear": [(64, 0.9, None, 1), (256, 0.8, None, 1)],
                     "sqrt": [(256, 0.85, None, 1)]}  # fmt: skip
