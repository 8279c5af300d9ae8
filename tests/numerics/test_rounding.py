"""Rounding modes and stochastic rounding (SR).

The SR definition under test (``numerics.rounding``): with R = ``sr_bits`` random bits, |x|
lying a fraction ``f`` of the way from its lower neighbour ``lo`` to its upper neighbour ``hi``
on the format's grid rounds to ``hi`` iff ``k < floor(f * 2**R)``, ``k`` uniform in [0, 2**R);
so P(up) = floor(f * 2**R) / 2**R. The neighbours here come from the formats' own value tables
(ml_dtypes code enumeration), never from this package.
"""

from __future__ import annotations

import functools
import math
import warnings

import ml_dtypes
import numpy as np
import pytest
import torch

import numerics
from numerics.kernels import compiled as _compiled
from numerics.reference import random_ints
from numerics.rounding import Rounding, draw_keys, names, parse, random_bits

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

N_SAMPLES = 200_000

# --- parse ----------------------------------------------------------------------------------------
PARSE_CASES = [
    ("nearest_even", Rounding.NEAREST_EVEN),
    ("NEAREST-EVEN", Rounding.NEAREST_EVEN),
    ("  nearest_even ", Rounding.NEAREST_EVEN),
    ("nearest", Rounding.NEAREST_EVEN),
    ("rne", Rounding.NEAREST_EVEN),
    ("rn", Rounding.NEAREST_EVEN),
    ("nearest_away", Rounding.NEAREST_AWAY),
    ("Nearest-Away", Rounding.NEAREST_AWAY),
    ("rna", Rounding.NEAREST_AWAY),
    ("toward_zero", Rounding.TOWARD_ZERO),
    ("toward-zero", Rounding.TOWARD_ZERO),
    ("rz", Rounding.TOWARD_ZERO),
    ("truncate", Rounding.TOWARD_ZERO),
    ("down", Rounding.DOWN),
    ("rd", Rounding.DOWN),
    ("floor", Rounding.DOWN),
    ("up", Rounding.UP),
    ("RU", Rounding.UP),
    ("ceil", Rounding.UP),
    ("stochastic", Rounding.STOCHASTIC),
    ("sr", Rounding.STOCHASTIC),
    ("SR", Rounding.STOCHASTIC),
]
ALLOWED = ["nearest_even", "nearest_away", "toward_zero", "down", "up", "stochastic"]


@pytest.mark.parametrize(("text", "mode"), PARSE_CASES)
def test_parse_names_and_aliases(text: str, mode: Rounding) -> None:
    assert parse(text) is mode


def test_parse_enum_and_names() -> None:
    assert names() == ALLOWED
    for m in Rounding:
        assert parse(m) is m
        assert parse(m.value) is m


