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

Environment:
- ``NUMERICS_COMPILE=0`` never compiles (everything eager);
- ``NUMERICS_COMPILE_MIN_NUMEL`` (default 65536): below this many elements the ``auto``
  backend runs eagerly, where a compiled call's fixed overhead would dominate. Casts with a
  fast eager path have their own thresholds (``numerics.quantize``: torch's bf16/fp16/e5m2
  casts below 2**20 elements, its e4m3 cast below 8192, the lean block kernels below 4096).
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable
from typing import Any

import torch

from numerics.rounding import Rounding

_LOCK = threading.Lock()
_COMPILED: dict[tuple[Any, ...], Callable[..., Any]] = {}
_BROKEN: set[tuple[str, Rounding]] = set()

# Inductor's store-or-recompute thresholds, per kernel, on CPU. Its defaults store some of
# the block kernels' intermediates (the element-space values and their bit patterns) to
# memory between separate loops, which made every rounding mode but nearest_even (which
# needs no bit patterns) run at about half the speed of a single pass. Chosen by measuring
# 16M-element casts against torch.clone (2 threads; x clone, defaults -> these):
# - block kernels (MX, BFP): stochastic 0.30 -> 0.47-0.53, toward_zero 0.34 -> 0.59-0.60;
# - shared micro-exponents: stochastic 0.14 -> 0.43 (the block kernels' setting leaves it
#   at 0.12); nearest_even unchanged for both (0.55-0.68), element kernels left as they are.
_CPU_REALIZE: dict[str, dict[str, int]] = {
    "block_fixed": {"realize_cpu_opcount_threshold": 200, "realize_reads_threshold": 8},
    "block_float": {"realize_cpu_opcount_threshold": 200, "realize_reads_threshold": 8},
    "smx": {"realize_cpu_opcount_threshold": 1000},
}


def compile_enabled() -> bool:
    return os.environ.get("NUMERICS_COMPILE", "1") not in ("0", "false", "no", "off")


def min_numel() -> int:
    return int(os.environ.get("NUMERICS_COMPILE_MIN_NUMEL", "65536"))


Key = tuple[Any, ...]


def _key(name: str, mode: Rounding, args: tuple[Any, ...], static: bool) -> Key:
    """What a trace depends on: the kernel, mode, constants, device and the layout of the
    data argument (when static its trailing dims, else which dims are 1). The other tensor
    arguments are args[0]'s int32 view and the 1-d parameter vectors."""
    x = args[0]
    if static:  # dim 0 symbolic (specialised by tracing when it is 1), the rest constants
        layout: tuple[Any, ...] = (x.shape[0] == 1, *x.shape[1:])
    else:
        layout = tuple(s == 1 for s in x.shape)
    consts = tuple(a for a in args if not isinstance(a, torch.Tensor))
    return (name, mode, static, x.device.type, layout, consts)


def _build(
    name: str,
    fn: Callable[..., torch.Tensor],
    mode: Rounding,
    args: tuple[Any, ...],
    static: bool,
) -> Callable[..., Any]:
    """Trace ``fn`` on ``args`` (tensors symbolic, everything else a constant) and compile.

    ``static``: the trailing dims of args[0] and args[1] (the values and their int32 view; a
    block size) are specialised to constants, so the inner loops are fixed-length and fully
    vectorised; only dim 0 stays symbolic. (Passing the data flattened and viewing it as
    (-1, block) inside instead made the block kernels' stochastic rounding 4x slower.)
    """
    from torch._inductor import config as inductor_config
    from torch._inductor import standalone_compile
    from torch.fx.experimental import _config as fx_config
    from torch.fx.experimental.proxy_tensor import make_fx

    slots = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    trailing = tuple(args[0].shape[1:]) if static else ()

    def kernel(*tensors: torch.Tensor) -> torch.Tensor:
        full = list(args)
        for i, t in zip(slots, tensors, strict=True):
            # a view to the concrete trailing dims specialises them (symbolic dim 0 stays)
            full[i] = t.view(t.shape[0], *trailing) if static and i < 2 else t
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


def run(
    name: str,
    fn: Callable[..., torch.Tensor],
    mode: Rounding,
    compiled: bool,
    *args: Any,
    static: bool = False,
) -> torch.Tensor:
    """Run kernel ``fn(*args, mode=mode)``, compiled when asked and possible.

    ``static=True`` compiles for fixed trailing dims of ``args[0]`` and ``args[1]`` (one
    trace per block size) with a dynamic leading dim; otherwise every dim is symbolic.
    """
    if not compiled or (name, mode) in _BROKEN:
        return fn(*args, mode=mode)
    key = _key(name, mode, args, static)
    kernel = _COMPILED.get(key)
    try:
        if kernel is None:
            with _LOCK:
                kernel = _COMPILED.get(key)
                if kernel is None:
                    kernel = _COMPILED[key] = _build(name, fn, mode, args, static)
        out = kernel(*[a for a in args if isinstance(a, torch.Tensor)])
        return out[0] if isinstance(out, list | tuple) else out
    except Exception as exc:  # a compiler failure must not cost the result
        _BROKEN.add((name, mode))
        warnings.warn(
            f"numerics: compiling kernel {name}/{mode.value} failed ({type(exc).__name__}: "
            f"{str(exc)[:200]}); using the eager path from now on",
            RuntimeWarning,
            stacklevel=3,
        )
        return fn(*args, mode=mode)
