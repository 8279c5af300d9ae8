"""Generated blocks in markdown: tables and plots in the docs come from run directories.

A doc marks where a generated block goes with two HTML comments (invisible when rendered):

    <!-- numerics: compare results/demo --sweep sweeps/demo.yaml --plot docs/demo/metric.png -->
    (everything here is replaced by ``numerics docs FILE``)
    <!-- numerics: end -->

The words after ``numerics:`` are a command, parsed like a command line:

- ``compare RESULTS [--metric M] [--by KEY] [--pool KEY] [--where KEY=VALUE] [--baseline B]
  [--ci LEVEL] [--sweep FILE] [--plot PNG] [--curves PNG]``: the comparison table of
  ``numerics compare`` (mean and confidence interval per cell, the difference to the baseline
  with its interval, ``≈`` where not significant, the best cell bold; the columns split
  wherever a cell's runs differ in more than seeds, as there, the keys the sweep swept
  first), its legend, the runs not in the means, and with
  ``--sweep`` the runs the sweep file asks for that have no result yet (a partly run sweep
  still makes a table, and says what is missing). ``--plot``/``--curves`` write the metric
  and training-curve plots to those paths.
- ``cell RESULTS --row ROW --column COL [--metric M] [--baseline B] [--ci LEVEL] [--by KEY]
  [--pool KEY] [--where KEY=VALUE]``:
  one cell's text (for a summary table), in a block that may sit inside a line.
- ``qsnr [--formats ...] [--dist ...] [--numel N] [--seed S]``: the ``numerics qsnr`` table.
- ``cost FOLDER... [--jobs N]``: what the sweeps in the folders cost: runs, the sum of their
  recorded wall times (``summary.json``'s ``wall_s``) and that sum spread over N parallel jobs.
- ``pvf FOLDER``: the fault-injection table ``numerics pvf`` wrote to FOLDER (pvf.json).
- ``include FILE --heading TITLE``: the section of another markdown file under ``## TITLE``
  (up to the next ``## ``), its own generated blocks' markers removed (their text kept), so
  the README can show docs/findings.md's summary; regenerate FILE first.

Paths are relative to the folder ``numerics docs`` runs in (the project root). Each file is
rewritten atomically, and only when a block changed, and so is each plot, only when its bytes
changed; ``--check`` writes nothing (no file, no plot) and exits 1 when a file or plot is out
of date. A block whose command fails is filled with the error, and the other
blocks are still made: one bad block never loses the rest of a document.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from numerics.errors import MissingInputError, UserError
from numerics.files import atomic_write_bytes, atomic_write_text

BLOCK = re.compile(
    r"(?P<open><!-- numerics: (?P<command>(?:(?!-->).)*?) -->)"
    r"(?P<body>.*?)(?P<close><!-- numerics: end -->)",
    re.DOTALL,
)
NOTE = (
    "Runs are bit for bit repeatable on one machine with one thread count; on another CPU "
    "model float sums round differently and the last digits move."
)


MARKERS = re.compile(r"<!-- numerics: (?:(?!-->).)*? -->")


class DocError(UserError):
    """A block's command that cannot be carried out (bad arguments, missing files)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # never exit from inside a doc
        raise DocError(f"{self.prog}: {message}")


def _parsers() -> dict[str, _Parser]:
    from numerics.qsnr import add_sample_arguments
    from numerics.sweeps.compare import add_table_arguments

    compare = _Parser(prog="compare", add_help=False)
    add_table_arguments(compare)
    compare.add_argument("--sweep")
    compare.add_argument("--plot")
    compare.add_argument("--curves")
    cell = _Parser(prog="cell", add_help=False)
    add_table_arguments(cell)
    cell.add_argument("--row", required=True)
    cell.add_argument("--column", required=True)
    qsnr = _Parser(prog="qsnr", add_help=False)
    add_sample_arguments(qsnr)
    include = _Parser(prog="include", add_help=False)
    include.add_argument("file")
    include.add_argument("--heading", required=True)
    pvf = _Parser(prog="pvf", add_help=False)
    pvf.add_argument("folder")
    cost = _Parser(prog="cost", add_help=False)
    cost.add_argument("folders", nargs="+")
    cost.add_argument("--jobs", type=int, default=1)
    return {
        "compare": compare,
        "cell": cell,
        "qsnr": qsnr,
        "include": include,
        "cost": cost,
        "pvf": pvf,
    }


