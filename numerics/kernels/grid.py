"""Rounding element-space values to an element grid by float arithmetic, in every mode.

The block kernels (MX, BFP, shared micro-exponents) and the scaled-integer kernels move their
values into element space (times an inverse scale) and round there, to a fixed-point grid (one
step; MX integer elements, BFP, MX9/6/4, integers) or a float element grid (MXFP). This does it
with float operations only, no bit pattern per element: the compiled CPU code turns a bitcast
of a computed vector into a scalar loop through memory per element, which halved the block
kernels' speed, and it made int8's directed and stochastic casts slower by a third or more
than this (``numerics bench --formats int8 --rounding up stochastic``: up 0.33 -> 0.51-0.55x
clone, stochastic 0.31-0.32 -> 0.40-0.44x, on the same random bits).

A value that becomes float32-subnormal in element space lies far below the grid's smallest
step, where only "zero or not" matters to any rounding mode; one that underflowed to zero
there is still seen as nonzero by the directed modes when the caller passes the unscaled
input beside it.
"""

from __future__ import annotations

import torch

from numerics.kernels.core import (
    F32,
    P_SR_BITS,
    Q_C,
    Q_LO,
    Q_MAX_NEG,
    Q_MAX_POS,
    Q_SPLIT,
    pow2_floor,
    round_magnitude,
    sr_random,
)
from numerics.rounding import Rounding


def round_elements(
    xs: torch.Tensor,
    x: torch.Tensor,
    p: torch.Tensor,
    q: torch.Tensor,
    fixed: bool,
    mode: Rounding,
) -> torch.Tensor:
    """Round float32 element-space values ``xs`` to the grid ``q`` describes (``p`` holds the
    stochastic-rounding key and bits), saturating; float32 out.

    ``fixed`` says the grid is fixed point (whose only zero is +0). ``x`` is what ``xs`` was
    scaled from: a nonzero x whose xs underflowed to zero is inexact for the directed modes.
    Pass ``xs`` itself where the scaled float32 values are the definition (integers: torch's
    fake quantisation rounds ``x * (1 / scale)`` as computed).

    nearest_even takes the float adder (``_nearest_even_elements``). Every other mode: with
    the grid step at ``|xs|`` (a power of two: ``2**(emax - m)`` on a fixed-point grid,
    ``max(2**floor(log2 |xs|), 2**emin) * 2**-m`` on a float grid), ``t = |xs| / step`` is
    exact, and so are ``n = floor(t)`` and the dropped fraction ``f = t - n``; the mode
    decides from f (and the sign) whether the magnitude becomes ``n`` or ``n + 1`` steps.
    Stochastic rounding goes up when ``rnd < floor(f * 2**R)``, i.e. ``f * 2**R >= rnd + 1``
    (an exact float comparison: both sides hold at most 24 significant bits), which is the
    integer core's rule, on the same random bits. A value below 2**-126 in element space
    lies far below the grid's smallest step, so only "zero or not" matters there, and its
    magnitude may be inexact.
    """
    if mode is Rounding.NEAREST_EVEN:
        return _nearest_even_elements(xs, q, fixed)
    neg = x < 0  # x, not xs: a negative value that underflowed is -0 in element space
    v = _clamped_magnitude(xs, q)
    if fixed:
        step = q[Q_C] * 2.0**-23  # 2**(emax - m), one step for the whole grid
    else:
        step = torch.maximum(pow2_floor(v), q[Q_LO]) * ((q[Q_SPLIT] - 1.0) * 2.0**-23)
    t = v * (1.0 / step)
    n = torch.floor(t)
    f = t - n
    if mode is Rounding.STOCHASTIC:
        rnd = sr_random(xs.shape, p, xs.device)
        up = f * (1 << p[P_SR_BITS]).to(F32) >= (rnd + 1).to(F32)
    elif mode is Rounding.NEAREST_AWAY:
        up = f >= 0.5
    elif mode is Rounding.TOWARD_ZERO:
        up = torch.zeros_like(neg)
    elif mode is Rounding.UP or mode is Rounding.DOWN:
        inexact = (f > 0) | ((xs == 0) & (x != 0))  # underflowed in element space: not 0
        up = inexact & (~neg if mode is Rounding.UP else neg)
    else:  # pragma: no cover - nearest_even has its own path; the enum is closed
        raise ValueError(mode)
    y = (n + up.to(F32)) * step  # at most the clamped range's end, which is on the grid
    return _signed(y, xs, fixed)


def _clamped_magnitude(xs: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``|xs|`` after clamping xs to the element grid's range: the ends are on the grid, so
    rounding a clamped value never passes them (saturation without a second pass), and a
    two's-complement grid keeps its extra step below zero."""
    return torch.clamp(xs, -q[Q_MAX_NEG], q[Q_MAX_POS]).abs()


def _signed(y: torch.Tensor, xs: torch.Tensor, fixed: bool) -> torch.Tensor:
    """Rounded magnitudes ``y`` with the signs of ``xs``; a two's-complement (fixed-point)
    element grid's only zero is +0."""
    out = torch.copysign(y, xs)
    return torch.where(y == 0, 0.0, out) if fixed else out


def _nearest_even_elements(xs: torch.Tensor, q: torch.Tensor, fixed: bool) -> torch.Tensor:
    """nearest_even of float element-space values by the float adder (see core), saturating.

    A fixed-point element grid has one step, so the adder constant ``c = 2**(emax + 23 - m)``
    is the same for every element; a float element grid takes c from
    each value's binade. Values tiny enough to have underflowed in element space round to
    zero either way, so they need no care here. Returns float32.
    """
    v = _clamped_magnitude(xs, q)
    if fixed:
        c = q[Q_C]
        y = (v + c) - c
    else:
        y = round_magnitude(v, q[Q_SPLIT], q[Q_LO], q[Q_C])
    return _signed(y, xs, fixed)
