"""The registry: names, aliases, parsed families, user formats, and each format's facts."""

import re

import pytest
import torch

import numerics
from numerics import formats
from numerics.formats import FloatFormat, NanStyle, UnknownFormatError

# Facts from the specs (OCP 8-bit FP v1.0, OCP MX v1.0, IEEE 754), written out by hand.
SPEC = {
    "fp16": dict(bits=16, emax=15, emin=-14, max=65504.0, min_subnormal=2.0**-24),
    "bf16": dict(bits=16, emax=127, emin=-126, max=(2 - 2**-7) * 2.0**127, min_subnormal=2.0**-133),
    "fp8_e5m2": dict(bits=8, emax=15, emin=-14, max=57344.0, min_subnormal=2.0**-16),
    "fp8_e4m3": dict(bits=8, emax=8, emin=-6, max=448.0, min_subnormal=2.0**-9),
    "fp6_e3m2": dict(bits=6, emax=4, emin=-2, max=28.0, min_subnormal=2.0**-4),
    "fp6_e2m3": dict(bits=6, emax=2, emin=0, max=7.5, min_subnormal=2.0**-3),
    "fp4_e2m1": dict(bits=4, emax=2, emin=0, max=6.0, min_subnormal=0.5),
    "e4m3": dict(bits=8, emax=7, emin=-6, max=240.0, min_subnormal=2.0**-9),
    "e3m4": dict(bits=8, emax=3, emin=-2, max=15.5, min_subnormal=2.0**-6),
}


@pytest.mark.parametrize("name", sorted(SPEC))
def test_float_facts_match_the_specs(name):
    fmt = formats.get(name)
    for key, value in SPEC[name].items():
        assert getattr(fmt, key) == value, (name, key)


def test_special_value_styles():
    assert formats.get("fp16").has_inf and formats.get("fp16").has_nan
    e4m3 = formats.get("fp8_e4m3")
    assert not e4m3.has_inf and e4m3.has_nan and not e4m3.default_saturate
    for name in ("fp6_e3m2", "fp6_e2m3", "fp4_e2m1"):
        f = formats.get(name)
        assert not f.has_inf and not f.has_nan and f.default_saturate


def test_mx_formats_per_ocp_mx_v1():
    # OCP MX v1.0 table 1: element emax and block size 32, E8M0 scale.
    expected_emax = {
        "mxfp8_e4m3": 8,
        "mxfp8_e5m2": 15,
        "mxfp6_e3m2": 4,
        "mxfp6_e2m3": 2,
        "mxfp4_e2m1": 2,
        "mxint8": 0,
    }
    for name, emax in expected_emax.items():
        f = formats.get(name)
        assert f.block_size == 32 and f.emax_elem == emax and f.scale_bits == 8
    assert formats.get("mxint8").element.max == 127 / 64
    assert formats.get("mxfp4_e2m1").bits_per_element == 4.25


def test_shared_microexponent_bits_per_element():
    # arXiv 2302.08007: MX9 / MX6 / MX4 cost 9 / 6 / 4 bits per element.
    assert [formats.get(n).bits_per_element for n in ("mx9", "mx6", "mx4")] == [9.0, 6.0, 4.0]


def test_aliases_and_case():
    assert formats.get("BFloat16") is formats.get("bf16")
    assert formats.get("e4m3fn") is formats.get("fp8_e4m3")
    assert formats.get("msfp16") is formats.get("bfp8_b16")
    assert formats.get("msfp12") is formats.get("bfp4_b16")
    assert formats.get("float8-e5m2") is formats.get("fp8_e5m2")


def test_parsed_families():
    assert formats.get("e5m10").max == formats.get("fp16").max
    ftz = formats.get("fp16_ftz")
    assert isinstance(ftz, FloatFormat) and not ftz.subnormals
    assert ftz.min_subnormal == 2.0**-14
    b = formats.get("mxfp8_e4m3_b16_ceil")
    assert b.block_size == 16 and b.scale_rule.value == "ceil"
    c = formats.get("bfp8_b16_ceil")  # suffixes stack on a name that itself ends in _bK
    assert c.block_size == 16 and c.scale_rule.value == "ceil" and c.family == "bfp"
    assert formats.get("mx6_b32").block_size == 32
    assert formats.get("bfp6_b8").element.max == 2 - 2**-4
    fx = formats.get("fixed12_4")
    assert fx.max == (2**11 - 1) / 16 and fx.min == -(2**11) / 16


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownFormatError, match=r"mxfp8_e4m3") as info:
        formats.get("mxfp8e4m3")
    assert "did you mean" in str(info.value)
    with pytest.raises(KeyError):
        numerics.quantize(torch.ones(3), "fp7")


