"""Scaled integers (int8/int4, per tensor and per channel) and fixed point.

Oracles: ``torch.fake_quantize_per_tensor_affine`` / ``torch.fake_quantize_per_channel_affine``
with the symmetric scale ``amax / qmax`` computed in float32; the same formula written out in
NumPy float32 for the other rounding modes; hand-computed fixed-point values; and a NumPy
grid oracle (values ``k * 2**-fl``, ``k`` in the two's-complement range) for every
deterministic mode. The reference backend is compared for all modes, stochastic included.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import numerics
from numerics.formats import FixedFormat

pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

BACKENDS = ("eager", "reference")
DETERMINISTIC = ("nearest_even", "nearest_away", "toward_zero", "down", "up")
ALL_MODES = (*DETERMINISTIC, "stochastic")
QMAX = {"int8": 127, "int4": 7, "int8_pc": 127, "int4_pc": 7}
INF, NAN = float("inf"), float("nan")


# --- helpers -------------------------------------------------------------------------------------
def bits(a: np.ndarray | torch.Tensor, zero_sign: bool = True) -> np.ndarray:
    """float32 bit patterns, NaN canonicalised; ``zero_sign=False`` maps -0 to +0."""
    a = np.array(a.detach().float().numpy() if isinstance(a, torch.Tensor) else a, np.float32)
    if not zero_sign:
        a = np.where(a == 0, np.float32(0), a).astype(np.float32)
    b = a.view(np.uint32).copy()
    b[np.isnan(a)] = 0x7FC00000
    return b


def assert_same(
    actual: np.ndarray | torch.Tensor,
    expected: np.ndarray | torch.Tensor,
    x: np.ndarray | torch.Tensor,
    what: str,
    zero_sign: bool = True,
) -> None:
    a, e = bits(actual, zero_sign), bits(expected, zero_sign)
    assert a.shape == e.shape, (a.shape, e.shape)
    bad = a != e
    if bad.any():
        xs = np.asarray(x.detach().float().numpy() if isinstance(x, torch.Tensor) else x)
        av, ev = a.view(np.float32), e.view(np.float32)
        idx = np.argwhere(bad)[:10]
        lines = [
            f"  at {tuple(i)}: x={xs[tuple(i)]!r} got {av[tuple(i)]!r} expected {ev[tuple(i)]!r}"
            for i in idx
        ]
        pytest.fail(f"{what}: {int(bad.sum())} of {bad.size} differ\n" + "\n".join(lines))


def sample(shape: tuple[int, ...], seed: int, kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "normal":
        return torch.randn(shape, generator=g)
    if kind == "wide":  # magnitudes over many binades, so small values underflow to 0
        e = torch.randint(-24, 8, shape, generator=g).float()
        return torch.randn(shape, generator=g) * torch.exp2(e)
    if kind == "outlier":
        x = torch.randn(shape, generator=g) * 0.01
        x.view(-1)[:: max(1, x.numel() // 7)] = 40.0
        return x
    raise AssertionError(kind)


def int_formula(rows: np.ndarray, qmax: int, mode: str) -> np.ndarray:
    """torch's fake-quant formula in NumPy float32, any rounding of ``x * (1/scale)``."""
    rows = np.asarray(rows, np.float32)
    amax = np.abs(rows).max(axis=-1, keepdims=True)
    scale = np.where(amax > 0, amax / np.float32(qmax), np.float32(1)).astype(np.float32)
    inv = (np.float32(1) / scale).astype(np.float32)
    v = (rows * inv).astype(np.float32).astype(np.float64)
    q = {
        "nearest_even": np.rint,
        "nearest_away": lambda t: np.copysign(np.floor(np.abs(t) + 0.5), t),
        "toward_zero": np.trunc,
        "down": np.floor,
        "up": np.ceil,
    }[mode](v)
    # + 0.0 turns -0 into +0: an integer code has one zero (torch goes through int64)
    q = np.clip(q, -qmax, qmax).astype(np.float32) + np.float32(0.0)
    return (q * scale).astype(np.float32)


