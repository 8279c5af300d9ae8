"""The comparison report: report.md, a self-contained report.html, and three kinds of plot.

``write_report(table, runs, out)`` writes, from a ``numerics.sweeps.compare.Table``:

- ``metric.png``: each recipe's metric per column (format), mean with its confidence interval
  (the table's: Student t over seeds, ``--ci``) as error bar, the best cell (significantly
  better than the rest of its row) as a star, the baseline's mean as a dashed line; columns
  without a mean say why (``diverged (2)``);
- ``curves.png``: training loss against step (metrics.jsonl, split ``train``) per column,
  averaged over the cell's completed runs at each logged step (a cell with none completed
  shows its other runs' mean, dashed);
- ``batch_size.png``, only when a recipe's runs span more than one ``train.batch_size``: the
  metric against batch size (log2 axis), one line per large-batch rule: ``large_batch.rule``
  where any run sets one, else ``train.lr_scaling`` (and per format where several are mixed),
  with the same intervals as error bars;
- ``report.md``: the table as markdown, its legend, the runs left out of the means with their
  error line (failed), reason (diverged) or state (unfinished), every run, and the plots;
- ``report.html``: the same in one file that opens offline (no server, no network): inline CSS
  and a small inline script (``report_assets/``), the plots embedded as ``data:`` URIs. The
  table scrolls inside its box with the first column sticky, comes in both orientations
  (formats down when there are more formats than recipes; a button swaps them), sorts by a
  click on a column header (by the mean; a second click reverses), and each cell links to
  its runs' summary.json (their folders while unfinished). The training curves are one SVG
  per recipe and logged series (``metrics.jsonl``: train loss, lr, eval metrics; not the
  per-layer telemetry), one shown at a time, picked from two menus.

Every file is written to a temporary file in the output folder and renamed over the old one,
so a reader never sees half a report. matplotlib (Agg, no pyplot: figures are plain
``Figure`` objects, nothing global changes) is imported only here, when plots are drawn.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from numerics.files import atomic_write_bytes, atomic_write_text
from numerics.sweeps.compare import (
    UNFINISHED,
    Cell,
    Run,
    Table,
    interval_name,
    legend,
    metric_label,
    run_counts,
    table_grid,
    value_label,
)
from numerics.sweeps.stats import mean_interval
from numerics.train.rundir import METRICS, SUMMARY, read_metrics

MARKDOWN, HTML = "report.md", "report.html"
METRIC_PNG, CURVES_PNG, BATCH_PNG = "metric.png", "curves.png", "batch_size.png"
CAPTIONS = {
    METRIC_PNG: "Final metric per column: mean with its {ci}",
    CURVES_PNG: "Training loss per column (mean over completed seeds)",
    BATCH_PNG: "Final metric against batch size, one line per large-batch rule; bars: {ci}",
}


def caption(name: str, table: Table) -> str:
    return CAPTIONS.get(name, name).format(ci=interval_name(table.level))


Curve = tuple[list[int], list[float], bool]  # steps, mean values, from completed runs
Series = tuple[str, str]  # (split, name) of a metrics.jsonl record: ("train", "loss")
TRAIN_LOSS: Series = ("train", "loss")
# per layer and role: far too many series for a menu (TensorBoard and wandb show them)
UNLISTED_SPLITS = frozenset({"telemetry"})
ASSETS = Path(__file__).with_name("report_assets")


# --- what the plots show ----------------------------------------------------------------------
def mean_curve(runs: Iterable[Run], name: str = "loss", split: str = "train") -> tuple[
    list[int], list[float]
]:  # fmt: skip
    """The mean over ``runs`` of ``name`` at each logged step (finite values only)."""
    at: dict[int, list[float]] = defaultdict(list)
    for r in runs:
        for step, v in r.curve(name, split):
            if math.isfinite(v):
                at[step].append(v)
    steps = sorted(at)
    return steps, [math.fsum(at[s]) / len(at[s]) for s in steps]


def mean_curves(table: Table, name: str = "loss", split: str = "train") -> dict[
    str, dict[str, Curve]
]:  # fmt: skip
    """row -> column -> (steps, mean, completed): the training curve of each cell, averaged
    over its completed runs, or over its other runs (``completed`` False) when none completed."""
    out: dict[str, dict[str, Curve]] = {}
    for (row, col), cell in table.cells.items():
        done = [r for r in cell.runs if r.status == "completed"]
        steps, mean = mean_curve(done, name, split)
        complete = bool(steps)
        if not steps:
            steps, mean = mean_curve(cell.runs, name, split)
        if steps:
            out.setdefault(row, {})[col] = (steps, mean, complete)
    return {row: out[row] for row in table.rows if row in out}


def row_runs(table: Table, row: str) -> list[Run]:
    """Every run of a row, column by column."""
    return [r for c in table.columns if (row, c) in table.cells for r in table.cells[(row, c)].runs]


def curve_series(runs: Iterable[Run]) -> list[Series]:
    """The (split, name) series that ``runs`` logged in metrics.jsonl, the training loss first,
    the rest in the order first logged; the per-layer telemetry left out."""
    seen: dict[Series, None] = {}
    for r in runs:
        try:
            for rec in read_metrics(r.path / METRICS):
                if rec["split"] not in UNLISTED_SPLITS:
                    seen.setdefault((str(rec["split"]), str(rec["name"])))
        except (OSError, UnicodeDecodeError):
            continue  # Run.curve warns when the plots read it
    return sorted(seen, key=lambda k: k != TRAIN_LOSS)


def series_curves(table: Table) -> dict[str, dict[Series, dict[str, Curve]]]:
    """row -> series -> column -> curve (as ``mean_curves``), for the series a row's runs
    logged at two steps or more (a curve, not one final value), in ``curve_series`` order."""
    by_row = {row: curve_series(row_runs(table, row)) for row in table.rows}
    every = list(dict.fromkeys(k for ks in by_row.values() for k in ks))
    means = {k: mean_curves(table, k[1], k[0]) for k in every}
    out: dict[str, dict[Series, dict[str, Curve]]] = {}
    for row, keys in by_row.items():
        for k in keys:
            by_col = means[k].get(row, {})
            if any(len(steps) > 1 for steps, _, _ in by_col.values()):
                out.setdefault(row, {})[k] = by_col
    return out


def rule_key(runs: list[Run]) -> str:
    """``large_batch.rule`` if any run sets one other than none, else ``train.lr_scaling``."""
    rules = {value_label(r.get("large_batch.rule", "none")) for r in runs}
    return "large_batch.rule" if rules - {"none"} else "train.lr_scaling"


# batch size, mean, half-width of the mean's interval (None for n=1), n
Point = tuple[float, float, float | None, int]


def batch_size_series(table: Table) -> dict[str, tuple[str, dict[str, list[Point]]]]:
    """row -> (rule key, line -> [(batch size, mean, half-width, n)] by batch size) for the rows
    whose completed runs with a finite metric span more than one ``train.batch_size``; the
    half-width is of the mean's interval at the table's level."""
    out: dict[str, tuple[str, dict[str, list[Point]]]] = {}
    for row in table.rows:
        metric = table.metrics[row]
        runs = row_runs(table, row)
        points: list[tuple[Run, float, float]] = []
        for r in runs:
            v = r.metric(metric) if metric and r.status == "completed" else None
            bs = r.get("train.batch_size")
            if v is not None and math.isfinite(v) and isinstance(bs, int | float):
                points.append((r, float(bs), v))
        if len({bs for _, bs, _ in points}) < 2:
            continue
        key = rule_key([r for r, _, _ in points])
        several_formats = len({r.format for r, _, _ in points}) > 1
        groups: dict[tuple[str, float], list[float]] = defaultdict(list)
        for r, bs, v in points:
            line = value_label(r.get(key, "none"))
            groups[(f"{line} · {r.format}" if several_formats else line, bs)].append(v)
        lines: dict[str, list[Point]] = defaultdict(list)
        for (line, bs), vs in sorted(groups.items()):
            iv = mean_interval(vs, table.level)
            lines[line].append((bs, iv.mean, iv.half, len(vs)))
        out[row] = (key, dict(lines))
    return out


# --- drawing ----------------------------------------------------------------------------------
def _panels(n: int) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(5.0 * ncols, 3.8 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _svg(fig: Any) -> bytes:
    """SVG with its text as text (small, and crisp at any zoom); ids and metadata fixed, so
    the same figure gives the same bytes."""
    import matplotlib
    from matplotlib.backends.backend_svg import FigureCanvasSVG

    FigureCanvasSVG(fig)
    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "numerics"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


def _colors(columns: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {c: cmap(i % 10) for i, c in enumerate(columns)}


def plot_metric(table: Table) -> bytes:
    from matplotlib.transforms import blended_transform_factory

    fig, axes = _panels(max(1, len(table.rows)))
    colors = _colors(table.columns)
    xs = range(len(table.columns))
    for ax, row in zip(axes, table.rows, strict=False):
        below = blended_transform_factory(ax.transData, ax.transAxes)
        for x, col in zip(xs, table.columns, strict=True):
            cell = table.cell(row, col)
            if cell is None:
                continue
            if cell.mean is None:
                ax.text(x, 0.04, cell.text, transform=below, rotation=90, ha="center",
                        va="bottom", fontsize=8, color="firebrick")  # fmt: skip
                continue
            ax.errorbar(x, cell.mean, yerr=cell.half or 0.0, fmt="*" if cell.best else "o",
                        ms=11 if cell.best else 7, capsize=5, color=colors[col])  # fmt: skip
        ax.errorbar([], [], yerr=[], fmt="o", capsize=5, color="black",
                    label=f"mean ± {interval_name(table.level)}")  # fmt: skip
        if any((c := table.cell(row, col)) is not None and c.best for col in table.columns):
            ax.plot([], [], "*", ms=11, color="black", label="significantly best of its row")
        ref = table.cell(row, table.baseline) if table.baseline is not None else None
        if ref is not None and ref.mean is not None:
            ax.axhline(ref.mean, ls="--", lw=0.8, color="grey", label=f"{table.baseline} mean")
        ax.legend(fontsize=7)
        ax.set_xticks(list(xs), table.columns, rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(table.columns) - 0.4)
        ax.set_title(row, fontsize=10)
        ax.set_ylabel(metric_label(table, row))
        ax.set_xlabel(table.by)
        ax.grid(alpha=0.3)
    return _png(fig)


def _draw_curves(ax: Any, by_col: dict[str, Curve], colors: dict[str, Any], title: str,
                 ylabel: str) -> None:  # fmt: skip
    top, low = -math.inf, math.inf
    for col, (steps, mean, complete) in by_col.items():
        label = col if complete else f"{col} (not completed)"
        ax.plot(steps, mean, "-" if complete else "--", marker="." if len(steps) < 30 else "",
                color=colors[col], label=label)  # fmt: skip
        top, low = max(top, *mean), min(low, *mean)
    if low > 0 and top / low > 50:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def plot_curves(table: Table) -> bytes | None:
    curves = mean_curves(table)
    if not curves:
        return None
    fig, axes = _panels(len(curves))
    colors = _colors(table.columns)
    for ax, (row, by_col) in zip(axes, curves.items(), strict=True):
        _draw_curves(ax, by_col, colors, row, "train loss")
    return _png(fig)


def series_label(series: Series) -> str:
    return " ".join(series)


def curve_plots(table: Table) -> dict[str, dict[Series, bytes]]:
    """row -> series -> SVG of that series per column, for the report's curve picker."""
    from matplotlib.figure import Figure

    colors = _colors(table.columns)
    out: dict[str, dict[Series, bytes]] = {}
    for row, by_series in series_curves(table).items():
        for series, by_col in by_series.items():
            fig = Figure(figsize=(7.5, 4.2), layout="constrained")
            _draw_curves(fig.subplots(), by_col, colors, row, series_label(series))
            out.setdefault(row, {})[series] = _svg(fig)
    return out


