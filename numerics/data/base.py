"""What every dataset constructor returns: two splits held in memory and a dict of facts.

A constructor is registered in ``DATASETS`` under its name and called as
``ctor(seed=..., **options)`` where ``options`` is the recipe's ``data:`` section without ``name``
(keyword-only parameters with defaults and type annotations; the recipe checker validates the
section against the signature). It must be deterministic for a given seed and option set.

Batches are dicts of tensors; what keys a task reads:
- image:    ``x`` float32 (B, C, H, W), ``y`` int64 (B,)
- language: ``x`` int64 (B, T) bytes, ``y`` int64 (B, T) the next bytes
- recsys:   ``dense`` float32 (B, 13), ``sparse`` int64 (B, 26) ids already in
            [0, cardinalities[i]), ``label`` float32 (B,) in {0, 1}
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from numerics.zoo import Registry


class Sampling(enum.Enum):
    SHUFFLE = "shuffle"  # a fresh permutation per epoch, batches without replacement
    RANDOM = "random"  # every batch drawn uniformly with replacement (byte-stream windows)


@dataclass
class ArraySplit:
    """Examples as tensors that share their first dimension."""

    tensors: dict[str, Tensor]

    def __post_init__(self) -> None:
        sizes = {k: v.shape[0] for k, v in self.tensors.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"ArraySplit: first dimensions differ: {sizes}")

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0] if self.tensors else 0

    def batch(self, idx: Tensor) -> dict[str, Tensor]:
        return {k: v[idx] for k, v in self.tensors.items()}


@dataclass
class WindowSplit:
    """A byte stream; example ``i`` is ``x = data[i:i+T]``, ``y = data[i+1:i+T+1]``."""

    data: Tensor  # uint8, 1-d
    block_size: int

    def __post_init__(self) -> None:
        if self.data.dim() != 1 or self.data.dtype != torch.uint8:
            raise ValueError("WindowSplit: data must be a 1-d uint8 tensor")
        if len(self.data) <= self.block_size:
            raise ValueError(
                f"WindowSplit: {len(self.data)} bytes; need more than block_size={self.block_size}"
            )

    def __len__(self) -> int:
        return len(self.data) - self.block_size

    def batch(self, idx: Tensor) -> dict[str, Tensor]:
        offs = idx.reshape(-1, 1) + torch.arange(self.block_size + 1).reshape(1, -1)
        w = self.data[offs].long()  # (B, T+1)
        return {"x": w[:, :-1], "y": w[:, 1:]}


Split = ArraySplit | WindowSplit


@dataclass
class Dataset:
    """``train`` and ``test`` (held-out) splits and the facts models and summaries need.

    ``info`` keys by task (more are welcome; all must be JSON-serialisable):
    - image: ``num_classes``, ``in_channels``, ``image_size`` (H == W)
    - language: ``vocab_size`` (256), ``block_size``, ``corpus_sha256``,
      ``unigram_bits_per_byte`` (entropy of the training bytes), ``train_bytes``, ``test_bytes``
    - recsys: ``num_dense``, ``cardinalities`` (list of 26 ints), ``positive_rate``,
      and for synthetic data ``planted_auc`` / ``planted_logloss`` (the Bayes-optimal model's
      metrics on the test split)
    """

    train: Split
    test: Split
    info: dict[str, Any] = field(default_factory=dict)
    sampling: Sampling = Sampling.SHUFFLE


DATASETS: Registry[Any] = Registry("dataset")
