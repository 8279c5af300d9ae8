"""Compiled (torch.compile) versions of the kernels, beside the eager ones.

One compiled function per (kernel, rounding mode): format parameters are tensors, so every
format of a family shares it, and shapes are dynamic. Compilation is paid once per process
and cached on disk by Inductor (``TORCHINDUCTOR_CACHE_DIR``; the tests point it at
``.cache/inductor``). If compilation fails the kernel falls back to its eager path with a
warning, so a compiler bug never costs a result.

Environment:
- ``NUMERICS_COMPILE=0`` never compiles (everything eager);
- ``NUMERICS_COMPILE_MIN_NUMEL`` (default 65536): below this many elements the ``auto``
  backend runs eagerly, where a compiled call's fixed overhead would dominate.
"""

from __future__ import annotations

import os
import threading
import types
import warnings
from collections.abc import Callable
from typing import Any

import torch

from numerics.rounding import Rounding

_LOCK = threading.Lock()
_COMPILED: dict[tuple[str, Rounding], Callable[..., torch.Tensor]] = {}
_BROKEN: set[tuple[str, Rounding]] = set()


def compile_enabled() -> bool:
    return os.environ.get("NUMERICS_COMPILE", "1") not in ("0", "false", "no", "off")


def min_numel() -> int:
    return int(os.environ.get("NUMERICS_COMPILE_MIN_NUMEL", "65536"))


def _raise_recompile_limit() -> None:
    # Each rounding mode is its own compiled function, but Dynamo counts graphs per code
    # object; shape specialisations (size-1 dims) can add a few. Raise, never lower.
    cfg: Any = torch._dynamo.config
    for attr in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, attr) and getattr(cfg, attr) < 64:
            setattr(cfg, attr, 64)


def _make(
    fn: Callable[..., torch.Tensor], mode: Rounding, static: bool
) -> Callable[..., torch.Tensor]:
    def kernel(*args: Any) -> torch.Tensor:
        return fn(*args, mode=mode)

    # Dynamo caches graphs per code object: give each (kernel, mode) its own, so their
    # guards never scan each other's entries.
    name = f"{fn.__name__}_{mode.value}{'_static' if static else ''}"
    code = kernel.__code__.replace(co_name=name, co_qualname=name)
    unique = types.FunctionType(code, kernel.__globals__, name, None, kernel.__closure__)
    # static: only dim 0 of the first argument varies (marked per call); the other dims (a
    # block size) stay constants, so the inner loops are fixed-length and fully vectorised.
    # emulate_precision_casts: keep a float32 -> bf16/fp16 -> float32 round trip (the cast
    # paths' rounding) instead of folding it away.
    return torch.compile(
        unique,
        dynamic=not static,
        fullgraph=True,
        options={"emulate_precision_casts": True},
    )


def run(
    name: str,
    fn: Callable[..., torch.Tensor],
    mode: Rounding,
    compiled: bool,
    *args: Any,
    static: bool = False,
) -> torch.Tensor:
    """Run kernel ``fn(*args, mode=mode)``, compiled when asked and possible.

    ``static=True`` compiles for fixed trailing dims of ``args[0]`` (one graph per block
    size) with a dynamic leading dim; otherwise every dim is dynamic.
    """
    key = (name, mode)
    if not compiled or key in _BROKEN:
        return fn(*args, mode=mode)
    with _LOCK:
        kernel = _COMPILED.get(key)
        if kernel is None:
            _raise_recompile_limit()
            kernel = _COMPILED[key] = _make(fn, mode, static)
    if static:
        torch._dynamo.maybe_mark_dynamic(args[0], 0)
    try:
        return kernel(*args)
    except Exception as exc:  # a compiler failure must not cost the result
        _BROKEN.add(key)
        warnings.warn(
            f"numerics: compiling kernel {name}/{mode.value} failed ({type(exc).__name__}: "
            f"{str(exc)[:200]}); using the eager path from now on",
            RuntimeWarning,
            stacklevel=3,
        )
        return fn(*args, mode=mode)
