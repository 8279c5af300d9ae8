"""``numerics sweep``: the command line of the sweep engine."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from numerics.errors import UserError
from numerics.files import jsonable
from numerics.sweeps.engine import make_executor, run_sweep
from numerics.sweeps.executors.base import RunSpec
from numerics.sweeps.spec import EXECUTORS, expand, load_sweep
from numerics.sweeps.wandb_export import export_wandb


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``numerics sweep`` to an argparse subparsers object."""
    p: argparse.ArgumentParser = sub.add_parser(
        "sweep",
        help="run every point of a sweep file (grid or random) as a recipe run, or every "
        "trained run it names under a grid of inference policies (evaluate:)",
    )
    p.add_argument("sweep", nargs="?", help="sweep file (YAML), e.g. sweeps/demo.yaml")
    p.add_argument(
        "--status", metavar="RESULTS_DIR",
        help="print the state of every run of the sweep whose results are in RESULTS_DIR "
        "(e.g. results/demo; running elsewhere, on Ray or Slurm, or finished); run nothing",
    )  # fmt: skip
    p.add_argument(
        "--keep-stale", action="store_true",
        help="with --resume: keep finished runs made by other code (default: run them again)",
    )  # fmt: skip
    p.add_argument("--jobs", type=int, help="parallel runs (default: the file's, else CPU cores)")
    p.add_argument("--executor", choices=EXECUTORS, help="where runs go (default: the file's)")
    p.add_argument("--address", help="Ray cluster address (executor ray)")
    p.add_argument("--resume", action="store_true", help="continue a sweep: re-run what is left")
    p.add_argument("--dry-run", action="store_true", help="list the runs; run nothing")
    p.add_argument("--export-wandb", metavar="PATH", help="write a wandb sweep config; run nothing")
    p.add_argument("--results", default="results", help="results root (default ./results)")
    p.set_defaults(func=cmd_sweep)
    return p


def _describe(spec: RunSpec) -> str:
    params = " ".join(f"{k}={json.dumps(jsonable(v))}" for k, v in spec.params.items())
    return f"  {spec.run_id}  {params}".rstrip()


def cmd_sweep(args: argparse.Namespace) -> int:
    """0: every run completed or diverged; 1: a run failed; 130: Ctrl-C. Bad input raises a
    ``UserError`` (the CLI's exit code 2)."""
    folder = Path(args.results) / "?"
    if args.status:
        from numerics.sweeps.progress import status_text

        print(status_text(args.status))
        return 0
    if not args.sweep:
        raise UserError("a sweep file is needed (or --status RESULTS_DIR)", key="sweep")
    try:
        sweep = load_sweep(args.sweep)
        folder = Path(args.results) / sweep.name
        if args.export_wandb:
            print(f"wrote wandb sweep config {export_wandb(sweep, args.export_wandb)}")
            return 0
        if args.dry_run:
            ex = expand(sweep, args.results)
            notes = [f"{len(ex.duplicates)} identical configs merged"] if ex.duplicates else []
            notes += ex.notes
            extra = f" ({'; '.join(notes)})" if notes else ""
            print(f"sweep {sweep.name}: {len(ex.runs)} runs{extra} -> {folder}")
            for spec in ex.runs[:5]:
                print(_describe(spec))
            if len(ex.runs) > 5:
                print(f"  ... and {len(ex.runs) - 5} more")
            return 0
        options = {k: v for k, v in sweep.executor.items() if k not in ("kind", "jobs")}
        kind = args.executor or sweep.executor["kind"]
        if kind != sweep.executor["kind"]:
            options = {}  # the file's options are for its own kind
        if args.address:
            if kind != "ray":
                raise UserError(f"is for executor ray, not {kind}", key="--address", value=kind)
            options["address"] = args.address
        if kind == "slurm":
            options.setdefault("folder", str(folder / ".slurm"))
        jobs = args.jobs if args.jobs is not None else sweep.executor.get("jobs")
        executor = make_executor(kind, jobs, options)
        tally = run_sweep(
            sweep, args.results, executor, resume=args.resume, keep_stale=args.keep_stale
        )
    except KeyboardInterrupt:
        print(
            f"\nnumerics sweep: interrupted; finished runs are kept in {folder}, the others "
            "continue from their checkpoints with --resume",
            file=sys.stderr,
        )
        return 130
    print(f"sweep {sweep.name}: {tally.line()} -> {folder}")
    return 1 if tally.failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``numerics sweep ...`` on its own (the CLI wires in ``add_parser``)."""
    parser = argparse.ArgumentParser(prog="numerics")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    from numerics.errors import run_command

    return run_command(args.command, lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
