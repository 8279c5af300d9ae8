"""Which path a cast runs: ``route`` is the one place that decides.

A cast is (format, rounding, saturation, backend) applied to a tensor of some shape on some
device, blocked along some axis. ``route`` names the path it takes, in this order:

==================  =======================================================================
``QTORCH``          ``backend="qtorch"``: the optional qtorch library.
``REFERENCE``       ``backend="reference"``: NumPy float64 (``numerics.reference``).
``IDENTITY``        no elements, or fp32 without saturation: a copy of x.
``TORCH_CAST``      nearest_even to a grid that is a torch dtype's (bf16, fp16, fp8 e5m2 and
                    e4m3), ``auto`` or ``eager``: torch's own cast, eagerly. ``auto`` takes
                    it below ``TORCH_CAST_MAX_NUMEL`` elements (``SLOW_TORCH_CAST_MAX_NUMEL``
                    for e4m3, whose torch cast is a scalar loop on the CPU), or at any size
                    when compiling is off; ``eager`` at any size.
``CPP``             ``auto`` or ``compiled``, ``Settings.cpp`` on, the CPU, and a cast the
                    hand-written C++ kernels take (``numerics.kernels.native``): element
                    formats but for the nearest_even that is torch's bf16/fp16 cast,
                    integers, and blocks the block layout gives them (``blocks_view``).
``LEAN``            nearest_even of a block format the lean kernels cover where the cast
                    is not compiled (``numerics.kernels.lean``).
``EAGER``           row-wise formats (fbgemm's), whatever the backend: a few torch ops
                    (``numerics.kernels.rowwise``).
``INDUCTOR``        compiled: ``backend="compiled"``, or ``auto`` with ``Settings.compile``
                    from ``eager_below`` elements up (``numerics.kernels.compiled``; a
                    compiler failure falls back to the eager kernel with a warning).
``EAGER``           the rest: the same kernels run by torch eagerly.
==================  =======================================================================

``eager_below`` is the size from which ``auto`` compiles: the torch-cast thresholds above,
``Settings.lean_max_numel`` for block casts the lean kernels cover, else
``Settings.compile_min_numel``. The settings come from ``numerics.kernels.settings``, read
from the environment once.
"""

from __future__ import annotations

import enum
import math

import torch

from numerics.formats import (
    BlockFormat,
    FixedFormat,
    FloatFormat,
    Format,
    IntFormat,
    RowwiseFormat,
    SharedMicroExpFormat,
)
from numerics.formats.element import NanStyle
from numerics.kernels import layout, lean, native
from numerics.kernels.element import element_path
from numerics.kernels.settings import Settings, current
from numerics.rounding import Rounding


class Route(enum.Enum):
    """The paths a cast can take (see the module docstring for when each runs)."""

    QTORCH = "qtorch"
    REFERENCE = "reference"
    IDENTITY = "identity"
    TORCH_CAST = "torch_cast"
    CPP = "cpp"
    LEAN = "lean"
    INDUCTOR = "inductor"
    EAGER = "eager"

    @property
    def label(self) -> str:
        """A short name for tables (``numerics bench``'s kernel column)."""
        return _LABELS[self]


_LABELS = {
    Route.QTORCH: "qtorch",
    Route.REFERENCE: "reference",
    Route.IDENTITY: "identity",
    Route.TORCH_CAST: "torch cast",
    Route.CPP: "C++",
    Route.LEAN: "lean",
    Route.INDUCTOR: "Inductor",
    Route.EAGER: "eager",
}

# Below this many elements, auto runs torch's own cast where the format allows it: the cast
# is one memory-bound pass, while a compiled call has a fixed cost of a few hundred us.
TORCH_CAST_MAX_NUMEL = 1 << 20
# torch's float8_e4m3fn cast is a scalar loop on the CPU, so its eager cast only wins on
# small tensors.
SLOW_TORCH_CAST_MAX_NUMEL = 8192
ALWAYS = 1 << 62  # a size no tensor reaches

# Grids whose nearest_even values torch's casts give: (ebits, mbits, NaN style, bias) ->
# (dtype, the magnitude above which the format overflows to NaN where torch saturates).
_TORCH_CASTS: dict[tuple[int, int, NanStyle, int], tuple[torch.dtype, float | None]] = {
    (8, 7, NanStyle.IEEE, 127): (torch.bfloat16, None),
    (5, 10, NanStyle.IEEE, 15): (torch.float16, None),
    (5, 2, NanStyle.IEEE, 15): (torch.float8_e5m2, None),
    (4, 3, NanStyle.ONE, 7): (torch.float8_e4m3fn, 464.0),
}


