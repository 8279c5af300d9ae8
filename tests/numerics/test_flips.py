"""Bit flips in stored encodings, against independent decoders: torch's own float8/bfloat16
casts and ml_dtypes for element codes, the E8M0 rule (a flipped scale bit multiplies the whole
block by a power of two) for MX scales, torch's fbgemm unpack operators on the packed bytes
for row-wise tables, and the full ``decode`` of a hand-flipped encoding for every format and
field (so the row-by-row writes land on the right elements, padding and axes included)."""

from __future__ import annotations

import dataclasses

import ml_dtypes
import numpy as np
import pytest
import torch

from numerics import formats
from numerics.encoding import Encoded, decode, encode, packed_rows
from numerics.flips import Stored


def _weights(shape: tuple[int, ...] = (6, 40), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * torch.logspace(-3, 1, shape[-1])


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.equal(a.isnan(), b.isnan()) and (a[~a.isnan()] == b[~b.isnan()]).all())


def test_float32_storage_flips_the_binary32_pattern_and_restores_it() -> None:
    x = _weights()
    before = x.clone()
    s = Stored(x)
    assert s.fields["element"].width == 32 and s.fields["element"].units == x.numel()
    s.flip("element", 5, 31)
    assert x.view(-1)[5] == -before.view(-1)[5]
    assert torch.equal(torch.cat([x.view(-1)[:5], x.view(-1)[6:]]),
                       torch.cat([before.view(-1)[:5], before.view(-1)[6:]]))  # fmt: skip
    s.flip("element", 5, 31)
    assert torch.equal(x.view(torch.int32), before.view(torch.int32))


@pytest.mark.parametrize(
    "name, torch_dtype",
    [("fp8_e4m3", torch.float8_e4m3fn), ("fp8_e5m2", torch.float8_e5m2), ("bf16", torch.bfloat16)],
)
def test_element_flips_decode_as_torch_reads_the_flipped_pattern(
    name: str, torch_dtype: torch.dtype
) -> None:
    x = _weights((3, 8)) * 20
    s = Stored(x, encode(x, name))
    width = s.fields["element"].width
    view = torch.uint8 if width == 8 else torch.int16
    for unit in range(x.numel()):
        for bit in range(width):
            stored = x.view(-1)[unit].clone()
            pattern = stored.reshape(1).to(torch_dtype).view(view)
            mask = -(2 ** (width - 1)) if (bit == width - 1 and width == 16) else 1 << bit
            want = (pattern ^ mask).view(torch_dtype).float()[0]
            s.flip("element", unit, bit)
            assert _same(x.view(-1)[unit : unit + 1], want.reshape(1)), (unit, bit)
            s.flip("element", unit, bit)
            assert x.view(-1)[unit].view(torch.int32) == stored.view(torch.int32)


