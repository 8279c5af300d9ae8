"""Rounding modes and the random source of stochastic rounding.

Modes (of the value, not the magnitude): ``nearest_even`` (IEEE default), ``nearest_away``
(ties away from zero), ``toward_zero``, ``down`` (toward -inf), ``up`` (toward +inf) and
``stochastic``.

Stochastic rounding with R random bits (``sr_bits``, default 23): let ``f`` in [0, 1) be the
position of |x| between its two neighbours on the format's grid, lower one first, and ``k`` a
uniform integer in [0, 2**R). |x| rounds up iff ``k < floor(f * 2**R)``. This is what hardware
does when it adds R random bits under the dropped bits and truncates, so P(up) =
``floor(f * 2**R) / 2**R``: exactly ``f`` whenever the dropped part has at most R bits (always,
for R = 23 and a float32 input in the format's normal range), and never more than ``2**-R`` below
it otherwise.

The random integers come from a counter-based hash of (element index, key), with no random
tensor materialised: the same key gives the same bits on any device and in any backend. Keys are
drawn from a ``torch.Generator`` (which advances, like any torch random call) or derived from an
integer seed. For bits that agree across CPU and CUDA, pass a CPU generator or an int seed: the
kernel runs where the tensor is, the keys are two integers drawn on the CPU.
"""

from __future__ import annotations

import enum

import torch

from numerics.errors import UserError


class Rounding(enum.Enum):
    NEAREST_EVEN = "nearest_even"
    NEAREST_AWAY = "nearest_away"
    TOWARD_ZERO = "toward_zero"
    DOWN = "down"
    UP = "up"
    STOCHASTIC = "stochastic"


_ALIASES = {
    "nearest": Rounding.NEAREST_EVEN,
    "rne": Rounding.NEAREST_EVEN,
    "rn": Rounding.NEAREST_EVEN,
    "rna": Rounding.NEAREST_AWAY,
    "rz": Rounding.TOWARD_ZERO,
    "truncate": Rounding.TOWARD_ZERO,
    "rd": Rounding.DOWN,
    "floor": Rounding.DOWN,
    "ru": Rounding.UP,
    "ceil": Rounding.UP,
    "sr": Rounding.STOCHASTIC,
}

DEFAULT_SR_BITS = 23
MAX_SR_BITS = 24


def parse(mode: str | Rounding) -> Rounding:
    """A ``Rounding`` from its name or an alias; a clear error lists the allowed names."""
    if isinstance(mode, Rounding):
        return mode
    key = str(mode).strip().lower().replace("-", "_")
    try:
        return Rounding(key)
    except ValueError:
        pass
    if key in _ALIASES:
        return _ALIASES[key]
    allowed = ", ".join(m.value for m in Rounding)
    raise UserError(
        f"unknown rounding mode {mode!r}; allowed: {allowed}", value=mode, allowed=allowed
    )


def names() -> list[str]:
    return [m.value for m in Rounding]


# --- the counter-based hash -----------------------------------------------------------------
# lowbias32 (C. Wellons, "Prospecting for hash functions"): a 32-bit integer bijection with low
# bias. Written on int32 tensors: multiplication wraps modulo 2**32 and the logical right shifts
# are arithmetic shifts masked to the width they keep.
_M1 = 0x7FEB352D
_M2 = 0x846CA68B - 2**32  # as a signed int32


def lowbias32(h: torch.Tensor) -> torch.Tensor:
    h = h ^ ((h >> 16) & 0xFFFF)
    h = h * _M1
    h = h ^ ((h >> 15) & 0x1FFFF)
    h = h * _M2
    h = h ^ ((h >> 16) & 0xFFFF)
    return h


def random_bits(index: torch.Tensor, keys: torch.Tensor, nbits: torch.Tensor) -> torch.Tensor:
    """Uniform integers in [0, 2**nbits) from int32 ``index`` and two int32 ``keys``.

    ``lowbias32(lowbias32(index ^ k0) + k1)``, top ``nbits`` bits. ``nbits`` is a 0-d int32
    tensor (a tensor, so that compiled kernels do not specialise on it).
    """
    h = lowbias32(lowbias32(index ^ keys[0]) + keys[1])
    return (h >> (32 - nbits)) & ((1 << nbits) - 1)


def _int_seed_keys(seed: int) -> list[int]:
    """Two int32 keys from an integer seed (splitmix64 finaliser, deterministic everywhere)."""
    out = []
    z = seed & 0xFFFFFFFFFFFFFFFF
    for _ in range(2):
        z = (z + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        y = z
        y = ((y ^ (y >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        y = ((y ^ (y >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        y ^= y >> 31
        v = y & 0xFFFFFFFF
        out.append(v - 2**32 if v >= 2**31 else v)
    return out


def draw_keys(generator: torch.Generator | int | None) -> torch.Tensor:
    """Two int32 keys (a CPU tensor) for one stochastic-rounding call.

    A generator advances (each call gets fresh bits); an int is a fixed seed (the same bits
    every call); ``None`` draws from torch's default CPU generator.
    """
    if isinstance(generator, bool):
        raise TypeError("generator must be a torch.Generator, an int seed or None")
    if isinstance(generator, int):
        return torch.tensor(_int_seed_keys(generator), dtype=torch.int32)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator, an int seed or None, not {type(generator)}"
        )
    device = generator.device if generator is not None else torch.device("cpu")
    keys = torch.randint(
        -(2**31), 2**31 - 1, (2,), generator=generator, dtype=torch.int64, device=device
    )
    return keys.to(torch.int32).cpu()