def torch_cast(fmt: Format) -> tuple[torch.dtype, float | None] | None:
    """The torch dtype whose cast rounds to ``fmt``'s grid (nearest_even), and where the
    format overflows to NaN past torch's saturation; None if there is none."""
    if not isinstance(fmt, FloatFormat) or not fmt.subnormals:
        return None
    return _TORCH_CASTS.get((fmt.ebits, fmt.mbits, fmt.nan_style, fmt.bias or 0))


def _lean(fmt: Format, mode: Rounding) -> bool:
    blocks = isinstance(fmt, BlockFormat | SharedMicroExpFormat)
    return mode is Rounding.NEAREST_EVEN and blocks and lean.supports(fmt)  # type: ignore[arg-type]


def eager_below(fmt: Format, mode: Rounding, settings: Settings) -> int:
    """``auto`` runs eagerly below this many elements (and compiles from it up)."""
    if mode is Rounding.NEAREST_EVEN and (cast := torch_cast(fmt)) is not None:
        slow = cast[0] == torch.float8_e4m3fn
        return SLOW_TORCH_CAST_MAX_NUMEL if slow else TORCH_CAST_MAX_NUMEL
    if _lean(fmt, mode) and settings.lean_max_numel:
        return settings.lean_max_numel
    return settings.compile_min_numel


def torch_cast_below(fmt: Format, mode: Rounding, backend: str, settings: Settings) -> int:
    """``route`` is ``TORCH_CAST`` for casts of 1 to this many elements less one (0: never).
    A plan keeps it, so a small cast goes straight to torch's cast."""
    no_cast = mode is not Rounding.NEAREST_EVEN or torch_cast(fmt) is None
    if no_cast or backend not in ("auto", "eager"):
        return 0
    if backend == "eager" or not settings.compile:
        return ALWAYS
    return eager_below(fmt, mode, settings)


def _cpp_takes(fmt: Format, mode: Rounding, shape: tuple[int, ...], axis: int) -> bool:
    if isinstance(fmt, FloatFormat | FixedFormat):
        return native.element_takes(element_path(fmt), mode)
    if isinstance(fmt, IntFormat):
        return True
    assert isinstance(fmt, BlockFormat | SharedMicroExpFormat)
    view = block_view(fmt, mode, shape, axis)
    return native.blocks_view(view, _sub(fmt)) is not None


def _sub(fmt: BlockFormat | SharedMicroExpFormat) -> int:
    return fmt.sub_block if isinstance(fmt, SharedMicroExpFormat) else 1


def block_view(
    fmt: BlockFormat | SharedMicroExpFormat, mode: Rounding, shape: tuple[int, ...], axis: int
) -> layout.BlockView:
    """The block layout of a block cast: stochastic rounding pads a short axis to a whole
    block (its random bits are numbered in that layout)."""
    stochastic = mode is Rounding.STOCHASTIC
    return layout.block_view(shape, axis, fmt.block_size, _sub(fmt), whole=stochastic)


def route(
    fmt: Format,
    mode: Rounding,
    *,
    saturate: bool,
    backend: str,
    shape: tuple[int, ...],
    axis: int,
    device: torch.device,
    settings: Settings | None = None,
) -> Route:
    """The path a cast of a tensor of ``shape`` on ``device`` to ``fmt`` takes (blocks or
    channels along ``axis``); ``saturate`` resolved, ``settings`` by default ``current()``.
    The decision table is the module docstring."""
    s = settings or current()
    if backend == "qtorch":
        return Route.QTORCH
    if backend == "reference":
        return Route.REFERENCE
    numel = math.prod(shape)
    if numel == 0 or (isinstance(fmt, FloatFormat) and fmt.is_identity and not saturate):
        return Route.IDENTITY
    if numel < torch_cast_below(fmt, mode, backend, s):
        return Route.TORCH_CAST
    if isinstance(fmt, RowwiseFormat):
        return Route.EAGER  # a few torch ops per row (numerics.kernels.rowwise), any backend
    compiled = backend == "compiled" or (
        backend == "auto" and s.compile and numel >= eager_below(fmt, mode, s)
    )
    if (
        backend in ("auto", "compiled")
        and s.cpp
        and device.type == "cpu"
        and _cpp_takes(fmt, mode, tuple(shape) or (1,), axis)
        and native.library() is not None
    ):
        return Route.CPP
    if not compiled and _lean(fmt, mode):
        return Route.LEAN
    return Route.INDUCTOR if compiled else Route.EAGER
