"""Plain reference implementations, written for reading, not for speed.

A second, independent route to every quantizer: NumPy float64 arithmetic (float64 holds every
float32 value and every power of two the formats need, so each step below is exact), the
exponent from ``np.frexp`` instead of bit fields, and the formats' definitions written out as
in their specs. The fast kernels are tested equal to these, bit for bit, for every format and
rounding mode; stochastic rounding uses the same counter-based random integers (recomputed
here with NumPy's wrapping uint32 arithmetic).
"""

from __future__ import annotations

import numpy as np
import torch

from numerics.formats import (
    BlockFormat,
    FixedFormat,
    FloatFormat,
    Format,
    IntFormat,
    ScaleRule,
    SharedMicroExpFormat,
)
from numerics.rounding import Rounding


def lowbias32_np(h: np.ndarray) -> np.ndarray:
    h = h.astype(np.uint32)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x7FEB352D)
    h ^= h >> np.uint32(15)
    h *= np.uint32(0x846CA68B)
    h ^= h >> np.uint32(16)
    return h


def random_ints(n: int, keys: tuple[int, int], nbits: int) -> np.ndarray:
    """The stochastic-rounding integers for elements 0..n-1 (see ``numerics.rounding``)."""
    k0, k1 = (np.uint32(k & 0xFFFFFFFF) for k in keys)
    with np.errstate(over="ignore"):
        h = lowbias32_np(np.arange(n, dtype=np.uint32) ^ k0)
        h = lowbias32_np(h + k1)
    return (h >> np.uint32(32 - nbits)).astype(np.int64)


def round_magnitude(
    mag: np.ndarray,
    step: np.ndarray,
    mode: Rounding,
    negative: np.ndarray,
    rand: np.ndarray | None,
    sr_bits: int,
    lower_odd: np.ndarray | None = None,
) -> np.ndarray:
    """Round non-negative ``mag`` to a multiple of ``step`` (powers of two), exactly.

    Ties (nearest_even) go to the neighbour with the even code; ``lower_odd`` says whether
    the lower neighbour's code is odd (default: the multiple of ``step`` is odd).
    """
    r = mag / step
    lower = np.floor(r)
    frac = r - lower
    if lower_odd is None:
        lower_odd = np.mod(lower, 2) == 1
    if mode is Rounding.NEAREST_EVEN:
        up = (frac > 0.5) | ((frac == 0.5) & lower_odd)
    elif mode is Rounding.NEAREST_AWAY:
        up = frac >= 0.5
    elif mode is Rounding.TOWARD_ZERO:
        up = np.zeros_like(frac, dtype=bool)
    elif mode is Rounding.UP:
        up = (frac > 0) & ~negative
    elif mode is Rounding.DOWN:
        up = (frac > 0) & negative
    else:
        assert rand is not None
        up = rand < np.floor(frac * 2.0**sr_bits)
    return (lower + up) * step


def _overflow_value(
    mode: Rounding, negative: np.ndarray, maxval: np.ndarray | float, special: float
) -> np.ndarray:
    """What an overflowing magnitude becomes: ``special`` (inf/NaN) away from zero, else max."""
    if mode is Rounding.TOWARD_ZERO:
        away = np.zeros_like(negative)
    elif mode is Rounding.UP:
        away = ~negative
    elif mode is Rounding.DOWN:
        away = negative
    else:
        away = np.ones_like(negative)
    return np.where(away, special, maxval)


def float_ref(
    x: np.ndarray,
    fmt: FloatFormat,
    mode: Rounding,
    saturate: bool,
    rand: np.ndarray | None = None,
    sr_bits: int = 23,
) -> np.ndarray:
    """Round float64 values ``x`` (holding float32 values) to ``fmt``."""
    x = np.asarray(x, dtype=np.float64)
    negative = np.signbit(x)
    mag = np.abs(x)
    finite = np.isfinite(mag)
    safe = np.where(finite & (mag > 0), mag, 1.0)
    _, e = np.frexp(safe)  # safe = f * 2**e with f in [0.5, 1)
    exponent = (e - 1).astype(np.float64)  # floor(log2(safe))
    step = 2.0 ** (np.maximum(exponent, fmt.emin) - fmt.mbits)
    lower_odd = None
    if fmt.mbits == 0:
        # With no mantissa bits a normal value's code is its biased exponent, and the
        # lower neighbour 2**exponent has code exponent + bias.
        normal = exponent >= fmt.emin
        lower_odd = np.where(
            normal, np.mod(exponent + fmt._bias, 2) == 1, np.mod(np.floor(mag / step), 2) == 1
        )
    y = round_magnitude(np.where(finite, mag, 0.0), step, mode, negative, rand, sr_bits, lower_odd)
    # overflow goes to the maximum (saturating), else to inf, or NaN where there is no inf
    special = fmt.max if saturate else (np.inf if fmt.has_inf else np.nan)
    y = np.where(y > fmt.max, _overflow_value(mode, negative, np.float64(fmt.max), special), y)
    if not fmt.subnormals:
        y = np.where(y < fmt.min_normal, 0.0, y)
    y = np.where(np.isinf(mag), fmt.max if saturate else special, y)
    y = np.where(np.isnan(x), np.nan, y)
    return np.where(negative, -y, y)


