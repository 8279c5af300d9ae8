"""Block kernels: shared E8M0 scale per block (MX, BFP) and shared micro-exponents (MX9/6/4).

Both take float32 blocks ``x`` of shape (nblocks, block) and return the quantised values.
The values are moved into element space with an exact multiply by a power of two, rounded by
the element core, and moved back (again exact: every element-grid value times the scale is a
float32 value). A value that becomes float32-subnormal in element space lies far below the
element's smallest step, where only "zero or not" matters to any rounding mode; one that
underflows to zero there is kept as the smallest nonzero value so directed modes still see it.
"""

from __future__ import annotations

import torch

from numerics.kernels.core import (
    ABS,
    I32,
    INF,
    P_CEIL,
    P_EMAX_ELEM,
    P_EMIN_F,
    P_M,
    P_MAX_NEG,
    P_MAX_POS,
    P_MINNORM,
    P_SR_BITS,
    Q_HI,
    Q_LO,
    Q_MAX_POS,
    Q_SHIFT,
    SIGN,
    pow2_f32,
    pow2_floor,
    round_bits,
)
from numerics.kernels.element import sr_random
from numerics.rounding import Rounding

F32 = torch.float32


def _to_element_space(x: torch.Tensor, b: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """Bit patterns of ``x * 2**-e`` (exact, or tiny-but-nonzero when it underflows)."""
    xs = (x * pow2_f32(-e)).view(I32)
    underflow = ((xs & ABS) == 0) & ((b & ABS) != 0)
    return torch.where(underflow, (b & SIGN) | 1, xs)


def _round_elements(
    xb: torch.Tensor,
    p: torch.Tensor,
    emin_f: torch.Tensor,
    maxpos: torch.Tensor,
    maxneg: torch.Tensor,
    mode: Rounding,
) -> torch.Tensor:
    """Round element-space bit patterns, saturating (block elements never overflow to inf)."""
    sat = torch.full_like(p[0], -1)
    keep = p[P_MINNORM]  # 0, or -1 for two's-complement element grids (zero is +0)
    rnd = sr_random(xb.shape, p, xb.device) if mode is Rounding.STOCHASTIC else None
    return round_bits(xb, p[P_M], emin_f, maxpos, maxneg, sat, keep, mode, rnd, p[P_SR_BITS])


def _nearest_even_elements(
    xs: torch.Tensor, q: torch.Tensor, fixed: bool, tau: torch.Tensor | None = None
) -> torch.Tensor:
    """nearest_even of float element-space values by the float adder (see core), saturating.

    A fixed-point element grid has one step, so the adder constant ``c = 2**(emax + 23 - m)``
    is the same for every element (halved where tau = 1); a float element grid takes c from
    each value's binade. Values tiny enough to have underflowed in element space round to
    zero either way, so they need no care here. Returns float32.
    """
    maxf = q[Q_MAX_POS]
    if fixed:
        c = q[Q_LO] * q[Q_SHIFT]
    else:
        c = pow2_floor(torch.clamp(xs.abs(), min=q[Q_LO], max=q[Q_HI])) * q[Q_SHIFT]
    if tau is not None:  # a sub-block one binade down: grid and maximum both halved
        c = torch.where(tau, c * 0.5, c)
        maxf = torch.where(tau, maxf * 0.5, maxf)
    y = torch.minimum((xs.abs() + c) - c, maxf)
    out = torch.copysign(y, xs)
    if fixed:  # two's-complement elements: the only zero is +0
        out = torch.where(y == 0, 0.0, out)
    return out


def _pow2_floor_any(v: torch.Tensor) -> torch.Tensor:
    """``2**floor(log2(v))`` for any finite v (a float32 subnormal or zero gives 2**-127).

    ``pow2_floor`` needs ``v * 2**24`` finite, so large values are scaled down by 2**64 first
    (exact), and values below 2**-126 land on E8M0's floor, 2**-127.
    """
    big = v >= 2.0**64
    e = pow2_floor(torch.clamp(torch.where(big, v * 2.0**-64, v), min=2.0**-126))
    e = e * torch.where(big, 2.0**64, 1.0)
    return torch.where(v < 2.0**-126, 2.0**-127, e)


def _mx_scale(amax: torch.Tensor, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The E8M0 scale ``X = 2**s`` of each block as a float, from the float block maximum.

    Same rule as ``shared_exponent``: floor, ``2**(floor(log2(amax)) - emax_elem)`` within
    ``[2**-127, 2**(127 - emax_elem)]``; ceil doubles it while amax exceeds ``max_elem * X``
    (once), within the same cap. 2**-emax_elem is ``2 / 2**(emax_elem + 1)``, exact.
    """
    inv_emax = 2.0 / q[Q_HI]
    x_scale = torch.clamp(_pow2_floor_any(amax) * inv_emax, min=2.0**-127)
    bump = (p[P_CEIL] == 1) & (amax > q[Q_MAX_POS] * x_scale)
    x_scale = torch.where(bump, x_scale * 2.0, x_scale)
    return torch.minimum(x_scale, 2.0**126 * inv_emax * 2.0)


def shared_exponent(amax: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """E8M0 scale exponent of each block from the bit pattern of its absolute maximum.

    Floor rule (OCP MX): ``floor(log2(amax)) - emax_elem``, clamped to [-127, 127] (a zero or
    float32-subnormal amax lands on the clamp). Ceil rule: one more when amax exceeds
    ``max_elem * 2**s``, which for an unclamped ``s`` compares mantissas only, up to
    ``127 - emax_elem``.
    """
    e = (amax >> 23) - 127
    emax = p[P_EMAX_ELEM]
    s0 = torch.clamp(e - emax, min=-127, max=127)
    bump = (p[P_CEIL] == 1) & (s0 == e - emax) & ((amax & 0x7FFFFF) > (p[P_MAX_POS] & 0x7FFFFF))
    # The floor rule never exceeds 127 - emax (amax < 2**128); the ceil rule's extra binade
    # is capped there too, so every scaled element stays a finite float32.
    return torch.minimum(s0 + bump.to(I32), 127 - emax)


def block_kernel(
    x: torch.Tensor,
    b: torch.Tensor,
    p: torch.Tensor,
    q: torch.Tensor,
    fixed: bool,
    *,
    mode: Rounding,
) -> torch.Tensor:
    """MX / BFP: ``x`` (nblocks, block) float32 and ``b`` its int32 view -> quantised float32.

    ``fixed`` says the element grid is fixed point (mxint8, BFP) rather than a float format.
    """
    if mode is Rounding.NEAREST_EVEN:
        # All float: per-block work in a few scalar float ops, no per-element bitcasts.
        famax = x.abs().amax(dim=-1, keepdim=True)  # (nb, 1); NaN propagates
        scale = _mx_scale(famax, p, q)
        out = _nearest_even_elements(x * (1.0 / scale), q, fixed) * scale
        return torch.where(torch.isfinite(famax), out, torch.full_like(out, float("nan")))
    amax = (b & ABS).amax(dim=-1, keepdim=True)  # (nb, 1); NaN/inf bits compare largest
    s = shared_exponent(amax, p)
    y = _round_elements(
        _to_element_space(x, b, s), p, p[P_EMIN_F], p[P_MAX_POS], p[P_MAX_NEG], mode
    )
    out = y.view(F32) * pow2_f32(s)
    return torch.where(amax >= INF, torch.full_like(out, float("nan")), out)


def smx_kernel(
    x: torch.Tensor,
    b: torch.Tensor,
    p: torch.Tensor,
    q: torch.Tensor,
    sub: int,
    *,
    mode: Rounding,
) -> torch.Tensor:
    """Shared micro-exponents: ``x`` (nblocks, block) float32 (``b`` its int32 view); each
    run of ``sub`` elements shares tau.

    Element space is relative to ``2**E`` (E = floor(log2(amax)), clamped to [-127, 127]);
    a sub-block with ``tau = 1`` uses the grid of the fixed-point element shifted down by one
    binade (emin and max both halved). The rounding runs over whole rows (blocks) with tau
    looked up per element, which vectorises; only the small sub-block reduction runs per pair.
    """
    nb, bs = x.shape
    if mode is Rounding.NEAREST_EVEN:
        ax = x.abs()
        famax = ax.amax(dim=-1, keepdim=True)  # (nb, 1)
        scale = _pow2_floor_any(famax)  # 2**E, E clamped at -127
        pair = ax.view(nb, bs // sub, sub).amax(dim=-1)  # (nb, nsub)
        ftau = (pair < scale) & (scale > 2.0**-127)  # pair exponent below E
        ftau = ftau.unsqueeze(-1).expand(nb, bs // sub, sub).reshape(nb, bs)
        out = _nearest_even_elements(x * (1.0 / scale), q, True, ftau) * scale
        return torch.where(torch.isfinite(famax), out, torch.full_like(out, float("nan")))
    a = b & ABS
    amax = a.amax(dim=-1, keepdim=True)  # (nb, 1)
    e = torch.clamp((amax >> 23) - 127, min=-127, max=127)
    pair_e = (a.view(nb, bs // sub, sub).amax(dim=-1) >> 23) - 127  # (nb, nsub)
    tau = torch.clamp(e - pair_e, min=0, max=1)
    tau = tau.unsqueeze(-1).expand(nb, bs // sub, sub).reshape(nb, bs)  # per element
    y = _round_elements(
        _to_element_space(x, b, e),
        p,
        p[P_EMIN_F] - tau,
        p[P_MAX_POS] - (tau << 23),
        p[P_MAX_NEG] - (tau << 23),
        mode,
    )
    out = y.view(F32) * pow2_f32(e)
    return torch.where(amax >= INF, torch.full_like(out, float("nan")), out)
