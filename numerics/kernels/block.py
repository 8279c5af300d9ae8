"""Block kernels: shared E8M0 scale per block (MX, BFP) and shared micro-exponents (MX9/6/4).

Both take float32 blocks ``x`` of shape (nblocks, block) and return the quantised values.
The values are moved into element space with an exact multiply by a power of two, rounded
there by float arithmetic (``numerics.kernels.grid``), and moved back (again exact: every
element-grid value times the scale is a float32 value).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from numerics.kernels.core import F32, I32, P_CEIL, P_EMAX_ELEM, Q_MAX_POS, pow2_floor
from numerics.kernels.grid import round_elements
from numerics.rounding import Rounding


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
    rounding numbers the elements of the 3-d layout as the axis-last layout would
    (``sr_random``), so reading in place does not change its random bits.
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
    return round_elements(x * inv, x, p, q, fixed, mode) * scale, scale, inv


def _sub_block_max(ax: torch.Tensor, sub: int) -> torch.Tensor:
    """Per element of ``ax`` (nblocks, block[, post]), the maximum over its run of ``sub``
    elements along dim 1 (runs start at multiples of sub).

    Built from copies of ``ax`` shifted along dim 1 by 1 .. sub - 1 each way, each taken
    where the shifted element is in the same run: Inductor reads a shifted copy as a
    contiguous (masked) vector load. The direct route, a per-run ``amax`` expanded back to
    the elements, it compiles into a scalar gather loop per vector of elements
    (``numerics bench --numel 4194304 --formats mx6``, where the output's memory is reused:
    nearest_even 6.2-7.0 GB/s that way, 8.1-8.6 this way).
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
    out = round_elements(x * inv, x, p, q, True, mode) * scale
    return torch.where(torch.isfinite(amax), out, torch.full_like(out, float("nan")))
