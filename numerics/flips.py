"""Single-bit flips in a tensor's stored encoding, undone in place.

A :class:`Stored` holds a float32 tensor together with the bits it is stored in: its own
binary32 patterns, or a format's encoding (``numerics.encoding.Encoded``: element codes,
scales, micro-exponents). ``flip(field, unit, bit)`` XORs one bit of one stored unit and
writes the values that bit changes into the tensor, so what a computation reads is what
hardware holding those bits would read: the flipped code decoded, never re-quantized. A
second identical flip restores the bits, and with them the values (decoding is exact and
deterministic), so a fault costs no copy of the tensor.

Fields (each unit is one stored number; ``width`` is its bit count, bit 0 the least
significant):

=================================  ==========  =========================================  =====
format                             field       unit                                       width
=================================  ==========  =========================================  =====
none (float32 storage)             element     each element's binary32 pattern            32
float / fixed element formats      element     each element's code                        bits
integer (per tensor / channel)     element     each element's code ``q``                  bits
                                   scale       the float32 scale (one, or one per row)    32
block (MX, BFP)                    element     each element's code (padding excluded)     bits
                                   scale       each block's E8M0 byte (255 = NaN block)   8
shared micro-exponent (MX9/6/4)    element     each element's code ``k``                  bits
                                   scale       each block's E8M0 byte                     8
                                   micro       each sub-block's micro-exponent ``tau``    1
row-wise (fbgemm)                  element     each element's code                        bits
                                   scale       each row's scale (fp32, or fp16)           32/16
                                   bias        each row's bias (fp32, or fp16)            32/16
=================================  ==========  =========================================  =====

Two's-complement codes (fixed point, integers, BFP/mxint8 and shared micro-exponent elements)
flip within their own width: the flipped pattern is read back as a ``bits``-wide signed
integer, so a flip of the top bit changes the sign as it would in storage. A flip may give a
pattern the format never produces (a NaN code, fixed point's most negative code); it decodes
to what those bits mean.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from numerics import encoding as enc_mod
from numerics.encoding import Encoded
from numerics.formats import (
    BlockFormat,
    FixedFormat,
    FloatFormat,
    Format,
    IntFormat,
    RowwiseFormat,
    SharedMicroExpFormat,
)
from numerics.kernels import layout

I64 = torch.int64
FIELDS = ("element", "scale", "bias", "micro")


@dataclass(frozen=True)
class Field:
    """One kind of stored unit: ``units`` numbers of ``width`` bits each."""

    name: str
    width: int
    units: int


def _slots(enc: Encoded) -> torch.Tensor:
    """The flat index into the original tensor of each element code, in the codes' own
    layout (as ``enc.codes``' shape); -1 marks a block format's padding."""
    idx = torch.arange(1, enc.numel + 1, dtype=I64).reshape(enc.shape)
    fmt = enc.format
    if isinstance(fmt, FloatFormat | FixedFormat) or (
        isinstance(fmt, IntFormat) and not fmt.per_channel
    ):
        out = idx.reshape(enc.codes.shape)
    elif isinstance(fmt, IntFormat | RowwiseFormat):
        out = layout.rows(idx, enc.axis)
    else:
        assert isinstance(fmt, BlockFormat | SharedMicroExpFormat)
        view = layout.block_view(tuple(enc.shape), enc.axis, fmt.block_size, whole=True, moved=True)
        out = view.blocks(idx)
    return out.to(I64).reshape(enc.codes.shape) - 1


class Stored:
    """``target`` (float32, flipped in place) and the bits it is stored in: ``encoded`` (a
    copy is kept, and its values are written into ``target`` here), or None for binary32
    storage."""

    def __init__(self, target: torch.Tensor, encoded: Encoded | None = None) -> None:
        if target.dtype != torch.float32:
            raise TypeError(f"a stored tensor is float32, not {target.dtype}")
        self.target = target
        if encoded is not None:  # its own copy: flips change these tensors
            encoded = dataclasses.replace(
                encoded,
                codes=encoded.codes.clone(),
                scales=encoded.scales.clone() if encoded.scales is not None else None,
                micro=encoded.micro.clone() if encoded.micro is not None else None,
            )
        self.encoded = encoded
        self.fields: dict[str, Field] = {}
        if encoded is None:
            self.fields["element"] = Field("element", 32, target.numel())
            return
        if tuple(encoded.shape) != tuple(target.shape):
            raise ValueError(f"encoding of shape {tuple(encoded.shape)} for {tuple(target.shape)}")
        with torch.no_grad():
            target.copy_(enc_mod.decode(encoded).to(target.dtype))
        fmt = encoded.format
        # codes as rows: a unit's flip changes at most its row (element formats: rows of one)
        self._codes = encoded.codes.reshape(-1, 1) if self._elementwise else encoded.codes
        self._slots = _slots(encoded).reshape(self._codes.shape)
        valid = (self._slots >= 0).reshape(-1)
        self._element_pos = valid.nonzero().reshape(-1)  # code positions that hold elements
        width = fmt.bits if isinstance(fmt, RowwiseFormat) else enc_mod._element(fmt).bits
        self.fields["element"] = Field("element", width, int(self._element_pos.numel()))
        assert encoded.scales is not None or isinstance(fmt, FloatFormat | FixedFormat)
        if isinstance(fmt, IntFormat):
            assert encoded.scales is not None
            self.fields["scale"] = Field("scale", 32, encoded.scales.numel())
        elif isinstance(fmt, RowwiseFormat):
            assert encoded.scales is not None
            rows = encoded.scales.shape[0]
            self.fields["scale"] = Field("scale", fmt.scale_bits, rows)
            self.fields["bias"] = Field("bias", fmt.scale_bits, rows)
        elif isinstance(fmt, BlockFormat | SharedMicroExpFormat):
            assert encoded.scales is not None
            self.fields["scale"] = Field("scale", 8, encoded.scales.numel())
            if encoded.micro is not None:
                self.fields["micro"] = Field("micro", 1, encoded.micro.numel())
        if isinstance(fmt, RowwiseFormat) and fmt.scale_bits == 16:
            assert encoded.scales is not None
            self._half = encoded.scales.half().view(torch.int16)  # exact: fp16 values

    @property
    def _elementwise(self) -> bool:
        fmt = self.encoded.format if self.encoded is not None else None
        return isinstance(fmt, FloatFormat | FixedFormat) or (
            isinstance(fmt, IntFormat) and not fmt.per_channel
        )

    def flip(self, field: str, unit: int, bit: int) -> None:
        """XOR bit ``bit`` of unit ``unit`` of ``field`` and write the values it changes."""
        f = self.fields.get(field)
        if f is None:
            raise ValueError(f"no {field!r} field here (fields: {', '.join(self.fields)})")
        if not 0 <= unit < f.units or not 0 <= bit < f.width:
            raise IndexError(f"{field} unit {unit} bit {bit}: {f.units} units of {f.width} bits")
        enc = self.encoded
        if enc is None:
            flat = self.target.view(-1).view(torch.int32)
            flat[unit] ^= _mask(bit, 32)
            return
        fmt = enc.format
        if field == "element":
            pos = int(self._element_pos[unit])
            codes = self._codes.view(-1)
            codes[pos] = _flip_code(codes[pos : pos + 1], fmt, bit)[0]
            self._write_rows([pos // self._codes.shape[1]])
        elif field == "micro":
            assert enc.micro is not None
            micro = enc.micro.view(-1)
            micro[unit] ^= 1
            self._write_rows([unit // enc.micro.shape[1]])
        else:
            assert enc.scales is not None
            if isinstance(fmt, RowwiseFormat):
                col = 0 if field == "scale" else 1
                if fmt.scale_bits == 32:
                    enc.scales.view(torch.int32)[unit, col] ^= _mask(bit, 32)
                else:  # fp16 values: flip their own patterns (a float32 round trip would
                    # quieten a signalling NaN, and the second flip would not restore it)
                    self._half[unit, col] ^= _mask(bit, 16)
                    enc.scales[unit, col] = self._half[unit, col].view(torch.float16).float()
                self._write_rows([unit])
            elif isinstance(fmt, IntFormat):
                enc.scales.view(torch.int32).view(-1)[unit] ^= _mask(bit, 32)
                # a per-tensor scale multiplies every element; a channel's, its row
                self._write_rows(range(self._codes.shape[0]) if not fmt.per_channel else [unit])
            else:
                enc.scales[unit] ^= 1 << bit  # uint8 E8M0
                self._write_rows([unit])

    def _write_rows(self, rows: range | list[int]) -> None:
        """Decode the code rows ``rows`` and write their values into the target."""
        enc = self.encoded
        assert enc is not None
        r = torch.as_tensor(list(rows), dtype=I64)
        values = _decode_rows(enc, self._codes, r).reshape(-1)
        slots = self._slots[r].reshape(-1)
        keep = slots >= 0
        with torch.no_grad():
            self.target.view(-1)[slots[keep]] = values[keep].to(self.target.dtype)


def _flip_code(code: torch.Tensor, fmt: Format, bit: int) -> torch.Tensor:
    """A code with bit ``bit`` flipped within the format's own width, in the code dtype."""
    if isinstance(fmt, RowwiseFormat):
        return (code.to(I64) ^ (1 << bit)).to(code.dtype)
    elem = enc_mod._element(fmt)
    w = elem.bits
    u = (enc_mod._load(code, elem) & (2**w - 1)) ^ (1 << bit)  # the w-bit pattern, flipped
    if isinstance(elem, FixedFormat):  # read back as a w-bit two's-complement integer
        u = torch.where(u >= 2 ** (w - 1), u - 2**w, u)
    return enc_mod._store(u, elem)


def _mask(bit: int, width: int) -> int:
    """The XOR mask of bit ``bit`` in a signed ``width``-bit integer view."""
    return -(2 ** (width - 1)) if bit == width - 1 else 1 << bit


def _decode_rows(enc: Encoded, codes: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """float32 values of code rows ``rows`` (codes in the row layout ``Stored`` keeps):
    ``numerics.encoding``'s own decoder on the encoding of just those rows (a tensor of shape
    ``(len(rows), row length)`` along axis 1, whose rows are the code rows), so bit for bit
    its values."""
    c = codes[rows]
    shared = isinstance(enc.format, IntFormat) and not enc.format.per_channel
    sub = dataclasses.replace(
        enc,
        codes=c,
        scales=enc.scales if shared or enc.scales is None else enc.scales[rows],
        micro=enc.micro[rows] if enc.micro is not None else None,
        shape=torch.Size(c.shape),
        axis=1,
        dtype=torch.float32,
    )
    return enc_mod._decode_f32(sub)
