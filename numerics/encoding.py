"""Bit-level encodings: every format's values as integer codes (plus scales), and back, exactly.

``encode(x, fmt, ...)`` quantizes ``x`` exactly as ``numerics.quantize`` does (same arguments)
and returns an :class:`Encoded`: the integer codes of the quantized values in the narrowest
integer dtype, the scales of scaled formats, and what ``decode`` needs to rebuild a tensor of
x's shape and dtype. ``decode(encode(x, ...))`` is bit for bit ``quantize(x, ...)`` (one
exception, below). Storage, memory accounting and bit-flip fault injection work on these codes.

Code layouts (``u`` = the unsigned bit pattern; ``k`` = a two's-complement integer):

====================  =====================================================  ==================
format                element code                                           code dtype
====================  =====================================================  ==================
FloatFormat           ``u = sign | exponent field | mantissa`` (bias           uint8 <= 8 bits,
(fp16, bf16, fp8...)  ``fmt.bias``; field 0 = zero/subnormals); IEEE style:   int16 <= 16 bits
                      inf = all-ones field, mantissa 0; NaN = all-ones        (the 16-bit pattern
                      field, top mantissa bit (quiet); E4M3 ("FN"): NaN =     as two's
                      S.1111.111; fp6/fp4: no inf/NaN codes. fp32: the        complement),
                      binary32 pattern itself (NaN payloads kept)             int32 beyond
FixedFormat           ``k`` with value ``k * 2**-fl``                         int8 / int16 / int32
IntFormat             ``q`` in [-qmax, qmax]; value ``q * scale``             int8 / int16
BlockFormat (MX,BFP)  float elements: ``u`` of ``value / 2**s`` in the        as the element
                      element format; fixed (BFP, mxint8) elements: ``k``
                      with ``value / 2**s = k * 2**-(M-1)``
SharedMicroExpFormat  ``k`` with value ``k * 2**(E - tau - (M-1))``            int8 for M <= 7
RowwiseFormat         ``c`` in [0, 2**bits - 1]; value ``fma(c, scale, bias)``  uint8 (one a byte)
(fbgemm's)
====================  =====================================================  ==================

Scales and micro-exponents:

- IntFormat: float32 scales (``amax / qmax``, 1 for an all-zero row, NaN for a row holding
  NaN or inf, whose codes are 0), shape ``(1,)`` per tensor or one per row of the axis-last
  layout for per-channel formats.
- RowwiseFormat: float32 ``(rows, 2)``, each row's scale and bias (fp16 values for 4 and 2
  bits), as torch's fbgemm prepack computes them; ``packed_rows`` lays codes, scale and bias
  out as that operator does, byte for byte.
- BlockFormat / SharedMicroExpFormat: one uint8 E8M0 code per block, ``s + 127`` (the scale is
  ``2**s``, ``s`` in [-127, 127]); 255 marks a NaN block (its element codes are 0). The shared
  micro-exponent format adds ``micro``: one uint8 ``tau`` (0 or 1) per sub-block.

Layouts: element formats and per-tensor integers keep x's shape. Per-channel integers and
row-wise formats keep the
axis-last rows ``(rows, length)``; block formats keep the padded, axis-last block layout
``(nblocks, block_size)`` that ``quantize`` rounds in (a trailing partial block is zero-padded);
``micro`` is ``(nblocks, block_size // sub_block)``. ``decode`` restores x's shape and axis.

Signed zeros: sign-magnitude codes (float formats and float MX elements) keep -0.0. Two's-
complement codes (fixed point, integers, BFP/mxint8 and shared-micro-exponent elements) have a
single zero, so a -0.0 that ``quantize`` returns (a small negative value rounded to zero)
decodes as +0.0: equal as a number, not as a bit pattern.

Fixed-point, integer, BFP and shared-micro-exponent codes are signed integers (int8 for 8 bits
or fewer) rather than unsigned patterns, because those formats are two's-complement (or
sign-magnitude with a symmetric range) integers by definition; a symmetric grid never uses its
most negative code, which still decodes to ``-2**(bits-1)`` steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from numerics import formats as _formats
from numerics.formats import (
    BlockFormat,
    FixedFormat,
    FloatFormat,
    Format,
    IntFormat,
    NanStyle,
    RowwiseFormat,
    SharedMicroExpFormat,
)
from numerics.kernels import layout
from numerics.kernels import rowwise as _rowwise
from numerics.kernels.block import mx_scale
from numerics.kernels.params import params_for
from numerics.quantize import Backend, quantize
from numerics.rounding import DEFAULT_SR_BITS, Rounding

__all__ = [
    "E8M0_NAN",
    "Encoded",
    "code_dtype",
    "code_table",
    "decode",
    "decode_codes",
    "e8m0_decode",
    "encode",
    "encode_codes",
    "packed_rows",
]

I64 = torch.int64
E8M0_NAN = 255  # the E8M0 code of a NaN scale (OCP MX v1.0)
SCALE_BITS_INT = 32  # IntFormat scales are float32

_F32_INF = 0x7F800000
_F32_QNAN = 0x7FC00000

ElementFormat = FloatFormat | FixedFormat


# --- code containers -----------------------------------------------------------------------
def _is_signed(fmt: ElementFormat) -> bool:
    """Fixed-point codes are two's-complement integers; float codes are bit patterns."""
    return isinstance(fmt, FixedFormat)


