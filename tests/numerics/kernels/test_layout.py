"""The block layout (numerics/kernels/layout.py) against plain torch written here: blocks of
a padded axis-last copy, the in-place (nblocks, block, post) view, the way back, and the
numbering of stochastic rounding's random bits."""

import math

import pytest
import torch
import torch.nn.functional as F

import numerics
from numerics.kernels import layout

CASES = [  # (shape, axis, block): axis anywhere, partial blocks, axes shorter than a block
    ((37, 60), -1, 32),
    ((37, 60), 0, 32),
    ((3, 40, 20), 1, 16),
    ((2, 40, 4), 1, 32),
    ((33, 3, 3), 0, 32),
    ((5, 7), 1, 32),
    ((5, 7), 0, 4),
    ((64,), 0, 16),
    ((2, 3, 5, 17), 2, 2),
]


def axis_last_blocks(x: torch.Tensor, axis: int, block: int) -> torch.Tensor:
    """The oracle: the axis moved last, rows zero-padded to whole blocks, cut into blocks."""
    rows = x.movedim(axis, -1).reshape(-1, x.shape[axis])
    return F.pad(rows, (0, (-rows.shape[1]) % block)).reshape(-1, block)


@pytest.mark.parametrize(("shape", "axis", "block"), CASES)
@pytest.mark.parametrize("moved", [None, True, False])
@pytest.mark.parametrize("whole", [False, True])
def test_blocks_match_the_axis_last_layout_and_map_back(shape, axis, block, moved, whole):
    x = torch.randn(shape)
    view = layout.block_view(shape, axis, block, whole=whole, moved=moved)
    b = view.blocks(x)
    assert tuple(b.shape) == view.kernel_shape and b.is_contiguous()
    assert torch.equal(view.unblocks(b), x)
    length = shape[axis]
    size = block if whole or length >= block else length  # a short axis is one block
    want = axis_last_blocks(x, axis, size)  # (rows * blocks per row, size)
    post = math.prod(shape[axis % len(shape) + 1 :])
    if b.dim() == 3:  # read in place: block n = i * nbpa + k holds row (i, j)'s k-th block
        assert not view.moved and view.post == post > 1
        nbpa = view.blocks_per_axis
        got = b.reshape(-1, nbpa, size, post).permute(0, 3, 1, 2).reshape(-1, size)
        assert torch.equal(got, want)
    else:
        assert view.moved or post == 1
        assert torch.equal(b, want)
    if moved is None:
        assert view.moved == (post != 1 and post < layout.IN_PLACE_MIN_POST)


@pytest.mark.parametrize(("shape", "axis", "block"), CASES)
def test_random_bits_are_numbered_in_the_padded_axis_last_layout(shape, axis, block):
    """``sr_index`` of the in-place view gives each element its position among the blocks
    of the padded axis-last copy, which is numbered row-major."""
    view = layout.block_view(shape, axis, block, whole=True, moved=False)
    rows = math.prod(shape) // shape[axis]
    positions = torch.arange(rows * (shape[axis] + view.pad), dtype=torch.int32)
    # (pre, post, L + pad) row-major -> (pre, L + pad, post): the in-place order
    padded = positions.reshape(view.pre, view.post, -1).transpose(1, 2)
    want = padded.reshape(view.kernel_shape)
    got = layout.sr_index(view.kernel_shape, view.blocks_per_axis, torch.device("cpu"))
    assert torch.equal(got, want)


@pytest.mark.parametrize("name", ["mxfp8_e4m3", "mx6", "bfp8_b16"])
def test_stochastic_rounding_is_the_same_whichever_axis_is_last(name):
    """Random bits follow the axis-last layout: blocking x along axis 0 (read in place)
    draws the bits that blocking its transpose along the last axis does."""
    x = torch.randn(40, 48)
    along0 = numerics.quantize(x, name, "stochastic", generator=4, axis=0)
    last = numerics.quantize(x.t().contiguous(), name, "stochastic", generator=4, axis=-1)
    assert torch.equal(along0, last.t())


@pytest.mark.parametrize("shape", [(), (7,), (3, 5), (2, 3, 4)])
def test_rows_round_trip(shape):
    x = torch.randn(shape)
    for axis in range(-max(len(shape), 1), max(len(shape), 1)):
        r = layout.rows(x, axis)
        oracle = x.reshape(x.shape or (1,)).movedim(axis, -1)
        assert torch.equal(r, oracle.reshape(-1, oracle.shape[-1]))
        assert torch.equal(layout.unrows(r, shape, axis), x)
        assert layout.split(shape, axis)[1] == (shape[axis] if shape else 1)
