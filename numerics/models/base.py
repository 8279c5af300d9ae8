"""The model registry.

A constructor is registered in ``MODELS`` and called as ``ctor(info, **options)``: ``info`` is the
dataset's facts (``numerics.data.base.Dataset.info``) and ``options`` the recipe's ``model:``
section without ``name`` (keyword-only parameters with defaults and type annotations).

Forward signatures by task (what ``numerics.train.tasks`` calls):
- image:    ``model(x)`` with x float (B, C, H, W) -> logits (B, num_classes)
- language: ``model(x)`` with x int64 (B, T) -> logits (B, T, vocab_size)
- recsys:   ``model(dense, sparse)`` with dense (B, 13), sparse int64 (B, 26) -> logits (B,);
            the model has ``embeddings: nn.ModuleList`` of ``nn.Embedding``, table ``i`` read by
            ``sparse[:, i]`` (CowClip clips those rows)

Models are built from plain ``nn.Linear`` / ``nn.Conv2d`` / ``nn.Embedding`` and
``numerics.nn.modules.Matmul`` (for activation x activation products such as attention), so
``numerics.nn.modules.quantize_model`` can swap every product for its quantized counterpart.
"""

from __future__ import annotations

from typing import Any

from numerics.zoo import Registry

MODELS: Registry[Any] = Registry("model")
