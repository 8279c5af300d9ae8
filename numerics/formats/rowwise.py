"""fbgemm's row-wise embedding formats, as recommender inference stores embedding tables.

``RowwiseFormat(bits, scale_bits)``: each row (the slice along the quantization axis, the
last axis of an embedding table) holds unsigned ``bits``-bit codes ``c`` in
``[0, 2**bits - 1]`` with its own scale and bias; a value is ``c * scale + bias``. The
arithmetic is that of torch's fbgemm operators on the CPU
(``torch.ops.quantized.embedding_bag_{byte,4bit,2bit}_prepack`` / ``_unpack``), bit for bit
but for the deviation below:

- 8 bits (``scale_bits=32``): ``bias = min``, ``scale = (max - min) / 255`` in float32, codes
  ``round_half_even((x - bias) * (255 / (max - min + 1e-8)))``.
- 4 and 2 bits (``scale_bits=16``): ``bias = fp16(min)``, ``scale = fp16((max - bias) /
  (2**bits - 1))`` (1 for a constant row, or where the fp16 scale underflows to 0 or its
  reciprocal overflows), codes ``clamp(round_half_even((x - bias) * (1 / scale)))``: scale
  and bias are rounded to fp16 before the codes are computed.
- Decoding is a fused multiply-add, ``fma(c, scale, bias)``.

One known deviation: in the torch build we test against, fbgemm's 8-bit reciprocal is now
and then an ulp off the correctly rounded ``255 / (max - min + 1e-8)``, so a product within
an ulp of a tie lands on the neighbouring code (about one element in a million on random
rows, a few tens on narrow rows built to meet ties; ``tests/numerics/test_quantize_rowwise.py``
pins it). The 4- and 2-bit formats match everywhere we have looked.
"""

from __future__ import annotations

from dataclasses import dataclass

from numerics.formats.integer import Saturating


@dataclass(frozen=True)
class RowwiseFormat(Saturating):
    name: str
    bits: int
    scale_bits: int  # width of the stored scale and bias: 32 (float32) or 16 (float16)
    aliases: tuple[str, ...] = ()
    description: str = ""

    kind = "rowwise"

    def __post_init__(self) -> None:
        allowed = {8: 32, 4: 16, 2: 16}  # the pairs fbgemm has
        if allowed.get(self.bits) != self.scale_bits:
            raise ValueError(
                f"format {self.name!r}: bits={self.bits}, scale_bits={self.scale_bits}; "
                "fbgemm has 8 bits with fp32 scale/bias and 4 or 2 bits with fp16"
            )

    @property
    def levels(self) -> int:
        """The largest code, ``2**bits - 1``."""
        return 2**self.bits - 1

    @property
    def row_multiple(self) -> int:
        """Row widths torch's packer takes are multiples of this (codes per byte)."""
        return 8 // self.bits

    def facts(self) -> dict[str, object]:
        fp = f"fp{self.scale_bits}"
        return {
            "name": self.name,
            "kind": self.kind,
            "bits": self.bits,
            "levels": self.levels + 1,
            "scale": f"per-row {fp} scale and {fp} bias (min)",
            "has_inf": False,
            "has_nan": False,
            "saturates": True,
        }
