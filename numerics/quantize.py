"""``quantize(x, fmt)``: the values a tensor would hold in a format, as a tensor of x's dtype.

Layout rules: element formats act value by value. Block formats (MX, BFP, MX9/6/4) block along
``axis``: the tensor is viewed with ``axis`` last, each row is cut into blocks (a trailing
partial block is zero-padded, which never changes a result) and the result is put back in x's
shape. Per-channel integer formats take one scale per slice along ``axis`` (the channel is
every other index). Stochastic rounding numbers elements in that same axis-last row-major
layout, so the random bits are a function of (seed, position) only.

Inputs may be float32, bfloat16 or float16 (widened exactly to float32); the result is cast
back to x's dtype, which is exact whenever the format's values fit that dtype (always for
float32). ``quantize`` is not differentiable; the training modules wrap it in
straight-through estimators.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

from numerics import formats as _formats
from numerics.formats import (
    BlockFormat,
    FixedFormat,
    FloatFormat,
    Format,
    IntFormat,
    SharedMicroExpFormat,
)
from numerics.formats.element import NanStyle
from numerics.kernels import compiled as _compiled
from numerics.kernels import lean as _lean
from numerics.kernels import native as _native
from numerics.kernels.block import block_kernel, smx_kernel
from numerics.kernels.core import P_NBPA
from numerics.kernels.element import as_float, element_kernel, int_kernel, rne_path
from numerics.kernels.params import params_for
from numerics.rounding import DEFAULT_SR_BITS, MAX_SR_BITS, Rounding, draw_keys, parse

Backend = Literal["auto", "compiled", "eager", "reference", "qtorch"]
BACKENDS = ("auto", "compiled", "eager", "reference", "qtorch")
Prepared = Callable[[torch.Tensor], torch.Tensor]  # a cast with its per-call decisions taken
_ACCEPTED = (torch.float32, torch.bfloat16, torch.float16)


def _check_input(x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"quantize: x must be a torch.Tensor, not {type(x).__name__}")
    if x.dtype in _ACCEPTED:
        return x
    if x.dtype == torch.float64:
        raise TypeError(
            "quantize: x is float64; formats are emulated on the float32 bit pattern, so "
            "convert first (x.float()) - that conversion rounds, quantize never does silently"
        )
    raise TypeError(
        f"quantize: x has dtype {x.dtype}; integer, bool and complex tensors are refused. "
        "Allowed: torch.float32, torch.bfloat16, torch.float16"
    )


def _resolve_saturate(fmt: Format, saturate: bool | None) -> bool:
    if saturate is None:
        return fmt.default_saturate
    if not saturate and not (fmt.has_inf or (isinstance(fmt, FloatFormat) and fmt.has_nan)):
        raise ValueError(
            f"quantize: saturate=False, but {fmt.name} has neither inf nor NaN to overflow to; "
            "it always saturates (use saturate=None or True)"
        )
    return bool(saturate)


# Below this many elements, auto runs torch's own cast eagerly where the format allows it:
# the cast is one memory-bound pass, while a compiled call has a fixed cost of a few hundred us.
NATIVE_EAGER_MAX_NUMEL = 1 << 20
# torch's float8_e4m3fn cast is a scalar loop on the CPU (about 6 ns per element here, against
# 0.15 ns for the bf16 cast), so its eager cast only wins on small tensors.
SLOW_NATIVE_EAGER_MAX_NUMEL = 8192
# Block casts the C++ kernels do not take (kernels/native.py: last-axis blocks that are not
# whole 16-lane vectors, runs longer than 16, or NUMERICS_NATIVE=0), below this many
# elements, run the few-pass eager kernels (kernels/lean.py).
# A compiled call beat them from 1,024 elements up once blocks along a non-last axis were
# read in place (mxfp8, one thread, after a matmul: 8 x 128 50 us against 81, 128 x 256
# along axis 0 83 against 169); the lean kernels are kept for the smallest tensors, where a
# new shape layout would cost a compile (about 2 s, then cached on disk) for little gain.
# ``NUMERICS_LEAN_MAX_NUMEL`` overrides it (the tests raise it: every block layout a model
# test meets would otherwise compile a kernel of its own, which took the suite from about
# 7 to 14 minutes on an empty compile cache).
LEAN_EAGER_MAX_NUMEL = int(os.environ.get("NUMERICS_LEAN_MAX_NUMEL", "1024"))


def _use_compiled(backend: str, numel: int, eager_below: int = 0) -> bool:
    """Whether a call runs the compiled kernel: ``eager_below`` is the plan's own threshold
    (casts with a fast eager path), else ``NUMERICS_COMPILE_MIN_NUMEL``."""
    if backend == "compiled":
        return True
    if backend == "eager":
        return False
    return _compiled.compile_enabled() and numel >= (eager_below or _compiled.min_numel())


def _rows_along(x32: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Size]:
    moved = x32.movedim(axis, -1)
    return moved.reshape(-1, moved.shape[-1]), moved.shape


def _from_rows(rows: torch.Tensor, moved_shape: torch.Size, axis: int) -> torch.Tensor:
    return rows.reshape(moved_shape).movedim(-1, axis).contiguous()


def _blocks(rows: torch.Tensor, block: int) -> tuple[torch.Tensor, int]:
    length = rows.shape[-1]
    pad = (-length) % block
    if pad:
        rows = F.pad(rows, (0, pad))
    return rows.reshape(-1, block), pad


# A block kernel reads blocks along a non-last axis in place, as (nblocks, block, post),
# when the elements after the axis number at least this many (a vector's width along
# post): 1024 x 1024 blocked along axis 0 took 1.2 ms against 3.8 ms through a transposed
# copy, 256 x 256 0.10 ms against 0.36 (one thread). Below it, post is too narrow to
# vectorise along, and the transposed copy wins (64 x 32 x 3 x 3 along axis 1, post 9).
IN_PLACE_MIN_POST = 16


def _in_place_ok(x32: torch.Tensor, axis: int) -> bool:
    post = math.prod(x32.shape[axis % x32.dim() + 1 :])
    return post == 1 or post >= IN_PLACE_MIN_POST


def _blocks_in_place(
    x32: torch.Tensor, axis: int, block: int, sub: int = 1, whole: bool = False
) -> tuple[torch.Tensor, int]:
    """``x32`` as blocks along ``axis`` without moving it: (nblocks, block) when ``axis`` is
    the last non-trivial one, else (nblocks, block, post) with blocks along dim 1, where
    ``post`` is the product of the dims after ``axis``; the axis is zero-padded to whole
    blocks. An axis shorter than a block (and a whole number of ``sub``-element sub-blocks)
    is one block as it is: padding never changes a result, and it would cost two copies.
    ``whole`` pads it to a whole block all the same (stochastic rounding numbers its random
    bits in that padded layout). Returns the blocks and the padding."""
    shape = x32.shape
    axis %= x32.dim()
    length = shape[axis]
    pre, post = math.prod(shape[:axis]), math.prod(shape[axis + 1 :])
    v = x32.reshape(pre, length, post)
    if not whole and length < block and length % sub == 0:
        block = length
    pad = (-length) % block
    if pad:
        v = F.pad(v, (0, 0, 0, pad))
    if post == 1:  # contiguous: the kernels index a block's elements densely
        return v.reshape(-1, block).contiguous(), pad
    return v.reshape(-1, block, post).contiguous(), pad


def quantize(
    x: torch.Tensor,
    fmt: str | Format,
    rounding: str | Rounding = "nearest_even",
    generator: torch.Generator | int | None = None,
    axis: int = -1,
    saturate: bool | None = None,
    *,
    sr_bits: int = DEFAULT_SR_BITS,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Round ``x`` to the values of ``fmt`` (a format or its name).

    Args:
        rounding: nearest_even (default), nearest_away, toward_zero, down, up, stochastic.
        generator: the random source of stochastic rounding: a ``torch.Generator`` (advanced
            by each call), an int seed (same bits every call) or None (torch's default).
        axis: the axis blocks run along (block formats) or the reduction axis of per-channel
            integer formats.
        saturate: None uses the format's own overflow rule (inf for IEEE-style formats, NaN
            for fp8_e4m3, saturation for fp6/fp4/int/block formats); True clamps everything
            outside the range, infinities included, to +-max.
        sr_bits: random bits per stochastic decision (1..24).
        backend: auto (compiled for large tensors), compiled (Inductor kernels; on the CPU,
            element, integer and block formats run hand-written C++ kernels,
            ``numerics.kernels.native``), eager, reference (NumPy float64) or qtorch (the
            optional qtorch library, where it has the format).
    """
    x = _check_input(x)
    p = plan(fmt, rounding, saturate, sr_bits=sr_bits, backend=backend)
    ndim = max(x.dim(), 1)
    if not -ndim <= axis < ndim:
        raise ValueError(f"quantize: axis={axis} is out of range for a {x.dim()}-d tensor")
    if x.numel() >= 2**31 and p.mode is Rounding.STOCHASTIC:
        raise ValueError("quantize: stochastic rounding indexes elements with int32; split x")
    return p(x, axis, generator)


