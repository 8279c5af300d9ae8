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
    xs: torch.Tensor, p: torch.Tensor, fixed: bool, tau: torch.Tensor | None = None
) -> torch.Tensor:
    """nearest_even of float element-space values by the float adder (see core), saturating.

    A fixed-point element grid has one step, so the adder constant ``c = 2**(emax + 23 - m)``
    is the same for every element (halved where tau = 1); a float element grid takes c from
    each value's exponent. Values tiny enough to have underflowed in element space round to
    zero either way, so they need no care here. Returns float32.
    """
    m, emax = p[P_M], p[P_EMAX_ELEM]
    maxf = p[P_MAX_POS].view(F32)
    if fixed:
        c = pow2_f32(emax + 23 - m)
    else:  # 0-d parameters only are bitcast; per element it is float arithmetic
        lo, hi = pow2_f32(p[P_EMIN_F] - 127), pow2_f32(emax + 1)
        c = pow2_floor(torch.clamp(xs.abs(), min=lo, max=hi)) * pow2_f32(23 - m)
    if tau is not None:  # a sub-block one binade down: grid and maximum both halved
        c = torch.where(tau == 1, c * 0.5, c)
        maxf = torch.where(tau == 1, maxf * 0.5, maxf)
    y = torch.minimum((xs.abs() + c) - c, maxf)
    out = torch.copysign(y, xs)
    if fixed:  # two's-complement elements: the only zero is +0
        out = torch.where(y == 0, 0.0, out)
    return out


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
    x: torch.Tensor, b: torch.Tensor, p: torch.Tensor, fixed: bool, *, mode: Rounding
) -> torch.Tensor:
    """MX / BFP: ``x`` (nblocks, block) float32 and ``b`` its int32 view -> quantised float32.

    ``fixed`` says the element grid is fixed point (mxint8, BFP) rather than a float format.
    """
    amax = (b & ABS).amax(dim=-1, keepdim=True)  # (nb, 1); NaN/inf bits compare largest
    s = shared_exponent(amax, p)
    if mode is Rounding.NEAREST_EVEN:
        out = _nearest_even_elements(x * pow2_f32(-s), p, fixed) * pow2_f32(s)
    else:
        y = _round_elements(
            _to_element_space(x, b, s), p, p[P_EMIN_F], p[P_MAX_POS], p[P_MAX_NEG], mode
        )
        out = y.view(F32) * pow2_f32(s)
    return torch.where(amax >= INF, torch.full_like(out, float("nan")), out)


def smx_kernel(
    x: torch.Tensor, b: torch.Tensor, p: torch.Tensor, sub: int, *, mode: Rounding
) -> torch.Tensor:
    """Shared micro-exponents: ``x`` (nblocks, block) float32 (``b`` its int32 view); each
    run of ``sub`` elements shares tau.

    Element space is relative to ``2**E`` (E = floor(log2(amax)), clamped to [-127, 127]);
    a sub-block with ``tau = 1`` uses the grid of the fixed-point element shifted down by one
    binade (emin and max both halved). The rounding runs over whole rows (blocks) with tau
    looked up per element, which vectorises; only the small sub-block reduction runs per pair.
    """
    nb, bs = x.shape
    a = b & ABS
    amax = a.amax(dim=-1, keepdim=True)  # (nb, 1)
    e = torch.clamp((amax >> 23) - 127, min=-127, max=127)
    pair_e = (a.view(nb, bs // sub, sub).amax(dim=-1) >> 23) - 127  # (nb, nsub)
    tau = torch.clamp(e - pair_e, min=0, max=1)
    tau = tau.unsqueeze(-1).expand(nb, bs // sub, sub).reshape(nb, bs)  # per element
    if mode is Rounding.NEAREST_EVEN:
        out = _nearest_even_elements(x * pow2_f32(-e), p, True, tau) * pow2_f32(e)
    else:
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
