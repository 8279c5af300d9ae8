"""The comparison report: markdown and self-contained HTML holding the table, PNG plots, the
curves and batch-size series the plots draw (checked against planted values)."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from numerics.sweeps.compare import aggregate, load_runs
from numerics.sweeps.report import (
    batch_size_series,
    curve_plots,
    curve_series,
    mean_curves,
    run_href,
    series_curves,
    write_report,
)
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
    assert page.count("data:image/png;base64,") == 1  # metric.png; the curves are the picker's
    assert page.count("data:image/svg+xml;base64,") == 1  # image's train loss
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        assert base64.b64decode(data).startswith(PNG_MAGIC)
    best = re.search(r'<td data-v="[^"]+" class="best">(.*?)</td>', page)
    assert best is not None and best.group(1).startswith(
        '<span class="v">2.0000 ± 1.2706 (n=2) *</span><span class="d">Δ-0.1000 ± 0.0000</span>'
    )
    assert "RuntimeError: boom" in page
    assert page.count('<table class="sortable">') == page.count("</table>") == 3

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


class _Links(HTMLParser):
    """Every src and href of a page, and the attributes of its table cells."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.cells: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v is not None]
        if tag == "td":
            self.cells.append(dict(attrs))


def test_html_opens_offline_links_its_runs_and_carries_the_table_machinery(
    tmp_path: Path,
) -> None:
    runs = load_runs(build_results(tmp_path / "res"))
    table = aggregate(runs)
    out = tmp_path / "res" / "report"  # runs one and two levels away
    write_report(table, runs, out)
    page = (out / "report.html").read_text()
    links = _Links()
    links.feed(page)

    # nothing outside the file: every src and href is a data: URI or a relative link to a run
    assert links.urls
    data = [u for u in links.urls if u.startswith("data:")]
    rel = [u for u in links.urls if not u.startswith("data:")]
    assert all(urlsplit(u).scheme == "" and not u.startswith("/") for u in rel)
    assert all((out / unquote(u)).exists() for u in rel)
    bare = re.sub(r'"data:[^"]*"', '""', page)
    assert "http" not in bare and "<link" not in bare and "@import" not in bare
    assert "url(" not in bare  # no fonts or images from CSS
    for u in data:  # nor from inside the SVGs (a browser will not fetch for an <img> anyway)
        if u.startswith("data:image/svg+xml;base64,"):
            svg = base64.b64decode(u.split(",", 1)[1]).decode()
            assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', svg))

    # each run's link: its summary.json, or its folder while unfinished
    hrefs = {run_href(r, out) for r in runs}
    assert set(rel) == hrefs
    unfinished = next(r for r in runs if r.status == "unfinished")
    assert run_href(unfinished, out) == "../sweep-a/fp32-2/"
    assert run_href(runs[0], out).endswith("/summary.json")

    # the machinery: a sticky first column in a box that scrolls, sortable headers, the script
    assert "position: sticky" in page and "overflow-x: auto" in page
    assert "<script>" in page and "function sortBy(th)" in page
    # numeric headers: the formats (recipes down), the recipes (formats down), seed and value
    assert page.count('data-sort="num"') == len(table.columns) + len(table.rows) + 2
    # both orientations; formats down (shown) as there are more formats than recipes
    assert '<div class="table-wrap" id="by-recipe" hidden>' in page
    assert '<div class="table-wrap" id="by-column">' in page
    # the sort keys are the cells' means, exactly, in both tables
    means = sorted(repr(c.mean) for c in table.cells.values() if c.mean is not None)
    keys = sorted(c["data-v"] or "" for c in links.cells if "data-v" in c)
    assert keys == sorted(means * 2)


def test_curve_series_train_loss_first_telemetry_and_single_points_left_out(
    tmp_path: Path,
) -> None:
    d = write_run(tmp_path, "r", metrics=img(0.9), curve=[(10, 2.0), (20, 1.0)])
    recs = [
        {"step": 5, "split": "train", "name": "lr", "value": 0.1},
        {"step": 10, "split": "train", "name": "lr", "value": 0.05},
        {"step": 10, "split": "telemetry", "name": "fc1/w/qsnr", "value": 30.0},
        {"step": 20, "split": "telemetry", "name": "fc1/w/qsnr", "value": 31.0},
    ]
    with (d / "metrics.jsonl").open("a") as f:
        f.writelines(json.dumps(r) + "\n" for r in recs)
    runs = load_runs(tmp_path)
    assert curve_series(runs) == [("train", "loss"), ("eval", "loss"), ("train", "lr")]
    series = series_curves(aggregate(runs))[IMG]
    assert list(series) == [("train", "loss"), ("train", "lr")]  # eval loss: one step only
    assert series[("train", "lr")]["fp32"] == ([5, 10], [0.1, 0.05], True)
    svgs = curve_plots(aggregate(runs))
    assert list(svgs[IMG]) == list(series)
    assert all(s.lstrip().startswith(b"<?xml") and b"<svg" in s for s in svgs[IMG].values())