def _bits(fmt: ElementFormat) -> int:
    return fmt.bits


def code_dtype(fmt: str | Format) -> torch.dtype:
    """The integer dtype that holds ``fmt``'s element codes (the narrowest that fits)."""
    fmt = _formats.get(fmt)
    if isinstance(fmt, RowwiseFormat):
        return torch.uint8
    elem = _element(fmt)
    bits = _bits(elem)
    if bits <= 8:
        return torch.int8 if _is_signed(elem) else torch.uint8
    if bits <= 16:
        return torch.int16
    return torch.int32


def _store(values: torch.Tensor, fmt: ElementFormat) -> torch.Tensor:
    """int64 codes (unsigned patterns, or signed ``k`` for fixed point) -> the code dtype.

    int16 / int32 containers hold an unsigned pattern as the two's complement of the
    container width (torch has no fully supported uint16 / uint32), i.e. the same bits.
    """
    dtype = code_dtype(fmt)
    if dtype in (torch.int16, torch.int32) and not _is_signed(fmt):
        width = 16 if dtype == torch.int16 else 32
        values = torch.where(values >= 2 ** (width - 1), values - 2**width, values)
    return values.to(dtype)


def _load(codes: torch.Tensor, fmt: ElementFormat) -> torch.Tensor:
    """Codes in any integer dtype -> int64 (unsigned pattern or signed ``k``), range-checked."""
    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        raise TypeError(f"codes must be an integer tensor, not {codes.dtype}")
    bits = _bits(fmt)
    v = codes.to(I64)
    if _is_signed(fmt):
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        widths = {torch.int8: 8, torch.int16: 16, torch.int32: 32}
        if codes.dtype in widths:  # a signed container holds the pattern's bits
            v = v & (2 ** widths[codes.dtype] - 1)
        lo, hi = 0, 2**bits - 1
    bad = (v < lo) | (v > hi)
    if bool(bad.any()):
        first = int(v[bad].reshape(-1)[0])
        raise ValueError(
            f"code {first} is out of range for {fmt.name} ({bits}-bit codes: {lo}..{hi})"
        )
    return v


def _f32_from_bits64(bits: torch.Tensor) -> torch.Tensor:
    """Unsigned 32-bit patterns held in int64 -> float32 values."""
    signed = torch.where(bits >= 2**31, bits - 2**32, bits)
    return signed.to(torch.int32).view(torch.float32)


def _bits64_from_f32(values: torch.Tensor) -> torch.Tensor:
    """float32 values -> their unsigned 32-bit patterns in int64."""
    return values.contiguous().view(torch.int32).to(I64) & 0xFFFFFFFF


