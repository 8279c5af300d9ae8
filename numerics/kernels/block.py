"""Block kernels: shared E8M0 scale per block (MX, BFP) and shared micro-exponents (MX9/6/4).

Both take float32 blocks ``x`` of shape (nblocks, block) and return the quantised values.
The values are moved into element space with an exact multiply by a power of two, rounded
there by float arithmetic (no bit patterns per element: see ``_directed_elements``), and moved
back (again exact: every element-grid value times the scale is a float32 value). A value that
becomes float32-subnormal in element space lies far below the element's smallest step, where
only "zero or not" matters to any rounding mode; one that underflows to zero there is still
seen as nonzero by the directed modes (the input tells it from a zero).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from numerics.kernels.core import (
    I32,
    P_CEIL,
    P_EMAX_ELEM,
    P_SR_BITS,
    Q_C,
    Q_LO,
    Q_MAX_NEG,
    Q_MAX_POS,
    Q_SPLIT,
    pow2_floor,
    round_magnitude,
)
from numerics.kernels.element import sr_random
from numerics.rounding import Rounding

F32 = torch.float32


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
    """The E8M0 scale ``X = 2**s`` of each block as a float, from the float block maximum."""
    return _mx_scales(amax, p, q)[0]


def _mx_scales(
    amax: torch.Tensor, p: torch.Tensor, q: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The E8M0 scale ``X`` of each block and ``1 / X``, both exact powers of two.

    Same rule as ``shared_exponent``: floor, ``2**(floor(log2(amax)) - emax_elem)`` within
    ``[2**-127, 2**(127 - emax_elem)]``; ceil doubles it while amax exceeds ``max_elem * X``
    (once), within the same cap. Computed on the exponent field of amax's bit pattern:
    ``sf = floor(log2 amax) - emax_elem + 127`` (a zero or float32-subnormal amax has field
    0 and clamps to 2**-127, as it should; an inf or NaN block is made NaN by the caller).
    This is per-block scalar work, where a bitcast costs nothing, and needs no division:
    in the compiled kernel it replaced some forty float operations and two divisions per
    block, which dominated the kernel's time.
    """
    emax = p[P_EMAX_ELEM]
    top = 254 - emax
    sf = torch.minimum(torch.clamp((amax.view(I32) >> 23) - emax, min=0), top)
    x_scale = _pow2_biased(sf)
    bump = (p[P_CEIL] == 1) & (amax > q[Q_MAX_POS] * x_scale)
    sf = torch.minimum(sf + bump.to(I32), top)
    return _pow2_biased(sf), _pow2_biased(254 - sf)


def _pow2_biased(sf: torch.Tensor) -> torch.Tensor:
    """``2**(sf - 127)`` for an int32 biased exponent ``sf`` in [0, 254] (0 is 2**-127, a
    float32 subnormal whose pattern is not ``sf << 23``, hence the clamp)."""
    return torch.clamp((sf << 23).view(F32), min=2.0**-127)


