"""Block layout: how a tensor is cut into blocks along an axis, and how its random bits are
numbered.

A block format blocks ``x`` along ``axis``. Seen as ``(pre, L, post)`` (``pre``: the
product of the dims before the axis, ``L`` its length, ``post``: the product of the dims
after it), the axis is zero-padded to whole blocks (zeros never move a block maximum, so
padding never changes a result) and the kernels take

- ``(nblocks, block)`` when ``post`` is 1 (blocks are dense rows), or
- ``(nblocks, block, post)`` with each block along dim 1: the blocks read in place, with no
  transpose, when ``post`` is wide enough to vectorise along (``IN_PLACE_MIN_POST``);
  a narrower ``post`` goes through a copy with the axis moved last (``post`` 1 again).

Stochastic rounding numbers elements in the padded axis-last layout, whichever way the
blocks were read (``sr_index``), so the random bits are a function of (seed, position) only.
This module is the one place that layout is written: ``numerics.quantize``, the lean
kernels, ``numerics.encoding`` and the kernels' random bits all use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Blocks along a non-last axis are read in place, as (nblocks, block, post), when the
# elements after the axis number at least this many (a vector's width along post); below
# it post is too narrow to vectorise along, and a transposed copy wins.
IN_PLACE_MIN_POST = 16


def split(shape: tuple[int, ...], axis: int) -> tuple[int, int, int]:
    """``(pre, L, post)`` of ``shape`` around ``axis`` (a 0-d shape is one element)."""
    full = tuple(shape) or (1,)
    axis %= len(full)
    return math.prod(full[:axis]), full[axis], math.prod(full[axis + 1 :])


def rows(x: torch.Tensor, axis: int) -> torch.Tensor:
    """``x`` with ``axis`` moved last, as contiguous rows (the layout of channels)."""
    moved = x.reshape(x.shape or (1,)).movedim(axis, -1)
    return moved.reshape(math.prod(moved.shape[:-1]), moved.shape[-1]).contiguous()


def unrows(r: torch.Tensor, shape: tuple[int, ...], axis: int) -> torch.Tensor:
    """The inverse of ``rows``: rows back to a contiguous tensor of ``shape``."""
    full = list(shape) or [1]
    axis %= len(full)
    moved = full[:axis] + full[axis + 1 :] + [full[axis]]
    return r.reshape(moved).movedim(-1, axis).contiguous().reshape(shape)


@dataclass(frozen=True)
class BlockView:
    """Blocks of ``block_size`` along ``axis`` of a tensor of ``shape``, as a kernel takes
    them (see the module docstring); ``blocks`` and ``unblocks`` map there and back."""

    shape: tuple[int, ...]  # the tensor's
    axis: int  # non-negative
    moved: bool  # through a copy with the axis moved last (post is then 1)
    pre: int  # of the layout read: the axis-last copy when moved
    length: int
    post: int
    block: int  # elements per block as the kernel sees them
    pad: int  # zeros after each row of the axis
    block_size: int  # the format's

    @property
    def kernel_shape(self) -> tuple[int, ...]:
        nblocks = self.pre * (self.length + self.pad) // self.block
        return (nblocks, self.block) if self.post == 1 else (nblocks, self.block, self.post)

    @property
    def blocks_per_axis(self) -> int:
        """Blocks per padded axis (``P_NBPA``: what ``sr_index`` needs of a 3-d layout)."""
        return (self.length + self.pad) // self.block

    @property
    def short(self) -> bool:
        """An axis shorter than a block, taken as one block as it is (no padding)."""
        return self.block < self.block_size

    def whole(self) -> BlockView:
        """The same view with the axis padded to whole blocks of ``block_size``."""
        return _view(self.shape, self.axis, self.block_size, 1, True, self.moved)

    def padded(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (of ``shape``) as ``(pre, L + pad, post)``: the axis moved last if the
        view says so, zero-padded."""
        v = (x.movedim(self.axis, -1) if self.moved else x).reshape(
            self.pre, self.length, self.post
        )
        return F.pad(v, (0, 0, 0, self.pad)) if self.pad else v

    def blocks(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (of ``shape``) as the kernel's contiguous blocks (``kernel_shape``)."""
        return self.padded(x).reshape(self.kernel_shape).contiguous()

    def unblocks(self, y: torch.Tensor) -> torch.Tensor:
        """A result laid out as ``blocks`` (or as ``padded``) back to ``shape``."""
        if self.pad:
            y = y.reshape(self.pre, self.length + self.pad, self.post)[:, : self.length]
        if self.moved:
            full = list(self.shape) or [1]
            src = full[: self.axis] + full[self.axis + 1 :] + [self.length]
            return y.reshape(src).movedim(-1, self.axis).contiguous().reshape(self.shape)
        return y.reshape(self.shape)


def block_view(
    shape: tuple[int, ...],
    axis: int,
    block_size: int,
    sub: int = 1,
    whole: bool = False,
    moved: bool | None = None,
) -> BlockView:
    """The blocks of ``block_size`` along ``axis`` of a tensor of ``shape``.

    ``moved``: None reads the blocks in place where ``post`` is 1 or at least
    ``IN_PLACE_MIN_POST``, else through an axis-last copy; True or False forces either.
    An axis shorter than a block (and a whole number of ``sub``-element runs) is one block
    as it is, since padding never changes a result and would cost two copies; ``whole``
    pads it to a whole block all the same (stochastic rounding numbers its random bits in
    that padded layout).
    """
    shape = tuple(shape)
    _, _, post = split(shape, axis)
    if moved is None:
        moved = not (post == 1 or post >= IN_PLACE_MIN_POST)
    return _view(shape, axis % max(len(shape), 1), block_size, sub, whole, moved)


def _view(
    shape: tuple[int, ...], axis: int, block_size: int, sub: int, whole: bool, moved: bool
) -> BlockView:
    pre, length, post = split(shape, axis)
    if moved:
        pre, post = pre * post, 1
    block = block_size
    if not whole and 0 < length < block_size and length % sub == 0:
        block = length
    pad = (-length) % block
    return BlockView(shape, axis, moved, pre, length, post, block, pad, block_size)


def sr_index(
    shape: tuple[int, ...] | torch.Size, nbpa: torch.Tensor | int, device: torch.device
) -> torch.Tensor:
    """The position of each element of a kernel's input in the axis-last layout, as int32:
    row-major for a 1-d or 2-d input; for blocks read in place, ``(nblocks, block, post)``
    with blocks along dim 1, the element at (n, e, j) of block ``n = i * nbpa + k`` (``nbpa``
    blocks per padded axis) sits at ``(i * post + j) * nbpa * block + k * block + e``
    there, so a cast's random bits do not depend on how its blocks were read."""
    i32 = torch.int32
    if len(shape) == 3:
        nb, block, post = shape
        n = torch.arange(nb, dtype=i32, device=device).view(nb, 1, 1)
        e = torch.arange(block, dtype=i32, device=device).view(1, block, 1)
        j = torch.arange(post, dtype=i32, device=device).view(1, 1, post)
        i = torch.div(n, nbpa, rounding_mode="floor")
        return (i * post + j) * (nbpa * block) + (n - i * nbpa) * block + e
    return torch.arange(math.prod(shape), dtype=i32, device=device).view(shape)
