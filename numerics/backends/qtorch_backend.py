"""``backend="qtorch"``: the optional qtorch library (0.3.0) as a quantization backend.

qtorch (Zhang et al., "QPyTorch", arXiv 1910.04540) is imported only when this backend is
asked for, never at package import: its first import compiles a C++ extension with ninja
(about a minute). The build goes to ``TORCH_EXTENSIONS_DIR`` (torch's default:
``~/.cache/torch_extensions``), so it is paid once per machine, not per checkout. Install with
``pip install 'numerics[qtorch]'`` (qtorch==0.3.0 and ninja).

What qtorch has, and how our formats map to it:

- ``FloatFormat`` (default bias, subnormals kept, at most 22 mantissa bits) ->
  ``qtorch.quant.float_quantize(x, exp=ebits, man=mbits, rounding=...)``. qtorch's float format
  has no inf and no NaN: its top binade is the all-ones exponent field, with every mantissa, so
  its largest value is ``2**(2**(ebits-1)) * (2 - 2**-mbits)`` (131008 for e5m10, 480 for e4m3).
  Overflow and special inputs therefore differ from our formats: fp16 gives 70016 for 70000
  and 131008 for inf and NaN; fp8_e4m3 (OCP, max 448, NaN on overflow) gives up to 480. Only
  ebits = 8 (bf16) keeps inf, because qtorch never clips that exponent field (there a NaN
  whose payload fills the mantissa carries into the sign bit and becomes a zero). Its "nearest"
  rounds ties AWAY from zero (it adds half an ulp to the bit pattern and truncates), and below
  the normal range it rounds ``fl32(|x| + 2**emin) - 2**emin``: the float32 addition can round
  first (double rounding), and a negative value that rounds to zero comes back as +0.0.
- ``FixedFormat`` -> ``qtorch.quant.fixed_point_quantize(x, wl, fl, clamp=True,
  symmetric=..., rounding=...)``. Its "nearest" is ``nearbyint``, i.e. ties to even, except that
  it computes ``(x * 2**fl + 0.5) - 0.5`` with a float32 addition, which rounds for
  ``|x * 2**fl| >= 2**23`` (only 25-bit words reach that after clamping).
- Rounding: ``nearest_even`` (our ``"nearest"``) maps to qtorch's "nearest" and ``stochastic``
  to its "stochastic"; qtorch has no other modes.
- Everything else (block formats, scaled-integer formats, formats with another bias, flushed
  subnormals, 23 mantissa bits, other rounding modes) raises ``NotImplementedError`` naming
  what qtorch supports.

Random bits: qtorch's stochastic rounding cannot be seeded from here. On the CPU its float
rounding draws from a private ``std::mt19937`` seeded by ``std::random_device`` when the
extension loads, so results are not reproducible at all; its fixed-point rounding draws
``torch.rand_like`` from torch's global default generator (reproducible under
``torch.manual_seed`` only). The ``generator`` argument is accepted for signature
compatibility and ignored.

qtorch's CPU kernels are single-threaded loops over float32; inputs of other dtypes are widened
to float32 (exactly) and the result is cast back to the input's dtype.
"""

from __future__ import annotations

import importlib.metadata
import os
import threading
from types import ModuleType

import torch

from numerics.formats import FixedFormat, FloatFormat, Format
from numerics.rounding import Rounding

QTORCH_VERSION = "0.3.0"  # the version the deviations in the tests are recorded for
INSTALL_HINT = "pip install 'numerics[qtorch]' (qtorch==0.3.0 and ninja)"

# Our mode -> qtorch's rounding string. qtorch calls its only deterministic mode "nearest";
# our parser maps "nearest" to nearest_even, so that is the mode it answers for (its float
# ties go away from zero: the tests record where that differs).
_MODES = {Rounding.NEAREST_EVEN: "nearest", Rounding.STOCHASTIC: "stochastic"}

_KIND_NAMES = {"block": "block-scaled", "smx": "shared-micro-exponent", "int": "scaled-integer"}

_LOCK = threading.Lock()
_MODULE: ModuleType | None = None
_ERROR: Exception | None = None


def _import_qtorch() -> ModuleType:
    try:
        import qtorch.quant as quant  # the first import builds the C++ extension
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] == "qtorch":
            raise ImportError(
                f"backend='qtorch' needs the optional qtorch package, which is not installed: "
                f"{INSTALL_HINT}"
            ) from exc
        raise _build_error(exc) from exc
    except Exception as exc:  # torch.utils.cpp_extension raises RuntimeError / OSError
        raise _build_error(exc) from exc
    return quant