@pytest.mark.parametrize("bad", ["nearest_odd", "", "round", "stoch", "zero", "nearest even"])
def test_parse_rejects_unknown(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown rounding mode") as info:
        parse(bad)
    msg = str(info.value)
    assert repr(bad) in msg
    for name in ALLOWED:
        assert name in msg


def test_quantize_rejects_bad_mode_and_sr_bits() -> None:
    x = torch.ones(4)
    with pytest.raises(ValueError, match="allowed: nearest_even"):
        numerics.quantize(x, "bf16", "bankers")
    for bits in (0, -1, 25):
        with pytest.raises(ValueError, match="sr_bits"):
            numerics.quantize(x, "bf16", "stochastic", generator=0, sr_bits=bits)
    for gen in ("seed", 1.5, True):
        with pytest.raises(TypeError, match="generator"):
            numerics.quantize(x, "bf16", "stochastic", generator=gen)  # type: ignore[arg-type]


# --- independent neighbours ----------------------------------------------------------------------
# name -> (ml_dtypes dtype, code bits, what overflow rounded away from zero gives)
ML = {
    "bf16": (ml_dtypes.bfloat16, 16, math.inf),
    "fp16": (np.float16, 16, math.inf),
    "fp8_e5m2": (ml_dtypes.float8_e5m2, 8, math.inf),
    "fp8_e4m3": (ml_dtypes.float8_e4m3fn, 8, math.nan),
    "fp6_e3m2": (ml_dtypes.float6_e3m2fn, 6, None),  # None: saturates to max
    "fp6_e2m3": (ml_dtypes.float6_e2m3fn, 6, None),
    "fp4_e2m1": (ml_dtypes.float4_e2m1fn, 4, None),
}


@functools.cache
def table(name: str) -> np.ndarray:
    """Finite non-negative values of the format, extended by one top-binade step past max."""
    dt, bits, _ = ML[name]
    codes = np.arange(2 ** (bits - 1), dtype=np.uint16 if bits == 16 else np.uint8)
    vals = codes.view(dt).astype(np.float64)
    vals = vals[np.isfinite(vals)]
    assert np.all(np.diff(vals) > 0)
    return np.append(vals, 2 * vals[-1] - vals[-2])


def neighbours(name: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(|x|, lo, hi) with lo <= |x| < hi on the extended table (lo = max beyond it)."""
    ext = table(name)
    mag = np.abs(x.astype(np.float64))
    i = np.minimum(np.searchsorted(ext, mag, side="right") - 1, len(ext) - 2)
    return mag, ext[i], ext[i + 1]


def signed_value(name: str, mag: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """A magnitude from the extended table as the format's result (overflow applied)."""
    vmax = table(name)[-2]
    ovf = ML[name][2]
    out = np.where(mag > vmax, vmax if ovf is None else ovf, mag)
    return np.where(neg, -out, out).astype(np.float32)


def sr_inputs(name: str, n: int, seed: int) -> np.ndarray:
    """Finite float32 values across the format's whole range, both signs, plus float32
    subnormals, values below the smallest subnormal, exact grid values and the overflow zone."""
    rng = np.random.default_rng(seed)
    ext = table(name)
    vmax, min_sub = ext[-2], ext[1]
    lo_e, hi_e = math.floor(math.log2(min_sub)) - 3, math.floor(math.log2(vmax)) + 2
    wide = rng.uniform(1, 2, n) * 2.0 ** rng.integers(lo_e, hi_e, n)
    exact = rng.choice(ext[:-1], n // 8)
    near_max = rng.uniform(ext[-3], ext[-1] * 1.01, n // 8)
    f32_sub = rng.integers(1, 2**23, n // 16).astype(np.uint32).view(np.float32)
    x64 = np.concatenate([wide, exact, near_max, f32_sub.astype(np.float64)])
    x = np.minimum(x64, float(np.finfo(np.float32).max)).astype(np.float32)
    sign = rng.integers(0, 2, x.size).astype(bool)
    return np.where(sign, -x, x).astype(np.float32)


def sr_oracle(name: str, x: np.ndarray, keys: torch.Tensor, sr_bits: int) -> np.ndarray:
    """The SR definition, evaluated in float64 from the value table and the random integers."""
    mag, lo, hi = neighbours(name, x)
    f = (mag - lo) / (hi - lo)  # exact: hi - lo is a power of two
    t = np.floor(f * 2.0**sr_bits)  # may exceed 2**R beyond the extended point: always up
    k = random_ints(x.size, (int(keys[0]), int(keys[1])), sr_bits)
    up = k < t
    return signed_value(name, np.where(up, hi, lo), np.signbit(x))


def bits_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return (a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))


def assert_bits_equal(a: np.ndarray, b: np.ndarray, x: np.ndarray, what: str) -> None:
    ok = bits_equal(a, b)
    if not ok.all():
        idx = np.flatnonzero(~ok)[:10]
        rows = [
            f"  x={x.reshape(-1)[i]!r}: got {a.reshape(-1)[i]!r}, expected {b.reshape(-1)[i]!r}"
            for i in idx
        ]
        pytest.fail(f"{what}: {int((~ok).sum())} of {ok.size} differ\n" + "\n".join(rows))


def sr(x: np.ndarray, name: str, gen: object, backend: str = "eager", **kw: object) -> np.ndarray:
    y = numerics.quantize(
        torch.from_numpy(x.copy()),
        name,
        "stochastic",
        gen,  # type: ignore[arg-type]
        backend=backend,
        **kw,
    )  # type: ignore[arg-type]
    return y.numpy()


# --- SR: the exact definition ---------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["eager", "reference"])
@pytest.mark.parametrize("sr_bits", [1, 2, 5, 8, 23, 24])
@pytest.mark.parametrize("name", list(ML))
def test_sr_matches_definition(name: str, sr_bits: int, backend: str) -> None:
    """Given the random integers of the seed, every SR decision is the definition's."""
    x = sr_inputs(name, 20_000, seed=sr_bits)
    seed = 1000 + sr_bits
    y = sr(x, name, seed, backend, sr_bits=sr_bits)
    expected = sr_oracle(name, x, draw_keys(seed), sr_bits)
    assert_bits_equal(y, expected, x, f"{name} R={sr_bits} [{backend}]")


def test_sr_default_bits_is_23() -> None:
    x = sr_inputs("bf16", 20_000, seed=3)
    assert_bits_equal(sr(x, "bf16", 77), sr_oracle("bf16", x, draw_keys(77), 23), x, "default")


@pytest.mark.parametrize("name", list(ML))
def test_sr_returns_a_neighbour(name: str) -> None:
    """Over many generator draws, every result is one of the input's two neighbours, exact
    values are kept, and both neighbours occur."""
    g = torch.Generator().manual_seed(2024)
    x = sr_inputs(name, 5_000, seed=11)
    mag, lo, hi = neighbours(name, x)
    neg = np.signbit(x)
    lo_v, hi_v = signed_value(name, lo, neg), signed_value(name, hi, neg)
    exact = mag == lo
    saw_lo = np.zeros(x.size, bool)
    saw_hi = np.zeros(x.size, bool)
    for _ in range(8):
        y = sr(x, name, g)
        is_lo, is_hi = bits_equal(y, lo_v), bits_equal(y, hi_v)
        assert (is_lo | is_hi).all(), x[~(is_lo | is_hi)][:10]
        assert is_lo[exact].all()
        saw_lo |= is_lo
        saw_hi |= is_hi
    both = ~exact & (lo_v != hi_v)
    assert (saw_lo & both).any() and (saw_hi & both).any()


# --- SR: unbiased in the mean --------------------------------------------------------------------
def binomial_two_sided_tail(n: int, p: float, dev: float) -> float:
    """Exact P(|X/n - p| > dev) for X ~ Binomial(n, p), summed in log space (float64)."""
    k = torch.arange(n + 1, dtype=torch.float64)
    logpmf = (
        math.lgamma(n + 1)
        - torch.lgamma(k + 1)
        - torch.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )
    outside = (k / n - p).abs() > dev
    return float(torch.exp(logpmf[outside]).sum())


def five_sigma(f: float, n: int = N_SAMPLES) -> float:
    """The acceptance bound |p_hat - f| <= 5 * sqrt(f (1 - f) / n).

    p_hat is a Binomial(n, f) proportion when the random integers are uniform and independent
    across positions. The two-sided normal tail beyond 5 standard deviations is 5.7e-7; at
    n = 200_000 the binomial is that close to normal (its skewness (1 - 2f)/sqrt(n f (1-f)) is
    below 0.003), and the exact binomial tail, computed by ``binomial_two_sided_tail`` and
    asserted below for every f used, is < 1e-6: a correct implementation fails a check with
    probability below one in a million (for a seed chosen independently of the code).
    """
    return 5 * math.sqrt(f * (1 - f) / n)


@pytest.mark.parametrize("f", [0.25, 0.5, 0.8125, 0.0625])
@pytest.mark.parametrize(
    ("lo", "step"),
    [
        (1.0, 2.0**-7),  # bf16 neighbours 1 and 1 + 2**-7
        (-3.0, -(2.0**-6)),  # negative: -3 and -(3 + 2**-6)
        (5 * 2.0**-133, 2.0**-133),  # bf16 subnormals 5 and 6 * 2**-133
    ],
)
def test_sr_unbiased_bf16(lo: float, step: float, f: float) -> None:
    x = np.float32(lo + f * step)
    assert float(x) == lo + f * step  # exact: f has at most 4 bits
    bound = five_sigma(f)
    assert binomial_two_sided_tail(N_SAMPLES, f, bound) < 1e-6
    y = sr(np.full(N_SAMPLES, x, np.float32), "bf16", 12345)
    hi = np.float32(lo + step)
    assert np.isin(y, [np.float32(lo), hi]).all()
    p_up = float(np.mean(y == hi))
    assert abs(p_up - f) <= bound, (p_up, f, bound)


@pytest.mark.parametrize(
    ("f", "sr_bits", "p_expected"),
    [
        (0.2, 2, 0.0),  # floor(0.2 * 4) / 4 = 0: never rounds up
        (0.3, 2, 0.25),  # floor(1.2) / 4
        (0.7, 2, 0.5),  # floor(2.8) / 4
        (0.75, 1, 0.5),  # floor(1.5) / 2
        (0.45, 1, 0.0),
        (0.3, 3, 0.25),  # floor(2.4) / 8
        (0.3, 23, 0.3),  # within 2**-23 of f
    ],
)
def test_sr_bits_limit_resolution(f: float, sr_bits: int, p_expected: float) -> None:
    """P(up) = floor(f * 2**R) / 2**R, not f, for a fraction with more than R bits."""
    lo, step = 1.0, 2.0**-7
    x = np.float32(lo + f * step)
    f_true = (float(x) - lo) / step  # the float32 input's actual fraction
    assert math.floor(f_true * 2**sr_bits) / 2**sr_bits == pytest.approx(p_expected, abs=2**-15)
    y = sr(np.full(N_SAMPLES, x, np.float32), "bf16", 4242, sr_bits=sr_bits)
    hi = np.float32(lo + step)
    assert np.isin(y, [np.float32(lo), hi]).all()
    p_up = float(np.mean(y == hi))
    if p_expected == 0.0:
        assert p_up == 0.0  # exactly: k < 0 never holds
    else:
        bound = five_sigma(p_expected)
        assert binomial_two_sided_tail(N_SAMPLES, p_expected, bound) < 1e-6
        assert abs(p_up - p_expected) <= bound, (p_up, p_expected, bound)


def test_sr_half_bit_with_one_random_bit_is_fair() -> None:
    """f = 0.5 exactly with R = 1: the decision is one random bit."""
    x = np.full(N_SAMPLES, np.float32(1 + 2**-8), np.float32)
    p_up = float(np.mean(sr(x, "bf16", 9, sr_bits=1) == np.float32(1 + 2**-7)))
    assert abs(p_up - 0.5) <= five_sigma(0.5)


# --- SR: reproducibility -------------------------------------------------------------------------
def _wide(n: int = 4096, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n) * 2.0 ** rng.integers(-20, 20, n)).astype(np.float32)


def test_same_int_seed_same_bits() -> None:
    x = _wide()
    a, b = sr(x, "bf16", 31337), sr(x, "bf16", 31337)
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_same_generator_seed_same_bits() -> None:
    x = _wide()
    a = sr(x, "fp8_e4m3", torch.Generator().manual_seed(5))
    b = sr(x, "fp8_e4m3", torch.Generator().manual_seed(5))
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_generator_advances() -> None:
    x = _wide()
    g = torch.Generator().manual_seed(5)
    a, b = sr(x, "bf16", g), sr(x, "bf16", g)
    assert not np.array_equal(a, b)
    # and the sequence of calls is itself reproducible
    g2 = torch.Generator().manual_seed(5)
    a2, b2 = sr(x, "bf16", g2), sr(x, "bf16", g2)
    assert np.array_equal(a.view(np.uint32), a2.view(np.uint32))
    assert np.array_equal(b.view(np.uint32), b2.view(np.uint32))


def test_different_seeds_differ() -> None:
    x = _wide()
    assert not np.array_equal(sr(x, "bf16", 1), sr(x, "bf16", 2))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    assert not np.array_equal(sr(x, "bf16", g1), sr(x, "bf16", g2))


def test_default_generator_follows_torch_manual_seed() -> None:
    x = _wide()
    torch.manual_seed(123)
    a = sr(x, "bf16", None)
    c = sr(x, "bf16", None)
    torch.manual_seed(123)
    b = sr(x, "bf16", None)
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
    assert not np.array_equal(a, c)


def test_bits_depend_on_position_only() -> None:
    """The random bits are a function of (seed, element position): a prefix of the tensor
    rounds as it does inside the whole tensor."""
    x = _wide(10_000)
    whole = sr(x, "bf16", 8)
    prefix = sr(x[:3_000], "bf16", 8)
    assert np.array_equal(whole[:3_000].view(np.uint32), prefix.view(np.uint32))


# --- SR: eager == compiled == reference ----------------------------------------------------------
def _sr_case_inputs() -> np.ndarray:
    rng = np.random.default_rng(77)
    x = (rng.standard_normal((64, 320)) * 2.0 ** rng.integers(-30, 12, (64, 320))).astype(
        np.float32
    )
    x[3, 5], x[7, 100], x[9, 9] = np.float32(1e30), -0.0, np.float32(3e-40)
    x[10, :32] = 0.0  # an all-zero MX block
    x[11, 40] = np.nan  # a NaN block (MX) / a NaN element
    return x


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "axis"),
    [("bf16", -1), ("fp8_e4m3", -1), ("mxfp4_e2m1", 0), ("mxfp8_e4m3", -1)],
)
def test_sr_eager_compiled_reference_agree(name: str, axis: int) -> None:
    """Two compiled kernels (element and block, stochastic), each compiled once."""
    x = torch.from_numpy(_sr_case_inputs())
    with warnings.catch_warnings():
        # a failed compilation falls back to eager with a RuntimeWarning: make it an error
        warnings.simplefilter("error", RuntimeWarning)
        warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
        for sr_bits in (23, 5):
            out = {
                b: numerics.quantize(x, name, "sr", 99, axis, sr_bits=sr_bits, backend=b).numpy()
                for b in ("eager", "compiled", "reference")
            }
            assert not [k for k in _compiled._BROKEN if k[1] is Rounding.STOCHASTIC]
            xs = x.numpy()
            assert_bits_equal(out["compiled"], out["eager"], xs, f"{name} compiled vs eager")
            assert_bits_equal(out["reference"], out["eager"], xs, f"{name} reference vs eager")
            # and it is stochastic rounding: another seed changes some results
            other = numerics.quantize(x, name, "sr", 100, axis, sr_bits=sr_bits, backend="eager")
            assert not np.array_equal(other.numpy(), out["eager"])


# --- the random integers -------------------------------------------------------------------------
def _lowbias32_py(h: int) -> int:
    """C. Wellons' lowbias32, in Python integers (an independent transcription)."""
    m = 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x7FEB352D) & m
    h ^= h >> 15
    h = (h * 0x846CA68B) & m
    h ^= h >> 16
    return h