# --- per-tensor against torch ---------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["normal", "wide", "outlier"])
@pytest.mark.parametrize("name", ["int8", "int4"])
def test_per_tensor_matches_torch_fake_quant(name: str, kind: str, backend: str) -> None:
    qmax = QMAX[name]
    x = sample((64, 513), seed=len(kind) + qmax, kind=kind)
    scale = x.abs().amax() / qmax  # float32, as the format defines it
    expected = torch.fake_quantize_per_tensor_affine(x, float(scale), 0, -qmax, qmax)
    y = numerics.quantize(x, name, backend=backend)
    assert y.dtype == torch.float32 and y.shape == x.shape
    # torch goes through an int64, which cannot hold -0: compare with zeros unsigned here
    # (the sign of zero is the subject of test_per_tensor_zero_sign_matches_torch)
    assert_same(y, expected, x, f"{name} {kind}", zero_sign=False)


@pytest.mark.parametrize("name", ["int8", "int4"])
def test_per_tensor_ties_to_even(name: str) -> None:
    """amax = qmax gives scale 1 exactly: x = k/2 are ties, rounded to even."""
    qmax = QMAX[name]
    x = torch.arange(-2 * qmax, 2 * qmax + 1, dtype=torch.float32) / 2
    expected = np.rint(x.numpy())  # NumPy rint rounds half to even
    assert float(expected[-1]) == qmax and 2.5 in x.tolist() and -3.5 in x.tolist()
    torch_fq = torch.fake_quantize_per_tensor_affine(x, 1.0, 0, -qmax, qmax)
    assert_same(torch_fq, expected, x, "torch fake quant (oracle sanity)", zero_sign=False)
    for backend in BACKENDS:
        y = numerics.quantize(x, name, backend=backend)
        assert_same(y, expected, x, f"{name} ties [{backend}]", zero_sign=False)
        assert y[x == 2.5].item() == 2.0 and y[x == 3.5].item() == 4.0
        assert y[x == -2.5].item() == -2.0 and y[x == -0.5].item() == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_tensor_zero_sign_matches_torch(backend: str) -> None:
    # Integer codes are two's complement, with one zero: a negative x that rounds to 0 is +0,
    # as torch (which goes through an int64) gives.
    x = torch.tensor([-1e-5, 0.5, 1.0, -0.001, -0.0])
    expected = torch.fake_quantize_per_tensor_affine(x, float(x.abs().amax() / 127), 0, -127, 127)
    y = numerics.quantize(x, "int8", backend=backend)
    assert_same(y, expected, x, "int8 sign of zero", zero_sign=True)


# --- per-channel against torch --------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("shape", "axis"),
    [((48, 96), -1), ((48, 96), 1), ((96, 40), 0), ((4, 5, 6), 1), ((3, 4, 33), -1), ((7, 1), -1)],
)
@pytest.mark.parametrize("name", ["int8_pc", "int4_pc"])
def test_per_channel_matches_torch_fake_quant(
    name: str, shape: tuple[int, ...], axis: int, backend: str
) -> None:
    """``axis`` is the reduction axis; every other index is a channel. torch's function takes
    one channel axis, so the channels are flattened into it (for (out, in) with axis=-1 that is
    simply torch's axis 0)."""
    qmax = QMAX[name]
    x = sample(shape, seed=sum(shape), kind="wide")
    x.view(-1)[5] = 0.0
    if len(shape) == 2 and shape[0] > 3:
        x[2 if axis in (-1, 1) else slice(None), 2 if axis == 0 else slice(None)] = 0.0
    moved = x.movedim(axis, -1)
    rows = moved.reshape(-1, moved.shape[-1])
    amax = rows.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    zp = torch.zeros(rows.shape[0], dtype=torch.int32)
    fq = torch.fake_quantize_per_channel_affine(rows, scale, zp, 0, -qmax, qmax)
    expected = fq.reshape(moved.shape).movedim(-1, axis)
    y = numerics.quantize(x, name, axis=axis, backend=backend)
    assert y.shape == x.shape
    assert_same(y, expected, x, f"{name} {shape} axis={axis}", zero_sign=False)


def test_per_channel_weight_layout() -> None:
    """(out, in) weight, axis=-1: one scale per output row, i.e. torch's channel axis 0."""
    w = sample((32, 64), seed=3, kind="normal")
    w[5] *= 100  # one row much larger: per-tensor would crush the others
    scale = w.abs().amax(dim=1) / 127
    expected = torch.fake_quantize_per_channel_affine(
        w, scale, torch.zeros(32, dtype=torch.int32), 0, -127, 127
    )
    assert_same(numerics.quantize(w, "int8_pc"), expected, w, "int8_pc", zero_sign=False)
    # and this is not what per-tensor quantisation gives
    assert not torch.equal(numerics.quantize(w, "int8"), expected)


