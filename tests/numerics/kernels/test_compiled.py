"""Each compiled kernel equals its eager path bit for bit (the eager path is itself tested
against the float64 reference and the oracles). One format per kernel family, every rounding
mode, odd sizes so the vectorised loops' tails run too. The first run on a machine compiles
(a few seconds per kernel); later runs hit the Inductor cache.
"""

import math

import pytest
import torch

import numerics
from numerics.kernels import compiled, settings
from numerics.kernels.layout import IN_PLACE_MIN_POST

MODES = ["nearest_even", "nearest_away", "toward_zero", "up", "down", "stochastic"]
FAMILIES = {
    "element": ("fp8_e4m3", (3, 1001)),
    "int": ("int8_pc", (37, 129)),
    "block": ("mxfp6_e2m3", (37, 100)),
    "block_fixed": ("bfp4_b16", (37, 100)),
    "smx": ("mx6", (5, 99)),
}


@pytest.fixture(autouse=True)
def inductor_only():
    """These tests are about the Inductor kernels, so the hand-written C++ block kernels,
    which would take the CPU's last-axis BFP and MX9/6/4 casts, are off (test_native.py
    holds them to the eager kernels)."""
    with settings.override(cpp=False):
        yield


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit for bit, except that NaNs match NaNs (a NaN's payload is not part of the contract)."""
    nan = torch.isnan(a)
    return torch.equal(nan, torch.isnan(b)) and torch.equal(
        a.view(torch.int32)[~nan], b.view(torch.int32)[~nan]
    )


def _awkward(shape: tuple[int, int]) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g) * torch.logspace(-42, 37, shape[0])[:, None]
    x[0, :5] = torch.tensor([0.0, -0.0, float("inf"), 1e-45, -3e38])
    x[1, 3] = float("nan")
    return x


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("mode", MODES)
def test_compiled_equals_eager(family, mode):
    name, shape = FAMILIES[family]
    x = _awkward(shape)
    fast = numerics.quantize(x, name, mode, generator=3, backend="compiled")
    slow = numerics.quantize(x, name, mode, generator=3, backend="eager")
    assert same_bits(fast, slow)
    assert not any(k[0].startswith(family) and k[1].value == mode for k in compiled._BROKEN)


def test_one_compiled_kernel_serves_every_format_of_its_family():
    x = _awkward((4, 300))
    for name in ("bf16", "fp16", "fp6_e3m2", "e3m4", "fixed16_8", "fp16_ftz"):
        fast = numerics.quantize(x, name, backend="compiled")
        slow = numerics.quantize(x, name, backend="eager")
        assert same_bits(fast, slow), name


@pytest.mark.parametrize("name", ["bf16", "fp16"])
@pytest.mark.parametrize("saturate", [False, True])
def test_cast_paths_round_when_compiled(name, saturate):
    """bf16 and fp16 nearest_even run torch's own cast inside the compiled kernel; Inductor
    folds a float32 -> bf16 -> float32 round trip away unless told not to, so check that the
    compiled result really is rounded: against the float64 reference, not against the cast."""
    x = _awkward((6, 3001))
    x[2, :4] = torch.tensor([70000.0, -65520.0, 3.4e38, -1e39])
    fast = numerics.quantize(x, name, saturate=saturate, backend="compiled")
    ref = numerics.quantize(x, name, saturate=saturate, backend="reference")
    assert same_bits(fast, ref)
    assert (fast != x).sum() > x.numel() // 2
    assert not compiled._BROKEN