def _bits(idx: np.ndarray, keys: torch.Tensor, nbits: int) -> np.ndarray:
    out = random_bits(
        torch.from_numpy(idx.astype(np.int32)), keys, torch.tensor(nbits, dtype=torch.int32)
    )
    assert out.dtype == torch.int32
    return out.numpy().astype(np.int64)


@pytest.mark.parametrize("nbits", [1, 2, 8, 23, 24])
@pytest.mark.parametrize("seed", [0, 1, 2**40 + 3, -5])
def test_random_bits_match_numpy_reference(seed: int, nbits: int) -> None:
    keys = draw_keys(seed)
    assert keys.dtype == torch.int32 and keys.shape == (2,)
    n = 100_000
    got = _bits(np.arange(n), keys, nbits)
    ref = random_ints(n, (int(keys[0]), int(keys[1])), nbits)
    np.testing.assert_array_equal(got, ref)
    assert got.min() >= 0 and got.max() < 2**nbits


@pytest.mark.parametrize("keys", [(0, 0), (-1, 12345), (2**31 - 1, -(2**31)), (-7, -9)])
def test_random_bits_match_python_transcription(keys: tuple[int, int]) -> None:
    idx = np.array([0, 1, 2, 3, 255, 256, 65535, 123456789, 2**31 - 1], dtype=np.int64)
    kt = torch.tensor(keys, dtype=torch.int32)
    for nbits in (8, 24):
        got = _bits(idx, kt, nbits)
        k0, k1 = (k & 0xFFFFFFFF for k in keys)
        expected = [
            _lowbias32_py((_lowbias32_py(int(i) ^ k0) + k1) & 0xFFFFFFFF) >> (32 - nbits)
            for i in idx
        ]
        assert got.tolist() == expected