@dataclass(frozen=True)
class Plan:
    """A validated cast: ``plan(...)(x, axis, generator)`` is ``quantize(x, ...)`` without
    re-checking the format, rounding and options on every call (the training modules make
    thousands of small casts, where those checks cost as much as the cast). ``x`` must be a
    float32, bfloat16 or float16 tensor and ``axis`` in range."""

    fmt: Format
    mode: Rounding
    sat: bool
    sr_bits: int
    backend: str
    identity: bool  # the result is x itself (fp32, not saturating)
    eager_below: int  # auto runs eagerly below this many elements
    # the eager routes of nearest_even (at most one is set): torch's own cast, or the lean
    # block kernels (kernels/lean.py)
    native: tuple[torch.dtype, float | None] | None
    lean: bool
    # the hand-written C++ kernels (kernels/native.py) may run, at any size: backend auto
    # or compiled, and NUMERICS_NATIVE not off when the plan was made
    cpp: bool
    # (shape, axis, device, compiled) -> the prepared cast (see _prepare), or None where
    # there is none; bounded by clearing, since shapes can vary without end
    prepared: dict[tuple[Any, ...], Prepared | None] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __call__(
        self,
        x: torch.Tensor,
        axis: int = -1,
        generator: torch.Generator | int | None = None,
    ) -> torch.Tensor:
        if self.native is not None and self.backend in ("auto", "eager"):
            # the common small cast first, straight to torch's cast (a detached input
            # records no autograd graph, so no no_grad context is needed); each step skipped
            # where it would be a no-op, since a training step makes dozens of these casts
            numel = x.numel()
            if numel and (
                numel < self.eager_below or not _use_compiled(self.backend, numel, self.eager_below)
            ):
                dtype = x.dtype
                v = x.detach() if x.requires_grad else x
                y = _native_round(v if dtype is torch.float32 else v.float(), self)
                return y if dtype is torch.float32 else y.to(dtype)
        mode = self.mode
        if self.backend == "qtorch":
            from numerics.backends.qtorch_backend import quantize_qtorch

            return quantize_qtorch(x, self.fmt, mode, generator)
        keys = draw_keys(generator) if mode is Rounding.STOCHASTIC else None
        if self.backend == "reference":
            from numerics.reference import quantize_reference

            key_pair = None if keys is None else (int(keys[0]), int(keys[1]))
            return quantize_reference(x, self.fmt, mode, key_pair, axis, self.sat, self.sr_bits).to(
                device=x.device, dtype=x.dtype
            )
        numel = x.numel()
        if self.identity or numel == 0:
            return x.clone()
        use = _use_compiled(self.backend, numel, self.eager_below)
        with torch.no_grad():
            # contiguous: a compiled kernel is traced for dense inputs, and a strided view
            # (x[::3], x.t()) would fail its stride check (tests/numerics/kernels/test_native.py)
            x32 = x.detach().float().contiguous()
            if x32.dim() == 0:
                x32 = x32.reshape(1)
            lean = self.lean and not use
            key = (x32.shape, axis % x32.dim(), x32.device, use)
            if key in self.prepared:
                call = self.prepared[key]
            else:
                call = _prepare(
                    x32, self.fmt, mode, axis, self.sat, self.sr_bits, use, self.cpp, lean
                )
                if len(self.prepared) >= 512:
                    self.prepared.clear()
                self.prepared[key] = call
            if call is not None:
                return call(x32).reshape(x.shape).to(x.dtype)
            if lean:
                assert isinstance(self.fmt, BlockFormat | SharedMicroExpFormat)
                y = _lean.block_nearest(x32, axis, self.fmt)
                return y.reshape(x.shape).to(x.dtype)
            y = _dispatch(x32, self.fmt, mode, keys, axis, self.sat, self.sr_bits, use, self.cpp)
            return y.reshape(x.shape).to(x.dtype)


