"""Row-wise fake quantization in fbgemm's arithmetic (``numerics.formats.rowwise``).

``codes`` gives each row's codes, scale and bias as torch's prepack operators compute them;
``rowwise`` decodes them as the unpack operators do. Rows are the last axis of a 2-D float32
tensor ``(rows, width)``.
"""

from __future__ import annotations

import torch

from numerics.formats.rowwise import RowwiseFormat

# fbgemm's 8-bit packer adds this to the range in the reciprocal it multiplies by
_EPSILON = 1e-8


def codes(x: torch.Tensor, fmt: RowwiseFormat) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes uint8 (rows, width), scale (rows, 1), bias (rows, 1)) of float32 rows ``x``;
    scale and bias are float32 holding the stored values (fp16 values for 4 and 2 bits)."""
    lo = x.amin(-1, keepdim=True)  # (rows, 1)
    hi = x.amax(-1, keepdim=True)
    if fmt.scale_bits == 32:
        span = hi - lo
        scale = span / 255.0
        bias = lo
        inv = 255.0 / (span + _EPSILON)
    else:
        bias = lo.half().float()
        span = hi - bias
        scale = torch.where(span == 0, 1.0, span / fmt.levels).half().float()
        scale = torch.where(scale == 0, 1.0, scale)  # an underflowed fp16 scale
        inv = 1.0 / scale
        huge = torch.isinf(inv)
        scale = torch.where(huge, 1.0, scale)
        inv = torch.where(huge, 1.0, inv)
    # a NaN code (an infinite range: 0 * inf) is stored as 0, as lrintf's result truncates
    q = torch.round((x - bias) * inv).nan_to_num(0.0).clamp(0, fmt.levels)
    return q.to(torch.uint8), scale, bias


def decode(q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``fma(q, scale, bias)`` in float32, as the unpack operators compute it (torch has no
    fma). The product of a code (at most 8 bits) and a float32 scale is exact in float64;
    the float64 sum is rounded to odd (its error, by TwoSum, moves an inexact even result
    to its odd neighbour), and a float64 rounded to odd rounds to float32 as the exact sum
    would: one rounding, no double-rounding error."""
    p = q.double() * scale.double()
    b = bias.double().expand_as(p)
    s = p + b
    # TwoSum: s + err == p + b exactly (finite inputs)
    bv = s - p
    err = (p - (s - bv)) + (b - bv)
    bits = s.view(torch.int64)
    inexact_even = (err != 0) & (bits & 1 == 0) & torch.isfinite(err)
    # the odd neighbour on err's side: away from zero when err has s's sign
    step = torch.where((err > 0) == (s > 0), 1, -1)
    s = torch.where(inexact_even, bits + step, bits).view(torch.float64)
    return s.float()


def rowwise(x: torch.Tensor, fmt: RowwiseFormat) -> torch.Tensor:
    """The values float32 rows ``x`` (rows, width) hold after prepack and unpack."""
    return decode(*codes(x, fmt))