def grid_ref(
    x: np.ndarray,
    step: np.ndarray | float,
    maxpos: np.ndarray | float,
    maxneg: np.ndarray | float,
    mode: Rounding,
    rand: np.ndarray | None = None,
    sr_bits: int = 23,
) -> np.ndarray:
    """Round to a uniform grid ``k * step``, saturating at ``maxpos`` / ``-maxneg``."""
    x = np.asarray(x, dtype=np.float64)
    negative = np.signbit(x)
    mag = np.abs(x)
    limit = np.where(negative, maxneg, maxpos)
    y = round_magnitude(
        np.where(np.isfinite(mag), mag, 0.0),
        np.asarray(step, np.float64),
        mode,
        negative,
        rand,
        sr_bits,
    )
    y = np.minimum(y, limit)
    y = np.where(np.isinf(mag), limit, y)
    y = np.where(np.isnan(x), np.nan, y)
    # grids are two's complement (fixed point, integers, BFP-style elements): one zero, +0
    return np.where(negative & (y != 0), -y, y)


def fixed_ref(
    x: np.ndarray,
    fmt: FixedFormat,
    mode: Rounding,
    rand: np.ndarray | None = None,
    sr_bits: int = 23,
) -> np.ndarray:
    return grid_ref(x, fmt.step, fmt.max, -fmt.min, mode, rand, sr_bits)


def int_ref(
    rows: np.ndarray,
    fmt: IntFormat,
    mode: Rounding,
    rand: np.ndarray | None = None,
    sr_bits: int = 23,
) -> np.ndarray:
    """Symmetric scaled int, one scale per row, float32 arithmetic as torch's fake quant."""
    rows = np.asarray(rows, dtype=np.float32)
    out = np.empty(rows.shape, dtype=np.float64)
    qmax = np.float32(fmt.qmax)
    for i, row in enumerate(rows):
        amax = np.max(np.abs(row)) if row.size else np.float32(0)
        if not np.isfinite(amax):
            out[i] = np.nan
            continue
        scale = np.float32(amax / qmax) if amax > 0 else np.float32(1.0)
        with np.errstate(over="ignore"):
            inv = np.float32(np.float32(1.0) / scale)
        v = (row * inv if np.isfinite(inv) else row / scale).astype(np.float32)
        r = None if rand is None else rand[i * row.size : (i + 1) * row.size]
        q = grid_ref(v, 1.0, float(qmax), float(qmax), mode, r, sr_bits)
        out[i] = (q.astype(np.float32) * scale).astype(np.float32)
    return out


def _floor_log2(v: np.ndarray) -> np.ndarray:
    """floor(log2(v)) for v > 0, and -127 below 2**-126 or at 0 (the E8M0 floor)."""
    safe = np.where(v > 0, v, 1.0)
    _, e = np.frexp(safe)
    out = (e - 1).astype(np.int64)
    return np.where(v >= 2.0**-126, out, -127)


