"""Metrics against scikit-learn on random data with heavy ties."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from numerics.metrics import accuracy, auc, bits_per_byte, logloss, logloss_from_probs


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("levels", [2, 5, 1000])
def test_auc_matches_sklearn_with_ties(seed: int, levels: int) -> None:
    g = _gen(seed)
    n = 3000
    labels = (torch.rand(n, generator=g) < 0.3).float()
    # few distinct score values -> most scores tied; correlated with the label
    scores = torch.randint(0, levels, (n,), generator=g).float() + labels * 0.7 * levels / 2
    scores = torch.floor(scores)
    expected = roc_auc_score(labels.numpy(), scores.numpy())
    assert auc(scores, labels) == pytest.approx(expected, abs=1e-12)


def test_auc_extremes_and_all_tied() -> None:
    y = torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert auc(torch.tensor([0.1, 0.2, 0.3, 0.4]), y) == 1.0
    assert auc(torch.tensor([0.4, 0.3, 0.2, 0.1]), y) == 0.0
    assert auc(torch.zeros(4), y) == 0.5


def test_auc_large_float32_scores_match_sklearn() -> None:
    g = _gen(7)
    n = 200_000
    labels = (torch.rand(n, generator=g) < 0.25).float()
    scores = (torch.randn(n, generator=g) + labels).float()
    expected = roc_auc_score(labels.numpy(), scores.numpy())
    assert auc(scores, labels) == pytest.approx(expected, abs=1e-10)


def test_auc_one_class_raises() -> None:
    with pytest.raises(ValueError, match="labels: only one class"):
        auc(torch.rand(10), torch.ones(10))
    with pytest.raises(ValueError, match="labels: values must be 0 or 1"):
        auc(torch.rand(3), torch.tensor([0.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="labels: 2 values for 3 scores"):
        auc(torch.rand(3), torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("seed", range(3))
def test_logloss_matches_sklearn(seed: int) -> None:
    g = _gen(seed)
    n = 5000
    labels = (torch.rand(n, generator=g) < 0.4).float()
    logits = torch.randn(n, generator=g, dtype=torch.float64) * 3
    probs = torch.sigmoid(logits)
    expected = log_loss(labels.numpy(), probs.numpy(), labels=[0, 1])
    assert logloss(logits, labels) == pytest.approx(expected, rel=1e-10)
    assert logloss_from_probs(probs, labels) == pytest.approx(expected, rel=1e-6)


def test_logloss_stable_for_huge_logits() -> None:
    # a confident correct answer costs ~exp(-|z|); a confident wrong one costs |z|
    z = torch.tensor([200.0, -200.0, 200.0], dtype=torch.float32)
    y = torch.tensor([1.0, 0.0, 0.0])
    assert logloss(z, y) == pytest.approx(200.0 / 3, rel=1e-12)


def test_logloss_from_probs_clips_like_sklearn() -> None:
    p = torch.tensor([0.0, 1.0, 0.5, 1.0], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, 1.0, 1.0])
    eps = 1e-7
    hand = -(2 * math.log(eps) + math.log(0.5) + math.log(1 - eps)) / 4
    # 1 - (1 - eps) is eps only to ~1e-9 relative in float64
    assert logloss_from_probs(p, y, eps=eps) == pytest.approx(hand, rel=1e-9)
    with pytest.raises(ValueError, match=r"p: probabilities must lie in \[0, 1\]"):
        logloss_from_probs(torch.tensor([1.5]), torch.tensor([1.0]))


@pytest.mark.parametrize("seed", range(3))
def test_accuracy_matches_sklearn(seed: int) -> None:
    g = _gen(seed)
    logits = torch.randn(1000, 7, generator=g)
    y = torch.randint(0, 7, (1000,), generator=g)
    expected = accuracy_score(y.numpy(), np.argmax(logits.numpy(), axis=1))
    assert accuracy(logits, y) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="logits: expected shape"):
        accuracy(logits[:, 0], y)


def test_bits_per_byte() -> None:
    assert bits_per_byte(math.log(256)) == pytest.approx(8.0, rel=1e-15)
    assert bits_per_byte(math.log(2)) == pytest.approx(1.0, rel=1e-15)