def plot_batch_size(table: Table) -> bytes | None:
    series = batch_size_series(table)
    if not series:
        return None
    fig, axes = _panels(len(series))
    for ax, (row, (key, lines)) in zip(axes, series.items(), strict=True):
        for line, pts in lines.items():
            bs, mean = [p[0] for p in pts], [p[1] for p in pts]
            err = [p[2] or 0.0 for p in pts]
            ax.errorbar(bs, mean, yerr=err, marker="o", capsize=4, label=line)
        ax.set_xscale("log", base=2)
        sizes = sorted({p[0] for pts in lines.values() for p in pts})
        ax.set_xticks(sizes, [value_label(int(b) if b == int(b) else b) for b in sizes])
        ax.minorticks_off()
        ax.set_title(row, fontsize=10)
        ax.set_xlabel("train.batch_size")
        ax.set_ylabel(metric_label(table, row))
        ax.grid(alpha=0.3)
        ax.legend(title=f"{key}; bars: {interval_name(table.level)}", fontsize=7,
                  title_fontsize=7)  # fmt: skip
    return _png(fig)


def plots(table: Table) -> dict[str, bytes]:
    """File name -> PNG bytes of the plots that apply to ``table``."""
    out = {METRIC_PNG: plot_metric(table)}
    for name, png in ((CURVES_PNG, plot_curves(table)), (BATCH_PNG, plot_batch_size(table))):
        if png is not None:
            out[name] = png
    return out