# --- other rounding modes -------------------------------------------------------------------------
@pytest.mark.parametrize("mode", DETERMINISTIC)
@pytest.mark.parametrize(
    ("name", "axis"), [("int8", -1), ("int4", -1), ("int8_pc", -1), ("int4_pc", 0)]
)
def test_int_modes_match_formula(name: str, axis: int, mode: str) -> None:
    qmax = QMAX[name]
    x = sample((40, 300), seed=11, kind="wide")
    x[0, :7] = torch.tensor([0.5, 1.5, -2.5, -0.0, 0.0, 1e-30, -1e-30])
    moved = x.movedim(axis, -1).numpy()
    rows = moved.reshape(-1, moved.shape[-1]) if name.endswith("_pc") else moved.reshape(1, -1)
    expected = torch.from_numpy(int_formula(rows, qmax, mode).reshape(moved.shape)).movedim(
        -1, axis
    )
    for backend in BACKENDS:
        y = numerics.quantize(x, name, mode, axis=axis, backend=backend)
        assert_same(y, expected, x, f"{name} {mode} [{backend}]")


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("name", ["int8", "int4", "int8_pc", "int4_pc"])
def test_int_eager_matches_reference(name: str, mode: str) -> None:
    x = sample((33, 257), seed=5, kind="outlier")
    x[4, 4], x[6, 9] = -0.0, 1e-38
    for axis in (-1, 0):
        y_e = numerics.quantize(x, name, mode, 7, axis, backend="eager")
        y_r = numerics.quantize(x, name, mode, 7, axis, backend="reference")
        assert_same(y_e, y_r, x, f"{name} {mode} axis={axis}")
        if mode == "stochastic":  # the result lies on the integer grid of its scale
            qmax = QMAX[name]
            moved = x.movedim(axis, -1)
            if name.endswith("_pc"):
                scale = (moved.abs().amax(dim=-1, keepdim=True) / qmax).movedim(-1, axis)
            else:
                scale = x.abs().amax() / qmax
            k = (y_e / scale).double()
            assert (k - k.round()).abs().max() < 1e-4 and k.abs().max() < qmax + 1e-4


def test_int_specials() -> None:
    z = torch.zeros(3, 4)
    for name in QMAX:
        for backend in BACKENDS:
            assert_same(numerics.quantize(z, name, backend=backend), z, z, f"{name} zeros")
    # a NaN or inf makes its scale NaN: the whole tensor (per tensor) or row (per channel)
    x = torch.tensor([[1.0, 2.0, -3.0], [0.5, NAN, 1.0], [1.0, -INF, 0.0], [4.0, 2.0, 1.0]])
    for backend in BACKENDS:
        assert torch.isnan(numerics.quantize(x, "int8", backend=backend)).all()
        y = numerics.quantize(x, "int8_pc", backend=backend)
        assert torch.isnan(y[1:3]).all()
        ok = torch.tensor([0, 3])
        scale = x[ok].abs().amax(dim=1) / 127
        expected = torch.fake_quantize_per_channel_affine(
            x[ok], scale, torch.zeros(2, dtype=torch.int32), 0, -127, 127
        )
        assert_same(y[ok], expected, x[ok], "finite rows", zero_sign=False)
    with pytest.raises(ValueError, match="saturate"):
        numerics.quantize(torch.ones(3), "int8", saturate=False)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_int_half_inputs(dtype: torch.dtype) -> None:
    x = sample((16, 100), seed=9, kind="normal").to(dtype)
    x32 = x.float()
    expected = torch.fake_quantize_per_tensor_affine(
        x32, float(x32.abs().amax() / 127), 0, -127, 127
    ).to(dtype)
    y = numerics.quantize(x, "int8")
    assert y.dtype == dtype
    assert_same(y, expected, x32, f"int8 {dtype}", zero_sign=False)


# --- fixed point ----------------------------------------------------------------------------------
FIXED = {
    "fixed16_8": FixedFormat("fixed16_8", 16, 8),
    "fixed8_4": FixedFormat("fixed8_4", 8, 4),
    "q12_3": FixedFormat("q12_3", 12, 3),
    "sym4_1": FixedFormat("sym4_1", 4, 1, symmetric=True),
    "neg8_m2": FixedFormat("neg8_m2", 8, -2),
    "tiny8_20": FixedFormat("tiny8_20", 8, 20),
    "w2_0": FixedFormat("w2_0", 2, 0),
    "w25_10": FixedFormat("w25_10", 25, 10),
    "w25_0s": FixedFormat("w25_0s", 25, 0, symmetric=True),
}