@pytest.mark.parametrize("name", ["fp8_e4m3", "int8_pc", "mxfp6_e2m3", "mx6"])
def test_one_trace_serves_shapes_with_equal_and_unit_dims(name):
    """Traces are symbolic in every size: dims that happen to be equal must not be unified
    (duck sizing), and a size-1 dim, which tracing specialises, gets a trace of its own."""
    shapes = [(37, 37), (37, 100), (100, 37), (1, 100), (100, 1), (3, 1, 5), (1, 20), (7, 20)]
    for shape in shapes:
        g = torch.Generator().manual_seed(sum(shape))
        x = torch.randn(*shape, generator=g) * 3.0
        for axis in (0, -1):
            fast = numerics.quantize(x, name, axis=axis, backend="compiled")
            slow = numerics.quantize(x, name, axis=axis, backend="reference")
            assert same_bits(fast, slow), (name, shape, axis)
    assert not compiled._BROKEN


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("mxfp6_e2m3", "nearest_even"),
        ("mxint8", "nearest_even"),
        ("mx6", "nearest_even"),
        ("mxfp6_e2m3", "up"),
        ("mx6", "stochastic"),
    ],
)
def test_blocks_are_read_in_place(name, mode):
    """Blocks along a non-last axis run in place as (nblocks, block, post) when post, the
    number of elements after the axis, is at least IN_PLACE_MIN_POST (a narrower post goes
    through a transposed copy; stochastic rounding numbers its random bits as that copy
    would), and an axis shorter than a block is one unpadded block (but for stochastic
    rounding, padded like the copy): against the float64 reference, with padding, several
    leading dims, short and odd axes, non-contiguous inputs and both routes. Each layout
    compiles a kernel of its own (a few seconds), so the layouts are few, nearest_even runs
    for each kernel family and a bit-pattern mode and stochastic rounding for one each (the
    rounding itself is the same code on every layout; test_compiled_equals_eager covers
    every mode)."""
    wide = _awkward((9, 40))
    cases = [
        (_awkward((37, 60)).reshape(37, 3, 20), 0),  # post 20, axis padded to 64
        (_awkward((3, 800)).reshape(3, 40, 20), 1),  # in place with 3 leading rows, padded
        (_awkward((2, 160)).reshape(2, 40, 4), 1),  # 40 elements per row -> 2 blocks, padded
        (_awkward((33, 9)).reshape(33, 3, 3), 0),  # post 9: the transposed copy
        (wide[:, :16], 1),  # a short row of a column slice
        (wide[:, 8:24], 0),  # a short axis, post 16, non-contiguous
        (wide.t(), 0),  # a transpose, post 9
        (_awkward((5, 7)), 1),  # an odd short row (mx6 pairs: padded)
    ]
    assert any(math.prod(x.shape[a + 1 :]) < IN_PLACE_MIN_POST for x, a in cases)
    for x, axis in cases:
        fast = numerics.quantize(x, name, mode, generator=5, axis=axis, backend="compiled")
        ref = numerics.quantize(x, name, mode, generator=5, axis=axis, backend="reference")
        assert same_bits(fast, ref), (name, mode, tuple(x.shape), x.stride(), axis)
    assert not compiled._BROKEN


def test_compiled_kernels_are_called_at_their_entry_point():
    """On this torch, each compiled kernel is called at Inductor's own entry point, past the
    wrappers standalone_compile puts around it (``compiled._direct``): the results are
    checked against the eager kernels above; this checks that the route is in use."""
    numerics.quantize(_awkward((8, 64)), "mxfp8_e4m3", backend="compiled")
    entries = list(compiled._COMPILED.values())
    assert entries and all(direct is not None for _, direct in entries)


@pytest.mark.parametrize("name", ["bfp4_b16", "mxfp6_e3m2_ceil"])
@pytest.mark.parametrize("mode", ["nearest_even", "up"])
def test_block_kernels_with_stored_scales_against_the_reference(name, mode):
    """The compiled block kernel stores each block's scale and inverse (extra outputs the
    caller drops) and its element loop reads them back: against the float64 reference, with
    NaN, inf, zero and subnormal blocks, both scale rules, blocks along the last axis and
    read in place along axis 0."""
    x = _awkward((64, 48))
    for axis in (-1, 0):
        fast = numerics.quantize(x, name, mode, axis=axis, backend="compiled")
        ref = numerics.quantize(x, name, mode, axis=axis, backend="reference")
        assert fast.isnan().any() and same_bits(fast, ref), (name, mode, axis)
    assert not compiled._BROKEN
