"""Block formats (OCP MX, BFP, shared micro-exponents): hand-computed cases and properties.

Hand cases follow OCP MX v1.0 section 6.3: X = 2**(floor(log2(amax)) - emax_elem), elements
x / X converted with saturation; and arXiv 2302.08007 for MX9/MX6/MX4 (our encoding is in
numerics/formats/block.py).
"""

import ml_dtypes
import numpy as np
import pytest
import torch

import numerics
from numerics import formats
from numerics.formats import FixedFormat
from numerics.formats.block import BlockFormat, SharedMicroExpFormat

MODES = ["nearest_even", "nearest_away", "toward_zero", "up", "down", "stochastic"]


def block(*values: float, size: int = 32) -> torch.Tensor:
    out = torch.zeros(size)
    out[: len(values)] = torch.tensor(values)
    return out


def q(x, fmt, **kw):
    return numerics.quantize(x, fmt, **kw)


def test_mxfp8_e4m3_hand_cases():
    # amax 1 -> E = 0, X = 2**(0 - 8); x / X = 256, 128, 25.6 -> e4m3 256, 128, 26 (step 2).
    y = q(block(1.0, 0.5, 0.1), "mxfp8_e4m3")
    assert y[:3].tolist() == [1.0, 0.5, 26 * 2.0**-8]
    # amax 500 -> E = 8, X = 1: 500 saturates to 448 (MX elements saturate, never NaN).
    y = q(block(500.0, 0.1, -3.3), "mxfp8_e4m3")
    assert y[:3].tolist() == [448.0, 0.1015625, -3.25]


def test_mxfp4_floor_and_ceil_scale_rules():
    # amax 6.5: floor rule E = 2, X = 2**(2-2) = 1, 6.5 saturates to 6, 1 stays 1.
    assert q(block(6.5, 1.0), "mxfp4_e2m1")[:2].tolist() == [6.0, 1.0]
    # ceil rule: 6.5 > 6 * 2**0, so X = 2: 3.25 -> 3 (grid ..2,3,4..) -> 6; 0.5 -> 0.5 -> 1.
    assert q(block(6.5, 1.0), "mxfp4_e2m1_ceil")[:2].tolist() == [6.0, 1.0]
    # amax 7.9: floor saturates to 6; ceil: X = 2, 3.95 -> 4 -> 8.
    assert q(block(7.9), "mxfp4_e2m1")[0].item() == 6.0
    assert q(block(7.9), "mxfp4_e2m1_ceil")[0].item() == 8.0
    # amax exactly 6: ceil keeps X = 1 (6 <= 6 * 2**0).
    assert q(block(6.0, 0.75), "mxfp4_e2m1_ceil")[:2].tolist() == [6.0, 1.0]


def test_mxint8_is_a_fixed_grid_of_64ths():
    # amax 1.5 -> E = 0, emax_elem 0, X = 1; elements k/64, |k| <= 127.
    y = q(block(1.5, 0.3, -1.99), "mxint8")
    assert y[:3].tolist() == [1.5, 19 / 64, -127 / 64]


def test_bfp_hand_cases():
    # bfp8_b16: E = floor(log2(amax)), step 2**(E - 6); amax 1.0 -> step 1/64.
    # -2**-7 is half a step: a tie, to the even code 0 (sign kept); 3 * 2**-7 is 1.5 steps: 2.
    y = q(block(1.0, 0.3, -(2.0**-7), 3 * 2.0**-7, size=16), "bfp8_b16")
    assert y[:4].tolist() == [1.0, 19 / 64, -0.0, 2 / 64]
    # 1.999 -> 127.94/64 rounds to 128/64 = 2, beyond 127/64: saturates.
    assert q(block(1.999, size=16), "bfp8_b16")[0].item() == 127 / 64


def test_mx6_micro_exponents():
    # mx6: M = 4. amax 1.0 -> E = 0. Pair (1.0, 0.3): tau 0, step 2**(0-0-3) = 1/8.
    # Pair (0.3, 0.2): pair exponent -2, tau = 1, step 1/16: 0.3 -> 5/16, 0.2 -> 3/16.
    # Pair (0.99, 0): exponent -1, tau 1, max 15/16: 0.99 -> 16/16 saturates to 15/16.
    x = block(1.0, 0.3, 0.3, 0.2, 0.99, 0.0, size=16)
    y = q(x, "mx6")
    assert y[:6].tolist() == [1.0, 0.25, 5 / 16, 3 / 16, 15 / 16, 0.0]


def test_nan_or_inf_poison_only_their_block():
    x = torch.randn(3, 32)
    x[1, 7] = float("nan")
    x[2, 0] = float("inf")
    for name in ("mxfp8_e4m3", "bfp8_b16", "mx9"):
        k = formats.get(name).block_size
        y = q(x, name)
        assert not torch.isnan(y[0]).any()
        assert torch.isnan(y[1, :k]).all() and torch.isnan(y[2, :k]).all()
        assert not torch.isnan(y[1:, k:]).any()  # the next block of each row is untouched