def fixed_range(name: str) -> tuple[int, int, float]:
    """(kmin, kmax, step) straight from the definition."""
    f = FIXED[name]
    kmax = 2 ** (f.wl - 1) - 1
    kmin = -kmax if f.symmetric else -(2 ** (f.wl - 1))
    return kmin, kmax, 2.0**-f.fl


def fixed_oracle(x: np.ndarray, name: str, mode: str) -> np.ndarray:
    kmin, kmax, step = fixed_range(name)
    x64 = np.asarray(x, np.float32).astype(np.float64)
    r = np.where(np.isfinite(x64), x64 / step, np.sign(x64) * 2.0**60)  # exact: step = 2**-fl
    k = {
        "nearest_even": np.rint,
        "nearest_away": lambda t: np.copysign(np.floor(np.abs(t) + 0.5), t),
        "toward_zero": np.trunc,
        "down": np.floor,
        "up": np.ceil,
    }[mode](r)
    k = np.clip(k, kmin, kmax) + 0.0  # a two's-complement word has one zero: +0
    return (k * step).astype(np.float32)


def fixed_inputs(name: str) -> np.ndarray:
    kmin, kmax, step = fixed_range(name)
    n = kmax - kmin + 1
    ks = (
        np.arange(kmin, kmax + 1)
        if n <= 70_000
        else np.unique(
            np.concatenate(
                [
                    np.arange(kmin, kmin + 3000),
                    np.arange(-3000, 3000),
                    np.arange(kmax - 3000, kmax + 1),
                    np.random.default_rng(0).integers(kmin, kmax, 20_000),
                ]
            )
        )
    )
    grid = np.concatenate([ks, [kmin - 1, kmax + 1]]) * step
    mids = (np.arange(kmin - 1, kmax + 1) + 0.5) * step if n <= 70_000 else (ks + 0.5) * step
    pts64 = np.concatenate([grid, mids])
    pts = pts64.astype(np.float32)
    pts = pts[pts.astype(np.float64) == pts64]  # 25-bit words: top ties need 26 bits, dropped
    assert pts.size > 0.7 * pts64.size
    rng = np.random.default_rng(n)
    x = np.concatenate(
        [
            pts,
            np.nextafter(pts, np.float32(np.inf)),
            np.nextafter(pts, np.float32(-np.inf)),
            (rng.uniform(-1.5, 1.5, 20_000) * kmax * step).astype(np.float32),
            rng.integers(0, 2**32, 20_000, dtype=np.uint32).view(np.float32),
            np.array([0.0, -0.0, INF, -INF, NAN, 1e-45, -1e-45, 3e38, -3e38], np.float32),
        ]
    )
    return x.astype(np.float32)


# Regression: 25-bit words (24 significant bits in the grid's top binade) once went through a
# nearest_even fast path ((|x| + c) - c with c = 2**(E + 23 - m)) that, for m = 23, rounded exact
# odd grid values to even: FixedFormat(wl=25, fl=0) turned 16777209.0 into 16777208.0.
def _fixed_params(modes: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(name, mode) for name in FIXED for mode in modes]


@pytest.mark.parametrize(("name", "mode"), _fixed_params(DETERMINISTIC))
def test_fixed_matches_grid_oracle(name: str, mode: str) -> None:
    x = fixed_inputs(name)
    expected = fixed_oracle(x, name, mode)
    fmt = FIXED[name] if name not in ("fixed16_8", "fixed8_4") else name  # registered by name
    for backend in BACKENDS:
        y = numerics.quantize(torch.from_numpy(x.copy()), fmt, mode, backend=backend)
        nan = np.isnan(x)
        assert torch.isnan(y[torch.from_numpy(nan)]).all()
        assert_same(
            y[torch.from_numpy(~nan)], expected[~nan], x[~nan], f"{name} {mode} [{backend}]"
        )


@pytest.mark.parametrize(("name", "mode"), _fixed_params(ALL_MODES))
def test_fixed_eager_matches_reference(name: str, mode: str) -> None:
    x = torch.from_numpy(fixed_inputs(name)[::3].copy())
    y_e = numerics.quantize(x, FIXED[name], mode, 3, backend="eager")
    y_r = numerics.quantize(x, FIXED[name], mode, 3, backend="reference")
    assert_same(y_e, y_r, x, f"{name} {mode}")


