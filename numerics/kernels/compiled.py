"""Compiled (Inductor) versions of the kernels, beside the eager ones.

Each kernel is traced once per (kernel, rounding mode, non-tensor arguments, which dims are
1, device) with symbolic shapes (``make_fx``) and compiled by Inductor
(``torch._inductor.standalone_compile``), so one compiled function serves every shape and,
since format parameters are tensors, every format of a family. The compiled function is
called directly: no Dynamo frame or guard evaluation per call, which costs about 30-40 us
on a small tensor here (against about 10 us for the direct call). Sizes are never
duck-unified (a dim that happens to equal another stays its own symbol), and a dim of size
1 gets its own trace, since symbolic tracing specialises on it. Compilation is paid once per
process and cached on disk by Inductor (``TORCHINDUCTOR_CACHE_DIR``; the tests point it at
``.cache/inductor``). If compilation fails the kernel falls back to its eager path with a
warning, so a compiler bug never costs a result.

When the ``auto`` backend runs these kernels (and when it runs eager ones) is decided by
``numerics.route`` from ``numerics.kernels.settings`` (``NUMERICS_COMPILE``,
``NUMERICS_COMPILE_MIN_NUMEL``).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from typing import Any

import torch

from numerics.rounding import Rounding

_LOCK = threading.Lock()
# key -> (what standalone_compile returned, its inner entry point or None; see _direct)
_COMPILED: dict[tuple[Any, ...], tuple[Callable[..., Any], Callable[..., Any] | None]] = {}
_BROKEN: set[tuple[str, Rounding]] = set()

# Inductor's store-or-recompute thresholds, per kernel, on CPU. Its defaults store some of
# the block kernels' intermediates to memory between separate loops, which made every
# rounding mode but nearest_even run at about half the speed of a single pass (and, once
# those modes moved to float arithmetic, float-element stochastic rounding at 0.11x clone).
# Chosen by measuring 16M-element casts against torch.clone (2 threads; x clone):
# - block kernels (MX, BFP), with the integer rounding core: stochastic 0.30 -> 0.47-0.53,
#   toward_zero 0.34 -> 0.59-0.60; with the float path now in use, defaults -> these:
#   mxfp8_e4m3 stochastic 0.11 -> 0.49-0.50, bfp8_b16 and every nearest_even and
#   toward_zero cast unchanged (0.50; 0.61-0.66);
# - shared micro-exponents: stochastic 0.14 -> 0.43 with the integer core (the block
#   kernels' setting left it at 0.12), 0.45-0.47 either way with the float path; element
#   kernels left as they are.
_CPU_REALIZE: dict[str, dict[str, int]] = {
    "block_fixed": {"realize_cpu_opcount_threshold": 200, "realize_reads_threshold": 8},
    "block_float": {"realize_cpu_opcount_threshold": 200, "realize_reads_threshold": 8},
    "smx": {"realize_cpu_opcount_threshold": 1000},
}


Key = tuple[Any, ...]
# a kernel returns its result, or its result and extra outputs that callers drop
KernelFn = Callable[..., torch.Tensor | tuple[torch.Tensor, ...]]


def _key(name: str, mode: Rounding, args: tuple[Any, ...], static: bool) -> Key:
    """What a trace depends on: the kernel, mode, constants, device and the layout of the
    data argument (when static its trailing dims, else which dims are 1). The other tensor
    arguments are the 1-d parameter vectors (and, for element kernels, args[0]'s int32 view)."""
    x = args[0]
    if static:  # dim 0 symbolic (specialised by tracing when it is 1), the rest constants
        layout: tuple[Any, ...] = (x.shape[0] == 1, *x.shape[1:])
    else:
        layout = tuple(s == 1 for s in x.shape)
    consts = tuple(a for a in args if not isinstance(a, torch.Tensor))
    return (name, mode, static, x.device.type, layout, consts)


def _build(
    name: str,
    fn: KernelFn,
    mode: Rounding,
    args: tuple[Any, ...],
    static: bool,
) -> Callable[..., Any]:
    """Trace ``fn`` on ``args`` (tensors symbolic, everything else a constant) and compile.

    ``static``: the trailing dims of args[0] (the values: a block size, and the post dim of
    blocks read in place) are specialised to constants, so the inner loops are fixed-length
    and fully vectorised; only dim 0 stays symbolic. (Passing the data flattened and viewing it as
    (-1, block) inside instead made the block kernels' stochastic rounding 4x slower.)
    """
    from torch._inductor import config as inductor_config
    from torch._inductor import standalone_compile
    from torch.fx.experimental import _config as fx_config
    from torch.fx.experimental.proxy_tensor import make_fx

    slots = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    trailing = tuple(args[0].shape[1:]) if static else ()

    def kernel(*tensors: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        full = list(args)
        for i, t in zip(slots, tensors, strict=True):
            # a view to the concrete trailing dims specialises them (symbolic dim 0 stays)
            full[i] = t.view(t.shape[0], *trailing) if static and i == 0 else t
        return fn(*full, mode=mode)

    example = [args[i] for i in slots]
    settings: dict[str, Any] = {"emulate_precision_casts": True}
    if args[0].device.type == "cpu":
        settings.update(_CPU_REALIZE.get(name, {}))
    # emulate_precision_casts: keep a float32 -> bf16/fp16 -> float32 round trip (the cast
    # paths' rounding) instead of folding it away.
    with (
        fx_config.patch(use_duck_shape=False),  # type: ignore[attr-defined]
        inductor_config.patch(settings),
    ):
        gm = make_fx(kernel, tracing_mode="symbolic")(*example)
        return standalone_compile(gm, example, dynamic_shapes="from_graph")


def kernel(
    name: str,
    fn: KernelFn,
    mode: Rounding,
    compiled: bool,
    *args: Any,
    static: bool = False,
) -> Callable[..., torch.Tensor]:
    """The callable that runs ``fn(*args, mode=mode)``, compiled when asked and possible.

    It takes ``args``' tensors (in order; the other arguments are fixed) and serves any
    tensors of the same layout (see ``_key``), so a caller that makes the same cast again
    can keep it and skip the lookup. ``static=True`` compiles for fixed trailing dims of
    ``args[0]`` (one trace per block size) with a dynamic leading dim;
    otherwise every dim is symbolic. A compiler failure, now or in a later call, sends the
    kernel to its eager path with a warning, so it never costs a result.
    """
    slots = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    # what the eager path fills in; no tensor kept (a kept callable must not pin its inputs)
    template = [None if isinstance(a, torch.Tensor) else a for a in args]

    def eager(*tensors: torch.Tensor) -> torch.Tensor:
        full = list(template)
        for i, t in zip(slots, tensors, strict=True):
            full[i] = t
        out = fn(*full, mode=mode)
        return out[0] if isinstance(out, tuple) else out  # extra outputs are dropped

    if not compiled or (name, mode) in _BROKEN:
        return eager
    key = _key(name, mode, args, static)
    try:
        entry = _COMPILED.get(key)
        if entry is None:
            with _LOCK:
                entry = _COMPILED.get(key)
                if entry is None:
                    built = _build(name, fn, mode, args, static)
                    entry = _COMPILED[key] = (built, _direct(built))
    except Exception as exc:
        _broken(name, mode, exc)
        return eager
    built, direct = entry

    def call(*tensors: torch.Tensor) -> torch.Tensor:
        if (name, mode) in _BROKEN:
            return eager(*tensors)
        try:
            out = direct(list(tensors)) if direct is not None else built(*tensors)
            return out[0] if isinstance(out, list | tuple) else out
        except Exception as exc:
            _broken(name, mode, exc)
            return eager(*tensors)

    return call


def _broken(name: str, mode: Rounding, exc: Exception) -> None:
    _BROKEN.add((name, mode))
    warnings.warn(
        f"numerics: compiling kernel {name}/{mode.value} failed ({type(exc).__name__}: "
        f"{str(exc)[:200]}); using the eager path from now on",
        RuntimeWarning,
        stacklevel=4,
    )


def _direct(built: Callable[..., Any]) -> Callable[[list[torch.Tensor]], Any] | None:
    """The compiled code's own entry point (``call(args)`` of Inductor's output module)
    inside what ``standalone_compile`` returns, or None where this torch nests it
    differently. Inference graphs with no mutation and fresh outputs need none of the
    wrappers around it, which cost about 6 us a call here (22 us against 16 on a
    128 x 64 mxfp8 cast). Found by walking the wrappers' closures, a private layout: the
    tests check both routes against the eager kernels."""
    try:
        from torch._inductor.output_code import CompiledFxGraph
    except ImportError:  # pragma: no cover - another torch
        return None
    todo: list[Any] = [built]
    seen: set[int] = set()
    while todo:
        obj = todo.pop()
        if id(obj) in seen or len(seen) > 64:
            continue
        seen.add(id(obj))
        if isinstance(obj, CompiledFxGraph):
            simple = (
                getattr(obj, "_boxed_call", False)
                and not obj.mutated_inputs
                and not getattr(obj, "inputs_to_check", None)
            )
            fn = getattr(obj, "current_callable", None)
            return fn if simple and callable(fn) else None
        for attr in ("_compiled_fn", "__wrapped__", "compiled_fn"):
            if (v := getattr(obj, attr, None)) is not None:
                todo.append(v)
        for cell in getattr(obj, "__closure__", None) or ():
            try:
                todo.append(cell.cell_contents)
            except ValueError:
                continue
    return None


def run(
    name: str,
    fn: KernelFn,
    mode: Rounding,
    compiled: bool,
    *args: Any,
    static: bool = False,
) -> torch.Tensor:
    """Run kernel ``fn(*args, mode=mode)``, compiled when asked and possible (see
    ``kernel``)."""
    call = kernel(name, fn, mode, compiled, *args, static=static)
    return call(*[a for a in args if isinstance(a, torch.Tensor)])