# --- the documents ----------------------------------------------------------------------------
def _rel(path: Path, out: Path) -> str:
    return os.path.relpath(path, out)


def left_out(runs: list[Run]) -> list[Run]:
    """Runs that are in no mean: failed, diverged, unfinished (in that order)."""
    order = {"failed": 0, "diverged": 1, UNFINISHED: 2}
    return sorted((r for r in runs if r.status in order), key=lambda r: order[r.status])


def _why(r: Run) -> str:
    if r.status == UNFINISHED:
        return "no summary.json (running, or stopped)"
    return r.error or "(no error recorded)"


def _run_rows(table: Table, runs: list[Run], out: Path) -> list[list[str]]:
    rows = [["run", "status", "recipe", table.by, "seed", "metric", "value"]]
    for r in runs:
        m = table.metrics.get(r.recipe)
        v = r.metric(m) if m else None
        rows.append([_rel(r.path, out), r.status, r.recipe, value_label(r.get(table.by)),
                     value_label(r.seed), m or "", "" if v is None else f"{v:.6g}"])  # fmt: skip
    return rows


def _md_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*")


def _md_table(grid: list[list[str]], bold: set[tuple[int, int]] | None = None) -> list[str]:
    def cell(i: int, j: int, s: str) -> str:
        s = _md_escape(s)
        return f"**{s}**" if bold and (i, j) in bold else s

    lines = ["| " + " | ".join(_md_escape(h) for h in grid[0]) + " |"]
    lines.append("|" + "|".join("---" for _ in grid[0]) + "|")
    for i, r in enumerate(grid[1:], start=1):
        lines.append("| " + " | ".join(cell(i, j, s) for j, s in enumerate(r)) + " |")
    return lines