def plan(
    fmt: str | Format,
    rounding: str | Rounding = "nearest_even",
    saturate: bool | None = None,
    *,
    sr_bits: int = DEFAULT_SR_BITS,
    backend: Backend = "auto",
) -> Plan:
    """The validated cast ``quantize`` runs; raises what ``quantize`` raises. Cached per
    resolved format (a name re-registered with ``overwrite=True`` gets a new plan)."""
    return _plan(_formats.get(fmt), rounding, saturate, sr_bits, backend)


@functools.lru_cache(maxsize=4096)
def _plan(
    fmt: Format,
    rounding: str | Rounding,
    saturate: bool | None,
    sr_bits: int,
    backend: str,
) -> Plan:
    mode = parse(rounding)
    sat = _resolve_saturate(fmt, saturate)
    if backend not in BACKENDS:
        raise ValueError(f"quantize: backend={backend!r}; allowed: {', '.join(BACKENDS)}")
    if not 1 <= sr_bits <= MAX_SR_BITS:
        raise ValueError(f"quantize: sr_bits={sr_bits}; allowed 1..{MAX_SR_BITS}")
    if backend == "qtorch" and (saturate is not None or sr_bits != DEFAULT_SR_BITS):
        raise ValueError(
            "quantize: backend='qtorch' has no saturate or sr_bits options; leave them "
            "at their defaults (qtorch's own overflow behaviour applies)"
        )
    identity = isinstance(fmt, FloatFormat) and fmt.is_identity and not sat
    eager_below = 0
    nearest = mode is Rounding.NEAREST_EVEN
    native = _native_cast(fmt) if nearest else None
    blocks = isinstance(fmt, BlockFormat | SharedMicroExpFormat)
    lean = nearest and blocks and _lean.supports(fmt)  # type: ignore[arg-type]
    if native is not None:
        slow = native[0] == torch.float8_e4m3fn
        eager_below = SLOW_NATIVE_EAGER_MAX_NUMEL if slow else NATIVE_EAGER_MAX_NUMEL
    elif lean:
        eager_below = LEAN_EAGER_MAX_NUMEL
    cpp = backend in ("auto", "compiled") and _native.enabled()
    return Plan(fmt, mode, sat, sr_bits, backend, identity, eager_below, native, lean, cpp)