def _table(args: argparse.Namespace) -> tuple[Any, list[Any]]:
    from numerics.sweeps.compare import RunWarning, aggregate, load_runs, swept_keys, where

    if not Path(args.results).is_dir():
        return None, []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunWarning)
        runs = where(load_runs(args.results), args.where)
        swept = swept_keys(args.results)
    return aggregate(runs, args.metric, args.by, args.baseline, args.ci, args.pool, swept), runs


def missing_runs(sweep_file: str, results: str) -> tuple[int, dict[str, list[str]]]:
    """(runs the sweep asks for, what is missing: ``recipe · params`` -> the seeds without a
    completed, diverged or failed run under ``results``)."""
    from numerics.sweeps.spec import expand, load_sweep
    from numerics.train.rundir import RunDir

    sweep = load_sweep(sweep_file)
    folder = Path(results)
    if folder.name != sweep.name:
        raise DocError(f"--sweep {sweep_file}: its runs go to <results>/{sweep.name}, not {folder}")
    specs = expand(sweep, folder.parent).runs
    missing: dict[str, list[str]] = defaultdict(list)
    for spec in specs:
        summary = RunDir(folder / spec.run_id).read_summary()
        if summary is None:
            params = {k: v for k, v in spec.params.items() if k != "train.seed"}
            label = Path(str(spec.source)).stem + (f" · {params}" if params else "")
            missing[label].append(str(spec.params.get("train.seed", "?")))
    return len(specs), dict(missing)


def render_compare(args: argparse.Namespace, files: dict[Path, bytes]) -> str:
    from numerics.sweeps.compare import run_counts
    from numerics.sweeps.report import markdown_left_out, markdown_table, plot_curves, plot_metric

    table, runs = _table(args)
    lines: list[str] = []
    if not runs:
        lines.append(f"No runs in `{args.results}` yet.")
    else:
        lines += [f"{run_counts(runs)} in `{args.results}`.", ""]
        lines += markdown_table(table)
        skipped = markdown_left_out(runs, Path("."))
        if skipped:
            lines += ["", "Runs not in the means:", "", *skipped]
        if args.plot:
            files[Path(args.plot)] = plot_metric(table)
        if args.curves and (png := plot_curves(table)) is not None:
            files[Path(args.curves)] = png
    if args.sweep:
        total, missing = missing_runs(args.sweep, args.results)
        n = sum(len(s) for s in missing.values())
        if n:
            lines += ["", f"Missing: {n} of the {total} runs `{args.sweep}` asks for have no "
                      f"result yet (`numerics sweep {args.sweep} --resume`):", ""]  # fmt: skip
            lines += [f"- {label}: seeds {', '.join(s)}" for label, s in sorted(missing.items())]
        else:
            lines += ["", f"All {total} runs of `{args.sweep}` are in."]
    if runs:
        lines += ["", NOTE]
    return "\n".join(lines)


def render_cell(args: argparse.Namespace) -> str:
    table, _ = _table(args)
    cell = table.cell(args.row, args.column) if table is not None else None
    if cell is None:
        return f"(no runs for {args.row} · {args.column} in {args.results})"
    return str(cell.text)


def render_qsnr(args: argparse.Namespace) -> str:
    from numerics import qsnr

    values = qsnr.table(args.formats, args.dist, args.numel, args.seed)
    head = f"QSNR in dB (`numerics qsnr`), {args.numel:,} draws per distribution, seed {args.seed}:"
    return "\n".join([head, "", *qsnr.markdown(values)])


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def render_cost(args: argparse.Namespace) -> str:
    from numerics.sweeps.compare import RunWarning, load_runs

    if args.jobs < 1:
        raise DocError(f"cost: --jobs={args.jobs}; must be >= 1")
    head = [
        f"| sweep | runs | run time, min (sum of wall_s) | spread over {args.jobs} jobs, min |",
        "|---|---|---|---|",
    ]
    rows, total_n, total_s = [], 0, 0.0
    for folder in args.folders:
        if not Path(folder).is_dir():
            rows.append(f"| `{folder}` | no runs yet | | |")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RunWarning)
            runs = load_runs(folder)
        seconds = sum(float(r.summary.wall_s or 0.0) for r in runs if r.summary)
        total_n, total_s = total_n + len(runs), total_s + seconds
        rows.append(
            f"| `{Path(folder).name}` | {len(runs)} | {_minutes(seconds)} | "
            f"{_minutes(seconds / args.jobs)} |"
        )
    rows.append(f"| all | {total_n} | {_minutes(total_s)} | {_minutes(total_s / args.jobs)} |")
    return "\n".join([*head, *rows])