def _best_positions(table: Table) -> set[tuple[int, int]]:
    return {
        (i, j + 2)
        for i, row in enumerate(table.rows, start=1)
        for j, col in enumerate(table.columns)
        if (c := table.cell(row, col)) is not None and c.best
    }


def markdown_table(table: Table) -> list[str]:
    """The table in markdown (the best cells bold) and its legend as a bullet list."""
    lines = _md_table(table_grid(table), _best_positions(table))
    return [*lines, "", *(f"- {_md_escape(s)}" for s in legend(table))]


def markdown_left_out(runs: list[Run], out: Path) -> list[str]:
    """One bullet per run that is in no mean, with why; paths relative to ``out``."""
    return [f"- {r.status}: `{_rel(r.path, out)}`: {_md_escape(_why(r))}" for r in left_out(runs)]


def to_markdown(table: Table, runs: list[Run], out: Path, pngs: Iterable[str]) -> str:
    lines = ["# numerics compare", "", f"{run_counts(runs)}; columns: `{table.by}`.", ""]
    lines += [*markdown_table(table), ""]
    skipped = markdown_left_out(runs, out)
    if skipped:
        lines += ["## Runs not in the means", "", *skipped, ""]
    names = list(pngs)
    if names:
        lines += ["## Plots", ""]
        lines += [f"![{caption(n, table)}]({n})\n" for n in names]
    lines += ["## All runs", "", *_md_table(_run_rows(table, runs, out)), ""]
    return "\n".join(lines)


def _asset(name: str) -> str:
    return (ASSETS / name).read_text()


def run_href(run: Run, out: Path) -> str:
    """The link from a report in ``out`` to a run: its summary.json, else (unfinished) its
    folder; relative, so the report and its results folder can move together."""
    has_summary = (run.path / SUMMARY).is_file()
    rel = Path(_rel(run.path / SUMMARY if has_summary else run.path, out)).as_posix()
    return quote(rel) + ("" if has_summary else "/")