S8 = 2.0**-8
HAND_FIXED = [
    # fixed16_8: step 2**-8, range [-128, 128 - 2**-8]
    ("fixed16_8", "nearest_even", 1 + S8, 1 + S8),
    ("fixed16_8", "nearest_even", 1 + S8 / 2, 1.0),  # tie, k = 256 even
    ("fixed16_8", "nearest_away", 1 + S8 / 2, 1 + S8),
    ("fixed16_8", "up", 1 + S8 / 2, 1 + S8),
    ("fixed16_8", "down", 1 + S8 / 2, 1.0),
    ("fixed16_8", "toward_zero", 1 + S8 / 2, 1.0),
    ("fixed16_8", "nearest_even", 1 + 3 * S8 / 2, 1 + 2 * S8),  # tie, k = 257 odd
    ("fixed16_8", "nearest_even", -(1 + S8 / 2), -1.0),
    ("fixed16_8", "nearest_away", -(1 + S8 / 2), -(1 + S8)),
    ("fixed16_8", "up", -(1 + S8 / 2), -1.0),
    ("fixed16_8", "down", -(1 + S8 / 2), -(1 + S8)),
    ("fixed16_8", "nearest_even", 200.0, 128 - S8),
    ("fixed16_8", "nearest_even", -200.0, -128.0),
    ("fixed16_8", "nearest_even", INF, 128 - S8),
    ("fixed16_8", "nearest_even", -INF, -128.0),
    ("fixed16_8", "up", INF, 128 - S8),
    ("fixed16_8", "nearest_even", 128 - S8 / 2, 128 - S8),  # tie to k = 32768: saturates
    ("fixed16_8", "nearest_even", -(128 - S8 / 2), -128.0),  # tie to k = -32768: in range
    ("fixed16_8", "nearest_even", -(128 + S8 / 2), -128.0),
    ("fixed16_8", "up", -128.5, -128.0),
    ("fixed16_8", "down", -128.5, -128.0),
    ("fixed16_8", "up", 127.999, 128 - S8),
    ("fixed16_8", "down", 127.999, 128 - S8),
    ("fixed16_8", "nearest_even", S8 / 2, 0.0),
    ("fixed16_8", "nearest_even", 3 * S8 / 2, 2 * S8),
    ("fixed16_8", "nearest_even", -0.001, 0.0),
    ("fixed16_8", "nearest_even", -0.0, 0.0),
    ("fixed16_8", "up", 1e-40, S8),
    ("fixed16_8", "down", -1e-40, -S8),
    ("fixed16_8", "up", -1e-40, 0.0),
    ("fixed16_8", "nearest_even", NAN, NAN),
    # fixed8_4: step 1/16, range [-8, 7.9375]
    ("fixed8_4", "up", 0.03, 0.0625),
    ("fixed8_4", "up", -0.03, 0.0),
    ("fixed8_4", "down", 0.03, 0.0),
    ("fixed8_4", "down", -0.03, -0.0625),
    ("fixed8_4", "toward_zero", -7.99, -7.9375),
    ("fixed8_4", "down", -8.5, -8.0),
    ("fixed8_4", "up", 100.0, 7.9375),
    ("fixed8_4", "nearest_even", 7.96875, 7.9375),
    ("fixed8_4", "nearest_even", -7.96875, -8.0),
    ("fixed8_4", "toward_zero", -7.96875, -7.9375),
    ("fixed8_4", "nearest_even", 3.03125, 3.0),
    ("fixed8_4", "nearest_even", 3.09375, 3.125),
    ("fixed8_4", "nearest_away", 3.03125, 3.0625),
    ("fixed8_4", "nearest_even", 0.1, 0.125),  # 1.6 steps
    # symmetric, step 0.5, range [-3.5, 3.5]
    ("sym4_1", "nearest_even", -3.75, -3.5),
    ("sym4_1", "down", -100.0, -3.5),
    ("sym4_1", "nearest_even", 3.75, 3.5),
    ("sym4_1", "nearest_even", -INF, -3.5),
    ("sym4_1", "nearest_even", 1.25, 1.0),
    ("sym4_1", "nearest_even", 1.75, 2.0),
    # negative fl: step 4, range [-512, 508]
    ("neg8_m2", "nearest_even", 6.0, 8.0),
    ("neg8_m2", "nearest_even", 10.0, 8.0),
    ("neg8_m2", "nearest_even", 509.0, 508.0),
    ("neg8_m2", "nearest_even", 510.0, 508.0),
    ("neg8_m2", "nearest_even", -514.0, -512.0),
    ("neg8_m2", "up", -1000.0, -512.0),
    ("neg8_m2", "nearest_even", 1.9, 0.0),
    ("neg8_m2", "nearest_even", 2.1, 4.0),
    ("neg8_m2", "up", 0.5, 4.0),
    # step 2**-20, range [-128, 127] * 2**-20
    ("tiny8_20", "nearest_even", 2.0**-21, 0.0),
    ("tiny8_20", "nearest_even", 3 * 2.0**-21, 2.0**-19),
    ("tiny8_20", "nearest_even", 1.0, 127 * 2.0**-20),
    ("tiny8_20", "nearest_even", -1.0, -128 * 2.0**-20),
    ("tiny8_20", "up", 2.0**-30, 2.0**-20),
    # 2-bit words: {-2, -1, 0, 1}
    ("w2_0", "nearest_even", 0.5, 0.0),
    ("w2_0", "nearest_even", 1.5, 1.0),
    ("w2_0", "nearest_even", -1.5, -2.0),
    ("w2_0", "nearest_even", -2.5, -2.0),
    ("w2_0", "nearest_even", -0.5, 0.0),
    ("w2_0", "down", 0.7, 0.0),
    ("w2_0", "down", -0.7, -1.0),
    # 25-bit words: the widest allowed
    ("w25_0s", "nearest_even", 16777215.0, 16777215.0),
    ("w25_0s", "nearest_even", 16777216.0, 16777215.0),
    ("w25_0s", "nearest_even", -1e9, -16777215.0),
    ("w25_0s", "nearest_even", 2.5, 2.0),
    ("w25_0s", "nearest_away", -2.5, -3.0),
    ("w25_10", "nearest_even", 1e9, (2**24 - 1) / 1024),
    ("w25_10", "nearest_even", -1e9, -16384.0),
    ("w25_10", "nearest_even", 1 + 2**-11, 1.0),
    ("w25_10", "up", 1 + 2**-20, 1 + 2**-10),
    ("w25_0s", "toward_zero", 16777209.0, 16777209.0),
    ("w25_0s", "nearest_away", 16777209.0, 16777209.0),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("name", "mode", "x", "expected"), HAND_FIXED)
