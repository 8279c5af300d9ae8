"""``quantize(x, fmt)``: the values a tensor would hold in a format, as a tensor of x's dtype.

Layout rules: element formats act value by value. Block formats (MX, BFP, MX9/6/4) block along
``axis``: the tensor is viewed with ``axis`` last, each row is cut into blocks (a trailing
partial block is zero-padded, which never changes a result) and the result is put back in x's
shape. Per-channel integer formats take one scale per slice along ``axis`` (the channel is
every other index); row-wise formats (fbgemm's ``int8_rowwise`` and kin) likewise take one
scale and bias per slice along ``axis``, and round only as fbgemm does (nearest_even).
Stochastic rounding numbers elements in that same axis-last row-major
layout, so the random bits are a function of (seed, position) only.

Inputs may be float32, bfloat16 or float16 (widened exactly to float32); the result is cast
back to x's dtype, which is exact whenever the format's values fit that dtype (always for
float32). ``quantize`` is not differentiable; the training modules wrap it in
straight-through estimators.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from numerics import formats as _formats
from numerics.formats import (
    BlockFormat,
    FixedFormat,
    FloatFormat,
    Format,
    IntFormat,
    RowwiseFormat,
    SharedMicroExpFormat,
)
from numerics.kernels import compiled as _compiled
from numerics.kernels import layout as _layout
from numerics.kernels import lean as _lean
from numerics.kernels import native as _native
from numerics.kernels import rowwise as _rowwise
from numerics.kernels import settings as _settings
from numerics.kernels.block import block_kernel, smx_kernel
from numerics.kernels.core import P_NBPA
from numerics.kernels.element import as_float, element_kernel, element_path, int_kernel
from numerics.kernels.params import params_for
from numerics.kernels.settings import Settings
from numerics.rounding import DEFAULT_SR_BITS, MAX_SR_BITS, Rounding, draw_keys, parse
from numerics.route import Route, block_view, route, torch_cast, torch_cast_below

Backend = Literal["auto", "compiled", "eager", "reference", "qtorch"]
BACKENDS = ("auto", "compiled", "eager", "reference", "qtorch")
_ACCEPTED = (torch.float32, torch.bfloat16, torch.float16)
# a prepared cast's function: float32 x of its shape and the stochastic-rounding keys (None
# for the other modes) -> the float32 result
Run = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


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
            optional qtorch library, where it has the format). ``numerics.route`` decides
            which kernel each cast runs.
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
class Prepared:
    """A cast of one (shape, axis, device) with every per-call decision taken: its route
    and, for the routes that run on float32 values, the function that runs it (layout,
    kernel and parameters fixed)."""

    route: Route
    run: Run | None


@dataclass(frozen=True)
class Plan:
    """A validated cast: ``plan(...)(x, axis, generator)`` is ``quantize(x, ...)`` without
    re-checking the format, rounding and options on every call (the training modules make
    thousands of small casts, where those checks cost as much as the cast). ``x`` must be a
    float32, bfloat16 or float16 tensor and ``axis`` in range. Each call takes the path
    ``numerics.route.route`` names (``Plan.route``)."""

    fmt: Format
    mode: Rounding
    sat: bool
    sr_bits: int
    backend: str
    settings: Settings  # the routing settings in force when the plan was made
    identity: bool  # the result is x itself (fp32, not saturating)
    # torch's cast of this grid, and the router's answer for small casts kept: 1 to
    # torch_cast_below - 1 elements take it (see numerics.route.torch_cast_below)
    torch_cast: tuple[torch.dtype, float | None] | None
    torch_cast_below: int
    # (shape, axis, device) -> the prepared cast; bounded by clearing, since shapes can vary
    # without end
    prepared: dict[tuple[Any, ...], Prepared] = field(
        default_factory=dict, compare=False, repr=False
    )

    def route(self, x: torch.Tensor, axis: int = -1) -> Route:
        """The path a call with ``x`` takes."""
        return self._prepared(x, axis).route

    def _prepared(self, x: torch.Tensor, axis: int) -> Prepared:
        shape = tuple(x.shape) or (1,)
        key = (shape, axis % len(shape), x.device)
        cast = self.prepared.get(key)
        if cast is None:
            cast = _prepare(self, shape, key[1], x.device)
            if len(self.prepared) >= 512:
                self.prepared.clear()
            self.prepared[key] = cast
        return cast

    def __call__(
        self,
        x: torch.Tensor,
        axis: int = -1,
        generator: torch.Generator | int | None = None,
    ) -> torch.Tensor:
        numel = x.numel()
        if 0 < numel < self.torch_cast_below:
            # the common small cast first, straight to torch's cast (a detached input
            # records no autograd graph, so no no_grad context is needed); each step skipped
            # where it would be a no-op, since a training step makes dozens of these casts
            dtype = x.dtype
            v = x.detach() if x.requires_grad else x
            y = _torch_cast(v if dtype is torch.float32 else v.float(), self)
            return y if dtype is torch.float32 else y.to(dtype)
        cast = self._prepared(x, axis)
        mode = self.mode
        if cast.route is Route.QTORCH:
            from numerics.backends.qtorch_backend import quantize_qtorch

            return quantize_qtorch(x, self.fmt, mode, generator)
        keys = draw_keys(generator) if mode is Rounding.STOCHASTIC else None
        if cast.route is Route.REFERENCE:
            from numerics.reference import quantize_reference

            key_pair = None if keys is None else (int(keys[0]), int(keys[1]))
            return quantize_reference(x, self.fmt, mode, key_pair, axis, self.sat, self.sr_bits).to(
                device=x.device, dtype=x.dtype
            )
        if cast.route is Route.IDENTITY:
            return x.clone()
        run = cast.run
        assert run is not None  # every other route runs on float32 values
        with torch.no_grad():
            # contiguous: a compiled kernel is traced for dense inputs, and a strided view
            # (x[::3], x.t()) would fail its stride check (tests/numerics/kernels/test_native.py)
            x32 = x.detach().float().contiguous()
            if x32.dim() == 0:
                x32 = x32.reshape(1)
            return run(x32, keys).reshape(x.shape).to(x.dtype)


def plan(
    fmt: str | Format,
    rounding: str | Rounding = "nearest_even",
    saturate: bool | None = None,
    *,
    sr_bits: int = DEFAULT_SR_BITS,
    backend: Backend = "auto",
) -> Plan:
    """The validated cast ``quantize`` runs; raises what ``quantize`` raises. Cached per
    resolved format and routing settings (a name re-registered with ``overwrite=True``, or
    a ``settings.override``, gets a new plan)."""
    return _plan(_formats.get(fmt), rounding, saturate, sr_bits, backend, _settings.current())


@functools.lru_cache(maxsize=4096)
def _plan(
    fmt: Format,
    rounding: str | Rounding,
    saturate: bool | None,
    sr_bits: int,
    backend: str,
    settings: Settings,
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
    if isinstance(fmt, RowwiseFormat):
        _check_rowwise(fmt, mode, backend)
    identity = isinstance(fmt, FloatFormat) and fmt.is_identity and not sat
    below = torch_cast_below(fmt, mode, backend, settings)
    cast = torch_cast(fmt) if below else None
    return Plan(fmt, mode, sat, sr_bits, backend, settings, identity, cast, below)


def _check_rowwise(fmt: RowwiseFormat, mode: Rounding, backend: str) -> None:
    """Row-wise formats are defined by fbgemm's arithmetic: its rounding, and one path."""
    if mode is not Rounding.NEAREST_EVEN:
        raise ValueError(
            f"quantize: {fmt.name} rounds as fbgemm does; rounding={mode.value!r} is refused "
            "(allowed: nearest_even)"
        )
    if backend in ("reference", "qtorch"):
        raise ValueError(
            f"quantize: {fmt.name} has no {backend} backend; allowed: auto, compiled, eager "
            "(all run numerics.kernels.rowwise)"
        )