def _run_links(runs: list[Run], out: Path) -> str:
    e = html.escape
    links = []
    for r in runs:
        seed = "run" if r.seed is None else f"s{value_label(r.seed)}"
        why = "" if r.status == "completed" else f": {_why(r)}"
        cls = "" if r.status == "completed" else f' class="{e(r.status)}"'
        title = f"{r.path.name} ({r.status}{why})"
        links.append(f'<a href="{e(run_href(r, out))}"{cls} title="{e(title)}">{e(seed)}</a>')
    return f'<span class="runs">{" ".join(links)}</span>'


def _cell_td(cell: Cell | None, out: Path) -> str:
    """A table cell: the mean with its interval (``data-v``: the mean, the sort key), the
    difference to the baseline on a line of its own, and links to the cell's runs."""
    e = html.escape
    if cell is None:
        return "<td></td>"
    text = cell.text.removesuffix(" *")
    delta = cell.delta_text
    text = text.removesuffix(" " + delta) if delta else text
    attrs = "" if cell.mean is None else f' data-v="{cell.mean!r}"'
    cls = "best" if cell.best else "none" if cell.mean is None else ""
    attrs += f' class="{cls}"' if cls else ""
    star = " *" if cell.best else ""
    parts = [f'<span class="v">{e(text + star)}</span>']
    if delta:
        parts.append(f'<span class="d">{e(delta)}</span>')
    parts.append(_run_links(cell.runs, out))
    prov = cell.provenance
    if prov:  # what made the cell's runs, on hover; a cell that mixes them is marked
        tip = "made with " + "; ".join(f"{k} {', '.join(v)}" for k, v in prov.items())
        attrs += f' title="{e(tip)}"'
        if cell.mixed:
            parts.append(f'<span class="mixed">mixes {e(" and ".join(cell.mixed))}</span>')
    return f"<td{attrs}>{''.join(parts)}</td>"


def _th(label: str, kind: str, first: str = "ascending", sub: str = "") -> str:
    """A sortable column header (``label`` and ``sub``, a line under it, are HTML): ``kind``
    num or text; ``first``: the order of the first click."""
    sub = f'<span class="sub">{sub}</span>' if sub else ""
    return (f'<th data-sort="{kind}" data-first="{first}" aria-sort="none">'
            f'<button type="button"><span class="k">{label}</span>{sub}</button></th>')  # fmt: skip


def _first_order(table: Table, row: str) -> str:
    return "descending" if table.higher_is_better.get(row) else "ascending"


def html_table_by_recipe(table: Table, out: Path) -> str:
    """Recipes down, columns (formats) across, as the markdown table."""
    e = html.escape
    head = [_th("recipe", "text"), _th("metric", "text")]
    head += [_th(e(c), "num") for c in table.columns]
    body = [
        f'<tr><th scope="row">{e(row)}</th><td>{e(metric_label(table, row))}</td>'
        + "".join(_cell_td(table.cell(row, c), out) for c in table.columns)
        + "</tr>"
        for row in table.rows
    ]
    return _sortable(head, body)


def html_table_by_column(table: Table, out: Path) -> str:
    """Columns (formats) down, recipes across with their metric: a recipe's column sorts
    best first."""
    e = html.escape
    head = [_th(e(table.by), "text")]
    head += [
        _th(e(row), "num", _first_order(table, row), e(metric_label(table, row)))
        for row in table.rows
    ]
    body = [
        f'<tr><th scope="row">{e(col)}</th>'
        + "".join(_cell_td(table.cell(row, col), out) for row in table.rows)
        + "</tr>"
        for col in table.columns
    ]
    return _sortable(head, body)