def test_fixed_hand_computed(name: str, mode: str, x: float, expected: float, backend: str) -> None:
    xt = torch.tensor([x], dtype=torch.float32)
    y = numerics.quantize(xt, FIXED[name], mode, backend=backend)
    assert_same(y, np.array([expected], np.float32), xt, f"{name} {mode}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("name", "x"),
    [
        ("w25_0s", 16777209.0),
        ("w25_0s", 8388609.0),
        ("w25_0s", -16777207.0),
        ("w25_10", 8192 + 2**-10),
        ("w25_10", -(16383 + 2**-10)),
    ],
)
def test_fixed_25bit_nearest_even_keeps_grid_values(name: str, x: float, backend: str) -> None:
    """Grid values (odd k in the top binade) are exact: every mode must return them."""
    kmin, kmax, step = fixed_range(name)
    assert x / step == int(x / step) and kmin <= x / step <= kmax and float(np.float32(x)) == x
    xt = torch.tensor([x], dtype=torch.float32)
    y = numerics.quantize(xt, FIXED[name], "nearest_even", backend=backend)
    assert_same(y, np.array([x], np.float32), xt, f"{name} nearest_even")


@pytest.mark.parametrize("name", ["fixed16_8", "fixed8_4", "fixed12_3"])
def test_fixed_names_and_facts(name: str) -> None:
    fmt = numerics.formats.get(name)
    wl, fl = (int(v) for v in name.removeprefix("fixed").split("_"))
    assert (fmt.wl, fmt.fl) == (wl, fl)
    assert fmt.max == (2 ** (wl - 1) - 1) * 2.0**-fl
    assert fmt.min == -(2 ** (wl - 1)) * 2.0**-fl
    with pytest.raises(ValueError, match="saturate"):
        numerics.quantize(torch.ones(2), name, saturate=False)
    sym = FixedFormat("s", wl, fl, symmetric=True)
    assert sym.min == -sym.max
