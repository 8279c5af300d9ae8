"""Element (scalar) floating-point formats: IEEE-style, OCP finite FP8/FP6/FP4.

A format is defined by a handful of facts (exponent and mantissa widths, bias, which special
values it encodes, whether it keeps subnormals); everything else is derived, so a format cannot
contradict itself (the layout follows graphcore-research/gfloat's ``FormatInfo``).

Special-value styles:
- ``NanStyle.IEEE``: the all-ones exponent field holds inf (mantissa 0) and NaN (mantissa != 0),
  so the largest finite exponent field is all-ones minus one (bf16, fp16, fp8_e5m2, ``eXmY``).
- ``NanStyle.ONE``: no inf; the single code S.1111.111 is NaN and every other all-ones-exponent
  code is a normal number (OCP E4M3, "FN").
- ``NanStyle.NONE``: no inf and no NaN; every code is a number (OCP FP6 and FP4). Such formats
  always saturate on overflow.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from dataclasses import dataclass


class NanStyle(enum.Enum):
    IEEE = "ieee"
    ONE = "one"
    NONE = "none"


def f32_bits(value: float) -> int:
    """The IEEE binary32 bit pattern of ``value`` (which must be exactly representable)."""
    packed = struct.pack("<f", value)
    if struct.unpack("<f", packed)[0] != value and value == value:
        raise ValueError(f"{value!r} is not exactly representable in float32")
    return int.from_bytes(packed, "little")


@dataclass(frozen=True)
class FloatFormat:
    """A sign-exponent-mantissa format of at most 32 bits.

    ``ebits`` exponent bits, ``mbits`` explicit mantissa bits, exponent ``bias`` (default
    ``2**(ebits-1) - 1``), special values per ``nan_style`` and ``subnormals`` kept or flushed
    to zero.
    """

    name: str
    ebits: int
    mbits: int
    nan_style: NanStyle = NanStyle.IEEE
    bias: int | None = None
    subnormals: bool = True
    aliases: tuple[str, ...] = ()
    description: str = ""

    kind = "float"

    def __post_init__(self) -> None:
        if not 1 <= self.ebits <= 8:
            raise ValueError(f"format {self.name!r}: ebits={self.ebits}; allowed 1..8")
        if not 0 <= self.mbits <= 23:
            raise ValueError(f"format {self.name!r}: mbits={self.mbits}; allowed 0..23")
        if self.bias is None:
            object.__setattr__(self, "bias", 2 ** (self.ebits - 1) - 1)
        if self.nan_style is NanStyle.ONE and self.mbits < 1:
            raise ValueError(f"format {self.name!r}: a single-NaN (FN) format needs mbits >= 1")
        # The kernels work on the float32 bit pattern: every value must be a float32 value.
        if self.emin < -126 or self.emax > 127:
            raise ValueError(
                f"format {self.name!r}: exponent range [{self.emin}, {self.emax}] exceeds "
                "float32's [-126, 127]; choose another bias"
            )

    # --- derived facts -------------------------------------------------------------------
    @property
    def bits(self) -> int:
        return 1 + self.ebits + self.mbits

    @property
    def _bias(self) -> int:
        assert self.bias is not None
        return self.bias

    @property
    def has_inf(self) -> bool:
        return self.nan_style is NanStyle.IEEE

    @property
    def has_nan(self) -> bool:
        if self.nan_style is NanStyle.IEEE:
            return self.mbits > 0
        return self.nan_style is NanStyle.ONE

    @property
    def emax(self) -> int:
        """Exponent of the largest finite binade."""
        top_field = 2**self.ebits - 1
        if self.nan_style is NanStyle.IEEE:
            top_field -= 1
        return top_field - self._bias

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal binade (also the subnormals' scale)."""
        return 1 - self._bias

    @property
    def max(self) -> float:
        """Largest finite value (max normal, or max subnormal if the format has no normals)."""
        if self.emax < self.emin:  # e.g. IEEE-style e1mY: only subnormals are finite
            return 2.0**self.emin * (1.0 - 2.0**-self.mbits)
        frac = 2.0 - 2.0**-self.mbits
        if self.nan_style is NanStyle.ONE:
            frac -= 2.0**-self.mbits  # the all-ones mantissa of the top binade is NaN
        return 2.0**self.emax * frac

    @property
    def min_normal(self) -> float:
        return 2.0**self.emin

    @property
    def min_subnormal(self) -> float:
        if not self.subnormals or self.mbits == 0:
            return self.min_normal
        return 2.0 ** (self.emin - self.mbits)

    @property
    def default_saturate(self) -> bool:
        """Overflow saturates by default only where the format has neither inf nor NaN."""
        return self.nan_style is NanStyle.NONE

    @property
    def is_identity(self) -> bool:
        """True for float32 itself (e8m23 with IEEE specials and subnormals)."""
        return (
            self.ebits == 8
            and self.mbits == 23
            and self._bias == 127
            and self.nan_style is NanStyle.IEEE
            and self.subnormals
        )

    def replace(self, **changes: object) -> FloatFormat:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def facts(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "bits": self.bits,
            "ebits": self.ebits,
            "mbits": self.mbits,
            "bias": self.bias,
            "emax": self.emax,
            "emin": self.emin,
            "max": self.max,
            "min_normal": self.min_normal,
            "min_subnormal": self.min_subnormal,
            "has_inf": self.has_inf,
            "has_nan": self.has_nan,
            "subnormals": self.subnormals,
            "saturates": self.default_saturate,
        }


def ieee(ebits: int, mbits: int, name: str | None = None, **kw: object) -> FloatFormat:
    """An IEEE-754-style format with inf and NaN, e.g. ``ieee(5, 10)`` is fp16."""
    return FloatFormat(name or f"e{ebits}m{mbits}", ebits, mbits, NanStyle.IEEE, **kw)  # type: ignore[arg-type]


def finite(ebits: int, mbits: int, name: str, nan: bool, **kw: object) -> FloatFormat:
    """An OCP finite format: no inf; one NaN code (``nan=True``) or none."""
    style = NanStyle.ONE if nan else NanStyle.NONE
    return FloatFormat(name, ebits, mbits, style, **kw)  # type: ignore[arg-type]
