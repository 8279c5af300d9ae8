"""Quantization signal-to-noise ratio (QSNR) of every format on planted data.

``QSNR = 10 log10( sum x^2 / sum (x - Q(x))^2 )`` in dB: how much of a tensor's energy a format
keeps. Block formats are judged this way in the shared micro-exponent and microscaling papers
(Rouhani et al. 2302.08007, Sec. 4 and Fig. 6; 2310.10537), which rank the formats MX9 > MX6 >
MX4 and MXINT8 ≈ MXFP8 > MXFP6 > MXFP4 by it. A uniform quantizer with ``M`` levels on a
uniform source has ``20 log10 M`` dB (about 6.02 dB per bit), the textbook anchor the tests use.

The data are drawn from a fixed seed, so a table is the same on every run of one machine:

- ``gaussian``: N(0, 1);
- ``laplace``: Laplace(0, 1), heavier tails;
- ``student_t3``: Student t with 3 degrees of freedom, heavy tails (infinite kurtosis), where
  a few large values set a block's scale;
- ``uniform``: U(-1, 1), the textbook case.

Blocks run along the last axis of a ``(rows, 1024)`` tensor (every block is whole). One value
per (format, distribution): the QSNR over all ``numel`` draws (the ratio of the sums, not a
mean of per-block ratios). ``numerics qsnr`` prints the table; docs/findings.md shows it.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import Any

import torch

from numerics.errors import UserError
from numerics.rounding import parse as parse_rounding

DISTRIBUTIONS = ("gaussian", "laplace", "student_t3", "uniform")
LADDER = (
    "bf16", "fp16", "fp8_e4m3", "fp8_e5m2", "int8", "mxint8", "mxfp8_e4m3", "mxfp8_e5m2",
    "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4_e2m1", "mxfp4_e2m1_ceil", "bfp8_b16", "mx9", "mx6", "mx4",
)  # fmt: skip
ROW = 1024


def sample(dist: str, numel: int, seed: int = 0) -> torch.Tensor:
    """``numel`` float32 draws of ``dist`` as a ``(numel // 1024, 1024)`` tensor (numel is
    rounded up to whole rows)."""
    if dist not in DISTRIBUTIONS:
        allowed = ", ".join(DISTRIBUTIONS)
        raise UserError(f"distribution {dist!r}: allowed: {allowed}", value=dist, allowed=allowed)
    if numel < 1:
        raise UserError(f"numel must be positive, got {numel}", value=numel, allowed=">= 1")
    g = torch.Generator().manual_seed(seed)
    shape = (math.ceil(numel / ROW), ROW)
    if dist == "gaussian":
        return torch.randn(shape, generator=g)
    u = torch.rand(shape, generator=g, dtype=torch.float64)
    if dist == "uniform":
        return (2 * u - 1).float()
    if dist == "laplace":  # inverse CDF
        return (-torch.sign(u - 0.5) * torch.log1p(-2 * (u - 0.5).abs())).float()
    # Student t (3 dof): a normal over sqrt(chi^2_3 / 3)
    z = torch.randn(shape, generator=g, dtype=torch.float64)
    chi2 = torch.randn((3, *shape), generator=g, dtype=torch.float64).pow(2).sum(0)
    return (z / torch.sqrt(chi2 / 3)).float()


def qsnr_db(x: torch.Tensor, q: torch.Tensor) -> float:
    """``10 log10(sum x^2 / sum (x - q)^2)`` in float64; inf where q equals x."""
    x64, q64 = x.double(), q.double()
    noise = float((x64 - q64).pow(2).sum())
    signal = float(x64.pow(2).sum())
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise)


def format_qsnr(fmt: str, x: torch.Tensor, rounding: str = "nearest_even") -> float:
    """QSNR of ``fmt`` on ``x`` (blocks along the last axis), saturating on overflow."""
    from numerics.quantize import quantize

    return qsnr_db(x, quantize(x, fmt, rounding, generator=0, axis=-1, saturate=True))


def table(
    fmts: Sequence[str] = LADDER,
    dists: Sequence[str] = DISTRIBUTIONS,
    numel: int = 1 << 20,
    seed: int = 0,
    rounding: str = "nearest_even",
) -> dict[str, dict[str, float]]:
    """format -> distribution -> QSNR in dB."""
    data = {d: sample(d, numel, seed) for d in dists}
    return {f: {d: format_qsnr(f, data[d], rounding) for d in dists} for f in fmts}


def bits_per_element(fmt: str) -> float:
    from numerics import formats

    f = formats.get(fmt)
    return float(getattr(f, "bits_per_element", f.bits))


def markdown(values: dict[str, dict[str, float]]) -> list[str]:
    """The table as markdown lines: format, bits per element, one dB column per distribution."""
    dists = list(next(iter(values.values())))
    lines = ["| format | bits/element | " + " | ".join(dists) + " |"]
    lines.append("|---|---|" + "---|" * len(dists))
    for f, row in values.items():
        cells = [f"{row[d]:.2f}" for d in dists]
        lines.append(f"| {f} | {bits_per_element(f):g} | " + " | ".join(cells) + " |")
    return lines


def add_sample_arguments(p: argparse.ArgumentParser) -> None:
    """Which formats, distributions, draws and seed (``numerics qsnr`` and the docs' block)."""
    p.add_argument(
        "--formats", nargs="+", default=list(LADDER), metavar="F",
        help="formats to measure (default: a ladder from bf16 down to 4 bits)",
    )  # fmt: skip
    p.add_argument(
        "--dist", nargs="+", default=list(DISTRIBUTIONS), choices=DISTRIBUTIONS,
        help="the planted data (default: all)",
    )  # fmt: skip
    p.add_argument("--numel", type=int, default=1 << 20, help="draws per distribution (1M)")
    p.add_argument("--seed", type=int, default=0, help="seed of the planted data")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "qsnr",
        help="quantization SNR (dB) of formats on Gaussian and heavy-tailed data",
        description="QSNR = 10 log10(sum x^2 / sum (x - Q(x))^2) of each format on planted "
        "data (fixed seed); blocks along rows of 1024.",
    )
    add_sample_arguments(p)
    p.add_argument("--rounding", default="nearest_even", help="rounding mode (nearest_even)")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.set_defaults(func=cmd_qsnr)
    return p


def cmd_qsnr(args: argparse.Namespace) -> int:
    from numerics import formats

    for f in args.formats:
        formats.get(f)  # an unknown name fails here with the registry's close matches
    parse_rounding(args.rounding)
    if args.numel < 1:
        raise UserError(f"must be positive, got {args.numel}", key="--numel", value=args.numel)
    values = table(args.formats, args.dist, args.numel, args.seed, args.rounding)
    if args.markdown:
        print("\n".join(markdown(values)))
        return 0
    width = max(len(f) for f in values)
    print(f"QSNR in dB, {args.numel:,} draws per distribution, seed {args.seed}, {args.rounding}")
    print(f"{'format':<{width}}  bits/el  " + "  ".join(f"{d:>10}" for d in args.dist))
    for f, row in values.items():
        cells = "  ".join(f"{row[d]:>10.2f}" for d in args.dist)
        print(f"{f:<{width}}  {bits_per_element(f):>7g}  {cells}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="numerics")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    from numerics.errors import run_command

    return run_command(args.command, lambda: args.func(args))
