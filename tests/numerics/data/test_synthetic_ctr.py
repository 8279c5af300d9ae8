"""The synthetic Criteo-like generator against its planted ground truth and scikit-learn."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from numerics.data.base import DATASETS, Sampling
from numerics.data.synthetic_ctr import make_synthetic_criteo, synthetic_criteo

SMALL = {"train_size": 20_000, "test_size": 20_000}


@pytest.fixture(scope="module")
def small() -> tuple:
    return make_synthetic_criteo(seed=3, **SMALL)


def test_registered_shapes_and_info(small: tuple) -> None:
    data, _ = small
    assert DATASETS.get("synthetic_criteo") is synthetic_criteo
    assert DATASETS.meta("synthetic_criteo")["task"] == "recsys"
    assert data.sampling is Sampling.SHUFFLE
    for split, n in ((data.train, 20_000), (data.test, 20_000)):
        t = split.tensors
        assert t["dense"].shape == (n, 13) and t["dense"].dtype == torch.float32
        assert t["sparse"].shape == (n, 26) and t["sparse"].dtype == torch.int64
        assert t["label"].shape == (n,) and t["label"].dtype == torch.float32
        assert set(t["label"].unique().tolist()) == {0.0, 1.0}
        assert t["sparse"].min() >= 0 and t["sparse"].max() < 1000
        assert t["dense"].min() >= 0  # log(1 + count), count >= 0
        # dense values are log(1 + integer counts)
        counts = torch.expm1(t["dense"].double())
        assert torch.allclose(counts, counts.round(), atol=1e-3 * counts.max().item())
    info = data.info
    assert info["num_dense"] == 13 and info["cardinalities"] == [1000] * 26
    assert info["train_size"] == 20_000 and info["test_size"] == 20_000


def test_planted_metrics_match_sklearn_on_true_probabilities(small: tuple) -> None:
    data, model = small
    for split, suffix in ((data.test, ""), (data.train, "_train")):
        t = split.tensors
        p = model.probabilities(t["dense"], t["sparse"]).numpy()
        y = t["label"].numpy()
        assert data.info[f"planted_auc{suffix}"] == pytest.approx(roc_auc_score(y, p), abs=1e-9)
        ll = log_loss(y, np.clip(p, 1e-7, 1 - 1e-7))
        assert data.info[f"planted_logloss{suffix}"] == pytest.approx(ll, rel=1e-9)
    assert 0.75 < data.info["planted_auc"] < 0.85  # "about what the best Criteo models reach"


def test_logits_follow_the_documented_formula(small: tuple) -> None:
    data, model = small
    t = data.test.tensors
    dense, sparse = t["dense"][:25].double(), t["sparse"][:25]
    got = model.logits(t["dense"][:25], sparse)
    for n in range(25):
        z = model.bias + float(dense[n] @ model.dense_weight)
        z += sum(float(model.first_order[i][sparse[n, i]]) for i in range(26))
        for i, j in model.pairs:
            z += float(model.factors[i][sparse[n, i]] @ model.factors[j][sparse[n, j]])
        assert got[n].item() == pytest.approx(z, rel=1e-12, abs=1e-12)
    fields = [f for pair in model.pairs for f in pair]
    assert len(model.pairs) == 4 and len(set(fields)) == 8  # disjoint pairs
    assert all(model.factors[f].shape == (1000, 4) for f in fields)


def test_labels_are_bernoulli_of_the_probabilities(small: tuple) -> None:
    data, model = small
    t = data.train.tensors
    p = model.probabilities(t["dense"], t["sparse"])
    y = t["label"].double()
    order = torch.argsort(p)
    for chunk in order.chunk(10):  # deciles of p: mean label ~ mean p within 4 sigma
        mp, my = p[chunk].mean().item(), y[chunk].mean().item()
        se = math.sqrt((p[chunk] * (1 - p[chunk])).sum().item()) / len(chunk)
        assert abs(my - mp) < 4 * se + 1e-3


@pytest.mark.parametrize(("rate", "zipf"), [(0.25, 1.1), (0.1, 0.8)])
def test_zipf_ids_and_positive_rate(rate: float, zipf: float) -> None:
    n = 100_000
    data, model = make_synthetic_criteo(
        seed=1, train_size=n, test_size=10_000, positive_rate=rate, zipf=zipf
    )
    sparse = data.train.tensors["sparse"]
    ratios, chi2s = [], []
    ranks = np.arange(1, 1001, dtype=np.float64)
    expected_p = ranks**-zipf / (ranks**-zipf).sum()  # the Zipf law, written here again
    for i in range(26):
        counts = torch.bincount(sparse[:, i], minlength=1000).double()
        by_rank = counts[model.id_of_rank[i]].numpy()  # the count of rank k + 1's id
        ratios.append(by_rank[0] / by_rank[1])
        expected = n * expected_p[:20]
        chi2s.append(float(((by_rank[:20] - expected) ** 2 / expected).sum()))
    # rank 1 vs rank 2: 2^zipf; each ratio has ~2% noise, their mean ~0.4%
    assert np.mean(ratios) == pytest.approx(2**zipf, rel=0.02)
    # top-20 ranks goodness of fit: chi2 with 20 dof has mean 20, sd 6.3
    assert np.mean(chi2s) < 20 + 4 * 6.3 / math.sqrt(26)
    assert max(chi2s) < 20 + 8 * 6.3
    # popular ids are not the small ones: the permutation is not the identity
    assert not torch.equal(model.id_of_rank[0][:10], torch.arange(10))
    assert data.info["positive_rate"] == pytest.approx(rate, abs=0.01)
    assert data.test.tensors["label"].mean().item() == pytest.approx(rate, abs=0.015)


def test_deterministic_per_seed_and_independent_of_train_size() -> None:
    a = synthetic_criteo(seed=5, train_size=3000, test_size=2000)
    b = synthetic_criteo(seed=5, train_size=3000, test_size=2000)
    c = synthetic_criteo(seed=6, train_size=3000, test_size=2000)
    d = synthetic_criteo(seed=5, train_size=5000, test_size=2000)
    for k in ("dense", "sparse", "label"):
        assert torch.equal(a.train.tensors[k], b.train.tensors[k])
        assert torch.equal(a.test.tensors[k], b.test.tensors[k])
        assert not torch.equal(a.train.tensors[k], c.train.tensors[k])
        # same seed, more train rows: the same planted model and test split
        assert torch.equal(a.test.tensors[k], d.test.tensors[k])
    assert a.info == b.info and a.info["planted_auc"] == d.info["planted_auc"]


def test_signal_zero_is_a_coin_and_signal_orders_auc() -> None:
    flat = synthetic_criteo(seed=0, train_size=4000, test_size=4000, signal=0.0)
    assert flat.info["planted_auc"] == 0.5  # every probability equal: all tied
    weak = synthetic_criteo(seed=0, train_size=4000, test_size=20_000, signal=0.5)
    strong = synthetic_criteo(seed=0, train_size=4000, test_size=20_000, signal=2.0)
    assert 0.5 < weak.info["planted_auc"] < strong.info["planted_auc"]


def test_variance_shares_of_the_planted_logit() -> None:
    """Dense 0.3, first order 0.5, pairs 0.2 of (1.4 * signal)^2, measured on a sample."""
    data, model = make_synthetic_criteo(seed=2, train_size=2000, test_size=100_000)
    t = data.test.tensors
    dense, sparse = t["dense"].double(), t["sparse"]
    parts = {
        "dense": dense @ model.dense_weight,
        "first": sum(model.first_order[i][sparse[:, i]] for i in range(26)),
        "pairs": sum(
            (model.factors[i][sparse[:, i]] * model.factors[j][sparse[:, j]]).sum(1)
            for i, j in model.pairs
        ),
    }
    total = 1.4**2
    for name, share in (("dense", 0.3), ("first", 0.5), ("pairs", 0.2)):
        assert parts[name].var().item() == pytest.approx(share * total, rel=0.05), name  # type: ignore[union-attr]


def test_custom_cardinalities_and_bad_options() -> None:
    cards = [5 + i for i in range(26)]
    data = synthetic_criteo(seed=0, train_size=2000, test_size=500, cardinalities=cards)
    assert data.info["cardinalities"] == cards
    assert (data.train.tensors["sparse"].max(0).values < torch.tensor(cards)).all()
    with pytest.raises(ValueError, match=r"data\.cardinalities: \[5, 6\] is not allowed; need 26"):
        synthetic_criteo(seed=0, cardinalities=[5, 6])
    with pytest.raises(ValueError, match=r"data\.positive_rate: 1\.0 is not allowed"):
        synthetic_criteo(seed=0, positive_rate=1.0)
    with pytest.raises(ValueError, match=r"data\.zipf: -1\.0"):
        synthetic_criteo(seed=0, zipf=-1.0)
