"""Element float formats against independent oracles, bit for bit.

Oracles, none of them this package's code:
- ml_dtypes casts (float8_e4m3fn, float8_e5m2, float6_e3m2fn, float6_e2m3fn, float4_e2m1fn,
  bfloat16) and numpy's float16, all round-to-nearest-even;
- torch's casts (bfloat16, float16, float8_e5m2 and float8_e4m3fn; the last saturates, so it is
  held against ``saturate=True``);
- a table oracle written here: the format's representable values (enumerated from the
  ml_dtypes codes, or from the IEEE formula for the generic eXmY formats) and, for each input,
  its two neighbours on that table; every rounding mode is then a choice between them, made
  from the IEEE 754 rules in float64 (where every difference involved is exact);
- hand-computed values from the specs.

Inputs: every representable value, every midpoint between neighbours (including the one past
the maximum, where overflow starts), one float32 ulp either side of each midpoint, the subnormal
and overflow boundaries, +-inf, NaN, -0, and random float32 bit patterns (the whole exponent
range, float32 subnormals and NaN payloads included), all with both signs. Results are compared
as float32 bit patterns, any NaN matching any NaN.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable

import ml_dtypes
import numpy as np
import pytest
import torch

import numerics
from numerics.formats import ieee
from numerics.kernels import compiled as _compiled
from numerics.rounding import Rounding

# Signalling-NaN inputs make NumPy's float32 -> float64 conversion raise the IEEE "invalid"
# flag, which NumPy reports as a warning; it is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

BACKENDS = ("eager", "reference")
DETERMINISTIC = ("nearest_even", "nearest_away", "toward_zero", "down", "up")
ALL_MODES = (*DETERMINISTIC, "stochastic")
INF = math.inf
NAN = math.nan
F32_MAX = float(np.finfo(np.float32).max)

Oracle = Callable[[np.ndarray], np.ndarray]

# name -> (ml_dtypes / numpy dtype, storage bits of the codes)
ML = {
    "bf16": (ml_dtypes.bfloat16, 16),
    "fp16": (np.float16, 16),
    "fp8_e5m2": (ml_dtypes.float8_e5m2, 8),
    "fp8_e4m3": (ml_dtypes.float8_e4m3fn, 8),
    "fp6_e3m2": (ml_dtypes.float6_e3m2fn, 6),
    "fp6_e2m3": (ml_dtypes.float6_e2m3fn, 6),
    "fp4_e2m1": (ml_dtypes.float4_e2m1fn, 4),
}

# Spec facts: (max, min normal, min subnormal, what an overflow rounded away from zero gives).
SPEC = {
    "bf16": ((2 - 2**-7) * 2.0**127, 2.0**-126, 2.0**-133, "inf"),
    "fp16": (65504.0, 2.0**-14, 2.0**-24, "inf"),
    "fp8_e5m2": (57344.0, 2.0**-14, 2.0**-16, "inf"),
    "fp8_e4m3": (448.0, 2.0**-6, 2.0**-9, "nan"),
    "fp6_e3m2": (28.0, 0.25, 0.0625, "max"),
    "fp6_e2m3": (7.5, 1.0, 0.125, "max"),
    "fp4_e2m1": (6.0, 1.0, 0.5, "max"),
    # IEEE-style generic formats (bias 2**(e-1)-1, top exponent field reserved for inf/NaN)
    "e4m3": (240.0, 2.0**-6, 2.0**-9, "inf"),
    "e3m4": (15.5, 0.25, 2.0**-6, "inf"),
}

# (ebits, mbits, style) of the IEEE formula for each format: "ieee" reserves the top exponent
# field, "fn" only its all-ones mantissa (a single NaN), "none" reserves nothing.
FORMULA = {
    "bf16": (8, 7, "ieee"),
    "fp16": (5, 10, "ieee"),
    "fp8_e5m2": (5, 2, "ieee"),
    "fp8_e4m3": (4, 3, "fn"),
    "fp6_e3m2": (3, 2, "none"),
    "fp6_e2m3": (2, 3, "none"),
    "fp4_e2m1": (2, 1, "none"),
    "e4m3": (4, 3, "ieee"),
    "e3m4": (3, 4, "ieee"),
}


# --- oracles -----------------------------------------------------------------------------------
@functools.cache
def ml_positive_values(name: str) -> np.ndarray:
    """The finite non-negative values of an ml_dtypes format, by enumerating its codes."""
    dt, bits = ML[name]
    codes = np.arange(2 ** (bits - 1), dtype=np.uint16 if bits == 16 else np.uint8)
    vals = codes.view(dt).astype(np.float64)
    vals = vals[np.isfinite(vals)]
    assert np.all(np.diff(vals) > 0), name  # sign-magnitude codes are monotonic
    return vals


@functools.cache
def formula_positive_values(ebits: int, mbits: int, style: str) -> np.ndarray:
    """The finite non-negative values from the IEEE 754 formula (bias 2**(ebits-1)-1)."""
    bias = 2 ** (ebits - 1) - 1
    top = 2**ebits - 1
    out = []
    for field in range(2**ebits):
        for mant in range(2**mbits):
            if style == "ieee" and field == top:
                continue
            if style == "fn" and field == top and mant == 2**mbits - 1:
                continue
            if field == 0:
                out.append(mant * 2.0 ** (1 - bias - mbits))
            else:
                out.append((1 + mant / 2**mbits) * 2.0 ** (field - bias))
    return np.array(out, dtype=np.float64)


def positive_values(name: str) -> np.ndarray:
    base = name.removesuffix("_ftz")
    if base in ML:
        return ml_positive_values(base)
    return formula_positive_values(*FORMULA[base])


def special_of(name: str, saturate: bool | None) -> float:
    base = name.removesuffix("_ftz")
    vmax, _, _, ovf = SPEC[base]
    if saturate or ovf == "max":
        return vmax
    return INF if ovf == "inf" else NAN


def flush_of(name: str) -> float | None:
    return SPEC[name.removesuffix("_ftz")][1] if name.endswith("_ftz") else None


def neighbours(x: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, ...]:
    """For |x|: (mag, lo, hi, index of lo) on the table extended by one step past the max.

    Magnitudes beyond that extended point get lo = max, hi = the extended point (any rounding
    away from zero overflows there, as it would with an unbounded exponent).
    """
    ext = np.append(pos, 2 * pos[-1] - pos[-2])  # the top binade's step continues past max
    mag = np.abs(x.astype(np.float64))
    mag = np.where(np.isfinite(mag), mag, 0.0)
    i = np.searchsorted(ext, mag, side="right") - 1
    i = np.minimum(i, len(ext) - 2)
    return mag, ext[i], ext[i + 1], i


def table_round(x: np.ndarray, name: str, mode: str, saturate: bool | None = None) -> np.ndarray:
    """IEEE 754 rounding of float32 ``x`` to the format ``name``, from its value table."""
    pos = positive_values(name)
    vmax = pos[-1]
    special = special_of(name, saturate)
    neg = np.signbit(x)
    mag, lo, hi, i = neighbours(x, pos)
    below, above = mag - lo, hi - mag  # exact in float64
    inexact = below > 0
    if mode == "nearest_even":
        up = (above < 0) | (below > above) | ((below == above) & (i % 2 == 1))
    elif mode == "nearest_away":
        up = inexact & ((above < 0) | (below >= above))
    elif mode == "toward_zero":
        up = np.zeros_like(inexact)
    elif mode == "up":
        up = inexact & ~neg
    elif mode == "down":
        up = inexact & neg
    else:
        raise AssertionError(mode)
    res = np.where(up, hi, lo)
    res = np.where(res > vmax, special, res)
    flush = flush_of(name)
    if flush is not None:
        res = np.where(res < flush, 0.0, res)
    res = np.where(np.isinf(x), special, res)
    res = np.where(np.isnan(x), NAN, res)
    return np.where(neg, -res, res).astype(np.float32)


def ml_cast(x: np.ndarray, name: str) -> np.ndarray:
    with np.errstate(over="ignore"):  # numpy's float16 reports its (correct) overflow to inf
        return x.astype(ML[name][0]).astype(np.float32)


def flush_subnormals(y: np.ndarray, min_normal: float) -> np.ndarray:
    return np.where(np.abs(y) < min_normal, np.copysign(np.float32(0), y), y).astype(np.float32)


# --- inputs ------------------------------------------------------------------------------------
def f32(values: np.ndarray | list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def random_f32(n: int, seed: int) -> np.ndarray:
    """Random float32 bit patterns: every exponent, subnormals, inf and NaN payloads."""
    return np.random.default_rng(seed).integers(0, 2**32, n, dtype=np.uint32).view(np.float32)


def both_signs_unique(pos: np.ndarray) -> np.ndarray:
    x = np.concatenate([pos, -pos]).astype(np.float32)
    return np.unique(x.view(np.uint32)).view(np.float32)  # by bits: keeps -0, one NaN


@functools.cache
def exhaustive_inputs(name: str) -> np.ndarray:
    pos = positive_values(name)
    past = 2 * pos[-1] - pos[-2]  # first point past the max on the extended grid
    ext = np.append(pos, past)
    mids = (ext[:-1] + ext[1:]) / 2
    pts = np.concatenate([pos, mids])
    pts32 = pts.astype(np.float32)
    assert np.array_equal(pts32.astype(np.float64), pts)  # all exact in float32
    mids32 = mids.astype(np.float32)
    extra = [
        2.0**-149,  # smallest float32 subnormal
        2.0**-126,
        float(np.nextafter(np.float32(2.0**-126), np.float32(0))),  # largest float32 subnormal
        pos[1] / 4,
        min(2 * pos[-1], F32_MAX),
        F32_MAX,
        INF,
        NAN,
    ]
    if past <= F32_MAX:
        extra.append(past)
    parts = [
        pts32,
        np.nextafter(mids32, np.float32(INF)),
        np.nextafter(mids32, np.float32(0)),
        f32(extra),
    ]
    return both_signs_unique(np.concatenate(parts))


@functools.cache
def all_inputs(name: str, n_random: int = 50_000) -> np.ndarray:
    seed = sum(map(ord, name))
    return np.concatenate([exhaustive_inputs(name), random_f32(n_random, seed)])


# --- helpers -----------------------------------------------------------------------------------
def quantize_np(x: np.ndarray, fmt: object, mode: str = "nearest_even", **kw: object) -> np.ndarray:
    y = numerics.quantize(torch.from_numpy(x.copy()), fmt, mode, **kw)  # type: ignore[arg-type]
    assert y.dtype == torch.float32
    assert y.shape == (x.size,)
    return y.numpy()


def assert_bits_equal(actual: np.ndarray, expected: np.ndarray, x: np.ndarray, what: str) -> None:
    a = np.asarray(actual, dtype=np.float32)
    e = np.asarray(expected, dtype=np.float32)
    assert a.shape == e.shape == x.shape
    ab, eb = a.view(np.uint32), e.view(np.uint32)
    bad = (ab != eb) & ~(np.isnan(a) & np.isnan(e))
    if bad.any():
        idx = np.flatnonzero(bad)[:10]
        lines = [
            f"  x={x[i]!r} ({x.view(np.uint32)[i]:#010x}): got {a[i]!r} ({ab[i]:#010x}), "
            f"expected {e[i]!r} ({eb[i]:#010x})"
            for i in idx
        ]
        pytest.fail(f"{what}: {int(bad.sum())} of {bad.size} differ:\n" + "\n".join(lines))


# --- the oracles themselves ----------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ML))
def test_formula_tables_match_ml_dtypes(name: str) -> None:
    """The IEEE-formula tables (used for e4m3 / e3m4) agree with ml_dtypes where both exist."""
    np.testing.assert_array_equal(formula_positive_values(*FORMULA[name]), ml_positive_values(name))


@pytest.mark.parametrize("name", list(ML))
def test_table_oracle_matches_ml_dtypes(name: str) -> None:
    """The table oracle's nearest-even is ml_dtypes' cast (NaN inputs aside)."""
    x = all_inputs(name)
    x = x[~np.isnan(x)]
    assert_bits_equal(table_round(x, name, "nearest_even"), ml_cast(x, name), x, "table oracle")


# --- format facts -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SPEC))
def test_format_facts(name: str) -> None:
    fmt = numerics.formats.get(name)
    vmax, min_normal, min_sub, ovf = SPEC[name]
    assert fmt.max == vmax
    assert fmt.min_normal == min_normal
    assert fmt.min_subnormal == min_sub
    assert fmt.has_inf == (ovf == "inf")
    assert fmt.default_saturate == (ovf == "max")
    pos = positive_values(name)
    assert pos[-1] == vmax and pos[1] == min_sub
    ftz = numerics.formats.get(name + "_ftz")
    assert ftz.subnormals is False and fmt.subnormals is True
    assert ftz.max == vmax and ftz.min_normal == min_normal


# --- round-to-nearest-even against ml_dtypes and torch ------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(ML))
def test_nearest_even_matches_ml_dtypes(name: str, backend: str) -> None:
    """Default mode, default overflow rule, against ml_dtypes (which returns -0 for NaN into the
    formats without NaN: NaN is checked separately)."""
    x = np.concatenate([exhaustive_inputs(name), random_f32(100_000, seed=len(name))])
    y = quantize_np(x, name, backend=backend)
    nan_in = np.isnan(x)
    assert np.isnan(y[nan_in]).all()
    keep = ~nan_in
    assert_bits_equal(y[keep], ml_cast(x[keep], name), x[keep], f"{name} vs ml_dtypes")


TORCH_CASTS = [
    ("bf16", torch.bfloat16, None),
    ("fp16", torch.float16, None),
    ("fp8_e5m2", torch.float8_e5m2, None),
    ("fp8_e4m3", torch.float8_e4m3fn, True),  # torch's cast saturates, inf -> +-448
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("name", "dtype", "saturate"), TORCH_CASTS)
def test_nearest_even_matches_torch_cast(
    name: str, dtype: torch.dtype, saturate: bool | None, backend: str
) -> None:
    x = np.concatenate([exhaustive_inputs(name), random_f32(100_000, seed=7 + len(name))])
    y = quantize_np(x, name, backend=backend, saturate=saturate)
    expected = torch.from_numpy(x.copy()).to(dtype).float().numpy()
    assert_bits_equal(y, expected, x, f"{name} vs torch {dtype}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("base", ["bf16", "fp16", "fp8_e5m2", "fp8_e4m3", "fp6_e3m2", "fp4_e2m1"])
def test_ftz_is_ml_dtypes_then_flush(base: str, backend: str) -> None:
    """``_ftz``: round as with subnormals, then a result below the min normal becomes +-0."""
    x = all_inputs(base)
    x = x[~np.isnan(x)]
    y = quantize_np(x, base + "_ftz", backend=backend)
    expected = flush_subnormals(ml_cast(x, base), SPEC[base][1])
    assert_bits_equal(y, expected, x, f"{base}_ftz")
    # and something did flush: inputs below half the min normal give zeros only
    sub = (np.abs(x) > 0) & (np.abs(x) < SPEC[base][1] / 2)
    assert sub.any() and (y[sub] == 0).all()


# --- generic eXmY --------------------------------------------------------------------------------
GENERIC = [
    ((5, 10), "fp16", lambda x: torch.from_numpy(x.copy()).to(torch.float16).float().numpy()),
    ((8, 7), "bf16", lambda x: torch.from_numpy(x.copy()).to(torch.bfloat16).float().numpy()),
    ((5, 2), "fp8_e5m2", lambda x: ml_cast(x, "fp8_e5m2")),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("eb_mb", "same_as", "cast"), GENERIC)
def test_generic_exmy_equals_named(
    eb_mb: tuple[int, int], same_as: str, cast: Oracle, backend: str
) -> None:
    """eXmY built by the family constructor (not the registered object) is the IEEE format."""
    ebits, mbits = eb_mb
    fmt = ieee(ebits, mbits, name=f"test_e{ebits}m{mbits}")
    assert fmt is not numerics.formats.get(same_as)
    x = all_inputs(same_as)
    assert_bits_equal(quantize_np(x, fmt, backend=backend), cast(x), x, f"e{ebits}m{mbits}")
    # the parsed family name gives the same format facts
    named = numerics.formats.get(f"e{ebits}m{mbits}")
    assert (named.max, named.min_subnormal) == (SPEC[same_as][0], SPEC[same_as][2])


def test_generic_names_parse_to_ieee_style() -> None:
    for name in ("e4m3", "e3m4", "e6m9", "E4M3"):
        fmt = numerics.formats.get(name)
        assert fmt.has_inf and fmt.has_nan and not fmt.default_saturate
    assert numerics.formats.get("e4m3").max == 240.0
    assert numerics.formats.get("e6m9").max == (2 - 2**-9) * 2.0**31


# --- hand-computed cases -------------------------------------------------------------------------
# (format, mode, x, expected, saturate), each worked out from the IEEE 754 rules and the spec
# facts above; "tie" = exactly half way (ties to even pick the even code).
HAND = [
    # fp16: max 65504 = 1.1111111111b * 2**15 (odd), next grid point 65536, midpoint 65520
    ("fp16", "toward_zero", 65519.99, 65504.0, None),
    ("fp16", "nearest_even", 65519.99, 65504.0, None),
    ("fp16", "nearest_away", 65519.99, 65504.0, None),
    ("fp16", "down", 65519.99, 65504.0, None),
    ("fp16", "up", 65519.99, INF, None),  # rounds up to 65536 > max: overflow
    ("fp16", "nearest_even", 65520.0, INF, None),  # tie, 65504 is odd
    ("fp16", "nearest_away", 65520.0, INF, None),
    ("fp16", "toward_zero", 65520.0, 65504.0, None),
    ("fp16", "up", 70000.0, INF, None),
    ("fp16", "up", -70000.0, -65504.0, None),
    ("fp16", "down", 70000.0, 65504.0, None),
    ("fp16", "down", -70000.0, -INF, None),
    ("fp16", "toward_zero", -70000.0, -65504.0, None),
    ("fp16", "nearest_even", -70000.0, -INF, None),
    ("fp16", "nearest_even", -70000.0, -65504.0, True),
    ("fp16", "up", 65504.0, 65504.0, None),
    ("fp16", "up", INF, INF, None),  # inf is exact
    ("fp16", "down", INF, INF, None),
    ("fp16", "toward_zero", -INF, -INF, None),
    ("fp16", "toward_zero", -INF, -65504.0, True),
    ("fp16", "nearest_even", 1 + 2**-11, 1.0, None),  # tie
    ("fp16", "nearest_away", 1 + 2**-11, 1 + 2**-10, None),
    ("fp16", "nearest_even", 1 + 3 * 2**-11, 1 + 2**-9, None),  # tie, 1+2**-10 is odd
    ("fp16", "nearest_away", -(1 + 2**-11), -(1 + 2**-10), None),
    ("fp16", "toward_zero", 1 + 3 * 2**-11, 1 + 2**-10, None),
    ("fp16", "up", 1 + 2**-20, 1 + 2**-10, None),
    ("fp16", "down", 1 + 2**-20, 1.0, None),
    ("fp16", "up", -(1 + 2**-20), -1.0, None),
    ("fp16", "down", -(1 + 2**-20), -(1 + 2**-10), None),
    ("fp16", "nearest_even", 2.0**-25, 0.0, None),  # half the min subnormal: tie to 0
    ("fp16", "nearest_away", 2.0**-25, 2.0**-24, None),
    ("fp16", "nearest_even", 3 * 2.0**-25, 2.0**-23, None),  # tie, code 1 is odd
    ("fp16", "nearest_even", -(2.0**-26), -0.0, None),
    ("fp16", "nearest_even", 2.0**-14 - 2.0**-25, 2.0**-14, None),  # tie at the normal edge
    ("fp16", "up", 1e-30, 2.0**-24, None),
    ("fp16", "up", -1e-30, -0.0, None),
    ("fp16", "down", 1e-30, 0.0, None),
    ("fp16", "down", -1e-30, -(2.0**-24), None),
    ("fp16", "toward_zero", -1e-30, -0.0, None),
    # fp16_ftz: subnormal results flush to zero, the sign kept
    ("fp16_ftz", "nearest_even", 2.0**-15, 0.0, None),
    ("fp16_ftz", "nearest_even", -(2.0**-15), -0.0, None),
    ("fp16_ftz", "nearest_even", 2.0**-14 - 2.0**-24, 0.0, None),  # a subnormal, flushed
    ("fp16_ftz", "nearest_even", 2.0**-14 - 2.0**-25, 2.0**-14, None),  # rounds to min normal
    ("fp16_ftz", "nearest_even", 2.0**-14, 2.0**-14, None),
    # bf16: max (2-2**-7)*2**127, overflow midpoint (2-2**-8)*2**127 < float32 max
    ("bf16", "nearest_even", 1 + 2**-8, 1.0, None),
    ("bf16", "nearest_away", 1 + 2**-8, 1 + 2**-7, None),
    ("bf16", "nearest_even", F32_MAX, INF, None),
    ("bf16", "nearest_even", (2 - 2**-8) * 2.0**127, INF, None),  # tie, max is odd
    ("bf16", "nearest_even", (2 - 2**-8) * 2.0**127 - 2.0**104, (2 - 2**-7) * 2.0**127, None),
    ("bf16", "toward_zero", F32_MAX, (2 - 2**-7) * 2.0**127, None),
    ("bf16", "up", F32_MAX, INF, None),
    ("bf16", "up", -F32_MAX, -(2 - 2**-7) * 2.0**127, None),
    ("bf16", "down", -F32_MAX, -INF, None),
    ("bf16", "nearest_even", 2.0**-134, 0.0, None),
    ("bf16", "up", 2.0**-149, 2.0**-133, None),
    ("bf16", "nearest_even", 3 * 2.0**-134, 2.0**-132, None),
    # fp8_e4m3 (OCP FN): max 448 = 1.110b*2**8 (even), 480 would be the NaN code; no inf
    ("fp8_e4m3", "nearest_even", 464.0, 448.0, None),  # tie, 448 is even
    ("fp8_e4m3", "nearest_even", 465.0, NAN, None),
    ("fp8_e4m3", "nearest_even", INF, NAN, None),
    ("fp8_e4m3", "nearest_even", -INF, NAN, None),
    ("fp8_e4m3", "toward_zero", 1000.0, 448.0, None),
    ("fp8_e4m3", "up", 449.0, NAN, None),
    ("fp8_e4m3", "up", -1000.0, -448.0, None),
    ("fp8_e4m3", "down", 1000.0, 448.0, None),
    ("fp8_e4m3", "down", -449.0, NAN, None),
    ("fp8_e4m3", "up", 449.0, 448.0, True),
    ("fp8_e4m3", "nearest_even", INF, 448.0, True),
    ("fp8_e4m3", "nearest_even", -INF, -448.0, True),
    ("fp8_e4m3", "nearest_even", 2.0**-10, 0.0, None),
    ("fp8_e4m3", "up", 2.0**-12, 2.0**-9, None),
    # fp8_e5m2: max 57344 (odd), overflow midpoint 61440
    ("fp8_e5m2", "nearest_even", 61440.0, INF, None),
    ("fp8_e5m2", "nearest_even", 61439.0, 57344.0, None),
    ("fp8_e5m2", "toward_zero", 1e6, 57344.0, None),
    ("fp8_e5m2", "up", 57345.0, INF, None),
    ("fp8_e5m2", "nearest_even", INF, 57344.0, True),
    # fp6 / fp4: no inf, no NaN, always saturate
    ("fp6_e3m2", "nearest_even", 30.0, 28.0, None),  # tie, 28 odd -> 32 -> saturates
    ("fp6_e3m2", "up", 1000.0, 28.0, None),
    ("fp6_e3m2", "nearest_even", INF, 28.0, None),
    ("fp6_e3m2", "nearest_even", -INF, -28.0, None),
    ("fp6_e3m2", "nearest_even", 0.03125, 0.0, None),  # half the min subnormal
    ("fp6_e3m2", "up", 0.001, 0.0625, None),
    ("fp6_e2m3", "nearest_even", 7.75, 7.5, None),
    ("fp6_e2m3", "nearest_even", 1.0625, 1.0, None),
    ("fp6_e2m3", "nearest_even", 1.1875, 1.25, None),
    ("fp6_e2m3", "down", -7.6, -7.5, None),
    ("fp4_e2m1", "nearest_even", 5.0, 4.0, None),  # tie: 4 is code 6 (even), 6 code 7
    ("fp4_e2m1", "nearest_away", 5.0, 6.0, None),
    ("fp4_e2m1", "up", 5.0, 6.0, None),
    ("fp4_e2m1", "down", 5.0, 4.0, None),
    ("fp4_e2m1", "up", 7.0, 6.0, None),
    ("fp4_e2m1", "down", -7.0, -6.0, None),
    ("fp4_e2m1", "nearest_even", 0.25, 0.0, None),
    ("fp4_e2m1", "nearest_away", 0.25, 0.5, None),
    ("fp4_e2m1", "nearest_even", 0.75, 1.0, None),
    ("fp4_e2m1", "nearest_even", 2.5, 2.0, None),
    ("fp4_e2m1", "nearest_even", 3.5, 4.0, None),
    ("fp4_e2m1", "up", -0.1, -0.0, None),
    ("fp4_e2m1", "down", -0.1, -0.5, None),
    ("fp4_e2m1", "nearest_even", INF, 6.0, None),
    ("fp4_e2m1", "up", -INF, -6.0, None),
    # e4m3, IEEE-style: bias 7, max 1.111b*2**7 = 240, min normal 2**-6, min subnormal 2**-9
    ("e4m3", "nearest_even", 248.0, INF, None),  # tie, 240 is odd
    ("e4m3", "nearest_even", 247.9, 240.0, None),
    ("e4m3", "nearest_even", 1e9, INF, None),
    ("e4m3", "nearest_even", 1e9, 240.0, True),
    ("e4m3", "nearest_even", INF, 240.0, True),
    ("e4m3", "nearest_even", INF, INF, None),
    ("e4m3", "toward_zero", 1e9, 240.0, None),
    ("e4m3", "up", -1e9, -240.0, None),
    ("e4m3", "nearest_even", 1 + 2**-4, 1.0, None),
    ("e4m3", "nearest_away", 1 + 2**-4, 1.125, None),
    ("e4m3", "nearest_even", 1.1875, 1.25, None),
    ("e4m3", "nearest_even", 2.0**-9, 2.0**-9, None),
    ("e4m3", "nearest_even", 2.0**-10, 0.0, None),
    ("e4m3", "nearest_away", 2.0**-10, 2.0**-9, None),
    ("e4m3", "nearest_even", 3 * 2.0**-10, 2.0**-8, None),
    ("e4m3", "nearest_even", 2.0**-6 - 2.0**-10, 2.0**-6, None),
    # e3m4, IEEE-style: bias 3, max 1.1111b*2**3 = 15.5, min normal 0.25, min subnormal 2**-6
    ("e3m4", "nearest_even", 15.75, INF, None),
    ("e3m4", "nearest_even", 15.74, 15.5, None),
    ("e3m4", "up", 15.51, INF, None),
    ("e3m4", "down", 15.74, 15.5, None),
    ("e3m4", "nearest_even", 1 + 2**-5, 1.0, None),
    ("e3m4", "nearest_even", 1 + 3 * 2**-5, 1.125, None),
    ("e3m4", "nearest_even", 2.0**-7, 0.0, None),
    ("e3m4", "nearest_even", 3 * 2.0**-7, 2.0**-5, None),
    ("e3m4", "nearest_even", 0.25 - 2.0**-7, 0.25, None),
    ("e3m4", "nearest_even", 0.2, 0.203125, None),  # 0.2 = 12.8 * 2**-6 -> 13 * 2**-6
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("name", "mode", "x", "expected", "saturate"), HAND)
def test_hand_computed(
    name: str, mode: str, x: float, expected: float, saturate: bool | None, backend: str
) -> None:
    xs = f32([x])
    y = quantize_np(xs, name, mode, backend=backend, saturate=saturate)
    assert_bits_equal(y, f32([expected]), xs, f"{name} {mode} sat={saturate}")


# --- every deterministic mode against the table oracle -------------------------------------------
MODE_CASES = [
    ("fp8_e4m3", None),
    ("fp8_e4m3", True),
    ("fp8_e5m2", None),
    ("fp8_e5m2", True),
    ("fp6_e3m2", None),
    ("fp6_e2m3", None),
    ("fp4_e2m1", None),
    ("bf16", None),
    ("fp16", None),
    ("e4m3", None),
    ("e3m4", None),
    ("e3m4", True),
    ("fp16_ftz", None),
    ("fp8_e4m3_ftz", None),
]


@pytest.mark.parametrize("mode", DETERMINISTIC)
@pytest.mark.parametrize(("name", "saturate"), MODE_CASES)
def test_modes_match_table_oracle(name: str, saturate: bool | None, mode: str) -> None:
    """All directed and nearest modes, eager and reference, against the IEEE rules."""
    x = all_inputs(name)
    expected = table_round(x, name, mode, saturate)
    for backend in BACKENDS:
        y = quantize_np(x, name, mode, backend=backend, saturate=saturate)
        assert_bits_equal(y, expected, x, f"{name} {mode} sat={saturate} [{backend}]")


SR_FORMATS = ["fp8_e4m3", "fp6_e2m3", "fp4_e2m1", "bf16", "fp16", "e3m4", "fp16_ftz"]


@pytest.mark.parametrize("name", SR_FORMATS)
def test_stochastic_eager_equals_reference(name: str) -> None:
    """Stochastic rounding, same seed: eager and reference agree bit for bit, and each result
    is one of the input's two neighbours on the format's table."""
    x = all_inputs(name)
    y_e = quantize_np(x, name, "stochastic", generator=1234, backend="eager")
    y_r = quantize_np(x, name, "stochastic", generator=1234, backend="reference")
    assert_bits_equal(y_e, y_r, x, f"{name} stochastic eager vs reference")
    lo = table_round(x, name, "toward_zero")
    hi = np.where(np.signbit(x), table_round(x, name, "down"), table_round(x, name, "up"))
    ok = (y_e.view(np.uint32) == lo.view(np.uint32)) | (y_e.view(np.uint32) == hi.view(np.uint32))
    ok |= np.isnan(y_e) & (np.isnan(lo) | np.isnan(hi))
    assert ok.all(), x[~ok][:10]
    # both neighbours occur (the rounding is not secretly deterministic)
    inexact = lo != hi
    assert (y_e[inexact] == lo[inexact]).any() and (y_e[inexact] == hi[inexact]).any()


# --- formats as wide as float32's mantissa ------------------------------------------------------
# Regression: a nearest_even fast path ((|x| + c) - c with c = 2**(E + 23 - m)) was once used
# for non-e8 formats with m = 23, where c is not above |x|: ieee(5, 23) turned 1 + 2**-23 into
# 1.0 and 1 + 3 * 2**-23 into 1 + 2**-21. The generic core had the matching slip (with nothing
# dropped, d = 0, an odd last bit counted as a tie).
def _wide_params() -> list[tuple[int, int, str, str]]:
    return [
        (ebits, mbits, mode, backend)
        for ebits, mbits in ((5, 23), (4, 23), (7, 23), (5, 22))
        for mode in ALL_MODES
        for backend in BACKENDS
    ]


@pytest.mark.parametrize(("ebits", "mbits", "mode", "backend"), _wide_params())
def test_wide_mantissa_formats_keep_their_values(
    ebits: int, mbits: int, mode: str, backend: str
) -> None:
    """Every float32 normal value inside the format's normal range whose mantissa fits in
    ``mbits`` bits is a format value: all modes return it unchanged."""
    bias = 2 ** (ebits - 1) - 1
    emin, emax = 1 - bias, 2**ebits - 2 - bias
    rng = np.random.default_rng(ebits * 100 + mbits)
    field = rng.integers(emin + 127, emax + 128, 50_000).astype(np.uint32)
    mant = rng.integers(0, 2**23, 50_000).astype(np.uint32) >> (23 - mbits) << (23 - mbits)
    x = ((field << 23) | mant).view(np.float32)
    x = np.concatenate([x, f32([1 + 2.0**-mbits, 1 + 3 * 2.0**-mbits]), -x])
    y = quantize_np(x, ieee(ebits, mbits), mode, generator=3, backend=backend)
    assert_bits_equal(y, x, x, f"e{ebits}m{mbits} {mode} [{backend}]")


# --- special values ------------------------------------------------------------------------------
SPECIAL_FORMATS = [*SPEC, "fp16_ftz", "fp4_e2m1_ftz"]
NAN_BITS = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FFFFFFF, 0xFF812345], np.uint32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("name", SPECIAL_FORMATS)
def test_special_values(name: str, mode: str, backend: str) -> None:
    base = name.removesuffix("_ftz")
    vmax = SPEC[base][0]
    x = np.concatenate([NAN_BITS.view(np.float32), f32([INF, -INF, -0.0, 0.0])])
    y = quantize_np(x, name, mode, generator=5, backend=backend)
    assert np.isnan(y[: len(NAN_BITS)]).all(), "NaN must propagate"
    assert_bits_equal(
        y[-4:],
        f32([special_of(name, None), -special_of(name, None), -0.0, 0.0]),
        x[-4:],
        "inf / zeros",
    )
    # saturate=True: infinities go to +-max, NaN still propagates
    ys = quantize_np(x, name, mode, generator=5, backend=backend, saturate=True)
    assert np.isnan(ys[: len(NAN_BITS)]).all()
    assert_bits_equal(ys[-4:], f32([vmax, -vmax, -0.0, 0.0]), x[-4:], "saturate")


@pytest.mark.parametrize("name", ["fp6_e3m2", "fp6_e2m3", "fp4_e2m1"])
def test_no_special_formats_refuse_saturate_false(name: str) -> None:
    with pytest.raises(ValueError, match="saturate"):
        numerics.quantize(torch.ones(3), name, saturate=False)


# --- input dtypes --------------------------------------------------------------------------------
def all_codes16(dtype: torch.dtype) -> torch.Tensor:
    return torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)


DTYPE_CASES = [
    # (input dtype, format, oracle on the float32 widened input giving float32)
    (torch.bfloat16, "fp8_e4m3", lambda x: ml_cast(x, "fp8_e4m3")),
    (torch.bfloat16, "fp16", lambda x: torch.from_numpy(x).half().float().numpy()),
    (torch.bfloat16, "bf16", lambda x: x),
    (torch.float16, "fp8_e5m2", lambda x: ml_cast(x, "fp8_e5m2")),
    (torch.float16, "bf16", lambda x: torch.from_numpy(x).bfloat16().float().numpy()),
    (torch.float16, "fp4_e2m1", lambda x: ml_cast(x, "fp4_e2m1")),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("dtype", "name", "oracle"), DTYPE_CASES)
def test_half_inputs_give_float32_result_cast_back(
    dtype: torch.dtype, name: str, oracle: Oracle, backend: str
) -> None:
    x = all_codes16(dtype)
    x = x[~torch.isnan(x)].reshape(2, -1)  # NaN is tested above (ml_dtypes' fp4 gives -0)
    y = numerics.quantize(x, name, backend=backend)
    assert y.dtype == dtype and y.shape == x.shape
    x32 = x.float().numpy().reshape(-1)
    expected = torch.from_numpy(oracle(x32.copy())).to(dtype).float().numpy()
    assert_bits_equal(y.float().numpy().reshape(-1), expected, x32, f"{dtype} input, {name}")


def test_zero_dim_input() -> None:
    y = numerics.quantize(torch.tensor(1 + 2**-8), "bf16")
    assert y.shape == () and y.item() == 1.0
    y = numerics.quantize(torch.tensor(1 + 2**-8), "bf16", backend="reference")
    assert y.shape == () and y.item() == 1.0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "dtype", [torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64, torch.bool]
)
def test_integer_tensors_refused(dtype: torch.dtype, backend: str) -> None:
    with pytest.raises(TypeError, match=r"integer.*Allowed: torch\.float32"):
        numerics.quantize(torch.zeros(4, dtype=dtype), "bf16", backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_refused(backend: str) -> None:
    with pytest.raises(TypeError, match="float64"):
        numerics.quantize(torch.zeros(4, dtype=torch.float64), "fp16", backend=backend)


def test_non_tensor_refused() -> None:
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        numerics.quantize([1.0, 2.0], "fp16")  # type: ignore[arg-type]


# --- the compiled backend, once -----------------------------------------------------------------
@pytest.mark.slow
def test_compiled_nearest_even_matches_casts() -> None:
    """The compiled nearest_even kernels on large inputs, against ml_dtypes and torch casts."""
    x = np.concatenate([exhaustive_inputs("fp8_e4m3"), random_f32(1 << 17, seed=99)])
    xb = np.concatenate([exhaustive_inputs("bf16"), random_f32(1 << 17, seed=98)])
    keep = ~np.isnan(x)
    expected_ml = ml_cast(x[keep], "fp8_e4m3")
    expected_sat = torch.from_numpy(x.copy()).to(torch.float8_e4m3fn).float().numpy()
    expected_b = torch.from_numpy(xb.copy()).bfloat16().float().numpy()
    assert not [k for k in _compiled._BROKEN if k[1] is Rounding.NEAREST_EVEN]
    with warnings.catch_warnings():
        # the compiled path falls back to eager with a RuntimeWarning: make that a failure
        warnings.simplefilter("error", RuntimeWarning)
        y = quantize_np(x, "fp8_e4m3", backend="compiled")
        ys = quantize_np(x, "fp8_e4m3", backend="compiled", saturate=True)
        yb = quantize_np(xb, "bf16", backend="compiled")
    assert not [k for k in _compiled._BROKEN if k[1] is Rounding.NEAREST_EVEN]
    assert np.isnan(y[~keep]).all()
    assert_bits_equal(y[keep], expected_ml, x[keep], "compiled fp8_e4m3")
    assert_bits_equal(ys, expected_sat, x, "compiled fp8_e4m3 saturating")
    assert_bits_equal(yb, expected_b, xb, "compiled bf16")