# Grids whose nearest_even values torch's casts give: (ebits, mbits, NaN style, bias) ->
# (dtype, the magnitude above which the format overflows to NaN where torch saturates).
_NATIVE: dict[tuple[int, int, NanStyle, int], tuple[torch.dtype, float | None]] = {
    (8, 7, NanStyle.IEEE, 127): (torch.bfloat16, None),
    (5, 10, NanStyle.IEEE, 15): (torch.float16, None),
    (5, 2, NanStyle.IEEE, 15): (torch.float8_e5m2, None),
    (4, 3, NanStyle.ONE, 7): (torch.float8_e4m3fn, 464.0),
}


def _native_cast(fmt: Format) -> tuple[torch.dtype, float | None] | None:
    if not isinstance(fmt, FloatFormat) or not fmt.subnormals:
        return None
    return _NATIVE.get((fmt.ebits, fmt.mbits, fmt.nan_style, fmt.bias or 0))


def _native_round(x32: torch.Tensor, p: Plan) -> torch.Tensor:
    """nearest_even by torch's own cast, with Python scalars: on small tensors the fixed cost
    of the kernel's parameter-tensor ops would dominate. Saturation clamps first (a value
    above the maximum rounds to it or overflows); torch's e4m3fn cast saturates where the
    format overflows to NaN, so values past the last rounding midpoint (464) become NaN
    explicitly. bf16 and fp16 go through ``Tensor.bfloat16``/``Tensor.half``, which parse
    no arguments (2.7 us against 4.5 us for ``.to(dtype)`` on a one-element tensor)."""
    assert p.native is not None and isinstance(p.fmt, FloatFormat)
    dtype, nan_above = p.native
    v = x32.clamp(-p.fmt.max, p.fmt.max) if p.sat else x32
    if dtype is torch.bfloat16:
        y = v.bfloat16().float()
    elif dtype is torch.float16:
        y = v.half().float()
    else:
        y = v.to(dtype).float()
    if nan_above is not None and not p.sat:
        y = torch.where(x32.abs() > nan_above, float("nan"), y)
    return y


