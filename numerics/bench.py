"""``numerics bench``: quantizer throughput beside a tensor copy and beside qtorch.

For each (format, rounding mode) it times ``quantize(x, fmt, rounding, generator=0,
backend="compiled")`` on a float32 tensor of standard normals and reports GB/s as bytes read
plus bytes written (``2 * 4 * numel``) over the median time, and the route the cast took
(``numerics.route``): the hand-written C++ kernel (``numerics.kernels.native``) or
Inductor's. Beside it:

- ``torch.clone`` of the same tensor, the memory-bound yardstick with the same traffic (one
  read, one freshly allocated write). Clone timings here are dominated by allocating and
  faulting in the output, and drift with whatever else the machine does, so clone is timed
  interleaved with quantize in the same loop (clone, quantize, clone, ...) rather than in a
  separate run: both see the same conditions, and "x clone" is their ratio;
- qtorch (``backend="qtorch"``), also interleaved, where qtorch has the format and mode, and
  our speedup over it. qtorch's CPU kernels are single-threaded loops, whatever ``--threads``
  says. It is skipped silently when unavailable or with ``--no-qtorch``.

Warm-up calls come first: the first compiled call of each kernel compiles (seconds; cached on
disk by Inductor under ``TORCHINDUCTOR_CACHE_DIR``), and qtorch's first import builds its C++
extension (about a minute, once). Speed targets are checked here, by people reading the
output, never by the tests: shared machines make timings noisy.

``main(argv)`` is the ``numerics bench`` command (``--json`` for machine-readable output).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

import numerics
from numerics import formats as _formats
from numerics import provenance
from numerics.quantize import plan
from numerics.rounding import Rounding, parse

DEFAULT_FORMATS = [
    "bf16",
    "fp16",
    "fp8_e4m3",
    "fp8_e5m2",
    "fp6_e3m2",
    "fp4_e2m1",
    "int8",
    "mxfp8_e4m3",
    "mxfp6_e2m3",
    "mxfp4_e2m1",
    "mxint8",
    "bfp8_b16",
    "mx6",
]
DEFAULT_ROUNDING = ["nearest_even", "stochastic"]
DEFAULT_NUMEL = 16 * 2**20
DEFAULT_REPS = 10
WARMUP = 2  # the first compiled call compiles; the second checks the cached graph is reused
SEED = 0


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # honours taskset / container CPU limits
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="numerics bench",
        description="quantize() throughput (compiled backend) beside torch.clone and qtorch",
    )
    p.add_argument(
        "--formats",
        nargs="+",
        default=DEFAULT_FORMATS,
        metavar="FMT",
        help=f"format names (default: {' '.join(DEFAULT_FORMATS)})",
    )
    p.add_argument(
        "--rounding",
        nargs="+",
        default=DEFAULT_ROUNDING,
        metavar="MODE",
        help="rounding modes (default: nearest_even stochastic)",
    )
    p.add_argument(
        "--numel",
        type=int,
        default=DEFAULT_NUMEL,
        help=f"elements of the float32 input (default {DEFAULT_NUMEL})",
    )
    p.add_argument(
        "--reps",
        type=int,
        default=DEFAULT_REPS,
        help=f"timed repetitions; the median is reported (default {DEFAULT_REPS})",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: all available cores)"
    )
    p.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="where the input lives and the casts run (default cpu; cuda needs a GPU)",
    )
    p.add_argument("--no-qtorch", action="store_true", help="do not import or time qtorch")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def command_line(argv: Sequence[str] | None) -> str:
    """The command as typed when it can be told, else ``numerics bench ARGS``."""
    real = list(sys.argv)
    args = list(argv) if argv is not None else real[1:]
    if real and real[len(real) - len(args) :] == args:
        prog = real[0] if real[0].endswith(".py") else Path(real[0]).name
        head = ["python", prog] if prog.endswith(".py") else [prog]
        return shlex.join([*head, *real[1:]])
    return shlex.join(["numerics", "bench", *args])


def time_interleaved(
    fns: Sequence[Callable[[], object]], reps: int, sync: Callable[[], None] = lambda: None
) -> list[list[float]]:
    """Seconds per call of each function, the functions alternating within every rep.
    ``sync`` waits for queued device work (``torch.cuda.synchronize`` on a GPU)."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for i, fn in enumerate(fns):
            sync()
            t0 = time.perf_counter()
            out = fn()
            sync()
            times[i].append(time.perf_counter() - t0)
            del out  # free before the next call, so every call allocates alike
    return times


def _gbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e9


