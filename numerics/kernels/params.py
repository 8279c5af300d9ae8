"""The int32 parameter vector each kernel takes, built from a format descriptor."""

from __future__ import annotations

import functools
import math

import torch

from numerics.formats import FixedFormat, FloatFormat
from numerics.formats.element import f32_bits
from numerics.kernels.core import (
    INF,
    P_CEIL,
    P_EMAX_ELEM,
    P_EMIN_F,
    P_KEY0,
    P_KEY1,
    P_M,
    P_MAX_NEG,
    P_MAX_POS,
    P_MINNORM,
    P_OVF,
    P_SIZE,
    P_SR_BITS,
    Q_C,
    Q_HI,
    Q_LO,
    Q_MAX_NEG,
    Q_MAX_POS,
    Q_MINNORM,
    Q_SAT,
    Q_SIZE,
    Q_SPECIAL,
    Q_SPLIT,
    Q_TWOS,
    QNAN,
)

Grid = FloatFormat | FixedFormat


def grid_slots(fmt: Grid, saturate: bool) -> dict[int, int]:
    """Slots describing an element grid (see ``numerics.kernels.core``)."""
    if isinstance(fmt, FloatFormat):
        ovf = -1 if saturate else (INF if fmt.has_inf else QNAN)
        minnorm = 0 if fmt.subnormals else f32_bits(fmt.min_normal)
        maxbits = f32_bits(fmt.max)
        return {
            P_M: fmt.mbits,
            P_EMIN_F: fmt.emin + 127,
            P_MAX_POS: maxbits,
            P_MAX_NEG: maxbits,
            P_OVF: ovf,
            P_MINNORM: minnorm,
            P_EMAX_ELEM: fmt.emax,
        }
    # Fixed point: a uniform grid below its largest binade, i.e. "emin" = emax.
    emax = fmt.emax
    return {
        P_M: emax + fmt.fl,
        P_EMIN_F: emax + 127,
        P_MAX_POS: f32_bits(fmt.max),
        P_MAX_NEG: f32_bits(-fmt.min),
        P_OVF: -1,
        P_MINNORM: -1,  # two's complement: a zero result is +0
        P_EMAX_ELEM: emax,
    }


def make_params(
    slots: dict[int, int], sr_bits: int, device: torch.device, ceil: bool = False
) -> torch.Tensor:
    """The int32 vector, random keys left at 0 (``params_for`` fills them per call)."""
    p = [0] * P_SIZE
    for k, v in slots.items():
        p[k] = v
    p[P_SR_BITS] = sr_bits
    p[P_CEIL] = int(ceil)
    return torch.tensor(p, dtype=torch.int32, device=device)


def float_params(fmt: Grid, saturate: bool, device: torch.device) -> torch.Tensor:
    """The float32 parameter vector of ``round_nearest_even_float`` (see core's Q_ slots)."""
    if isinstance(fmt, FloatFormat):
        emin, emax, m = fmt.emin, fmt.emax, fmt.mbits
        maxpos = maxneg = fmt.max
        special = math.inf if fmt.has_inf else math.nan
        minnorm = 0.0 if fmt.subnormals else fmt.min_normal
        twos = 0.0
    else:
        emax = fmt.emax
        emin, m = emax, emax + fmt.fl
        maxpos, maxneg = fmt.max, -fmt.min
        special, minnorm, twos = math.nan, 0.0, 1.0
        saturate = True
    q = [0.0] * Q_SIZE
    q[Q_LO], q[Q_HI] = 2.0**emin, 2.0 ** (emax + 1)
    q[Q_SPLIT], q[Q_C] = 2.0 ** (23 - m) + 1.0, 2.0 ** (emin + 23 - m)
    q[Q_MAX_POS], q[Q_MAX_NEG], q[Q_SPECIAL] = maxpos, maxneg, special
    q[Q_SAT], q[Q_MINNORM], q[Q_TWOS] = float(saturate), minnorm, twos
    return torch.tensor(q, dtype=torch.float32, device=device)


@functools.lru_cache(maxsize=1024)
def _cached_params(
    fmt: Grid, saturate: bool, sr_bits: int, device: str, ceil: bool
) -> torch.Tensor:
    return make_params(grid_slots(fmt, saturate), sr_bits, torch.device(device), ceil)


@functools.lru_cache(maxsize=1024)
def _cached_float_params(fmt: Grid, saturate: bool, device: str) -> torch.Tensor:
    return float_params(fmt, saturate, torch.device(device))


def params_for(
    fmt: Grid,
    saturate: bool,
    keys: torch.Tensor | None,
    sr_bits: int,
    device: torch.device,
    ceil: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (int, float) parameter vectors of a grid, cached per format: building them costs
    more than quantizing a small tensor. Kernels never write to them. Stochastic rounding's
    keys differ per call, so those calls get a copy with the keys filled in.
    """
    dev = str(device)
    p = _cached_params(fmt, saturate, sr_bits, dev, ceil)
    if keys is not None:
        p = p.clone()
        p[P_KEY0 : P_KEY1 + 1] = keys.to(device)
    return p, _cached_float_params(fmt, saturate, dev)
