"""Eager nearest_even for block formats in few passes: the small-tensor path.

A training step casts many small tensors (a 256 x 256 weight, a 128 x 64 activation), where
an eager kernel's cost is its number of torch ops, not its bytes, and a compiled kernel's is
its fixed call overhead (about 40-60 us here). These kernels cut both: no parameter tensors
(the format's constants are Python floats), no transposes (blocks are reduced in place along
any axis of a ``(pre, L, post)`` view), the block's NaN poisoning folded into its per-block
scale, and elements rounded with the float adder ``(x + c) - c`` on the signed, clamped
element-space value ``x = x_in / X``:

- float element grid with m mantissa bits: ``c = 1.5 * 2**(e + 23 - m)``, with ``2**e`` the
  exponent field of x's bit pattern raised to at least ``2**emin``; ``|x| < 2**(e + 1)``
  keeps ``x + c`` inside c's binade, whose ulp is the step ``2**(e - m)``, and c is an even
  multiple of the step, so ties go to even. A value rounded to zero comes out +0, so x's
  sign bit is OR-ed back in (-0 stays -0).
- fixed-point element grid with step ``2**-fl``: ``c = 1.5 * 2**(23 - fl)`` (``|x| <=
  2**(22 - fl)`` keeps the sum in c's binade); a rounded-away value gives +0, the
  two's-complement zero.

Shared micro-exponents (MX9/6/4) are the fixed-point case with one scale per pair:
``2**(E - tau)`` where tau halves the pair's grid and its maximum, which is the same grid
under a scale one binade down. Every result is tested bit for bit against the float64
reference and the compiled kernels (tests/numerics/test_quantize_block.py and
tests/numerics/kernels/).
"""

from __future__ import annotations

import functools
import math

import torch

from numerics.formats import BlockFormat, FloatFormat, SharedMicroExpFormat
from numerics.formats.block import ScaleRule
from numerics.kernels import layout
from numerics.kernels.core import F32, I32


@functools.lru_cache(maxsize=256)
def _k(value: int | float) -> torch.Tensor:
    """A 0-dim CPU tensor holding a constant: an op with a Python number wraps it in a new
    tensor on every call, which costs more than the op on a small tensor. (A 0-dim CPU
    tensor combines with tensors on any device.)"""
    return torch.tensor(value, dtype=I32 if isinstance(value, int) else F32)


_EXP_MASK = 0x7F800000
_SIGN = -(2**31)


def supports(fmt: BlockFormat | SharedMicroExpFormat) -> bool:
    """Whether the lean path covers ``fmt`` (the adder's range conditions hold)."""
    if isinstance(fmt, SharedMicroExpFormat):
        return fmt.mbits - 1 <= 21
    el = fmt.element
    if isinstance(el, FloatFormat):
        return el.mbits <= 21 and el.subnormals
    return el.emax + el.fl <= 21 and el.fl >= -100


def _scale(sf: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
    """The float32 power of two with biased exponent ``sf`` in [0, 254] (0 is 2**-127, a
    subnormal whose bit pattern is not ``sf << 23``), NaN where ``amax`` is inf or NaN (so
    the whole block becomes NaN)."""
    return torch.clamp_min((sf << _k(23)).view(F32), 2.0**-127) + (amax - amax)


def block_nearest(
    x: torch.Tensor, axis: int, fmt: BlockFormat | SharedMicroExpFormat
) -> torch.Tensor:
    """nearest_even of float32 ``x`` (dim >= 1) in block format ``fmt``, blocks along ``axis``."""
    axis = axis % x.dim()
    if isinstance(fmt, SharedMicroExpFormat):
        group: tuple[int, ...] = (fmt.block_size // fmt.sub_block, fmt.sub_block)
        ceil = False
    else:
        # A row shorter than a block is one partial block: padding it with zeros would not
        # change a result, so it is blocked as it is (no pad: a copy, and a costly op here).
        group = (min(fmt.block_size, x.shape[axis]),)
        ceil = fmt.scale_rule is ScaleRule.CEIL
    smx = len(group) == 2
    # (pre, nblocks, *group[, post]), read in place along any axis; the post dim dropped
    # when it is 1 (a trailing size-1 dim makes broadcasts several times slower)
    view = layout.block_view(tuple(x.shape), axis, math.prod(group), whole=True, moved=False)
    tail = () if view.post == 1 else (view.post,)
    xb = view.padded(x).view(view.pre, view.blocks_per_axis, *group, *tail)
    d = -1 if xb.dim() == len(group) + 2 else -2  # the innermost group dim
    el = fmt.element
    emax = el.emax
    # The E8M0 scale's biased exponent sf = floor(log2 amax) - emax_elem + 127, clamped to
    # [0, 254 - emax_elem], from amax's exponent field (0 for zeros and float32 subnormals,
    # which clamp to 2**-127 as they should). A NaN's field may read -1 (sign bit set) and
    # an inf's 255; both blocks are made NaN through the scale, so their sf never matters.
    if smx:
        pair = xb.abs().amax(d, keepdim=True)  # (pre, nb, nsub, 1[, post])
        amax = pair.amax(d - 1, keepdim=True)
    else:
        amax = xb.abs().amax(d, keepdim=True)  # (pre, nb, 1[, post]); NaN propagates
    sf = torch.clamp((amax.view(I32) >> _k(23)) - _k(emax), 0, 254 - emax)
    if smx:
        # tau = 1 (the pair's grid and maximum halved) where the pair's exponent lies below
        # the block's and the block is above the clamp: the same grid under half the scale.
        sf = sf - torch.clamp(sf - (pair.view(I32) >> _k(23)), 0, 1)
    elif ceil:
        bump = amax > _scale(sf, amax) * _k(el.max)
        sf = torch.clamp(sf + bump.to(I32), max=254 - emax)
    scale = _scale(sf, amax)
    low = -el.max if isinstance(el, FloatFormat) else el.min  # two's complement: maybe -max - step
    xs = torch.clamp(xb * torch.reciprocal(scale), low, el.max)  # exact: powers of two
    if isinstance(el, FloatFormat):
        # c = 1.5 * 2**(e + 23 - m) for the binade e of xs (at least emin): |xs| < 2**(e + 1)
        # keeps xs + c inside c's binade, whose ulp is the step 2**(e - m).
        c = torch.clamp_min((xs.view(I32) & _k(_EXP_MASK)).view(F32), 2.0**el.emin)
        c = c * _k(1.5 * 2.0 ** (23 - el.mbits))
        y = (xs + c) - c
        y = (y.view(I32) | (xb.view(I32) & _k(_SIGN))).view(F32)  # -0 and rounded-away negatives
    else:
        c = _k(1.5 * 2.0 ** (23 - el.fl))  # a fixed step 2**-fl; +0 is the only zero
        y = (xs + c) - c
    return view.unblocks(y * scale)
