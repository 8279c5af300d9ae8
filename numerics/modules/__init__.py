"""Quantized modules and the module swap (see ``layers``, ``functional``, ``swap``)."""

from numerics.modules.caster import Caster
from numerics.modules.layers import (
    Matmul,
    QConv1d,
    QConv2d,
    QEmbedding,
    QEmbeddingBag,
    QLinear,
    QMatmul,
    Quantized,
)
from numerics.modules.swap import quantize_model

__all__ = [
    "Caster",
    "Matmul",
    "QConv1d",
    "QConv2d",
    "QEmbedding",
    "QEmbeddingBag",
    "QLinear",
    "QMatmul",
    "Quantized",
    "quantize_model",
]