def _element_path(fmt: FloatFormat | FixedFormat) -> str:
    if isinstance(fmt, FloatFormat):
        path = rne_path(fmt.emin, fmt.emax, fmt.mbits, ieee=fmt.has_inf and fmt.subnormals)
        return path + "_ftz" if path in ("float", "shift") and not fmt.subnormals else path
    path = rne_path(-127, fmt.emax, fmt.emax + fmt.fl)  # a fixed grid: m = emax + fl
    return path + "_twos" if path == "float" else path


def _block_kernel(
    fmt: BlockFormat | SharedMicroExpFormat,
    keys: torch.Tensor | None,
    sr_bits: int,
    dev: torch.device,
) -> tuple[str, _compiled.KernelFn, bool | int, torch.Tensor, torch.Tensor]:
    """A block format's kernel: its name, function, constant argument and parameter vectors
    (with ``keys`` filled in, a copy of its own, for stochastic rounding)."""
    if isinstance(fmt, BlockFormat):
        ceil = fmt.scale_rule.value == "ceil"
        p, qf = params_for(fmt.element, True, keys, sr_bits, dev, ceil=ceil)
        fixed = isinstance(fmt.element, FixedFormat)
        return "block_fixed" if fixed else "block_float", block_kernel, fixed, p, qf
    p, qf = params_for(fmt.element, True, keys, sr_bits, dev)
    return "smx", smx_kernel, fmt.sub_block, p, qf


