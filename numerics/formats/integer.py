"""Fixed-point and scaled-integer formats.

- ``FixedFormat(wl, fl)``: two's-complement words of ``wl`` bits with ``fl`` fraction bits:
  values ``k * 2**-fl`` for ``k`` in ``[-2**(wl-1), 2**(wl-1) - 1]`` (or ``[-(2**(wl-1)-1), ...]``
  when ``symmetric``). Out-of-range values saturate, as qtorch's ``fixed_point_quantize`` does
  with ``clamp=True``.
- ``IntFormat(bits, per_channel)``: symmetric integers ``[-qmax, qmax]``, ``qmax = 2**(bits-1)-1``,
  with a float32 scale ``amax / qmax`` per tensor or per channel (one scale per slice along the
  quantization axis). The arithmetic follows ``torch.fake_quantize_per_tensor_affine``:
  ``clamp(round(x * (1/scale))) * scale`` in float32.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Self


class Saturating:
    """What integer-coded formats share: no inf or NaN codes, and out-of-range values
    saturate."""

    @property
    def has_inf(self) -> bool:
        return False

    @property
    def has_nan(self) -> bool:
        return False

    @property
    def default_saturate(self) -> bool:
        return True

    def replace(self, **changes: object) -> Self:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class FixedFormat(Saturating):
    name: str
    wl: int
    fl: int
    symmetric: bool = False
    aliases: tuple[str, ...] = ()
    description: str = ""

    kind = "fixed"

    def __post_init__(self) -> None:
        # Every value must be a float32 value and the rounding kernel works on a 24-bit
        # significand, so words are limited to 25 bits.
        if not 2 <= self.wl <= 25:
            raise ValueError(f"format {self.name!r}: wl={self.wl}; allowed 2..25")
        if not -100 <= self.fl <= 120:
            raise ValueError(f"format {self.name!r}: fl={self.fl}; allowed -100..120")

    @property
    def bits(self) -> int:
        return self.wl

    @property
    def step(self) -> float:
        return 2.0**-self.fl

    @property
    def max(self) -> float:
        return (2 ** (self.wl - 1) - 1) * self.step

    @property
    def min(self) -> float:
        k = 2 ** (self.wl - 1) - (1 if self.symmetric else 0)
        return -k * self.step

    @property
    def emax(self) -> int:
        """Exponent of the largest value's binade (the grid is uniform below it)."""
        return math.floor(math.log2(self.max))

    def facts(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "bits": self.bits,
            "wl": self.wl,
            "fl": self.fl,
            "max": self.max,
            "min": self.min,
            "step": self.step,
            "has_inf": False,
            "has_nan": False,
            "saturates": True,
        }


@dataclass(frozen=True)
class IntFormat(Saturating):
    name: str
    bits: int
    per_channel: bool = False
    aliases: tuple[str, ...] = ()
    description: str = ""

    kind = "int"

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 16:
            raise ValueError(f"format {self.name!r}: bits={self.bits}; allowed 2..16")

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    @property
    def grid(self) -> FixedFormat:
        """The integer grid the scaled values are rounded to."""
        return FixedFormat(f"{self.name}_grid", self.bits, 0, symmetric=True)

    def facts(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "bits": self.bits,
            "qmax": self.qmax,
            "scale": "per-channel fp32" if self.per_channel else "per-tensor fp32",
            "has_inf": False,
            "has_nan": False,
            "saturates": True,
        }