def test_register_a_users_format_and_refuse_duplicates():
    mine = FloatFormat("test_e3m3", 3, 3, NanStyle.NONE, aliases=("test_alias_e3m3",))
    formats.register(mine)
    try:
        assert formats.get("test_alias_e3m3") is mine
        assert mine.max == 30.0  # no inf/NaN: bias 3, emax 7 - 3 = 4, 2**4 * 1.875
        y = numerics.quantize(torch.tensor([100.0, 1.0625, 1.1]), "test_e3m3")
        assert y.tolist() == [30.0, 1.0, 1.125]  # saturate; tie to even; nearest
        with pytest.raises(ValueError, match="already registered"):
            formats.register(mine)
    finally:
        from numerics.formats import registry

        registry._REGISTRY.pop("test_e3m3")
        registry._ALIASES.pop("test_alias_e3m3")


def test_invalid_descriptors_are_refused():
    with pytest.raises(ValueError, match="ebits"):
        FloatFormat("bad", 9, 2)
    with pytest.raises(ValueError, match="mbits"):
        FloatFormat("bad", 4, 24)
    with pytest.raises(ValueError, match="bias"):
        FloatFormat("bad", 8, 7, bias=130)


def test_names_wildcard():
    mx = formats.names("mx*")
    assert "mxfp8_e4m3" in mx and "fp16" not in mx


@pytest.mark.parametrize("name", formats.names())
def test_every_registered_format_quantizes_onto_its_grid(name):
    """Registry-driven: every format runs, keeps the shape and dtype, and is idempotent."""
    fmt = formats.get(name)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 70, generator=g) * 3
    y = numerics.quantize(x, fmt)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    # an int scale is recomputed from the rounded amax; a row-wise one from the rounded row's
    # range, and fbgemm's arithmetic (an epsilon in the 8-bit reciprocal) is not idempotent
    if fmt.kind not in ("int", "rowwise"):
        assert torch.equal(numerics.quantize(y, fmt), y)
    if fmt.kind in ("float", "fixed"):
        lo, hi = _range(name)
        assert lo <= y.min().item() and y.max().item() <= hi, (lo, hi)
        if fmt.default_saturate:  # what lies beyond the range lands on its ends
            assert bool((y[x >= hi] == hi).all()) and bool((y[x <= lo] == lo).all())


def _range(name: str) -> tuple[float, float]:
    """The finite range of an element format, from the specs (``SPEC``, torch's float32) or
    the two's-complement definition of fixedW_F, not from the format's descriptor."""
    m = re.fullmatch(r"fixed(\d+)_(\d+)", name)
    if m:
        w, f = int(m.group(1)), int(m.group(2))
        return -(2.0 ** (w - 1 - f)), 2.0 ** (w - 1 - f) - 2.0**-f
    hi = torch.finfo(torch.float32).max if name == "fp32" else SPEC[name]["max"]
    return -hi, hi


def test_block_elements_must_fit_the_block_kernels():
    from numerics.formats import BlockFormat

    with pytest.raises(ValueError, match="too wide"):
        BlockFormat("mx_bf16", formats.get("bf16"))
    with pytest.raises(ValueError, match=r"allowed 1\.\.23"):
        formats.get("bfp26_b16")
    assert formats.get("bfp24_b16").element.max == 2 - 2.0**-22


def test_nearest_even_with_nothing_to_drop_is_the_identity():
    # 23 explicit mantissa bits keep every float32 significand: no rounding may happen, in
    # every kernel path (generic core for e5m23 and fixed25_0, shift trick for saturated fp32).
    x = torch.tensor([1 + 2.0**-23, 3 * 2.0**-23, 1.5])
    for name in ("e5m23", "fp32"):
        for backend in ("eager", "reference"):
            y = numerics.quantize(x, name, saturate=True, backend=backend)
            assert torch.equal(y, x), (name, backend)
    k = torch.tensor([2.0**23 + 1, -(2.0**23) - 3, 2.0**24 - 1])
    for backend in ("eager", "reference"):
        assert torch.equal(numerics.quantize(k, "fixed25_0", backend=backend), k)