def test_mxfp4_element_flips_decode_as_ml_dtypes_reads_the_code() -> None:
    x = _weights((2, 64))
    enc = encode(x, "mxfp4_e2m1", axis=-1)
    s = Stored(x, enc)
    assert s.fields["element"].width == 4 and s.fields["scale"].units == 4
    scale = 2.0 ** (enc.scales.to(torch.int64) - 127).double()  # type: ignore[union-attr]
    codes = enc.codes.reshape(-1).numpy()
    for unit in (0, 31, 32, 100, 127):
        for bit in range(4):
            flipped = np.array([(codes[unit] ^ (1 << bit)) & 0xF], dtype=np.uint8)
            elem = float(flipped.view(ml_dtypes.float4_e2m1fn).astype(np.float32)[0])
            s.flip("element", unit, bit)
            assert float(x.view(-1)[unit]) == elem * float(scale[unit // 32])
            s.flip("element", unit, bit)


def test_an_mx_scale_flip_scales_its_whole_block_by_a_power_of_two() -> None:
    x = _weights((4, 64))
    enc = encode(x, "mxfp8_e4m3", axis=-1)
    s = Stored(x, enc)
    before = x.clone()
    assert enc.scales is not None
    for block in (0, 3, 7):
        code = int(enc.scales[block])
        for bit in range(8):
            s.flip("scale", block, bit)
            new = code ^ (1 << bit)
            rows = x.view(-1, 32)  # axis -1, 64 = two blocks per row: block b is row b here
            if new == 255:
                assert rows[block].isnan().all()
            else:
                want = (before.view(-1, 32)[block].double() * 2.0 ** (new - code)).float()
                assert torch.equal(rows[block], want)
            others = [b for b in range(8) if b != block]
            assert torch.equal(rows[others], before.view(-1, 32)[others])
            s.flip("scale", block, bit)
            assert torch.equal(x, before)


@pytest.mark.parametrize(
    "name, unpack",
    [("int8_rowwise", "embedding_bag_byte_unpack"), ("int4_rowwise", "embedding_bag_4bit_unpack")],
)
def test_rowwise_flips_match_fbgemm_unpacking_the_flipped_bytes(name: str, unpack: str) -> None:
    x = _weights((5, 16))
    enc = encode(x, name, axis=-1)
    fmt = formats.get(name)
    assert isinstance(fmt, formats.RowwiseFormat)
    s = Stored(x, enc)
    packed = packed_rows(enc)
    op = getattr(torch.ops.quantized, unpack)
    code_bytes = 16 * fmt.bits // 8
    sb = fmt.scale_bits // 8
    cases = [("scale", 2, b) for b in range(fmt.scale_bits)]
    cases += [("bias", 4, b) for b in range(0, fmt.scale_bits, 3)]
    cases += [("element", u, b) for u in (0, 17, 79) for b in range(fmt.bits)]
    for field, unit, bit in cases:
        p = packed.clone()
        if field == "element":
            row, col = divmod(unit, 16)
            per = 8 // fmt.bits
            byte, at = col // per, (col % per) * fmt.bits + bit
        else:
            row = unit
            byte = code_bytes + (0 if field == "scale" else sb) + bit // 8
            at = bit % 8
        p[row, byte] ^= 1 << at
        want = op(p)
        s.flip(field, unit, bit)
        assert _same(x[row], want[row]), (field, unit, bit)
        s.flip(field, unit, bit)
        assert torch.equal(x.view(torch.int32), decode(enc).view(torch.int32))


def _m32(bit: int) -> int:
    return 1 << bit if bit < 31 else -(2**31)


def _hand_flip(enc: Encoded, field: str, unit: int, bit: int, valid: torch.Tensor) -> Encoded:
    """``enc`` with one bit flipped by hand in its own tensors (element units count only the
    positions ``valid`` marks)."""
    codes, scales = enc.codes.clone(), enc.scales.clone() if enc.scales is not None else None
    micro = enc.micro.clone() if enc.micro is not None else None
    fmt = enc.format
    if field == "element":
        pos = int(valid.reshape(-1).nonzero().reshape(-1)[unit])
        flat = codes.view(-1)
        width = fmt.bits if isinstance(fmt, formats.RowwiseFormat) else None
        if width is None:
            from numerics.encoding import _element

            elem = _element(fmt)
            width = elem.bits
            u = (int(flat[pos]) & (2**width - 1)) ^ (1 << bit)
            if isinstance(elem, formats.FixedFormat) and u >= 2 ** (width - 1):
                u -= 2**width
            if flat.dtype == torch.int16 and u >= 2**15:
                u -= 2**16
            flat[pos] = u
        else:
            flat[pos] = int(flat[pos]) ^ (1 << bit)
    elif field == "micro":
        assert micro is not None
        micro.view(-1)[unit] ^= 1
    else:
        assert scales is not None
        if isinstance(fmt, formats.RowwiseFormat):
            col = 0 if field == "scale" else 1
            v = scales[unit, col].reshape(1)
            if fmt.scale_bits == 16:
                h = v.half().view(torch.int16) ^ (1 << bit if bit < 15 else -(2**15))
                scales[unit, col] = h.view(torch.float16).float()[0]
            else:
                scales[unit, col] = (v.view(torch.int32) ^ _m32(bit)).view(torch.float32)[0]
        elif scales.dtype == torch.uint8:
            scales[unit] ^= 1 << bit
        else:
            v = scales.view(-1)[unit].reshape(1)
            scales.view(-1)[unit] = (v.view(torch.int32) ^ _m32(bit)).view(torch.float32)[0]
    return dataclasses.replace(enc, codes=codes, scales=scales, micro=micro)


FORMATS = ["fp16", "fp6_e3m2", "fixed8_4", "int8", "int4_pc", "int8_rowwise", "int2_rowwise",
           "mxfp6_e2m3", "mxint8", "bfp4_b16", "mx9", "mx6", "mx4"]  # fmt: skip


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("shape, axis", [((5, 36), -1), ((4, 3, 20), 1)])
def test_every_field_matches_decoding_a_hand_flipped_encoding(
    name: str, shape: tuple[int, ...], axis: int
) -> None:
    if name.endswith("rowwise") and shape[axis] % 4:
        shape = (*shape[:-1], 40) if axis == -1 else shape
    x = _weights(shape, seed=3)
    enc = encode(x, name, axis=axis)
    s = Stored(x, enc)
    valid = s._slots >= 0
    g = torch.Generator().manual_seed(1)
    for field, f in s.fields.items():
        for _ in range(6):
            unit = int(torch.randint(f.units, (1,), generator=g))
            bit = int(torch.randint(f.width, (1,), generator=g))
            want = decode(_hand_flip(enc, field, unit, bit, valid))
            s.flip(field, unit, bit)
            assert _same(x.reshape(-1), want.reshape(-1)), (field, unit, bit)
            s.flip(field, unit, bit)
            assert torch.equal(x.view(torch.int32), decode(enc).view(torch.int32))


def test_bad_flips_are_refused() -> None:
    x = _weights()
    s = Stored(x, encode(x, "mxfp4_e2m1"))
    with pytest.raises(ValueError, match="no 'bias' field"):
        s.flip("bias", 0, 0)
    with pytest.raises(IndexError, match="4 bits"):
        s.flip("element", 0, 4)
    with pytest.raises(TypeError, match="float32"):
        Stored(x.double())
