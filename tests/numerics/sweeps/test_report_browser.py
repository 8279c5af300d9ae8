"""report.html in a real browser (headless Chromium, driven by playwright): the table renders
with its first column sticky and scrolls inside its box, a click on a header sorts the rows by
the cells' means (checked against the order computed here from the planted values), the
orientation swaps, the curve picker shows one figure, and the page asks for nothing outside
itself. Skipped where no Chromium is installed (``apt-get install chromium``; .ci/run tries)."""

from __future__ import annotations

import re
import shutil
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import pytest

from numerics.sweeps.compare import aggregate, load_runs
from numerics.sweeps.report import write_report
from tests.numerics.sweeps.test_compare import IMG, LANG, img, lang, write_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip(
        "no chromium executable on PATH (apt-get install chromium): report.html's browser "
        "test skipped",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright not installed (pip install -e '.[dev]')"
)
# no sandbox (CI runs as root in a container); nothing that reaches for the network
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip

# two seeds per cell; fp8_e5m2 diverges on the image recipe: no mean, sorted last either way
FORMATS = ["fp32", "bf16", "fp16", "fp8_e4m3", "fp8_e5m2", "mxfp4_e2m1", "int8"]
ACCURACY: dict[str, tuple[float, float] | None] = {
    "fp32": (0.90, 0.92), "bf16": (0.95, 0.93), "fp16": (0.85, 0.87), "fp8_e4m3": (0.70, 0.74),
    "fp8_e5m2": None, "mxfp4_e2m1": (0.97, 0.96), "int8": (0.80, 0.78),
}  # fmt: skip
BITS_PER_BYTE = {
    "fp32": (2.0, 2.2), "bf16": (2.5, 2.4), "fp16": (1.9, 2.0), "fp8_e4m3": (3.0, 3.2),
    "fp8_e5m2": (2.1, 2.2), "mxfp4_e2m1": (4.0, 4.1), "int8": (1.7, 1.8),
}  # fmt: skip


def build(root: Path) -> Path:
    """Two recipes by seven formats, planted metrics and training curves."""
    for fmt in FORMATS:
        acc = ACCURACY[fmt]
        bpb = BITS_PER_BYTE[fmt]
        for seed in (0, 1):
            curve = [(10, 2.0 + seed), (20, 1.0 + seed)]
            if acc is None:
                write_run(root, f"img-{fmt}-{seed}", fmt=fmt, seed=seed, status="diverged",
                          metrics=img(0.1), reason="loss nan", curve=curve)  # fmt: skip
            else:
                write_run(root, f"img-{fmt}-{seed}", fmt=fmt, seed=seed, metrics=img(acc[seed]),
                          curve=curve)  # fmt: skip
            write_run(root, f"lm-{fmt}-{seed}", task="language", model="gpt", data="stdlib",
                      fmt=fmt, seed=seed, metrics=lang(bpb[seed]), curve=curve)  # fmt: skip
    return root


def oracle(planted: dict[str, Any], descending: bool) -> list[str]:
    """The formats ordered by their planted mean, those without one last."""
    means = {f: statistics.fmean(v) for f, v in planted.items() if v is not None}
    return sorted(means, key=means.__getitem__, reverse=descending) + [
        f for f in planted if f not in means
    ]


