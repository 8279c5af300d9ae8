"""Element-wise kernel: float, fixed-point and integer grids, one value at a time."""

from __future__ import annotations

import torch

from numerics.formats import FixedFormat, FloatFormat
from numerics.kernels.core import (
    P_EMIN_F,
    P_M,
    P_MAX_NEG,
    P_MAX_POS,
    P_MINNORM,
    P_OVF,
    P_SR_BITS,
    round_bits,
    round_nearest_even_cast,
    round_nearest_even_float,
    round_nearest_even_shift,
    sr_random,
)
from numerics.kernels.grid import round_elements
from numerics.rounding import Rounding

# Grids that are exactly a torch dtype's, with its inf/NaN and subnormals: (emin, emax, m).
CAST_PATHS = {"cast_bf16": torch.bfloat16, "cast_fp16": torch.float16}
_CAST_GRIDS = {(-126, 127, 7): "cast_bf16", (-14, 15, 10): "cast_fp16"}


def element_kernel(
    x: torch.Tensor,
    b: torch.Tensor,
    p: torch.Tensor,
    q: torch.Tensor,
    path: str = "generic",
    *,
    mode: Rounding,
) -> torch.Tensor:
    """Round float32 ``x`` (with ``b``, its int32 view) to the grid described by ``p``
    (int32 parameters) and ``q`` (the float parameters of the float-arithmetic path).

    Returns float32 values (the "float" path) or their int32 bit patterns (the others): the
    caller views the result as float32 outside the compiled code, where a view is free.
    ``path`` picks the nearest_even fast path the format allows (see ``rne_path``).
    """
    if mode is Rounding.NEAREST_EVEN and path in CAST_PATHS:
        return round_nearest_even_cast(x, q, CAST_PATHS[path])
    if mode is Rounding.NEAREST_EVEN and path.startswith("float"):
        return round_nearest_even_float(x, q, ftz=path == "float_ftz", twos=path == "float_twos")
    if mode is Rounding.NEAREST_EVEN and path.startswith("shift"):
        return round_nearest_even_shift(
            b, p[P_M], p[P_MAX_POS], p[P_MAX_NEG], p[P_OVF], p[P_MINNORM], path == "shift_ftz"
        )
    rnd = sr_random(b.shape, p, b.device) if mode is Rounding.STOCHASTIC else None
    return round_bits(
        b,
        p[P_M],
        p[P_EMIN_F],
        p[P_MAX_POS],
        p[P_MAX_NEG],
        p[P_OVF],
        p[P_MINNORM],
        mode,
        rnd,
        p[P_SR_BITS],
    )


def as_float(y: torch.Tensor) -> torch.Tensor:
    """A kernel result as float32 values (viewing int32 bit patterns)."""
    return y if y.dtype == torch.float32 else y.view(torch.float32)


def rne_path(emin: int, emax: int, mbits: int, ieee: bool = False) -> str:
    """Which nearest_even implementation a grid can use.

    "cast_bf16"/"cast_fp16" when ``ieee`` (inf and NaN as IEEE 754, subnormals kept) and the
    grid is bf16's or fp16's: torch's own cast;
    "shift" when its subnormals start where float32's do (emin = -126: the e8 family, bf16);
    "float" (the float adder, ``round_nearest_even_float``) when m <= 22 and emax <= 102:
    every narrower format and fixed-point grids up to 24 bits; otherwise the generic core.
    The caller appends "_ftz" (flush subnormals) or "_twos" (two's-complement grid).
    """
    if ieee and (emin, emax, mbits) in _CAST_GRIDS:
        return _CAST_GRIDS[(emin, emax, mbits)]
    if emin == -126:
        return "shift"
    if mbits <= 22 and emax <= 102:
        return "float"
    return "generic"


def element_path(fmt: FloatFormat | FixedFormat) -> str:
    """The element kernel's path for ``fmt`` (``rne_path``, with its suffix)."""
    if isinstance(fmt, FloatFormat):
        path = rne_path(fmt.emin, fmt.emax, fmt.mbits, ieee=fmt.has_inf and fmt.subnormals)
        return path + "_ftz" if path in ("float", "shift") and not fmt.subnormals else path
    path = rne_path(-127, fmt.emax, fmt.emax + fmt.fl)  # a fixed grid: m = emax + fl
    return path + "_twos" if path == "float" else path


def int_kernel(
    x: torch.Tensor, p: torch.Tensor, qf: torch.Tensor, qmax: float, *, mode: Rounding
) -> torch.Tensor:
    """Symmetric scaled integers, one fp32 scale per row of ``x`` (rows, n).

    ``scale = amax / qmax`` (1 for an all-zero row), then as torch's fake quantisation:
    ``round(x * (1/scale))`` clamped to [-qmax, qmax], times ``scale`` (``x / scale`` where
    1/scale overflows). A row holding NaN or
    inf becomes NaN.
    """
    amax = x.abs().amax(dim=-1, keepdim=True)
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    inv = 1.0 / scale
    # torch's fake quantisation multiplies by 1/scale; for a row so tiny that 1/scale
    # overflows (amax < qmax * 2**-128) that would give inf * 0 = NaN, so divide instead.
    v = torch.where(torch.isinf(inv), x / scale, x * inv)
    if mode is Rounding.NEAREST_EVEN and qmax < 2.0**22:
        # the float adder rounds a value below 2**22 in magnitude to an integer, ties to even,
        # and gives +0 for a negative value that rounds to zero (the grid's only zero): fewer
        # operations than the general grid's (int8: 0.52 -> 0.61x clone)
        q = (torch.clamp(v, -qmax, qmax) + 1.5 * 2.0**23) - 1.5 * 2.0**23
    else:  # v as computed is what torch's fake quantisation rounds
        q = round_elements(v, v, p, qf, True, mode)
    y = q * scale
    return torch.where(torch.isfinite(amax), y, torch.full_like(y, float("nan")))
