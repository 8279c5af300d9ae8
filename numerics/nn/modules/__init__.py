"""Quantized modules and the module swap (see ``layers``, ``functional``, ``swap``)."""

from numerics.nn.modules.caster import Caster
from numerics.nn.modules.layers import (
    Matmul,
    QConv1d,
    QConv2d,
    QEmbedding,
    QEmbeddingBag,
    QLinear,
    QMatmul,
    Quantized,
)
from numerics.nn.modules.swap import quantize_model

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