def _build_error(exc: Exception) -> RuntimeError:
    return RuntimeError(
        f"backend='qtorch': qtorch is installed but its C++ extension (quant_cpu) could not be "
        f"built or loaded with torch {torch.__version__}: {type(exc).__name__}: {exc}. "
        f"It needs ninja and a C++ compiler ({INSTALL_HINT}); the build directory is "
        f"TORCH_EXTENSIONS_DIR={os.environ.get('TORCH_EXTENSIONS_DIR', '<torch default>')}"
    )


def load_qtorch() -> ModuleType:
    """``qtorch.quant``, imported (and its extension built) on first use.

    Raises ImportError when qtorch is not installed and RuntimeError when its extension cannot
    be built. A failure is remembered, so later calls fail at once instead of rebuilding.
    """
    global _MODULE, _ERROR
    with _LOCK:
        if _MODULE is not None:
            return _MODULE
        if _ERROR is not None:
            raise _ERROR
        try:
            _MODULE = _import_qtorch()
        except (ImportError, RuntimeError) as exc:
            _ERROR = exc
            raise
        return _MODULE


def installed_version() -> str | None:
    """qtorch's installed version from its package metadata (no import), or None."""
    try:
        return importlib.metadata.version("qtorch")
    except importlib.metadata.PackageNotFoundError:
        return None


def unavailable_reason() -> str | None:
    """None when qtorch imports and runs here, else why not (imports it: slow the first time)."""
    try:
        load_qtorch()
    except (ImportError, RuntimeError) as exc:
        return str(exc)
    return None


def unsupported_reason(fmt: Format, mode: Rounding) -> str | None:
    """None when qtorch has ``fmt`` with ``mode``, else why not. Never imports qtorch."""
    if mode not in _MODES:
        return (
            f"qtorch has no rounding mode {mode.value!r}; it supports nearest_even (its "
            "'nearest'; float ties go away from zero) and stochastic"
        )
    if isinstance(fmt, FloatFormat):
        standard_bias = 2 ** (fmt.ebits - 1) - 1
        if fmt.bias != standard_bias:
            return (
                f"format {fmt.name!r} has exponent bias {fmt.bias}; qtorch's float_quantize "
                f"only has the standard bias 2**(exp-1)-1 = {standard_bias}"
            )
        if not fmt.subnormals:
            return (
                f"format {fmt.name!r} flushes subnormals; qtorch's float_quantize always keeps them"
            )
        if fmt.mbits > 22:
            # man=23 makes qtorch shift by -1 (undefined behaviour; flips the sign on x86).
            return (
                f"format {fmt.name!r} has {fmt.mbits} mantissa bits; qtorch's float_quantize "
                "needs man <= 22"
            )
        return None
    if isinstance(fmt, FixedFormat):
        return None
    kind = _KIND_NAMES.get(fmt.kind, fmt.kind)
    return (
        f"qtorch has no {kind} format like {fmt.name!r}; it supports float formats "
        "(float_quantize: exponent/mantissa widths, no inf/NaN) and fixed point "
        "(fixed_point_quantize). Its block_quantize shares one exponent per tensor or per "
        "slice of a dim, not per block of k elements, so it matches none of our block formats"
    )


def supports(fmt: Format, mode: Rounding) -> bool:
    return unsupported_reason(fmt, mode) is None


def quantize_qtorch(
    x: torch.Tensor,
    fmt: Format,
    mode: Rounding,
    generator: torch.Generator | int | None = None,
) -> torch.Tensor:
    """``x`` rounded to ``fmt`` by qtorch, as a tensor of x's dtype and shape.

    ``generator`` is ignored: qtorch's stochastic rounding cannot be seeded (see the module
    docstring). Raises NotImplementedError for a format or mode qtorch lacks (checked before
    qtorch is imported), ImportError when qtorch is not installed and RuntimeError when its
    extension cannot be built.
    """
    del generator  # accepted for signature compatibility; qtorch draws its own bits
    reason = unsupported_reason(fmt, mode)
    if reason is not None:
        raise NotImplementedError(f"backend='qtorch': {reason}")
    if x.numel() >= 2**31:
        # qtorch's CPU float kernel counts elements in a C int.
        raise ValueError("backend='qtorch': at most 2**31 - 1 elements per call; split x")
    quant = load_qtorch()
    rounding = _MODES[mode]
    with torch.no_grad():
        # qtorch reads float32 through data_ptr<float>(): widen (exact) and make contiguous.
        x32 = x.detach().to(torch.float32).contiguous()
        if isinstance(fmt, FloatFormat):
            y = quant.float_quantize(x32, exp=fmt.ebits, man=fmt.mbits, rounding=rounding)
        else:
            assert isinstance(fmt, FixedFormat)
            y = quant.fixed_point_quantize(
                x32, fmt.wl, fmt.fl, clamp=True, symmetric=fmt.symmetric, rounding=rounding
            )
        return y.reshape(x.shape).to(x.dtype)