def _chi2_bounds(df: int, z: float) -> tuple[float, float]:
    """Wilson-Hilferty quantiles of chi-square(df) at standard-normal z and -z."""
    a = 2 / (9 * df)
    return df * (1 - a - z * math.sqrt(a)) ** 3, df * (1 - a + z * math.sqrt(a)) ** 3


@pytest.mark.parametrize(("nbits", "shift"), [(8, 0), (24, 0), (24, 16)])
def test_random_bits_uniform_chi_square(nbits: int, shift: int) -> None:
    """1M draws into 256 buckets (the top 8 bits, the low 8, and bits 16..23 of 24-bit draws).

    Under uniformity the statistic is chi-square with 255 degrees of freedom (expected count
    3906 per bucket, far above the usual 5). z = 4.89 is the one-sided standard-normal
    quantile at 5e-7, so each tail has probability 5e-7 by the Wilson-Hilferty transform
    (accurate to well under 1% at 255 df): bounds of about [159, 381], so the false-failure
    probability is below 1e-6 per check.
    The lower bound matters too: a counter or a cyclic pattern (e.g. ``index mod 256``) would
    be "too uniform" and give a statistic near 0.
    """
    keys = draw_keys(2718)
    v = _bits(np.arange(1 << 20), keys, nbits)
    buckets = (v >> shift) & 0xFF
    counts = np.bincount(buckets, minlength=256)
    expected = (1 << 20) / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    lo, hi = _chi2_bounds(255, 4.89)
    assert 150 < lo < 160 and 375 < hi < 390
    assert lo < chi2 < hi, chi2
    # neighbouring positions are not correlated: the pairs (v[i], v[i+1]) of the top 4 bits
    # spread over 256 cells as well
    top4 = (v >> (nbits - 4)) & 0xF
    pair = top4[:-1:2] * 16 + top4[1::2]
    counts = np.bincount(pair, minlength=256)
    expected = pair.size / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert lo < chi2 < hi, chi2