def bench_one(
    x: torch.Tensor, fmt_name: str, mode: Rounding, reps: int, qtorch: bool
) -> dict[str, Any]:
    """One table row: medians and GB/s for quantize, clone and (maybe) qtorch."""
    from numerics.backends import qtorch_backend

    fmt = _formats.get(fmt_name)
    nbytes = 2 * x.element_size() * x.numel()

    def ours() -> torch.Tensor:
        return numerics.quantize(x, fmt, mode, generator=SEED, backend="compiled")

    def their() -> torch.Tensor:
        return numerics.quantize(x, fmt, mode, generator=SEED, backend="qtorch")

    fns: list[Callable[[], object]] = [lambda: torch.clone(x), ours]
    with_qtorch = qtorch and qtorch_backend.supports(fmt, mode)
    if with_qtorch:
        fns.append(their)
    with warnings.catch_warnings(record=True) as caught:
        # A compiler failure falls back to the eager kernels with a RuntimeWarning: report it
        # beside the row, since the numbers then are not the compiled kernel's.
        warnings.simplefilter("always")
        for _ in range(WARMUP):
            for fn in fns:
                fn()
        sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
        times = time_interleaved(fns, reps, sync)
    route = plan(fmt, mode, backend="compiled").route(x)
    clone_s = statistics.median(times[0])
    ours_s = statistics.median(times[1])
    row: dict[str, Any] = {
        "format": fmt.name,
        "rounding": mode.value,
        # the path ours took (numerics.route): "kernel" is its short name for the table
        "route": route.value,
        "kernel": route.label,
        "seconds": ours_s,
        "gbps": _gbps(nbytes, ours_s),
        "clone_seconds": clone_s,
        "clone_gbps": _gbps(nbytes, clone_s),
        "x_clone": clone_s / ours_s,
        "qtorch_seconds": None,
        "qtorch_gbps": None,
        "x_qtorch": None,
        "times": {"clone": times[0], "quantize": times[1]},
        # Only ours: torch's own deprecation chatter during compilation is not about the row.
        "warnings": sorted({str(w.message) for w in caught if "numerics" in str(w.message)}),
    }
    if with_qtorch:
        qt_s = statistics.median(times[2])
        row.update(qtorch_seconds=qt_s, qtorch_gbps=_gbps(nbytes, qt_s), x_qtorch=qt_s / ours_s)
        row["times"]["qtorch"] = times[2]
    return row


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Every (format, rounding) row plus the machine and settings, as one document."""
    from numerics.backends import qtorch_backend

    if args.no_qtorch:
        qtorch_state: dict[str, Any] = {"used": False, "reason": "disabled (--no-qtorch)"}
    elif args.device != "cpu":
        qtorch_state = {"used": False, "reason": "timed on the CPU only"}
    else:
        print(
            "numerics bench: importing qtorch (its first import builds a C++ extension, "
            "about a minute)",
            file=sys.stderr,
        )
        reason = qtorch_backend.unavailable_reason()
        qtorch_state = {"used": reason is None, "reason": reason}
        if reason is None:
            qtorch_state["version"] = qtorch_backend.installed_version()
    modes = [parse(m) for m in args.rounding]
    x = torch.randn(args.numel, generator=torch.Generator().manual_seed(SEED)).to(args.device)
    rows = []
    for name in args.formats:
        for mode in modes:
            print(f"numerics bench: {name} / {mode.value}", file=sys.stderr)
            rows.append(bench_one(x, name, mode, args.reps, bool(qtorch_state["used"])))
    return {
        "command": command,
        "machine": {
            "cpu": provenance.cpu_model(),
            "cores": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name() if x.is_cuda else "cpu",
            "torch": torch.__version__,
            "numerics": numerics.__version__,
            "python": platform.python_version(),
        },
        "numel": args.numel,
        "dtype": "float32",
        "reps": args.reps,
        "warmup": WARMUP,
        "bytes_per_call": 2 * 4 * args.numel,
        "backend": "compiled",
        "qtorch": qtorch_state,
        "results": rows,
    }


def _cell(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def format_report(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    qt = doc["qtorch"]
    qt_line = (
        f"qtorch {qt.get('version', '')} (single-threaded CPU loops)"
        if qt["used"]
        else f"qtorch not timed: {qt['reason']}"
    )
    lines = [
        f"command: {doc['command']}",
        f"machine: {m['cpu']}, {m['cores']} cores, {m['threads']} torch threads, "
        f"torch {m['torch']}, numerics {m['numerics']}, Python {m['python']}, "
        f"device {m.get('device', 'cpu')}",
        f"input:   {doc['numel']:,} float32 standard normals; GB/s = 2 x 4 B x numel / median "
        f"of {doc['reps']} reps (after {doc['warmup']} warm-up); clone interleaved with quantize",
        qt_line,
        "",
    ]
    header = [
        *("format", "rounding", "kernel", "GB/s", "clone GB/s", "x clone"),
        *("qtorch GB/s", "x qtorch"),
    ]
    table = [header]
    for r in doc["results"]:
        table.append(
            [
                r["format"],
                r["rounding"],
                r["kernel"],
                _cell(r["gbps"]),
                _cell(r["clone_gbps"]),
                _cell(r["x_clone"]),
                _cell(r["qtorch_gbps"]),
                _cell(r["x_qtorch"], 1),
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        cells = [
            c.ljust(w) if i < 3 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    notes = [f"{r['format']}/{r['rounding']}: {w}" for r in doc["results"] for w in r["warnings"]]
    if notes:
        lines += ["", "warnings:", *notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag in ("numel", "reps"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device (a CPU build of torch?)")
    try:  # fail on a typo before minutes of compiling, not after
        for name in args.formats:
            _formats.get(name)
        for mode in args.rounding:
            parse(mode)
    except (KeyError, ValueError) as exc:
        parser.error(str(exc))
    command = command_line(argv)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or _available_cores())
    try:
        doc = run(args, command)
    finally:
        torch.set_num_threads(previous_threads)
    print(json.dumps(doc, indent=2) if args.json else format_report(doc))
    return 0
