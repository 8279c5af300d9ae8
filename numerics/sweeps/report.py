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
- ``report.html``: the same in one file that needs no server: inline CSS, no scripts, the PNGs
  embedded as ``data:image/png;base64`` URIs.

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

from numerics.files import atomic_write_bytes, atomic_write_text
from numerics.sweeps.compare import (
    UNFINISHED,
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
        runs = [
            r for c in table.columns if (row, c) in table.cells for r in table.cells[(row, c)].runs
        ]
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


def plot_curves(table: Table) -> bytes | None:
    curves = mean_curves(table)
    if not curves:
        return None
    fig, axes = _panels(len(curves))
    colors = _colors(table.columns)
    for ax, (row, by_col) in zip(axes, curves.items(), strict=True):
        top, low = -math.inf, math.inf
        for col, (steps, mean, complete) in by_col.items():
            label = col if complete else f"{col} (not completed)"
            ax.plot(steps, mean, "-" if complete else "--", marker="." if len(steps) < 30 else "",
                    color=colors[col], label=label)  # fmt: skip
            top, low = max(top, *mean), min(low, *mean)
        if low > 0 and top / low > 50:
            ax.set_yscale("log")
        ax.set_title(row, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("train loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _png(fig)


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


_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; white-space: nowrap; }
th { background: #f2f2f2; }
td.best { font-weight: bold; background: #e6f4e6; }
td.none { color: #b22222; }
ul.legend { color: #555; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 13px; }
code { background: #f6f6f6; padding: 0 3px; }
"""


def _html_table(grid: list[list[str]], classes: dict[tuple[int, int], str]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in grid[0])
    body = []
    for i, r in enumerate(grid[1:], start=1):
        tds = []
        for j, s in enumerate(r):
            cls = classes.get((i, j))
            tds.append(f'<td class="{cls}">{e(s)}</td>' if cls else f"<td>{e(s)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def to_html(table: Table, runs: list[Run], out: Path, pngs: dict[str, bytes]) -> str:
    e = html.escape
    classes = dict.fromkeys(_best_positions(table), "best")
    for i, row in enumerate(table.rows, start=1):
        for j, col in enumerate(table.columns):
            c = table.cell(row, col)
            if c is not None and c.mean is None:
                classes[(i, j + 2)] = "none"
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>numerics compare</title><style>{_CSS}</style></head><body>",
        "<h1>numerics compare</h1>",
        f"<p>{e(run_counts(runs))}; columns: <code>{e(table.by)}</code>.</p>",
        _html_table(table_grid(table), classes),
        '<ul class="legend">' + "".join(f"<li>{e(s)}</li>" for s in legend(table)) + "</ul>",
    ]
    skipped = left_out(runs)
    if skipped:
        parts.append("<h2>Runs not in the means</h2><ul>")
        parts += [
            f"<li>{e(r.status)}: <code>{e(_rel(r.path, out))}</code>: {e(_why(r))}</li>"
            for r in skipped
        ]
        parts.append("</ul>")
    if pngs:
        parts.append("<h2>Plots</h2>")
    for name, png in pngs.items():
        data = base64.b64encode(png).decode("ascii")
        cap = e(caption(name, table))
        parts.append(
            f'<figure><img alt="{cap}" src="data:image/png;base64,{data}">'
            f"<figcaption>{cap} ({e(name)})</figcaption></figure>"
        )
    parts.append(f"<details><summary>All runs ({len(runs)})</summary>")
    parts += [_html_table(_run_rows(table, runs, out), {}), "</details></body></html>"]
    return "\n".join(parts) + "\n"


def write_report(table: Table, runs: list[Run], out_dir: str | Path) -> list[Path]:
    """Write report.md, report.html and the plots into ``out_dir``; the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pngs = plots(table)
    written = []
    for name, png in pngs.items():
        atomic_write_bytes(out / name, png)
        written.append(out / name)
    atomic_write_text(out / MARKDOWN, to_markdown(table, runs, out, pngs))
    atomic_write_text(out / HTML, to_html(table, runs, out, pngs))
    return [out / MARKDOWN, out / HTML, *written]
