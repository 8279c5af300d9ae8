"""The few-pass eager block kernels (numerics/kernels/lean.py) against the float64 reference:
every registered block format, tensors of 1 to 4 dims blocked along every axis (the kernels
reduce in place on a (pre, blocks, block, post) view instead of transposing), partial blocks,
and the awkward values: NaN and inf (poison their block), -0, float32 subnormals, blocks at
the top and the bottom of the E8M0 range.
"""

import pytest
import torch

import numerics
from numerics import formats
from numerics.formats import BlockFormat, SharedMicroExpFormat
from numerics.kernels import lean, settings

BLOCK_FORMATS = [
    n for n in formats.names() if isinstance(formats.get(n), BlockFormat | SharedMicroExpFormat)
]


def same_bits(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.view(torch.int32) == b.view(torch.int32)) | (a.isnan() & b.isnan())


def awkward(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    flat = x.view(-1)
    n = flat.numel()
    # spread magnitudes over the whole float32 range, element by element
    flat.mul_(torch.pow(2.0, torch.randint(-140, 120, (n,), generator=g).float()))
    picks = torch.randperm(n, generator=g)
    specials = [-0.0, 0.0, 1e-45, -3e-39, 3.4e38, -2.5e-40]
    for i, v in zip(picks[: len(specials)].tolist(), specials, strict=False):
        flat[i] = v
    flat[0], flat[-1] = float("nan"), -float("inf")  # each poisons only its own block
    return x


def test_every_block_format_is_covered():
    assert {"mxfp8_e4m3", "mxfp4_e2m1", "mxint8", "bfp8_b16", "mx9", "mx6", "mx4"} <= set(
        BLOCK_FORMATS
    )
    assert all(lean.supports(formats.get(n)) for n in BLOCK_FORMATS)


@pytest.mark.parametrize("name", BLOCK_FORMATS)
@pytest.mark.parametrize("shape", [(77,), (5, 70), (3, 40, 6), (2, 3, 33, 2)])
def test_lean_equals_reference_on_every_axis(name, shape):
    fmt = formats.get(name)
    x = awkward(shape, seed=len(shape) * 31 + len(name))
    for axis in range(-len(shape), len(shape)):
        fast = lean.block_nearest(x, axis, fmt)
        ref = numerics.quantize(x, name, axis=axis, backend="reference")
        ok = same_bits(fast, ref)
        assert ok.all(), (name, shape, axis, x[~ok][:4], fast[~ok][:4], ref[~ok][:4])
        assert ref.isnan().float().mean() < 0.75  # most blocks carry finite values


@pytest.mark.parametrize("name", ["mxfp8_e4m3", "mxint8", "mx6", "mxfp4_e2m1_ceil"])
def test_whole_blocks_at_the_range_ends(name):
    """Blocks whose scale clamps at 2**-127 (tiny values) or reaches the top of E8M0."""
    x = torch.zeros(4, 64)
    x[0] = torch.linspace(-1e-38, 1e-38, 64)  # scale 2**-127, values near float32 subnormal
    x[1] = torch.linspace(-3.4e38, 3.4e38, 64)  # scale near 2**127
    x[2, ::3] = 1e-45  # float32 subnormals only
    x[3] = -0.0
    for axis in (0, 1):
        fast = lean.block_nearest(x, axis, formats.get(name))
        ref = numerics.quantize(x, name, axis=axis, backend="reference")
        assert same_bits(fast, ref).all(), (name, axis)


def test_auto_backend_uses_the_lean_path_for_small_tensors(monkeypatch):
    calls = []
    real = lean.block_nearest

    def spy(x, axis, fmt):
        calls.append(x.numel())
        return real(x, axis, fmt)

    monkeypatch.setattr(lean, "block_nearest", spy)
    # blocks of 8 along the last axis: the C++ kernels (kernels/native.py) do not take them
    numerics.quantize(torch.randn(64, 32), "mxfp8_e4m3_b8")
    numerics.quantize(torch.randn(64, 32), "mxfp8_e4m3_b8", "stochastic", generator=1)
    assert calls == [2048]  # nearest_even only; stochastic runs the general kernel
    numerics.quantize(torch.randn(8, 64), "mxfp8_e4m3")
    numerics.quantize(torch.randn(64, 32), "mxfp8_e4m3", axis=0)
    assert calls == [2048]  # blocks of 32, along either axis: the C++ kernel
    with settings.override(cpp=False):
        numerics.quantize(torch.randn(8, 64), "mxfp8_e4m3")
    assert calls == [2048, 512]