def _native_kernel(
    name: str, extra: bool | int, blocks: torch.Tensor, mode: Rounding
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """The hand-written C++ kernel for these blocks where one applies (CPU; last-axis blocks
    of whole 16-lane vectors, or blocks read in place: ``kernels/native``), in place of the
    compiled block kernel; else None."""
    if name in ("block_fixed", "block_float") and _native.supports(blocks):
        return lambda b, p, q: _native.block(b, p, q, bool(extra), mode)
    if name == "smx" and _native.supports(blocks, int(extra)):
        return lambda b, p, q: _native.smx(b, p, q, int(extra), mode)
    return None


def _prepare(
    x32: torch.Tensor,
    fmt: Format,
    mode: Rounding,
    axis: int,
    sat: bool,
    sr_bits: int,
    use: bool,
    cpp: bool,
    lean: bool,
) -> Prepared | None:
    """The cast of a tensor of x32's shape and device, with every per-call decision taken
    (layout, kernel, parameters): a function of the float32 values. None where the cast
    draws random bits (their keys change per call) or is not one of these paths: element
    formats and block formats. The plan keeps these per shape, so a
    training step's repeated casts skip the layout logic and the kernel lookup.

    ``use``: compiled kernels rather than eager ones; ``cpp``: the C++ kernels where they
    apply, at any size; ``lean``: a block cast the C++ kernels do not take is left to the
    lean eager kernels (None)."""
    if mode is Rounding.STOCHASTIC:
        return None
    shape, dev = x32.shape, x32.device
    if isinstance(fmt, FloatFormat | FixedFormat):
        path = _element_path(fmt)
        p, qf = params_for(fmt, sat, None, sr_bits, dev)
        flat = x32.reshape(-1)
        if cpp and _native.supports_element(flat, path, mode):

            def native(x: torch.Tensor) -> torch.Tensor:
                return _native.element(x.reshape(-1), p, qf, path, mode).reshape(shape)

            return native
        run = _compiled.kernel(
            f"element_{path}", element_kernel, mode, use, flat, flat.view(torch.int32), p, qf, path
        )

        def element(x: torch.Tensor) -> torch.Tensor:
            f = x.reshape(-1)
            return as_float(run(f, f.view(torch.int32), p, qf)).reshape(shape)

        return element
    if not isinstance(fmt, BlockFormat | SharedMicroExpFormat):
        return None
    # blocks read in place, or (post too narrow to vectorise along) from a copy with the
    # axis moved last
    ax = axis % x32.dim()
    moved = not _in_place_ok(x32, ax)
    src = x32.movedim(ax, -1) if moved else x32
    sax = src.dim() - 1 if moved else ax
    sub = fmt.sub_block if isinstance(fmt, SharedMicroExpFormat) else 1
    blocks, pad = _blocks_in_place(src, sax, fmt.block_size, sub)
    name, fn, extra, p, qf = _block_kernel(fmt, None, sr_bits, dev)
    hand = _native_kernel(name, extra, blocks, mode) if cpp else None
    if hand is None and cpp and blocks.dim() == 2 and blocks.shape[1] < fmt.block_size:
        # a last axis shorter than a block, taken as one block as it is: the C++ kernels
        # want whole blocks of 16-lane vectors there, so pad it to one
        whole, whole_pad = _blocks_in_place(src, sax, fmt.block_size, sub, whole=True)
        hand = _native_kernel(name, extra, whole, mode)
        if hand is not None:
            blocks, pad = whole, whole_pad
    if hand is None and lean:
        return None
    sshape = src.shape
    length, view = sshape[sax], tuple(blocks.shape)
    pre, post = math.prod(sshape[:sax]), math.prod(sshape[sax + 1 :])
    kern = hand or _compiled.kernel(name, fn, mode, use, blocks, p, qf, extra, static=True)

    def block(x: torch.Tensor) -> torch.Tensor:
        v = (x.movedim(ax, -1) if moved else x).reshape(pre, length, post)
        if pad:
            v = F.pad(v, (0, 0, 0, pad))
        y = kern(v.reshape(view).contiguous(), p, qf)
        if pad:
            y = y.reshape(pre, -1, post)[:, :length]
        return y.reshape(sshape).movedim(-1, ax).contiguous() if moved else y.reshape(shape)

    return block


def _dispatch(
    x32: torch.Tensor,
    fmt: Format,
    mode: Rounding,
    keys: torch.Tensor | None,
    axis: int,
    sat: bool,
    sr_bits: int,
    use_compiled: bool,
    cpp: bool,
) -> torch.Tensor:
    """The kernel for a cast the plan could not prepare (see ``_prepare``): stochastic
    rounding of element and block formats, and integer formats. ``cpp``: the C++ block
    kernels where they apply, at any size."""
    dev = x32.device
    if isinstance(fmt, FloatFormat | FixedFormat):  # stochastic
        path = _element_path(fmt)
        p, qf = params_for(fmt, sat, keys, sr_bits, dev)
        flat = x32.reshape(-1)
        if cpp and _native.supports_element(flat, path, mode):
            return _native.element(flat, p, qf, path, mode).reshape(x32.shape)
        y = _compiled.run(
            f"element_{path}",
            element_kernel,
            mode,
            use_compiled,
            flat,
            flat.view(torch.int32),
            p,
            qf,
            path,
        )
        return as_float(y).reshape(x32.shape)
    if isinstance(fmt, IntFormat):
        p, qf = params_for(fmt.grid, True, keys, sr_bits, dev)
        qmax = float(fmt.qmax)

        def scaled(rows: torch.Tensor) -> torch.Tensor:
            if cpp and _native.supports_rows(rows):
                return _native.scaled_int(rows, p, qf, qmax, mode)
            return _compiled.run("int", int_kernel, mode, use_compiled, rows, p, qf, qmax)

        if fmt.per_channel:
            rows, moved = _rows_along(x32, axis)
            return _from_rows(scaled(rows.contiguous()), moved, axis)
        return scaled(x32.reshape(1, -1)).reshape(x32.shape)
    # stochastic rounding: blocks read in place (along the last axis, or along another with
    # a wide enough post), else through a transposed copy; either way the random bits are
    # numbered as in the padded axis-last layout (see sr_random)
    assert isinstance(fmt, BlockFormat | SharedMicroExpFormat) and keys is not None
    ax = axis % x32.dim()
    length, bsize = x32.shape[ax], fmt.block_size
    in_place = _in_place_ok(x32, ax)
    if in_place:
        blocks, pad = _blocks_in_place(x32, ax, bsize, whole=True)
    else:
        rows, moved = _rows_along(x32, axis)
        blocks, pad = _blocks(rows.contiguous(), bsize)
    name, fn, extra, p, qf = _block_kernel(fmt, keys, sr_bits, dev)
    p[P_NBPA] = (length + pad) // bsize  # p is this call's own copy (its keys are filled in)
    native = _native_kernel(name, extra, blocks, mode) if cpp else None
    if native is not None:
        y = native(blocks, p, qf)
    else:
        y = _compiled.run(name, fn, mode, use_compiled, blocks, p, qf, extra, static=True)
    if in_place:
        y = y.reshape(-1, length + pad, math.prod(x32.shape[ax + 1 :]))
        return (y[:, :length] if pad else y).reshape(x32.shape)
    y = y.reshape(rows.shape[0], length + pad)
    if pad:
        y = y[:, :length]
    return _from_rows(y, moved, axis)
