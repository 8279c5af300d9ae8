"""The ``numerics`` command line.

numerics formats [--json] [PATTERN]          the registry with each format's facts
numerics quantize --format F [...] VALUES    what given numbers become
numerics bench [...]                         quantizer throughput beside a tensor copy
numerics train RECIPE [--set K=V ...] [--out DIR] [--resume] [--nproc N]
                                             train a recipe (or a run's config.yaml, to run
                                             it again) into a run directory
numerics evaluate RUN [--set numerics.format=F ...] [--calibrate N] [--out DIR]
                                             a trained run in another format (direct cast)
numerics pvf RUN [--set numerics.K=V] [--component NAME=GLOB] [--field F] [--bit B] [--faults N]
                                             bit-flip fault injection: PVF per component
numerics sweep SWEEP [--jobs N] [--executor local|ray|slurm] [--resume [--keep-stale]] [--dry-run]
numerics sweep --status RESULTS_DIR          every run's state, from its folder
numerics compare RESULTS_DIR [--metric M] [--baseline fp32] [--by KEY] [--pool KEY] [--ci 0.95]
numerics qsnr [--formats ...] [--dist ...]    quantization SNR of formats on planted data
numerics docs FILE.md [...] [--check]        regenerate the tables marked in docs from runs

Exit codes: 0 done (a run that diverged is done: its summary says so); 1 a run failed (train,
sweep), ``compare`` found no runs, ``docs --check`` found a stale file, or anything else, a bug,
with its traceback; 2 bad input (a recipe, sweep or argument that is not allowed, a file or
folder that is not there), printed as one line ``numerics <command>: <file>: <key>: <what is
wrong; what is allowed>``; 130 interrupted (Ctrl-C). ``--debug`` (or ``NUMERICS_DEBUG=1``)
shows the traceback of bad input too.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from numerics import formats
from numerics.errors import UserError, run_command
from numerics.rounding import names as rounding_names


def _fmt_num(v: object) -> str:
    if isinstance(v, bool) or not isinstance(v, float):
        return str(v)
    if math.isinf(v) or math.isnan(v) or v == 0:
        return str(v)
    if 1e-3 <= abs(v) < 1e6:
        return f"{v:g}"
    return f"{v:.4g}"


_COLUMNS = [
    ("name", "name"),
    ("kind", "kind"),
    ("bits", "bits"),
    ("bits/elem", "bits_per_element"),
    ("e", "ebits"),
    ("m", "mbits"),
    ("bias", "bias"),
    ("emax", "emax"),
    ("emin", "emin"),
    ("max", "max"),
    ("min normal", "min_normal"),
    ("min subnormal", "min_subnormal"),
    ("inf", "has_inf"),
    ("nan", "has_nan"),
    ("element", "element"),
    ("block", "block_size"),
    ("scale", "scale"),
]


def _facts(name: str) -> dict[str, object]:
    fmt = formats.get(name)
    facts = dict(fmt.facts())
    facts.setdefault("bits_per_element", float(fmt.bits))
    facts["aliases"] = list(fmt.aliases)
    facts["description"] = fmt.description
    return facts


def cmd_formats(args: argparse.Namespace) -> int:
    rows = [_facts(n) for n in formats.names(args.pattern)]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    table = [[h for h, _ in _COLUMNS]]
    for r in rows:
        table.append(["" if r.get(k) is None else _fmt_num(r.get(k)) for _, k in _COLUMNS])
    widths = [max(len(row[i]) for row in table) for i in range(len(_COLUMNS))]
    for i, row in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(
        f"\n{len(rows)} formats. Parsed families: eXmY (IEEE-style), fixedW_F, bfpN_bK; "
        "suffixes _ftz (flush subnormals), _bK (block size), _ceil (MX scale rule)."
    )
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    import torch

    from numerics.quantize import quantize

    try:
        values = [float(v) for v in args.values]
    except ValueError as exc:
        raise UserError(f"must be numbers ({exc})", key="VALUES", value=args.values) from None
    x = torch.tensor(values, dtype=torch.float32)
    names = args.format or ["bf16"]
    header = ["input", *(f"{n} ({args.rounding})" for n in names)]
    cols = [[_fmt_num(float(v)) for v in x.tolist()]]
    for n in names:
        y = quantize(x, n, args.rounding, generator=args.seed, saturate=args.saturate or None)
        cols.append([repr(float(v)) for v in y.tolist()])
    widths = [max(len(h), *(len(c) for c in col)) for h, col in zip(header, cols, strict=True)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for i in range(len(values)):
        print("  ".join(col[i].ljust(w) for col, w in zip(cols, widths, strict=True)))
    return 0


def _run_folder(recipe: str) -> Path | None:
    """The run folder whose ``config.yaml`` the recipe file is, else None."""
    from numerics.train.rundir import RunDir

    rd = RunDir(Path(recipe).parent)
    if Path(recipe).name != rd.config.name:
        return None
    return rd.path if any(f.exists() for f in (rd.metrics, rd.summary, rd.checkpoint)) else None


def _default_out(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``, ...: the first that is not there or empty, so a
    run's default folder never holds another run."""
    out, n = base, 1
    while out.exists() and any(out.iterdir()):
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def cmd_train(args: argparse.Namespace) -> int:
    """0: completed or diverged (as ``numerics sweep``); 1: the run failed; 130: Ctrl-C.

    Without ``--out`` the run goes to ``results/runs/<run id>``, or, when that holds a run, to
    the first free ``<run id>-2``, ``-3``, ...: ``numerics train RUN/config.yaml`` runs RUN's
    recipe again. ``--resume`` continues ``--out``, else the run whose ``config.yaml`` the
    recipe is, else ``results/runs/<run id>``."""
    from numerics.sweeps.spec import run_id, upgrade_config
    from numerics.train import recipe as recipes
    from numerics.train.rundir import RunDir

    rec = recipes.load(args.recipe, args.set or [])
    if args.nproc < 1:
        raise UserError(f"must be >= 1, got {args.nproc}", key="--nproc", value=args.nproc)
    base = Path("results") / "runs" / run_id(rec)
    if args.out:
        out = Path(args.out)
    elif args.resume:
        out = (None if args.set else _run_folder(args.recipe)) or base
    else:
        out = _default_out(base)
        if out != base:
            print(
                f"numerics train: {base} holds a run; this one goes to {out} "
                f"(--resume continues the one in {base})",
                file=sys.stderr,
            )
    kwargs = {"resume": args.resume, "progress": False if args.no_progress else None}
    if args.device:
        kwargs["device"] = args.device
    if args.resume:
        upgrade_config(out, rec.to_dict())

    try:
        if args.nproc > 1:
            from numerics.train.launch import train_parallel

            summary = train_parallel(rec, out, args.nproc, **kwargs)
        else:
            from numerics.train.trainer import train

            summary = train(rec, out, **kwargs)
    except KeyboardInterrupt:
        print(
            f"\nnumerics train: interrupted; continue the run with: numerics train "
            f"{args.recipe} --resume --out {out}",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:
        if not isinstance(exc, UserError) and RunDir(out).read_summary():
            print(
                f"numerics train: the run failed (recorded in {out / 'summary.json'})",
                file=sys.stderr,
            )
        raise
    metrics = ", ".join(f"{k} {_fmt_num(v)}" for k, v in summary.metrics.items())
    # the reference each task's number is read against: the corpus's unigram entropy and
    # n-gram model, the planted model's optimum
    refs = {
        k: v
        for k, v in summary.data_info.items()
        if k.startswith(("planted_", "unigram_", "kneser_ney_")) and isinstance(v, int | float)
    }
    if refs:
        metrics += " [reference: " + ", ".join(f"{k} {_fmt_num(v)}" for k, v in refs.items())
        metrics += "]"
    print(
        f"{summary.status}: {summary.label or ''} {metrics} "
        f"({summary.steps} steps, {summary.wall_s} s) -> {out}"
    )
    return 0 if summary.status in ("completed", "diverged") else 1


def cmd_evaluate(args: argparse.Namespace) -> int:
    from numerics.train.evaluate import evaluate, evaluate_many

    sets = args.set or []
    if args.out is not None:
        if len(args.runs) > 1 or len(args.format or []) > 1:
            raise UserError("names one evaluation; use --results for several", key="--out")
        sets = [*sets, *(f"numerics.format={f}" for f in args.format or [])]
        done = [evaluate(args.runs[0], sets, args.out, args.device, args.calibrate)]
    else:
        done = evaluate_many(
            args.runs, args.format or [], sets, args.results, args.device, args.calibrate
        )
    for s in done:
        metrics = ", ".join(f"{k} {_fmt_num(v)}" for k, v in s.metrics.items())
        print(f"{s.format}: {metrics} (trained in {s.extra['trained_format']}) "
              f"<- {s.extra['source_run']}")  # fmt: skip
    return 0


def _cmd_pvf(args: argparse.Namespace) -> int:
    from numerics.train.pvf import cmd_pvf

    return cmd_pvf(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="numerics", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of bad-input errors too"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("formats", help="list the format registry with each format's facts")
    p.add_argument("pattern", nargs="?", help="wildcard filter, e.g. 'mx*'")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_formats)

    p = sub.add_parser("quantize", help="show what given numbers become in formats")
    p.add_argument("--format", "-f", action="append", help="format name (repeatable)")
    p.add_argument(
        "--rounding", "-r", default="nearest_even", choices=rounding_names(), help="rounding mode"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for stochastic rounding")
    p.add_argument("--saturate", action="store_true", help="saturate out-of-range values")
    p.add_argument("values", nargs="+", help="numbers (use -- before negative ones)")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("train", help="train a recipe (YAML) into a run directory")
    p.add_argument(
        "recipe",
        help="recipe file, e.g. recipes/image/digits_resnet.yaml, or a run's config.yaml",
    )
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE",
        help="override a recipe key, e.g. --set numerics.format=bf16 (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--out",
        help="run directory (default results/runs/<run id>, or <run id>-2, -3, ... when taken)",
    )
    p.add_argument(
        "--resume", action="store_true",
        help="continue the run in --out (default: the run whose config.yaml RECIPE is, else "
        "results/runs/<run id>)",
    )  # fmt: skip
    p.add_argument("--nproc", type=int, default=1, help="data-parallel worker processes")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda if available")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    from numerics.qsnr import add_parser as add_qsnr
    from numerics.sweeps.cli import add_parser as add_sweep

    p = sub.add_parser(
        "evaluate",
        help="evaluate a trained run in another numerics policy (direct-cast inference)",
    )
    p.add_argument(
        "runs", nargs="+", metavar="RUN",
        help="run directories (config.yaml and checkpoint.pt inside), or folders of them",
    )  # fmt: skip
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE",
        help="the inference policy, e.g. --set numerics.format=mxint8 (repeatable; numerics.* "
        "and train.eval_batch_size / train.max_eval_batches only)",
    )  # fmt: skip
    p.add_argument(
        "--format", action="append", metavar="F",
        help="evaluate in each of these formats (numerics.format=F on top of --set; repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--results",
        help="folder for many evaluations, one per run and format (<run>--<format>); those "
        "already there are kept (default results/evals)",
    )
    p.add_argument("--out", help="the folder of a single evaluation (one run, one policy)")
    p.add_argument(
        "--calibrate", type=int, default=0, metavar="N",
        help="fix the scales of per-tensor integer activation casts (int8, int4) from the run's "
        "first N training batches, in fp32 (static quantization; default 0: dynamic)",
    )  # fmt: skip
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cpu")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("pvf", help="bit-flip fault injection in a trained run's parameters")
    p.add_argument("run", help="a run directory (config.yaml, checkpoint.pt)")
    p.add_argument(
        "--set", action="append", metavar="numerics.KEY=VALUE",
        help="evaluate under this inference policy, as numerics evaluate (default: the run's own)",
    )  # fmt: skip
    p.add_argument(
        "--component", action="append", metavar="[NAME=]GLOB",
        help="a parameter group by name glob (repeatable; default: the model's natural groups)",
    )  # fmt: skip
    p.add_argument(
        "--field", action="append", choices=["element", "scale", "bias", "micro"],
        help="what a fault flips in a parameter's stored encoding (repeatable; default: element, "
        "the value's own bits or code; scale/bias/micro: a quantized format's shared fields)",
    )  # fmt: skip
    p.add_argument(
        "--bit", action="append", metavar="B",
        help="bit position, 0 = least significant (repeatable; default: uniform over the "
        "field's width: 32 for float32, the code's width in a format)",
    )  # fmt: skip
    p.add_argument("--faults", type=int, default=1000, help="faults per component and bit")
    p.add_argument(
        "--flips", type=int, default=1, metavar="K",
        help="bits a fault flips in one unit (distinct, drawn uniformly; default 1)",
    )  # fmt: skip
    p.add_argument("--examples", type=int, default=512, help="evaluation examples per fault")
    p.add_argument("--seed", type=int, default=0, help="seed of the faults' positions and bits")
    p.add_argument("--out", help="output folder (default results/pvf/<run>)")
    p.set_defaults(func=_cmd_pvf)

    from numerics.sweeps.compare import add_parser as add_compare
    from numerics.sweeps.docgen import add_parser as add_docs

    add_sweep(sub)
    add_compare(sub)
    add_qsnr(sub)
    add_docs(sub)

    p = sub.add_parser("bench", help="quantizer throughput beside torch.clone", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=None)
    return parser


def _interruptible(command: str, func: Callable[[], int], debug: bool) -> int:
    """``run_command``, with Ctrl-C as exit code 130 (``train`` and ``sweep`` say first how to
    continue)."""
    try:
        return run_command(command, func, debug)
    except KeyboardInterrupt:
        print(f"\nnumerics {command}: interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest = argv[1:] if argv[:1] == ["--debug"] else argv
    if rest[:1] == ["bench"]:  # bench parses its own arguments
        from numerics.bench import main as bench_main

        return _interruptible("bench", lambda: bench_main(rest[1:]), rest is not argv)
    args = build_parser().parse_args(argv)
    return _interruptible(args.command, lambda: args.func(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