def _torch_cast(x32: torch.Tensor, p: Plan) -> torch.Tensor:
    """nearest_even by torch's own cast, with Python scalars: on small tensors the fixed cost
    of the kernel's parameter-tensor ops would dominate. Saturation clamps first (a value
    above the maximum rounds to it or overflows); torch's e4m3fn cast saturates where the
    format overflows to NaN, so values past the last rounding midpoint (464) become NaN
    explicitly. bf16 and fp16 go through ``Tensor.bfloat16``/``Tensor.half``, which parse
    no arguments (2.7 us against 4.5 us for ``.to(dtype)`` on a one-element tensor)."""
    assert p.torch_cast is not None and isinstance(p.fmt, FloatFormat)
    dtype, nan_above = p.torch_cast
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


def _prepare(p: Plan, shape: tuple[int, ...], axis: int, dev: torch.device) -> Prepared:
    """The route of a cast of this shape, axis and device, and the function that runs it.
    The plan keeps these per shape, so a training step's repeated casts skip the routing,
    the layout logic and the kernel lookup."""
    r = route(
        p.fmt,
        p.mode,
        saturate=p.sat,
        backend=p.backend,
        shape=shape,
        axis=axis,
        device=dev,
        settings=p.settings,
    )
    if r in (Route.QTORCH, Route.REFERENCE, Route.IDENTITY):
        return Prepared(r, None)
    if r is Route.TORCH_CAST:
        return Prepared(r, lambda x, keys: _torch_cast(x, p))
    fmt = p.fmt
    if r is Route.LEAN:
        assert isinstance(fmt, BlockFormat | SharedMicroExpFormat)
        return Prepared(r, lambda x, keys: _lean.block_nearest(x, axis, fmt))
    # an example input for tracing a compiled kernel (its values never matter)
    x32 = torch.zeros(shape, device=dev)
    if isinstance(fmt, FloatFormat | FixedFormat):
        return Prepared(r, _element_cast(p, fmt, x32, r))
    if isinstance(fmt, IntFormat):
        return Prepared(r, _int_cast(p, fmt, x32, axis, r))
    if isinstance(fmt, RowwiseFormat):
        return Prepared(r, _rowwise_cast(fmt, axis))
    assert isinstance(fmt, BlockFormat | SharedMicroExpFormat)
    return Prepared(r, _block_cast(p, fmt, x32, axis, r))