@pytest.mark.parametrize("name", ["mxfp8_e4m3", "mxfp4_e2m1", "mxint8", "bfp8_b16", "mx4"])
def test_zero_blocks_stay_zero(name):
    # Float elements (sign-magnitude) keep -0; two's-complement elements have only +0.
    x = torch.tensor([0.0, -0.0] * 16)
    y = q(x, name)
    twos_complement = formats.get(name).element.kind == "fixed"
    expected = torch.zeros_like(x) if twos_complement else x
    assert torch.equal(y.view(torch.int32), expected.view(torch.int32))


def test_tiny_blocks_use_the_clamped_scale():
    # amax 2**-130 (float32 subnormal): E = -130 - 8 clamps to -127; x * 2**127 = 2**-3 is an
    # e4m3 value, so it survives; 2**-140 -> 2**-13 < half the e4m3 min subnormal 2**-9 -> 0.
    x = block(2.0**-130, 2.0**-140)
    assert q(x, "mxfp8_e4m3")[:2].tolist() == [2.0**-130, 0.0]
    # Rounding up keeps a nonzero element even when x * 2**127 underflows float32.
    assert q(block(2.0**-118, 2.0**-149), "mxfp8_e4m3", rounding="up")[1].item() > 0


def test_partial_blocks_and_padding_never_change_results():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 45, generator=g)
    padded = torch.cat([x, torch.zeros(5, 19)], dim=1)  # 64 = two whole blocks
    for name in ("mxfp6_e2m3", "bfp4_b16", "mx6"):
        assert torch.equal(q(x, name), q(padded, name)[:, :45])
    # the trailing 13-element block is a block of its own: its scale ignores earlier blocks
    lone = x[:, 32:]
    assert torch.equal(q(x, "mxfp8_e4m3")[:, 32:], q(lone, "mxfp8_e4m3"))


def test_axis_selects_the_blocking_dimension():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(64, 48, generator=g) * torch.logspace(-3, 3, 48)
    y0 = q(x, "mxfp8_e5m2", axis=0)
    assert torch.equal(y0, q(x.T.contiguous(), "mxfp8_e5m2", axis=-1).T)
    assert not torch.equal(y0, q(x, "mxfp8_e5m2", axis=-1))


def test_block_size_is_selectable():
    x = torch.cat([torch.full((16,), 100.0), torch.full((16,), 0.01)])
    # one block of 32: X = 2**(6 - 8); 0.01 / X = 0.04, e4m3 step there 2**-8: 10.24 -> 10
    assert q(x, "mxfp8_e4m3")[-1].item() == 10 * 2.0**-8 * 2.0**-2
    # blocks of 16: the small half gets its own scale and keeps more precision
    assert q(x, "mxfp8_e4m3_b16")[-1].item() == pytest.approx(0.01, rel=2**-4)
    assert (
        q(x, "mxfp8_e4m3_b16")[-1].item()
        == np.float32(np.float32(0.01 / 2.0**-15).astype(ml_dtypes.float8_e4m3fn)) * 2.0**-15
    )


ML_ELEM = {
    "mxfp8_e4m3": ml_dtypes.float8_e4m3fn,
    "mxfp8_e5m2": ml_dtypes.float8_e5m2,
    "mxfp6_e3m2": ml_dtypes.float6_e3m2fn,
    "mxfp6_e2m3": ml_dtypes.float6_e2m3fn,
    "mxfp4_e2m1": ml_dtypes.float4_e2m1fn,
}


@pytest.mark.parametrize("name", sorted(ML_ELEM))
@pytest.mark.parametrize("mode", MODES)
def test_outputs_are_scale_times_an_element(name, mode):
    """Property: y = 2**s * e with s in [-127, 127] and e an element value (ml_dtypes)."""
    fmt = formats.get(name)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(200, 32, generator=g) * torch.logspace(-30, 30, 200)[:, None]
    y = q(x, name, rounding=mode, generator=7).double().numpy()
    xs = x.double().numpy()
    amax = np.abs(xs).max(axis=1)
    s = np.clip(np.floor(np.log2(amax)) - fmt.emax_elem, -127, 127)
    elems = y / 2.0 ** s[:, None]
    roundtrip = elems.astype(np.float32).astype(ML_ELEM[name]).astype(np.float64)
    assert np.array_equal(roundtrip, elems)
    assert np.all(np.abs(elems) <= fmt.element.max)
    # and each element is one of the two grid neighbours of x / 2**s
    lo = np.minimum(y, xs)
    hi = np.maximum(y, xs)
    assert np.all(
        hi - lo
        <= np.abs(xs) * 2.0**-fmt.element.mbits
        + 2.0 ** (s[:, None] - 140)
        + 2.0 ** (s[:, None] + fmt.element.emin - fmt.element.mbits)
    )