def natural(label: str) -> list[Any]:
    """Text with its digit runs as numbers: fp8 before fp16."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", label)]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = build(tmp_path_factory.mktemp("results"))
    runs = load_runs(root)
    write_report(aggregate(runs), runs, root)
    return root / "report.html"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, report: Path) -> Iterator[Any]:
    pg = browser.new_page(viewport={"width": 1280, "height": 900})
    pg.set_default_timeout(20_000)
    requested: list[str] = []
    errors: list[str] = []
    pg.on("request", lambda r: requested.append(r.url))
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(report.as_uri())
    yield pg
    pg.close()
    assert not errors, errors
    # the page, its data: images, nothing else
    assert {urlsplit(u).scheme for u in requested} <= {"file", "data"}, requested
    assert [u for u in requested if u.startswith("file:")] == [report.as_uri()]


def row_labels(page: Any, wrap: str) -> list[str]:
    return page.eval_on_selector_all(
        f"#{wrap} tbody tr", "rows => rows.map(r => r.cells[0].textContent)"
    )


def click_header(page: Any, wrap: str, label: str) -> None:
    page.locator(f"#{wrap} thead th").filter(has_text=label).locator("button").click()


def test_table_renders_with_a_sticky_first_column_and_scrolls_in_its_box(
    page: Any, report: Path
) -> None:
    # more formats than recipes: formats down, in the table's order
    assert page.is_visible("#by-column table") and page.is_hidden("#by-recipe")
    assert row_labels(page, "by-column") == aggregate(load_runs(report.parent)).columns
    cells = page.eval_on_selector_all(
        "#by-column tbody tr", "rows => rows.map(r => r.querySelectorAll('td').length)"
    )
    assert cells == [2] * len(FORMATS)
    assert page.inner_text("#by-column tbody tr:first-child td:nth-child(2)").startswith(
        "0.9100 ± 0.1271 (n=2)"
    )
    positions = page.eval_on_selector_all(
        "#by-column tr > :first-child", "cs => cs.map(c => getComputedStyle(c).position)"
    )
    assert positions == ["sticky"] * (1 + len(FORMATS))

    page.click("#swap")  # recipes down: seven format columns, wider than a narrow window
    assert page.is_visible("#by-recipe table") and page.is_hidden("#by-column")
    assert row_labels(page, "by-recipe") == [IMG, LANG]
    page.set_viewport_size({"width": 800, "height": 600})
    box = page.evaluate(
        """() => {
        const w = document.getElementById("by-recipe");
        const first = w.querySelector("tbody th"), second = w.querySelector("tbody td");
        const before = [first.getBoundingClientRect().left, second.getBoundingClientRect().left];
        w.scrollLeft = 300;
        return {scrolls: w.scrollWidth > w.clientWidth, before,
                after: [first.getBoundingClientRect().left, second.getBoundingClientRect().left],
                page: document.documentElement.scrollWidth, width: window.innerWidth};
    }"""
    )
    assert box["scrolls"] and box["page"] <= box["width"]  # the box scrolls, not the page
    assert box["after"][0] == box["before"][0]  # the first column stays
    assert box["after"][1] < box["before"][1]  # the rest moved under it


def test_a_header_click_sorts_the_rows_by_the_means(page: Any) -> None:
    # accuracy (higher is better): the first click puts the best first, the second reverses
    click_header(page, "by-column", IMG)
    assert row_labels(page, "by-column") == oracle(ACCURACY, descending=True)
    header = page.locator("#by-column thead th").filter(has_text=IMG)
    assert header.get_attribute("aria-sort") == "descending"
    click_header(page, "by-column", IMG)
    assert row_labels(page, "by-column") == oracle(ACCURACY, descending=False)
    assert header.get_attribute("aria-sort") == "ascending"
    # bits per byte (lower is better): ascending first; the other header is reset
    click_header(page, "by-column", LANG)
    assert row_labels(page, "by-column") == oracle(BITS_PER_BYTE, descending=False)
    assert header.get_attribute("aria-sort") == "none"
    # by the format label (text); then recipes down, by a format's means
    click_header(page, "by-column", "format")
    assert row_labels(page, "by-column") == sorted(FORMATS, key=natural)
    page.click("#swap")
    click_header(page, "by-recipe", "mxfp4_e2m1")
    assert row_labels(page, "by-recipe") == [IMG, LANG]  # 0.965 < 4.05


def test_cell_links_reach_the_runs_and_the_curve_picker_shows_one_figure(
    page: Any, report: Path
) -> None:
    hrefs = page.eval_on_selector_all("#by-column td .runs a", "as => as.map(a => a.href)")
    assert len(hrefs) == 2 * 2 * len(FORMATS)
    paths = [Path(url2pathname(urlsplit(h).path)) for h in hrefs]
    assert all(p.name == "summary.json" and p.is_file() for p in paths)
    assert {p.parent.parent for p in paths} == {report.parent}

    shown = "fs => fs.filter(f => !f.hidden).map(f => f.dataset.recipe + ' ' + f.dataset.series)"
    assert page.eval_on_selector_all("figure.curve", shown) == [f"{IMG} train/loss"]
    page.select_option("#curve-pick select[name=recipe]", LANG)
    assert page.eval_on_selector_all("figure.curve", shown) == [f"{LANG} train/loss"]
    assert page.is_visible("figure.curve:not([hidden]) img")