def mx_scale(x: torch.Tensor, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The E8M0 scale of each block of ``x`` (nblocks, block) as a float32 power of two."""
    return _mx_scale(x.abs().amax(dim=-1, keepdim=True), p, q)


def _directed_elements(
    xs: torch.Tensor,
    x: torch.Tensor,
    p: torch.Tensor,
    q: torch.Tensor,
    fixed: bool,
    mode: Rounding,
) -> torch.Tensor:
    """Every rounding mode but nearest_even, of element-space values ``xs = x / scale``, by
    float arithmetic, saturating. ``x`` is the input (it tells a value that underflowed to
    zero in element space from a zero).

    With the grid step at ``|xs|`` (a power of two: ``2**(emax - m)`` on a fixed-point grid,
    ``max(2**floor(log2 |xs|), 2**emin) * 2**-m`` on a float grid), ``t = |xs| / step`` is
    exact, and so are ``n = floor(t)`` and the dropped fraction ``f = t - n``; the mode
    decides from f (and the sign) whether the magnitude becomes ``n`` or ``n + 1`` steps.
    Stochastic rounding goes up when ``rnd < floor(f * 2**R)``, i.e. ``f * 2**R >= rnd + 1``
    (an exact float comparison: both sides hold at most 24 significant bits), which is the
    integer core's rule, on the same random bits. A value below 2**-126 in element space
    lies far below the grid's smallest step, so only "zero or not" matters there, and its
    magnitude may be inexact.

    This replaces the integer core on the block path: the compiled CPU code turns a bitcast
    of a computed vector (the element-space values) into a scalar loop through memory per
    element, which halved the block kernels' speed.
    """
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


def _scaled_elements(
    x: torch.Tensor,
    scale: torch.Tensor,
    p: torch.Tensor,
    q: torch.Tensor,
    fixed: bool,
    mode: Rounding,
    inv: torch.Tensor | None = None,
) -> torch.Tensor:
    """Round ``x / scale`` (exact: a power of two; ``inv`` is 1 / scale when the caller has
    it) to the element grid."""
    xs = x * ((1.0 / scale) if inv is None else inv)
    if mode is Rounding.NEAREST_EVEN:
        return _nearest_even_elements(xs, q, fixed)
    return _directed_elements(xs, x, p, q, fixed, mode)


def block_kernel(
    x: torch.Tensor,
    p: torch.Tensor,
    q: torch.Tensor,
    fixed: bool,
    *,
    mode: Rounding,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MX / BFP: float32 ``x`` -> quantised float32, with each block's scale (NaN for a
    block holding an inf or NaN) and inverse scale, which callers drop.

    ``x`` is (nblocks, block), or (nblocks, block, post) with each block running along dim 1
    (a block along a tensor's non-last axis, read in place: no transpose). Stochastic
    rounding numbers elements in x's row-major order, so it takes the 2-d layout only.
    ``fixed`` says the element grid is fixed point (mxint8, BFP) rather than a float format.

    Why return the scales: as outputs they are stored once per block, and the compiled
    element loop reads them back. Otherwise Inductor recomputes them beside the elements: per
    vector of 16 elements along ``post`` (four bitcasts, each a scalar loop in its CPU code),
    or per block along the last axis, where a 16-element block is one AVX-512 vector and the
    next blocks' loads wait behind the scalar work. One thread, mxfp8_e4m3 per call: 256 x
    256 blocked along axis 0 245 -> 52 us, along axis 1 95 -> 54 us, 1024 x 1024 along axis
    0 3.9 -> 0.61 ms; 16M elements, 2 threads, x clone: bfp8_b16 nearest_even 0.48-0.52 ->
    0.59-0.61, stochastic 0.38 -> 0.44-0.45; 32-element MX blocks unchanged but for mode up
    (mxfp8_e4m3 0.55 -> 0.51).
    """
    amax = x.abs().amax(dim=1, keepdim=True)  # (nb, 1[, post]); NaN propagates
    scale, inv = _mx_scales(amax, p, q)
    scale = torch.where(torch.isfinite(amax), scale, float("nan"))
    return _scaled_elements(x, scale, p, q, fixed, mode, inv=inv) * scale, scale, inv


def _sub_block_max(ax: torch.Tensor, sub: int) -> torch.Tensor:
    """Per element of ``ax`` (nblocks, block[, post]), the maximum over its run of ``sub``
    elements along dim 1 (runs start at multiples of sub).

    Built from copies of ``ax`` shifted along dim 1 by 1 .. sub - 1 each way, each taken
    where the shifted element is in the same run: Inductor reads a shifted copy as a
    contiguous (masked) vector load. The direct route, a per-run ``amax`` expanded back to
    the elements, it compiles into a scalar gather loop per vector of elements, and the
    kernel ran at 0.6x this one's speed (mx6 nearest_even on 4M elements, where the output's
    memory is reused: 5.1 against 8.9 GB/s; 13.6 GB/s with no sub-block maximum at all).
    """
    bs, post = ax.shape[1], ax.dim() - 2
    pos = (torch.arange(bs, device=ax.device) % sub).view(bs, *([1] * post))
    m = ax
    for d in range(1, sub):
        fwd = F.pad(ax[:, d:], (0, 0) * post + (0, d))  # fwd[i] = ax[i + d]
        bwd = F.pad(ax[:, :-d], (0, 0) * post + (d, 0))  # bwd[i] = ax[i - d]
        m = torch.maximum(m, torch.where(pos + d < sub, fwd, 0.0))
        m = torch.maximum(m, torch.where(pos >= d, bwd, 0.0))
    return m


def smx_kernel(
    x: torch.Tensor,
    p: torch.Tensor,
    q: torch.Tensor,
    sub: int,
    *,
    mode: Rounding,
) -> torch.Tensor:
    """Shared micro-exponents: ``x`` (nblocks, block[, post]) float32 with blocks along dim 1
    (see ``block_kernel``); each run of ``sub`` elements shares tau.

    Element space is relative to ``2**E`` (E = floor(log2(amax)), clamped to [-127, 127]);
    a sub-block with ``tau = 1`` (its largest value below ``2**E``; never in a block whose E
    sits on the clamp) uses the fixed-point element grid one binade down (its steps and its
    maximum both halved). Rounding ``v`` to that halved grid is rounding ``2 v`` to the
    whole grid and halving the result (powers of two: exact, and the same fraction for
    every rounding mode), so such an element just takes the scale ``2**(E - 1)``: tau is a
    per-element choice of scale, and the rounding is the block kernels' fixed-point rounding.
    """
    ax = x.abs()
    amax = ax.amax(dim=1, keepdim=True)  # (nb, 1[, post])
    # The float route to 2**E here: the bit-pattern route of ``_mx_scales`` made this
    # kernel's compiled code 30x slower (measured; Inductor then recomputes per element).
    scale = _pow2_floor_any(amax)  # 2**E, E clamped at -127
    inv = 1.0 / scale
    tau = (_sub_block_max(ax, sub) < scale) & (scale > 2.0**-127)
    scale = torch.where(tau, scale * 0.5, scale)  # 2**(E - tau), per element
    inv = torch.where(tau, inv * 2.0, inv)
    out = _scaled_elements(x, scale, p, q, True, mode, inv=inv) * scale
    return torch.where(torch.isfinite(amax), out, torch.full_like(out, float("nan")))