@pytest.mark.parametrize(
    "name",
    [
        "mxfp8_e4m3",
        "mxfp4_e2m1",
        "mxint8",
        "bfp8_b16",
        "bfp4_b16",
        "mx9",
        "mx6",
        "mx4",
        "mxfp6_e3m2_ceil",
    ],
)
@pytest.mark.parametrize("mode", MODES)
def test_kernel_equals_reference(name, mode):
    """The fast kernel against the float64 reference, with awkward values in every block."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(40, 70, generator=g) * torch.logspace(-40, 38, 40)[:, None]
    x[0, :10] = 1e-45
    x[1, 3] = float("nan")
    x[2, 60] = -float("inf")
    x[3] = 0.0
    x[4, ::2] = -0.0
    # beside a huge value, values that underflow to zero in element space (x / scale below
    # float32's smallest subnormal): directed modes must still see them as nonzero
    x[5, :8] = torch.tensor([3e38, 1e-30, -1e-30, 1e-38, -1e-45, 5.0, -0.0, 0.0])
    # along axis 1 of (4, 10, 70): blocks read in place with several leading rows
    for xx, axis in ((x, -1), (x, 0), (x.reshape(4, 10, 70), 1)):
        fast = q(xx, name, rounding=mode, generator=11, axis=axis, backend="eager")
        ref = q(xx, name, rounding=mode, generator=11, axis=axis, backend="reference")
        same = (fast.view(torch.int32) == ref.view(torch.int32)) | (fast.isnan() & ref.isnan())
        assert same.all(), (name, mode, axis, xx[~same][:4], fast[~same][:4], ref[~same][:4])


@pytest.mark.parametrize("sub", [1, 4, 8])
@pytest.mark.parametrize("mode", ["nearest_even", "up", "stochastic"])
def test_user_sub_block_sizes_against_the_reference(sub, mode):
    """A user's shared micro-exponent format whose sub-blocks are not pairs: each element's
    tau must come from its own run of ``sub`` (the kernels find the run's maximum from
    shifted copies; a run boundary off by one changes tau)."""
    fmt = SharedMicroExpFormat(f"smx_sub{sub}", mbits=4, block_size=16, sub_block=sub)
    g = torch.Generator().manual_seed(5)
    # one binade apart in alternate runs, so tau differs from run to run
    x = torch.randn(64, 48, generator=g) * torch.logspace(-3, 3, 48)[None, :]
    x[:, ::3] *= 0.3
    for axis in (-1, 0):
        ref = q(x, fmt, rounding=mode, generator=7, axis=axis, backend="reference")
        for backend in ("eager", "compiled"):
            fast = q(x, fmt, rounding=mode, generator=7, axis=axis, backend=backend)
            assert torch.equal(fast.view(torch.int32), ref.view(torch.int32)), (backend, axis)


def test_ceil_rule_never_scales_past_float32():
    # amax 3.3e38: floor(log2) = 127, floor rule s = 125 and 3.3e38 / 2**125 = 7.76 saturates
    # to 6; the ceil rule would want s = 126 (element 4 -> 4 * 2**126 = 2**128 = inf), so it is
    # capped at 127 - emax_elem = 125 and saturates like the floor rule.
    y = q(torch.tensor([3.3e38, 1.0]), "mxfp4_e2m1_ceil")
    assert y.tolist() == [6 * 2.0**125, 0.0]


@pytest.mark.parametrize("mode", MODES)
def test_a_twos_complement_element_grid_reaches_its_negative_end(mode):
    """A user's block format whose fixed-point element is two's complement (-2 .. 2 - 2**-6,
    not symmetric): -1.995 lies nearer -2 than -1.984375, a value only the negative side has."""
    fmt = BlockFormat("asym8", FixedFormat("q8", 8, 6), block_size=4)
    x = torch.tensor([[-1.995, 1.0, 0.5, 0.25], [1.995, -1.0, 0.5, 0.25]])
    want = {  # first column, by hand: step 2**-6 = 0.015625 below 2 in magnitude
        "nearest_even": [-2.0, 1.984375],
        "nearest_away": [-2.0, 1.984375],
        "toward_zero": [-1.984375, 1.984375],
        "up": [-1.984375, 1.984375],  # +2 does not exist: saturates
        "down": [-2.0, 1.984375],
    }
    for backend in ("eager", "compiled", "reference"):
        y = q(x, fmt, rounding=mode, generator=3, backend=backend)
        if mode in want:
            assert y[:, 0].tolist() == want[mode], backend
        else:  # stochastic: one of the two neighbours
            assert y[0, 0].item() in (-2.0, -1.984375) and y[1, 0].item() == 1.984375
        assert torch.equal(y, q(x, fmt, rounding=mode, generator=3, backend="reference"))
    small = q(x, fmt, backend="auto")  # the lean eager path of small tensors
    assert small[0, 0].item() == -2.0