def render_pvf(args: argparse.Namespace) -> str:
    from numerics.train.pvf import markdown, read_cells

    if not (Path(args.folder) / "pvf.json").exists():
        return f"No fault-injection results in `{args.folder}` yet."
    doc, cells = read_cells(args.folder)
    head = (f"`{Path(doc['source_run']).name}`, {doc['examples']} evaluation examples per fault, "
            f"seed {doc['seed']}:")  # fmt: skip
    return "\n".join([head, "", *markdown(cells)])


def render_include(args: argparse.Namespace) -> str:
    lines = Path(args.file).read_text().splitlines()
    head = f"## {args.heading}"
    if head not in lines:
        raise DocError(f"{args.file}: no section '{head}'")
    start = lines.index(head) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return MARKERS.sub("", "\n".join(lines[start:end]).strip())


def render(command: str, files: dict[Path, bytes] | None = None) -> str:
    """The text of one block, or the error that stopped it. Plots the block makes go into
    ``files`` (path -> bytes), not to disk."""
    try:
        words = shlex.split(command)
        kinds = ("compare", "cell", "qsnr", "include", "cost", "pvf")
        if not words or words[0] not in kinds:
            raise DocError(f"unknown block {command!r}: allowed: {', '.join(kinds)}")
        args = _parsers()[words[0]].parse_args(words[1:])
        if words[0] == "compare":
            return render_compare(args, {} if files is None else files)
        if words[0] == "cell":
            return render_cell(args)
        if words[0] == "include":
            return render_include(args)
        if words[0] == "cost":
            return render_cost(args)
        if words[0] == "pvf":
            return render_pvf(args)
        return render_qsnr(args)
    except (DocError, ValueError, KeyError, OSError) as exc:
        return f"**numerics docs: this block failed: {type(exc).__name__}: {exc}**"


def regenerate(text: str) -> tuple[str, list[str], dict[Path, bytes]]:
    """``text`` with every block remade, the errors of the blocks that failed, and the plot
    files the blocks make (path -> bytes; nothing is written here)."""
    errors: list[str] = []
    files: dict[Path, bytes] = {}

    def one(m: re.Match[str]) -> str:
        body = render(m.group("command"), files)
        if body.startswith("**numerics docs: this block failed"):
            errors.append(f"<!-- numerics: {m.group('command')} -->: {body.strip('*')}")
        inline = "\n" not in m.group("body")
        sep = "" if inline else "\n"
        return f"{m.group('open')}{sep}{body}{sep}{m.group('close')}"

    return BLOCK.sub(one, text), errors, files


def _differs(path: Path, data: bytes) -> bool:
    try:
        return path.read_bytes() != data
    except OSError:
        return True


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "docs",
        help="regenerate the tables and plots marked in markdown files from run directories",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", help="markdown files, e.g. README.md docs/findings.md")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if out of date")
    p.set_defaults(func=cmd_docs)
    return p


def cmd_docs(args: argparse.Namespace) -> int:
    stale, failed = [], False
    for name in args.files:
        path = Path(name)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise MissingInputError("no such file", file=name, value=name) from None
        except OSError as exc:
            raise UserError(f"cannot read ({exc})", file=name, value=name) from None
        new, errors, files = regenerate(text)
        for e in errors:
            print(f"numerics docs: {name}: {e}", file=sys.stderr)
        failed |= bool(errors)
        if new != text:
            stale.append(name)
            if not args.check:
                atomic_write_text(path, new)
        for png, data in files.items():
            if _differs(png, data):
                stale.append(str(png))
                if not args.check:
                    atomic_write_bytes(png, data)
    verb = "out of date" if args.check else "rewrote"
    print(f"numerics docs: {verb}: {', '.join(stale)}" if stale else "numerics docs: up to date")
    return 1 if (args.check and stale) or failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="numerics")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    from numerics.errors import run_command

    return run_command(args.command, lambda: args.func(args))