def block_ref(
    blocks: np.ndarray,
    fmt: BlockFormat,
    mode: Rounding,
    rand: np.ndarray | None = None,
    sr_bits: int = 23,
) -> np.ndarray:
    """MX / BFP per the OCP MX v1.0 definition, block by block (rows of ``blocks``)."""
    blocks = np.asarray(blocks, dtype=np.float64)
    out = np.empty_like(blocks)
    elem = fmt.element
    for i, blk in enumerate(blocks):
        if not np.all(np.isfinite(blk)):
            out[i] = np.nan
            continue
        amax = np.max(np.abs(blk))
        s = int(np.clip(_floor_log2(np.array(amax)) - elem.emax, -127, 127))
        if fmt.scale_rule is ScaleRule.CEIL and amax > elem.max * 2.0**s:
            # one binade up, but never so far that max_elem * 2**s leaves float32
            s = min(s + 1, 127 - elem.emax)
        r = None if rand is None else rand[i * blk.size : (i + 1) * blk.size]
        scaled = blk / 2.0**s
        if isinstance(elem, FloatFormat):
            q = float_ref(scaled, elem, mode, saturate=True, rand=r, sr_bits=sr_bits)
        else:
            q = fixed_ref(scaled, elem, mode, r, sr_bits)
        out[i] = q * 2.0**s
    return out


def smx_ref(
    blocks: np.ndarray,
    fmt: SharedMicroExpFormat,
    mode: Rounding,
    rand: np.ndarray | None = None,
    sr_bits: int = 23,
) -> np.ndarray:
    """Shared micro-exponents (arXiv 2302.08007), block by block."""
    blocks = np.asarray(blocks, dtype=np.float64)
    out = np.empty_like(blocks)
    m = fmt.mbits
    for i, blk in enumerate(blocks):
        if not np.all(np.isfinite(blk)):
            out[i] = np.nan
            continue
        e = int(np.clip(_floor_log2(np.array(np.max(np.abs(blk)))), -127, 127))
        pairs = blk.reshape(-1, fmt.sub_block)
        pair_e = _floor_log2(np.max(np.abs(pairs), axis=1))
        tau = np.clip(e - pair_e, 0, 1)[:, None]
        step = 2.0 ** (e - tau - (m - 1))
        maxval = (2**m - 1) * step
        r = None if rand is None else rand[i * blk.size : (i + 1) * blk.size].reshape(pairs.shape)
        out[i] = grid_ref(pairs, step, maxval, maxval, mode, r, sr_bits).reshape(-1)
    return out


def quantize_reference(
    x: torch.Tensor,
    fmt: Format,
    mode: Rounding,
    keys: tuple[int, int] | None,
    axis: int,
    saturate: bool,
    sr_bits: int,
) -> torch.Tensor:
    """The reference backend of ``numerics.quantize`` (same layout rules, float64 math)."""
    xt = x.detach().float().cpu()
    if xt.dim() == 0:
        xt = xt.reshape(1)
    moved = xt.movedim(axis, -1).contiguous()
    length = moved.shape[-1]
    rows = moved.reshape(-1, length).numpy().astype(np.float64)

    def rand_for(n: int) -> np.ndarray | None:
        if mode is not Rounding.STOCHASTIC:
            return None
        assert keys is not None
        return random_ints(n, keys, sr_bits)

    if isinstance(fmt, FloatFormat | FixedFormat):
        flat = xt.reshape(-1).numpy().astype(np.float64)
        r = rand_for(flat.size)
        if isinstance(fmt, FloatFormat):
            y = float_ref(flat, fmt, mode, saturate, r, sr_bits)
        else:
            y = fixed_ref(flat, fmt, mode, r, sr_bits)
        return torch.from_numpy(y.astype(np.float32)).reshape(x.shape)
    if isinstance(fmt, IntFormat):
        data = rows if fmt.per_channel else xt.reshape(1, -1).numpy()
        y = int_ref(data, fmt, mode, rand_for(data.size), sr_bits).astype(np.float32)
        if not fmt.per_channel:
            return torch.from_numpy(y).reshape(x.shape)
        out = torch.from_numpy(y).reshape(moved.shape).movedim(-1, axis)
        return out.reshape(x.shape).contiguous()
    assert isinstance(fmt, BlockFormat | SharedMicroExpFormat)  # quantize refuses the others
    bs = fmt.block_size
    pad = (-length) % bs
    padded = np.pad(rows, ((0, 0), (0, pad)))
    blocks = padded.reshape(-1, bs)
    r = rand_for(blocks.size)
    if isinstance(fmt, BlockFormat):
        yb = block_ref(blocks, fmt, mode, r, sr_bits)
    else:
        yb = smx_ref(blocks, fmt, mode, r, sr_bits)
    y = yb.reshape(padded.shape)[:, :length].astype(np.float32)
    out = torch.from_numpy(y).reshape(moved.shape).movedim(-1, axis)
    return out.reshape(x.shape).contiguous()