def _sortable(head: list[str], body: list[str]) -> str:
    return (f'<table class="sortable"><thead><tr>{"".join(head)}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")  # fmt: skip


def html_run_table(table: Table, runs: list[Run], out: Path) -> str:
    """Every run, its name a link to it; sortable (seed and value as numbers)."""
    e = html.escape
    grid = _run_rows(table, runs, out)
    numeric = {"seed", "value"}
    head = [_th(e(h), "num" if h in numeric else "text") for h in grid[0]]
    body = []
    for r, cells in zip(runs, grid[1:], strict=True):
        name = f'<th scope="row"><a href="{e(run_href(r, out))}">{e(cells[0])}</a></th>'
        body.append("<tr>" + name + "".join(f"<td>{e(c)}</td>" for c in cells[1:]) + "</tr>")
    return _sortable(head, body)


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def html_curves(table: Table, svgs: dict[str, dict[Series, bytes]]) -> list[str]:
    """The curve picker (two menus, shown by the script) and one figure per recipe and
    series; without the script every figure shows."""
    e = html.escape
    every = list(dict.fromkeys(k for by in svgs.values() for k in by))
    recipes = "".join(f'<option value="{e(row)}">{e(row)}</option>' for row in svgs)
    series = "".join(
        f'<option value="{e("/".join(k))}">{e(series_label(k))}</option>' for k in every
    )
    parts = [
        '<h2>Curves</h2><form id="curve-pick" hidden>'
        f'<label>recipe <select name="recipe">{recipes}</select></label> '
        f'<label>series <select name="series">{series}</select></label></form>'
    ]
    for row, by_series in svgs.items():
        for k, svg in by_series.items():
            cap = e(f"{series_label(k)} per {table.by} (mean over completed seeds): {row}")
            parts.append(
                f'<figure class="curve" data-recipe="{e(row)}" data-series="{e("/".join(k))}">'
                f'<img alt="{cap}" src="{_data_uri(svg, "image/svg+xml")}">'
                f"<figcaption>{cap}</figcaption></figure>"
            )
    return parts


def to_html(
    table: Table,
    runs: list[Run],
    out: Path,
    pngs: dict[str, bytes],
    curves: dict[str, dict[Series, bytes]] | None = None,
) -> str:
    """The self-contained page; ``curves`` (``curve_plots``) replaces curves.png where given."""
    e = html.escape
    by_column = len(table.columns) > len(table.rows)  # the longer side down
    hide = (" hidden", "") if by_column else ("", " hidden")
    by_recipe, by_col = html_table_by_recipe(table, out), html_table_by_column(table, out)
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>numerics compare</title><style>{_asset('report.css')}</style></head><body>",
        "<h1>numerics compare</h1>",
        f"<p>{e(run_counts(runs))}; columns: <code>{e(table.by)}</code>. Click a column header "
        "to sort by it; each cell links to its runs.</p>",
        '<p class="controls" hidden><button type="button" id="swap">Swap rows and columns'
        "</button></p>",
        f'<div class="table-wrap" id="by-recipe"{hide[0]}>{by_recipe}</div>',
        f'<div class="table-wrap" id="by-column"{hide[1]}>{by_col}</div>',
        '<ul class="legend">' + "".join(f"<li>{e(s)}</li>" for s in legend(table)) + "</ul>",
    ]
    skipped = left_out(runs)
    if skipped:
        parts.append("<h2>Runs not in the means</h2><ul>")
        parts += [
            f'<li>{e(r.status)}: <a href="{e(run_href(r, out))}"><code>{e(_rel(r.path, out))}'
            f"</code></a>: {e(_why(r))}</li>"
            for r in skipped
        ]
        parts.append("</ul>")
    figures = {n: png for n, png in pngs.items() if not (curves and n == CURVES_PNG)}
    if figures:
        parts.append("<h2>Plots</h2>")
    for name, png in figures.items():
        cap = e(caption(name, table))
        parts.append(
            f'<figure><img alt="{cap}" src="{_data_uri(png, "image/png")}">'
            f"<figcaption>{cap} ({e(name)})</figcaption></figure>"
        )
    if curves:
        parts += html_curves(table, curves)
    parts.append(f"<details><summary>All runs ({len(runs)})</summary>")
    parts.append(f'<div class="table-wrap">{html_run_table(table, runs, out)}</div></details>')
    parts.append(f"<script>{_asset('report.js')}</script></body></html>")
    return "\n".join(parts) + "\n"


def write_report(table: Table, runs: list[Run], out_dir: str | Path) -> list[Path]:
    """Write report.md, report.html and the plots into ``out_dir``; the paths written (the
    curve picker's SVGs live in report.html only)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pngs = plots(table)
    written = []
    for name, png in pngs.items():
        atomic_write_bytes(out / name, png)
        written.append(out / name)
    atomic_write_text(out / MARKDOWN, to_markdown(table, runs, out, pngs))
    atomic_write_text(out / HTML, to_html(table, runs, out, pngs, curve_plots(table)))
    return [out / MARKDOWN, out / HTML, *written]
