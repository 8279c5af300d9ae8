"""Evaluation metrics of the three tasks, as plain functions of tensors that return floats.

- ``accuracy``: the fraction of rows whose arg-max logit is the label (image task).
- ``auc``: ROC AUC, the probability that a random positive scores above a random negative
  (ties count one half). Computed from ranks, the Mann-Whitney U statistic:
  ``AUC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)`` where ``R_pos`` is the sum of the
  positives' ranks among all scores and tied scores share their mid-rank. One sort, O(N log N),
  in float64, so it agrees with ``sklearn.metrics.roc_auc_score`` (which integrates the ROC
  curve with trapezoids; the two are the same number).
- ``logloss``: mean binary cross-entropy from logits, ``mean(softplus(z) - y z)``, which never
  forms ``log(sigmoid(z))`` and so is stable for large ``|z|``; ``logloss_from_probs`` for
  predictors that give probabilities (the planted click model), clipped to ``[eps, 1 - eps]``
  as ``sklearn.metrics.log_loss`` does.
- ``bits_per_byte``: a language model's mean loss per byte in nats, converted to bits.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F


def _binary_labels(labels: Tensor, n: int, name: str = "labels") -> Tensor:
    y = torch.as_tensor(labels).detach().reshape(-1).to(torch.float64)
    if y.numel() != n:
        raise ValueError(f"{name}: {y.numel()} values for {n} scores; need one label per score")
    if not bool(((y == 0) | (y == 1)).all()):
        raise ValueError(f"{name}: values must be 0 or 1")
    return y


def accuracy(logits: Tensor, y: Tensor) -> float:
    """Fraction of rows of ``logits`` (N, C) whose arg-max equals ``y`` (N,)."""
    if logits.dim() != 2:
        raise ValueError(f"logits: expected shape (N, C), got {tuple(logits.shape)}")
    if y.shape != logits.shape[:1]:
        raise ValueError(f"y: expected shape ({logits.shape[0]},), got {tuple(y.shape)}")
    if logits.shape[0] == 0:
        raise ValueError("logits: no rows")
    return float((logits.argmax(dim=1) == y).double().mean())


def auc(scores: Tensor, labels: Tensor) -> float:
    """ROC AUC of ``scores`` (N,) against ``labels`` (N,) in {0, 1}, ties given mid-ranks."""
    s = torch.as_tensor(scores).detach().reshape(-1).to(torch.float64)
    y = _binary_labels(labels, s.numel())
    if bool(torch.isnan(s).any()):
        raise ValueError("scores: contain NaN")
    n_pos = float(y.sum())
    n_neg = y.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"labels: only one class present ({int(n_pos)} positives, {int(n_neg)} negatives); "
            "AUC needs both"
        )
    sorted_s, order = torch.sort(s)  # (N,)
    _, counts = torch.unique_consecutive(sorted_s, return_counts=True)  # (G,) tie groups
    ends = torch.cumsum(counts, 0).to(torch.float64)  # 1-based rank of each group's last member
    mid = ends - (counts.to(torch.float64) - 1) / 2  # (G,) mid-rank shared by the group
    ranks = torch.repeat_interleave(mid, counts)  # (N,) in sorted order
    rank_pos = float((ranks * y[order]).sum())
    return (rank_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def logloss(logits: Tensor, labels: Tensor) -> float:
    """Mean binary cross-entropy of ``logits`` (N,) against ``labels`` (N,) in {0, 1}, in nats."""
    z = torch.as_tensor(logits).detach().reshape(-1).to(torch.float64)
    y = _binary_labels(labels, z.numel())
    if z.numel() == 0:
        raise ValueError("logits: empty")
    return float(F.binary_cross_entropy_with_logits(z, y))


def logloss_from_probs(p: Tensor, labels: Tensor, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities ``p`` (N,), clipped to ``[eps, 1 - eps]``."""
    if not 0 <= eps < 0.5:
        raise ValueError(f"eps: {eps} not in [0, 0.5)")
    q = torch.as_tensor(p).detach().reshape(-1).to(torch.float64)
    y = _binary_labels(labels, q.numel())
    if q.numel() == 0:
        raise ValueError("p: empty")
    if bool(((q < 0) | (q > 1) | torch.isnan(q)).any()):
        raise ValueError("p: probabilities must lie in [0, 1]")
    q = q.clamp(eps, 1 - eps)
    return float(-(y * torch.log(q) + (1 - y) * torch.log1p(-q)).mean())


def bits_per_byte(mean_nats: float) -> float:
    """A mean loss per byte in nats, in bits: ``nats / ln 2``."""
    return mean_nats / math.log(2)