def _element_cast(p: Plan, fmt: FloatFormat | FixedFormat, x32: torch.Tensor, r: Route) -> Run:
    """Element formats: the whole tensor as one row-major run of elements."""
    path, mode, dev, shape = element_path(fmt), p.mode, x32.device, x32.shape
    p0, q0 = params_for(fmt, p.sat, None, p.sr_bits, dev)
    if r is Route.CPP:

        def cpp(x: torch.Tensor, keys: torch.Tensor | None) -> torch.Tensor:
            pk, qk = (p0, q0) if keys is None else params_for(fmt, p.sat, keys, p.sr_bits, dev)
            return _native.element(x.reshape(-1), pk, qk, path, mode).reshape(shape)

        return cpp
    flat = x32.reshape(-1)
    kern = _compiled.kernel(
        f"element_{path}",
        element_kernel,
        mode,
        r is Route.INDUCTOR,
        flat,
        flat.view(torch.int32),
        p0,
        q0,
        path,
    )

    def element(x: torch.Tensor, keys: torch.Tensor | None) -> torch.Tensor:
        pk, qk = (p0, q0) if keys is None else params_for(fmt, p.sat, keys, p.sr_bits, dev)
        f = x.reshape(-1)
        return as_float(kern(f, f.view(torch.int32), pk, qk)).reshape(shape)

    return element


def _int_cast(p: Plan, fmt: IntFormat, x32: torch.Tensor, axis: int, r: Route) -> Run:
    """Scaled integers: one scale per row, the rows along ``axis`` (per channel) or the
    whole tensor."""
    mode, dev, qmax = p.mode, x32.device, float(fmt.qmax)
    p0, q0 = params_for(fmt.grid, True, None, p.sr_bits, dev)
    if r is Route.CPP:

        def kern(rows: torch.Tensor, pk: torch.Tensor, qk: torch.Tensor) -> torch.Tensor:
            return _native.scaled_int(rows, pk, qk, qmax, mode)

    else:
        example = _layout.rows(x32, axis) if fmt.per_channel else x32.reshape(1, -1)
        kern = _compiled.kernel("int", int_kernel, mode, r is Route.INDUCTOR, example, p0, q0, qmax)

    def scaled(x: torch.Tensor, keys: torch.Tensor | None) -> torch.Tensor:
        pk, qk = (p0, q0) if keys is None else params_for(fmt.grid, True, keys, p.sr_bits, dev)
        if fmt.per_channel:
            return _layout.unrows(kern(_layout.rows(x, axis), pk, qk), x.shape, axis)
        return kern(x.reshape(1, -1), pk, qk).reshape(x.shape)

    return scaled


def _rowwise_cast(fmt: RowwiseFormat, axis: int) -> Run:
    """Row-wise formats: one scale and bias per row, the rows along ``axis``."""

    def rowwise(x: torch.Tensor, keys: torch.Tensor | None) -> torch.Tensor:
        return _layout.unrows(_rowwise.rowwise(_layout.rows(x, axis), fmt), x.shape, axis)

    return rowwise


def _block_cast(
    p: Plan, fmt: BlockFormat | SharedMicroExpFormat, x32: torch.Tensor, axis: int, r: Route
) -> Run:
    """Block formats: blocks in the layout ``numerics.kernels.layout`` gives (read in place,
    or through an axis-last copy; stochastic rounding numbers its random bits in the padded
    axis-last layout either way)."""
    mode, dev = p.mode, x32.device
    view = block_view(fmt, mode, tuple(x32.shape), axis)
    name, fn, extra, p0, q0 = _block_kernel(fmt, None, p.sr_bits, dev)
    kern: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    if r is Route.CPP:
        cpp_view = _native.blocks_view(view, extra if name == "smx" else 1)
        assert cpp_view is not None  # the router checked
        view = cpp_view

        def kern(b: torch.Tensor, pk: torch.Tensor, qk: torch.Tensor) -> torch.Tensor:
            if name == "smx":
                return _native.smx(b, pk, qk, int(extra), mode)
            return _native.block(b, pk, qk, bool(extra), mode)

    else:
        compiled = r is Route.INDUCTOR
        kern = _compiled.kernel(
            name, fn, mode, compiled, view.blocks(x32), p0, q0, extra, static=True
        )
    nbpa = view.blocks_per_axis

    def block(x: torch.Tensor, keys: torch.Tensor | None) -> torch.Tensor:
        pk, qk = p0, q0
        if keys is not None:
            pk, qk = _block_kernel(fmt, keys, p.sr_bits, dev)[3:]
            pk[P_NBPA] = nbpa  # pk is this call's own copy (its keys are filled in)
        return view.unblocks(kern(view.blocks(x), pk, qk))

    return block
