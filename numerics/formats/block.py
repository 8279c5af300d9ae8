"""Block formats: a shared power-of-two scale per block of elements.

``BlockFormat`` = element format + block size + scale format (E8M0) + scale rule. It covers
- OCP Microscaling (MX v1.0, arXiv 2310.10537): FP8/FP6/FP4/INT8 elements, blocks of 32,
  scale ``2**(floor(log2(amax)) - emax_elem)`` clamped to ``[2**-127, 2**127]``;
- block floating point (BFP / MSFP): sign + M-bit magnitude elements that share the block's
  exponent. Definition used here: ``E = floor(log2(amax))`` (clamped to [-127, 127]); each
  element is ``sign * k * 2**(E - (M-1))`` with integer ``0 <= k <= 2**M - 1`` (the leading
  bit is explicit, so the block's largest element has its top bit set). Equivalently a
  fixed-point element with ``M-1`` fraction bits (max ``2 - 2**(1-M)``, emax 0) under the MX
  scale rule; ``mxint8`` is exactly ``bfp8`` with blocks of 32.

``SharedMicroExpFormat`` is the two-level scheme of arXiv 2302.08007 (MX9, MX6, MX4): an 8-bit
shared exponent per block of 16 and a 1-bit micro-exponent per pair of elements. Encoding used
here: ``E = floor(log2(amax_block))`` clamped to [-127, 127]; for each pair,
``tau = min(E - floor(log2(amax_pair)), 1)``, where exponents below -127 (zeros, float32
subnormals) count as -127, so an all-zero pair takes tau = 1 unless the whole block is that
small; each element is
``sign * k * 2**(E - tau - (M-1))`` with ``0 <= k <= 2**M - 1``; ``M`` = 7 (MX9), 4 (MX6), 2 (MX4).
Bits per element: ``1 + M + 8/16 + 1/2`` = 9, 6, 4.

Shared semantics (all block formats): blocks run along the given axis; a trailing partial
block is padded with zeros, which never changes a result (zeros do not move the block maximum);
a NaN or inf anywhere in a block makes the whole block NaN; an all-zero block stays zero;
elements saturate at the element maximum.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from numerics.formats.element import FloatFormat
from numerics.formats.integer import FixedFormat


class ScaleRule(enum.Enum):
    """How the shared E8M0 exponent is chosen from the block's absolute maximum.

    FLOOR (OCP MX v1.0): ``floor(log2(amax)) - emax_elem``; the largest element may round up
    past the element maximum and saturate.
    CEIL: the smallest power of two with ``amax / 2**s <= max_elem`` (the "round-up" rule of
    later MX training recipes): nothing saturates, at the cost of up to one binade of range.
    Capped at ``s = 127 - emax_elem`` so scaled values stay finite float32.
    """

    FLOOR = "floor"
    CEIL = "ceil"


SCALE_EMIN = -127
SCALE_EMAX = 127


def bfp_element(mbits: int) -> FixedFormat:
    """Sign + ``mbits``-bit magnitude with an explicit leading bit: k * 2**-(mbits-1)."""
    if not 1 <= mbits <= 23:
        raise ValueError(f"block element magnitude bits: {mbits}; allowed 1..23")
    return FixedFormat(f"int{mbits + 1}_elem", mbits + 1, mbits - 1, symmetric=True)


@dataclass(frozen=True)
class BlockFormat:
    name: str
    element: FloatFormat | FixedFormat
    block_size: int = 32
    scale_rule: ScaleRule = ScaleRule.FLOOR
    family: str = "mx"
    aliases: tuple[str, ...] = ()
    description: str = ""

    kind = "block"
    scale_bits = 8  # E8M0: an unsigned power of two, 2**-127 .. 2**127, 0xFF = NaN

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"format {self.name!r}: block_size must be >= 1")
        if self.element.max < 1.0:
            raise ValueError(f"format {self.name!r}: element max must be >= 1")
        # The block kernels round elements with the float-adder trick, exact for grids with
        # at most 22 mantissa bits whose subnormals start above float32's (see rne_path).
        emin = self.element.emin if isinstance(self.element, FloatFormat) else -127
        m = (
            self.element.mbits
            if isinstance(self.element, FloatFormat)
            else self.element.emax + self.element.fl
        )
        if m > 22 or emin == -126 or self.element.emax + 24 - m > 127:
            raise ValueError(
                f"format {self.name!r}: element {self.element.name} is too wide for a block "
                "format (allowed: at most 22 mantissa bits and emin > -126)"
            )

    @property
    def bits(self) -> int:
        return self.element.bits

    @property
    def bits_per_element(self) -> float:
        return self.element.bits + self.scale_bits / self.block_size

    @property
    def emax_elem(self) -> int:
        return self.element.emax

    @property
    def max(self) -> float:
        return self.element.max * 2.0**SCALE_EMAX

    @property
    def has_inf(self) -> bool:
        return False

    @property
    def has_nan(self) -> bool:
        return True  # a NaN scale makes a block NaN

    @property
    def default_saturate(self) -> bool:
        return True

    def replace(self, **changes: object) -> BlockFormat:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def with_block_size(self, block_size: int) -> BlockFormat:
        return dataclasses.replace(self, name=f"{self.name}_b{block_size}", block_size=block_size)

    def facts(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "family": self.family,
            "bits": self.bits,
            "bits_per_element": self.bits_per_element,
            "element": self.element.name,
            "element_max": self.element.max,
            "emax_elem": self.emax_elem,
            "block_size": self.block_size,
            "scale": "e8m0",
            "scale_rule": self.scale_rule.value,
            "has_inf": False,
            "has_nan": True,
            "saturates": True,
        }


@dataclass(frozen=True)
class SharedMicroExpFormat:
    name: str
    mbits: int
    block_size: int = 16
    sub_block: int = 2
    aliases: tuple[str, ...] = ()
    description: str = ""

    kind = "smx"
    scale_bits = 8
    micro_bits = 1

    def __post_init__(self) -> None:
        if not 1 <= self.mbits <= 23:
            raise ValueError(f"format {self.name!r}: mbits={self.mbits}; allowed 1..23")
        if self.block_size % self.sub_block:
            raise ValueError(f"format {self.name!r}: block_size must be a multiple of sub_block")

    @property
    def element(self) -> FixedFormat:
        return bfp_element(self.mbits)

    @property
    def bits(self) -> int:
        return 1 + self.mbits

    @property
    def bits_per_element(self) -> float:
        return 1 + self.mbits + self.scale_bits / self.block_size + self.micro_bits / self.sub_block

    @property
    def max(self) -> float:
        return self.element.max * 2.0**SCALE_EMAX

    @property
    def has_inf(self) -> bool:
        return False

    @property
    def has_nan(self) -> bool:
        return True

    @property
    def default_saturate(self) -> bool:
        return True

    def replace(self, **changes: object) -> SharedMicroExpFormat:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def facts(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "bits": self.bits,
            "bits_per_element": self.bits_per_element,
            "mbits": self.mbits,
            "block_size": self.block_size,
            "sub_block": self.sub_block,
            "scale": "e8m0 + 1-bit micro-exponent per sub-block",
            "has_inf": False,
            "has_nan": True,
            "saturates": True,
        }