# --- float element codes -------------------------------------------------------------------
def _nan_code_field(fmt: FloatFormat) -> int | None:
    """The magnitude bits (exponent | mantissa) of the NaN code, or None if there is none."""
    top = (2**fmt.ebits - 1) << fmt.mbits
    if fmt.nan_style is NanStyle.ONE:
        return top | (2**fmt.mbits - 1)
    if fmt.nan_style is NanStyle.IEEE and fmt.mbits > 0:
        return top | (1 << (fmt.mbits - 1))  # quiet NaN: the top mantissa bit
    return None


def _encode_float(v: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """float32 values on ``fmt``'s grid -> unsigned patterns (int64); off-grid values give
    garbage that the caller's verification rejects."""
    if fmt.is_identity:  # binary32 itself: the pattern is the code (NaN payloads included)
        return _bits64_from_f32(v)
    b = _bits64_from_f32(v)
    sign = b >> 31
    a = b & 0x7FFFFFFF
    ex = a >> 23
    man = a & 0x7FFFFF
    bias = fmt.bias
    assert bias is not None
    # Normal range of the format (|v| >= 2**emin, a float32 normal since emin >= -126): the
    # exponent re-biases and the mantissa keeps its top mbits.
    field = ex - 127 + bias
    mant = man >> (23 - fmt.mbits)
    normal = a >= (fmt.emin + 127) << 23
    # Below it: k = |v| / 2**(emin - mbits). |v| = sig * 2**(max(ex, 1) - 150) whether or not
    # v is a float32 subnormal, so k is sig shifted right (the shift is >= 1 here).
    sig = torch.where(ex > 0, man | (1 << 23), man)
    shift = torch.clamp(fmt.emin - fmt.mbits - (torch.clamp(ex, min=1) - 150), min=0, max=40)
    k = sig >> shift
    mag = torch.where(normal, (field << fmt.mbits) | mant, k)

    inf = a == _F32_INF
    nan = a > _F32_INF
    top = (2**fmt.ebits - 1) << fmt.mbits
    if bool(inf.any()):
        if not fmt.has_inf:
            raise ValueError(f"{fmt.name} has no infinity code; cannot encode inf")
        mag = torch.where(inf, top, mag)
    if bool(nan.any()):
        nan_bits = _nan_code_field(fmt)
        if nan_bits is None:
            raise ValueError(
                f"{fmt.name} has no NaN code; cannot encode NaN (quantize returns NaN for a NaN "
                "input in this format, but the format itself cannot hold it)"
            )
        mag = torch.where(nan, nan_bits, mag)
    return (sign << (fmt.bits - 1)) | mag


def _decode_float(u: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """Unsigned patterns (int64, in range) -> float32 values, from the format's definition."""
    if fmt.is_identity:
        return _f32_from_bits64(u)
    bias = fmt.bias
    assert bias is not None
    sign = (u >> (fmt.bits - 1)) & 1
    field = (u >> fmt.mbits) & (2**fmt.ebits - 1)
    mant = u & (2**fmt.mbits - 1)
    top = 2**fmt.ebits - 1
    # Normal: (-1)**s * 2**(field - bias) * (1 + mant / 2**mbits), as a binary32 pattern.
    normal = ((field - bias + 127).clamp(min=1) << 23) | (mant << (23 - fmt.mbits))
    # Field 0: mant * 2**(emin - mbits), a float32 value (emin - mbits >= -149); the float64
    # product and the cast back are exact. Without subnormals (``_ftz``) these codes read as
    # zero (denormals-are-zero): the format has no values there.
    if fmt.subnormals:
        sub = _bits64_from_f32((mant.double() * 2.0 ** (fmt.emin - fmt.mbits)).float())
    else:
        sub = torch.zeros_like(mant)
    out = torch.where(field == 0, sub, normal)
    if fmt.nan_style is NanStyle.IEEE:
        out = torch.where(field == top, torch.where(mant == 0, _F32_INF, _F32_QNAN), out)
    elif fmt.nan_style is NanStyle.ONE:
        out = torch.where((field == top) & (mant == 2**fmt.mbits - 1), _F32_QNAN, out)
    return _f32_from_bits64(out | (sign << 31))


# --- fixed-point element codes ---------------------------------------------------------------
def _encode_fixed(v: torch.Tensor, fmt: FixedFormat) -> torch.Tensor:
    """float32 values on the grid -> signed integers k = v * 2**fl (int64)."""
    if bool(torch.isnan(v).any()):
        raise ValueError(f"{fmt.name} (fixed point) has no NaN code; cannot encode NaN")
    if bool(torch.isinf(v).any()):
        raise ValueError(f"{fmt.name} (fixed point) has no infinity code; cannot encode inf")
    k = v.double() * 2.0**fmt.fl  # exact: a power-of-two scaling of a float32 value
    lo, hi = -(2 ** (fmt.wl - 1)), 2 ** (fmt.wl - 1) - 1
    # Clamp one past the range so the int64 cast is defined; verification rejects the rest.
    return torch.round(k).clamp(lo - 1, hi + 1).to(I64)


def _decode_fixed(k: torch.Tensor, fmt: FixedFormat) -> torch.Tensor:
    # |k| <= 2**24 and fl in [-100, 120]: k * 2**-fl is a float32 value, exact in float64.
    return (k.double() * 2.0**-fmt.fl).float()


# --- element codes, public -----------------------------------------------------------------
def _element(fmt: Format) -> ElementFormat:
    """The element format whose codes ``encode`` stores for ``fmt``."""
    if isinstance(fmt, FloatFormat | FixedFormat):
        return fmt
    if isinstance(fmt, IntFormat):
        return fmt.grid  # symmetric integers: a fixed-point grid with no fraction bits
    if isinstance(fmt, RowwiseFormat):
        raise ValueError(
            f"{fmt.name}: its codes are unsigned integers 0..{fmt.levels} (uint8), no element "
            "grid; encode and decode take the format itself"
        )
    return fmt.element


def _encode_elements(v: torch.Tensor, fmt: ElementFormat) -> torch.Tensor:
    if isinstance(fmt, FloatFormat):
        return _store(_encode_float(v, fmt), fmt)
    return _store(_encode_fixed(v, fmt), fmt)


def _decode_elements(codes: torch.Tensor, fmt: ElementFormat) -> torch.Tensor:
    v = _load(codes, fmt)
    if isinstance(fmt, FloatFormat):
        return _decode_float(v, fmt)
    return _decode_fixed(v, fmt)


def decode_codes(codes: torch.Tensor, fmt: str | Format) -> torch.Tensor:
    """Element codes -> their float32 values.

    For a scaled format (integer, block, shared micro-exponent) these are the element values
    before scaling: ``q`` for integers, ``value / 2**s`` for MX/BFP elements and ``k *
    2**-(M-1)`` (E = tau = 0) for shared micro-exponent elements. Codes may be in any integer
    dtype; a code outside the format's range raises ValueError.
    """
    return _decode_elements(codes, _element(_formats.get(fmt)))


def encode_codes(values: torch.Tensor, fmt: str | Format) -> torch.Tensor:
    """Values already on an element grid (float32/bf16/fp16) -> their codes (``code_dtype``).

    The inverse of :func:`decode_codes`; values that are not exactly representable (or NaN /
    inf where the format has no such code) raise ValueError. It does not round: use
    :func:`encode` (or ``quantize`` first) for arbitrary values.
    """
    elem = _element(_formats.get(fmt))
    v = values.detach().float()
    codes = _encode_elements(v, elem)
    _verify(_decode_elements(codes, elem), v, elem, isinstance(elem, FloatFormat))
    return codes


def code_table(fmt: str | Format) -> torch.Tensor:
    """float32 values of all ``2**bits`` element codes, indexed by the unsigned bit pattern.

    Only for element formats of at most 16 bits (scaled formats: their elements, as
    :func:`decode_codes`). Index ``u`` of a two's-complement format is the pattern of
    ``k = u - 2**bits`` for ``u >= 2**(bits-1)``.
    """
    elem = _element(_formats.get(fmt))
    bits = _bits(elem)
    if bits > 16:
        raise ValueError(f"code_table: {elem.name} has {bits}-bit codes; at most 16 allowed")
    u = torch.arange(2**bits, dtype=I64)
    if _is_signed(elem):
        u = torch.where(u >= 2 ** (bits - 1), u - 2**bits, u)
    return _decode_elements(_store(u, elem), elem)


def e8m0_decode(codes: torch.Tensor) -> torch.Tensor:
    """E8M0 scale codes (uint8) -> float32 scales ``2**(code - 127)``; 255 is NaN."""
    # 2**-127 is a float32 subnormal: build the float64 power and cast (exact).
    out = _pow2(codes.to(I64) - 127).float()
    return torch.where(codes.to(I64) == E8M0_NAN, torch.full_like(out, math.nan), out)


# --- the encoded tensor --------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Encoded:
    """A tensor in a format's bits: element codes, scales, and what ``decode`` needs.

    Attributes:
        format: the format descriptor.
        codes: element codes (see the module docstring for the layout and dtype).
        scales: None for element formats; float32 scales for integer formats; uint8 E8M0
            codes per block (255 = NaN) for block and shared micro-exponent formats; float32
            (scale, bias) per row for row-wise formats.
        micro: shared micro-exponent formats only: uint8 tau per sub-block.
        shape, axis, dtype: the original tensor's shape, the (non-negative) block / channel
            axis, and its dtype.
    """

    format: Format
    codes: torch.Tensor
    scales: torch.Tensor | None
    micro: torch.Tensor | None
    shape: torch.Size
    axis: int
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        """Elements of the original tensor."""
        return math.prod(self.shape)

    @property
    def nbits(self) -> int:
        """Bits the format needs: stored elements * element bits + scale bits + micro bits.

        Block formats count the stored (padded) block layout: a trailing partial block is
        stored whole, as its scale covers the full block.
        """
        fmt = self.format
        bits = fmt.bits if isinstance(fmt, RowwiseFormat) else _bits(_element(fmt))
        total = self.codes.numel() * bits
        if self.scales is not None:
            if isinstance(fmt, IntFormat):
                total += self.scales.numel() * SCALE_BITS_INT
            elif isinstance(fmt, BlockFormat | SharedMicroExpFormat | RowwiseFormat):
                total += self.scales.numel() * fmt.scale_bits
        if self.micro is not None:
            assert isinstance(fmt, SharedMicroExpFormat)
            total += self.micro.numel() * fmt.micro_bits
        return total

    @property
    def nbytes_packed(self) -> int:
        """``nbits`` rounded up to whole bytes: the size of a bit-packed copy."""
        return -(-self.nbits // 8)


def _blocks(x: torch.Tensor, axis: int, block: int) -> torch.Tensor:
    """x's blocks along ``axis`` in the axis-last layout, zero-padded (zeros never move a
    block maximum): (nblocks, block), the layout the block codes are stored in."""
    return layout.block_view(tuple(x.shape), axis, block, whole=True, moved=True).blocks(x)


def _pow2(e: torch.Tensor) -> torch.Tensor:
    """2.0**e in float64 for integer ``e`` in [-1022, 1023], built from its bit pattern (exact
    on every device, whatever its pow does)."""
    return ((e.to(I64) + 1023) << 52).view(torch.float64)


# --- encode ----------------------------------------------------------------------------------
_WIDENED = (torch.bfloat16, torch.float16)


def encode(
    x: torch.Tensor,
    fmt: str | Format,
    rounding: str | Rounding = "nearest_even",
    generator: torch.Generator | int | None = None,
    axis: int = -1,
    saturate: bool | None = None,
    *,
    sr_bits: int = DEFAULT_SR_BITS,
    backend: Backend = "auto",
) -> Encoded:
    """Quantize ``x`` to ``fmt`` (as ``numerics.quantize`` with the same arguments) and
    encode the result; ``decode`` of it equals ``quantize(x, ...)``.

    Raises ValueError when a quantized value has no code: NaN in fp6/fp4/fixed point (and
    IEEE-style formats without mantissa bits), inf in formats without infinity.
    """
    fmt = _formats.get(fmt)
    # Quantize the float32 widening (exact): it is what quantize computes before casting back
    # to x's dtype, and that cast may leave the grid (int8's q * scale has up to 24
    # significant bits, bf16 keeps 8); decode casts the same way, so decode(encode(x)) still
    # equals quantize(x) in x's dtype.
    x_in = x.float() if isinstance(x, torch.Tensor) and x.dtype in _WIDENED else x
    y = quantize(x_in, fmt, rounding, generator, axis, saturate, sr_bits=sr_bits, backend=backend)
    with torch.no_grad():
        x32 = x.detach().float()
        y32 = y.detach().float()
        ndim = max(x.dim(), 1)
        ax = axis % ndim  # quantize has checked the range
        shape = x.shape
        if x32.dim() == 0:
            x32, y32 = x32.reshape(1), y32.reshape(1)
        if isinstance(fmt, FloatFormat | FixedFormat):
            codes = _encode_elements(y32, fmt)
            enc = Encoded(fmt, codes.reshape(shape), None, None, shape, ax, x.dtype)
        elif isinstance(fmt, IntFormat):
            enc = _encode_int(x32, y32, fmt, ax, x.dtype, shape)
        elif isinstance(fmt, BlockFormat):
            enc = _encode_block(x32, y32, fmt, ax, x.dtype, shape)
        elif isinstance(fmt, RowwiseFormat):
            q, scale, bias = _rowwise.codes(layout.rows(x32, ax), fmt)
            scales = torch.cat([scale, bias], dim=1)
            enc = Encoded(fmt, q, scales, None, shape, ax, x.dtype)
        else:
            assert isinstance(fmt, SharedMicroExpFormat)
            enc = _encode_smx(x32, y32, fmt, ax, x.dtype, shape)
        # Every code is checked by decoding it: decode(encode(x)) == quantize(x) is a
        # guarantee, not a hope (and an off-grid value is reported instead of stored wrong).
        _verify(_decode_f32(enc).reshape(y32.shape), y32, fmt, _signed_zero(fmt))
    return enc


def _signed_zero(fmt: Format) -> bool:
    """Whether the codes are sign-magnitude, so -0.0 survives the round trip (row-wise
    decoding repeats quantize's own arithmetic, so every bit survives)."""
    return isinstance(fmt, RowwiseFormat) or isinstance(_element(fmt), FloatFormat)


def _verify(got: torch.Tensor, want: torch.Tensor, fmt: Format, signed_zero: bool) -> None:
    nan_g, nan_w = torch.isnan(got), torch.isnan(want)
    # Sign-magnitude codes must reproduce the bit pattern (-0.0 included); two's-complement
    # ones the number.
    same = got.view(torch.int32) == want.view(torch.int32) if signed_zero else got == want
    bad = (nan_g != nan_w) | (~nan_w & ~same)
    if bool(bad.any()):
        idx = int(bad.reshape(-1).nonzero()[0, 0])
        value = float(want.reshape(-1)[idx])
        raise ValueError(
            f"{value!r} (element {idx}) is not representable in {fmt.name}; its code would "
            f"decode to {float(got.reshape(-1)[idx])!r}"
        )


def _encode_int(
    x32: torch.Tensor,
    y32: torch.Tensor,
    fmt: IntFormat,
    axis: int,
    dtype: torch.dtype,
    shape: torch.Size,
) -> Encoded:
    if fmt.per_channel:
        xr, yr = layout.rows(x32, axis), layout.rows(y32, axis)
    else:
        xr, yr = x32.reshape(1, -1), y32.reshape(1, -1)
    # The scale exactly as int_kernel computes it (same float32 operations).
    if xr.shape[-1]:
        amax = xr.abs().amax(dim=-1, keepdim=True)
    else:
        amax = torch.zeros(xr.shape[0], 1, device=xr.device)
    scale = torch.where(amax > 0, amax / float(fmt.qmax), torch.ones_like(amax))
    finite = torch.isfinite(amax)
    scale = torch.where(finite, scale, torch.full_like(scale, math.nan))
    # y = q * scale was rounded to float32; |q| <= 2**15 keeps the rounding error far below
    # scale / 2, so the nearest integer to y / scale (in float64) is q.
    q = torch.where(finite, yr.double() / scale.double(), 0.0)
    if bool((torch.isnan(q) & finite).any()):
        # int_kernel multiplies by 1 / scale, which overflows to inf when amax < qmax *
        # 2**-128; a zero in such a row then quantizes to 0 * inf = NaN.
        raise ValueError(
            f"{fmt.name}: quantize returned NaN inside a finite row (a row whose amax is "
            f"below {fmt.qmax} * 2**-128 makes 1/scale overflow); no code holds that NaN"
        )
    codes = _store(torch.round(q).clamp(-fmt.qmax - 1, fmt.qmax + 1).to(I64), _element(fmt))
    codes = codes if fmt.per_channel else codes.reshape(shape)
    return Encoded(fmt, codes, scale.reshape(-1), None, shape, axis, dtype)


def _encode_block(
    x32: torch.Tensor,
    y32: torch.Tensor,
    fmt: BlockFormat,
    axis: int,
    dtype: torch.dtype,
    shape: torch.Size,
) -> Encoded:
    xb = _blocks(x32, axis, fmt.block_size)
    yb = _blocks(y32, axis, fmt.block_size)
    # The shared exponent is a function of the input block (its amax), not of the rounded
    # values, so it is taken from x with the kernel's own rule.
    p, q = params_for(
        fmt.element, True, None, DEFAULT_SR_BITS, xb.device, ceil=fmt.scale_rule.value == "ceil"
    )
    scale = mx_scale(xb, p, q)  # (nblocks, 1), a power of two
    s = (torch.frexp(scale.double())[1] - 1).to(I64)  # its exponent, exactly
    nan_block = ~torch.isfinite(xb).all(dim=-1, keepdim=True)  # the whole block is NaN
    # value / 2**s is exact in float64 and a float32 value (an element-grid value).
    elems = torch.where(nan_block, 0.0, yb.double() / _pow2(s))
    codes = _encode_elements(elems.float(), fmt.element)
    scales = torch.where(nan_block, E8M0_NAN, s + 127).to(torch.uint8).reshape(-1)
    return Encoded(fmt, codes, scales, None, shape, axis, dtype)


def _encode_smx(
    x32: torch.Tensor,
    y32: torch.Tensor,
    fmt: SharedMicroExpFormat,
    axis: int,
    dtype: torch.dtype,
    shape: torch.Size,
) -> Encoded:
    xb = _blocks(x32, axis, fmt.block_size)
    yb = _blocks(y32, axis, fmt.block_size)
    nb, bs = xb.shape
    npairs = bs // fmt.sub_block
    # E and tau as smx_kernel takes them from the input's exponent fields.
    a = xb.view(torch.int32).to(I64) & 0x7FFFFFFF
    amax = a.amax(dim=-1, keepdim=True)
    e = torch.clamp((amax >> 23) - 127, min=-127, max=127)  # (nb, 1)
    pair_e = (a.view(nb, npairs, fmt.sub_block).amax(dim=-1) >> 23) - 127
    nan_block = amax >= _F32_INF
    tau = torch.where(nan_block, 0, torch.clamp(e - pair_e, min=0, max=1))  # (nb, npairs)
    step_e = (e - tau - (fmt.mbits - 1)).repeat_interleave(fmt.sub_block, dim=-1)
    elems = torch.where(nan_block, 0.0, yb.double() / _pow2(step_e))
    # The element codes are the integers k themselves (the fixed element's k * 2**-(M-1)
    # with E = tau = 0 is k / 2**(M-1); we store k).
    codes = _store(torch.round(elems).clamp(-(2**fmt.mbits), 2**fmt.mbits).to(I64), fmt.element)
    scales = torch.where(nan_block, E8M0_NAN, e + 127).to(torch.uint8).reshape(-1)
    return Encoded(fmt, codes, scales, tau.to(torch.uint8), shape, axis, dtype)


# --- decode ----------------------------------------------------------------------------------
def decode(enc: Encoded) -> torch.Tensor:
    """The tensor an :class:`Encoded` holds, in its original shape and dtype."""
    return _decode_f32(enc).to(enc.dtype)


def _decode_f32(enc: Encoded) -> torch.Tensor:
    """The format's values in float32 (before the cast to the original dtype)."""
    fmt = enc.format
    with torch.no_grad():
        if isinstance(fmt, FloatFormat | FixedFormat):
            y = _decode_elements(enc.codes, fmt).reshape(enc.shape)
        elif isinstance(fmt, IntFormat):
            assert enc.scales is not None
            q = _decode_elements(enc.codes, fmt.grid)
            if fmt.per_channel:
                rows = q.reshape(_row_geometry(enc)) * enc.scales[:, None]
                y = layout.unrows(rows, enc.shape, enc.axis)
            else:
                y = (q * enc.scales).reshape(enc.shape)  # float32, as int_kernel multiplies
        elif isinstance(fmt, RowwiseFormat):
            assert enc.scales is not None
            rows = _rowwise.decode(enc.codes, enc.scales[:, :1], enc.scales[:, 1:])
            y = layout.unrows(rows, enc.shape, enc.axis)
        else:
            assert isinstance(fmt, BlockFormat | SharedMicroExpFormat)
            view = layout.block_view(enc.shape, enc.axis, fmt.block_size, whole=True, moved=True)
            y = view.unblocks(_decode_blocks(enc, fmt))
        return y


def packed_rows(enc: Encoded) -> torch.Tensor:
    """A row-wise encoding in fbgemm's fused layout, uint8 ``(rows, bytes)``: each row's codes
    (4 and 2 bits: packed from the low bits up, 8 // bits to a byte), then its scale and bias
    (float32 for 8 bits, float16 for 4 and 2), as
    ``torch.ops.quantized.embedding_bag_{byte,4bit,2bit}_prepack`` store a 2-D table."""
    fmt = enc.format
    if not isinstance(fmt, RowwiseFormat):
        raise ValueError(f"packed_rows: {fmt.name} is not a row-wise format")
    assert enc.scales is not None
    rows, length = enc.codes.shape
    per = fmt.row_multiple
    if length % per:
        raise ValueError(
            f"packed_rows: {fmt.name} packs {per} codes to a byte; rows of {length} do not fill "
            "whole bytes (torch's packer refuses them too)"
        )
    shifts = torch.arange(per, device=enc.codes.device) * fmt.bits
    q = enc.codes.to(I64).reshape(rows, length // per, per)
    codes = (q << shifts).sum(dim=-1).to(torch.uint8)  # (rows, length // per)
    sb_dtype = torch.float32 if fmt.scale_bits == 32 else torch.float16
    scale_bias = enc.scales.to(sb_dtype).contiguous().view(torch.uint8).reshape(rows, -1)
    return torch.cat([codes, scale_bias], dim=1)


def _decode_blocks(enc: Encoded, fmt: BlockFormat | SharedMicroExpFormat) -> torch.Tensor:
    """Block codes -> the values in their (nblocks, block) layout, float32."""
    assert enc.scales is not None
    sc = enc.scales.to(I64)[:, None]  # (nblocks, 1)
    if isinstance(fmt, BlockFormat):
        elems = _decode_elements(enc.codes, fmt.element).double()
        vals = elems * _pow2(sc - 127)
    else:
        assert enc.micro is not None
        k = _load(enc.codes, fmt.element).double()
        tau = enc.micro.to(I64)
        if bool(((tau < 0) | (tau > 1)).any()):
            raise ValueError(f"{fmt.name}: micro-exponent codes must be 0 or 1")
        step_e = (sc - 127 - tau - (fmt.mbits - 1)).repeat_interleave(fmt.sub_block, dim=-1)
        vals = k * _pow2(step_e)
    # Exact: every element value times its power-of-two scale is a float32 value (or, for
    # the CEIL rule near float32's top, overflows to inf just as quantize's product does).
    return torch.where(sc == E8M0_NAN, math.nan, vals).float()


def _row_geometry(enc: Encoded) -> tuple[int, int]:
    """(rows, row length) of the axis-last layout of the original tensor."""
    full = list(enc.shape) or [1]
    return math.prod(full[: enc.axis] + full[enc.axis + 1 :]), full[enc.axis]
