"""A Criteo-like click data set drawn from a planted click model, so the best AUC is known.

Criteo's click logs (the DLRM benchmark) have 13 count features and 26 categorical ids per
impression, with ids whose popularity follows a power law and a click rate near 25%. This
generator mimics that shape and draws each label from a known model, so a trained model's AUC
and log-loss can be compared with the Bayes-optimal predictor's (the true probabilities):
the gap is what the numerics cost, not what the data withholds.

Inputs, per example:
- dense: 13 non-negative counts, ``floor(exp(mu_j + sigma_j * z))`` (a rounded lognormal; a
  fraction of each field is missing, read as 0), preprocessed as DLRM does, ``log(1 + x)``.
- sparse: 26 ids; table ``i`` draws rank ``k`` in ``1..n_i`` with ``P(k) ∝ k^-zipf`` and maps
  ranks to ids by a fixed random permutation per table (popular ids are not the small ones).

Planted model (``PlantedClickModel``), drawn once from the seed:

    logit = b + w · dense + sum_i e_i[id_i] + sum_{(i, j) in pairs} <u_i[id_i], u_j[id_j]>
    label ~ Bernoulli(sigmoid(logit))

with ``num_interactions`` disjoint field pairs and rank-``interaction_rank`` factors ``u``, so
factorisation models represent it exactly: DLRM's dot interaction with embedding dim >= rank,
DeepFM's FM term (which weighs every pair alike) with dim >= num_interactions * rank.

An id's effect (``e_i[id]``, ``u_i[id]``) is drawn with variance proportional to
``P(id)^effect_decay``, so popular ids carry most of the signal. At the default 1.0 the tail's
effects are small enough that DLRM learns the model to within 0.02 AUC from 1M rows in one
epoch; at 0 every id is as informative and the rare ones stay out of reach (in our runs a
ridge fit of the true model's own form from 50k rows fell ~0.07 AUC short at 0, ~0.015 at
1.0). The three parts have fixed shares of the logit's variance (dense 0.3, first order 0.5,
pairwise 0.2; total ``(1.4 * signal)^2``, planted AUC ~0.80 at ``signal=1``): the sparse parts
are normalised exactly under the Zipf law, the dense part and the intercept ``b`` (solved by
bisection so that the mean probability is ``positive_rate``) on a calibration sample of 65,536
rows.

Randomness comes in independent streams of the seed (``default_rng([seed, k])``): the model,
the calibration rows, the train inputs, the test inputs and the two label draws. So the
planted model and the test split do not change with ``train_size``.

``info`` carries ``planted_auc`` / ``planted_logloss`` (the true probabilities scored against
the test split's sampled labels) and the same for train as ``planted_auc_train`` /
``planted_logloss_train``. ``make_synthetic_criteo`` returns the planted model beside the data
set, so its probabilities can be recomputed for any input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from numerics.data.base import DATASETS, ArraySplit, Dataset, Sampling
from numerics.metrics import auc, logloss_from_probs

NUM_DENSE = 13
NUM_SPARSE = 26
_LOGIT_STD = 1.4  # at signal=1: planted AUC ~0.80, about what the best Criteo models reach
_SHARES = {"dense": 0.3, "first": 0.5, "pairs": 0.2}  # of the planted logit's variance
_CALIBRATION = 1 << 16  # rows that set the dense weights' scale and the intercept


@dataclass
class PlantedClickModel:
    """The generating process: the input distribution and the true click model, whose
    ``sigmoid(logits(dense, sparse))`` is P(click)."""

    bias: float
    dense_weight: Tensor  # (13,) float64, w
    first_order: list[Tensor]  # 26 x (n_i,) float64, e_i, indexed by id
    pairs: list[tuple[int, int]]  # disjoint field pairs (i, j)
    factors: dict[int, Tensor]  # field -> (n_i, rank) float64, u_i, for fields in a pair
    zipf_probs: list[Tensor]  # 26 x (n_i,) float64, P(rank k + 1)
    id_of_rank: list[Tensor]  # 26 x (n_i,) int64, the id that has rank k + 1
    dense_mu: Tensor  # (13,) float64: count = floor(exp(mu + sigma z)), missing -> 0
    dense_sigma: Tensor  # (13,)
    dense_missing: Tensor  # (13,) P(missing)

    def logits(self, dense: Tensor, sparse: Tensor) -> Tensor:
        """Planted logits (N,) float64 of preprocessed ``dense`` (N, 13), ``sparse`` (N, 26)."""
        d = dense.detach().cpu().numpy().astype(np.float64)  # (N, 13)
        cols = np.ascontiguousarray(sparse.detach().cpu().numpy().T)  # (26, N): fast gathers
        return torch.from_numpy(self._logits(d, cols))

    def probabilities(self, dense: Tensor, sparse: Tensor) -> Tensor:
        """P(click) (N,) float64: the Bayes-optimal prediction."""
        return torch.sigmoid(self.logits(dense, sparse))

    def _logits(self, dense: np.ndarray, cols: np.ndarray) -> np.ndarray:
        z = self.bias + dense @ self.dense_weight.numpy()  # (N,)
        for i, e in enumerate(self.first_order):
            z += e.numpy()[cols[i]]
        for i, j in self.pairs:
            ui, uj = self.factors[i].numpy()[cols[i]], self.factors[j].numpy()[cols[j]]  # (N, r)
            z += np.einsum("nr,nr->n", ui, uj)
        return z

    def _inputs(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` examples: dense float32 (n, 13) after log(1 + x), ids by table (26, n)."""
        cols = np.empty((len(self.zipf_probs), n), dtype=np.int64)  # (26, n)
        for i, (p, perm) in enumerate(zip(self.zipf_probs, self.id_of_rank, strict=True)):
            # n iid draws = multinomial counts per rank, in a random order
            rank = np.repeat(np.arange(len(p)), rng.multinomial(n, p.numpy()))
            cols[i] = perm.numpy()[rng.permutation(rank)]
        mu, sigma = self.dense_mu.numpy(), self.dense_sigma.numpy()
        counts = np.floor(np.exp(mu + sigma * rng.standard_normal((n, NUM_DENSE))))
        counts[rng.random((n, NUM_DENSE)) < self.dense_missing.numpy()] = 0.0
        return np.log1p(counts).astype(np.float32), cols


def zipf_probabilities(n: int, exponent: float) -> np.ndarray:
    """``P(rank k) ∝ k^-exponent`` for ``k = 1..n`` (float64, sums to 1)."""
    p = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    return p / p.sum()


def _check(name: str, ok: bool, value: object, allowed: str) -> None:
    if not ok:
        raise ValueError(f"data.{name}: {value!r} is not allowed; need {allowed}")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow for large |z|


def _solve_bias(z: np.ndarray, rate: float) -> float:
    """The ``b`` with ``mean(sigmoid(b + z)) == rate`` (monotone in b: bisection)."""
    lo, hi = -40.0 - float(z.max()), 40.0 - float(z.min())
    for _ in range(60):
        mid = (lo + hi) / 2
        if float(np.mean(_sigmoid(mid + z))) < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _by_id(values_by_rank: np.ndarray, perm: np.ndarray) -> np.ndarray:
    out = np.empty_like(values_by_rank)
    out[perm] = values_by_rank  # the id of rank k + 1 is perm[k]
    return out


def planted_click_model(
    *,
    seed: int,
    cardinalities: list[int],
    zipf: float,
    positive_rate: float,
    signal: float,
    effect_decay: float,
    num_interactions: int,
    interaction_rank: int,
) -> PlantedClickModel:
    """Draw the generating process from ``seed`` (independent of the split sizes)."""
    rng = np.random.default_rng([seed, 0])
    std = _LOGIT_STD * signal
    probs = [zipf_probabilities(c, zipf) for c in cardinalities]
    perms = [rng.permutation(c) for c in cardinalities]
    model = PlantedClickModel(
        bias=0.0,
        dense_weight=torch.zeros(NUM_DENSE, dtype=torch.float64),
        first_order=[],
        pairs=[],
        factors={},
        zipf_probs=[torch.from_numpy(p) for p in probs],
        id_of_rank=[torch.from_numpy(perm) for perm in perms],
        dense_mu=torch.from_numpy(rng.uniform(0.0, 5.0, NUM_DENSE)),
        dense_sigma=torch.from_numpy(rng.uniform(0.5, 2.0, NUM_DENSE)),
        dense_missing=torch.from_numpy(rng.uniform(0.0, 0.5, NUM_DENSE)),
    )
    # first order: e ~ N(0, P(id)^decay), centred and scaled under the Zipf law
    for p, perm in zip(probs, perms, strict=True):
        e = rng.standard_normal(len(p)) * p ** (effect_decay / 2)  # (n,) by rank
        e -= p @ e
        e *= std * math.sqrt(_SHARES["first"] / NUM_SPARSE / max(float(p @ e**2), 1e-300))
        model.first_order.append(torch.from_numpy(_by_id(e, perm)))
    # pairwise: <u_i, u_j> over disjoint field pairs, scaled to its variance share
    fields = rng.permutation(NUM_SPARSE)[: 2 * num_interactions]
    model.pairs = [(int(fields[2 * k]), int(fields[2 * k + 1])) for k in range(num_interactions)]
    for i, j in model.pairs:
        u = {f: rng.standard_normal((len(probs[f]), interaction_rank)) for f in (i, j)}
        for f in (i, j):
            u[f] *= probs[f][:, None] ** (effect_decay / 2)
        mean = {f: probs[f] @ u[f] for f in (i, j)}  # (r,)
        second = {f: u[f].T @ (probs[f][:, None] * u[f]) for f in (i, j)}  # (r, r) E[u u^T]
        var = float(np.trace(second[i] @ second[j]) - (mean[i] @ mean[j]) ** 2)
        target = std * math.sqrt(_SHARES["pairs"] / num_interactions)  # std of this term
        side = math.sqrt(target / math.sqrt(max(var, 1e-300)))  # split over both factors
        for f in (i, j):
            model.factors[f] = torch.from_numpy(_by_id(u[f] * side, perms[f]))
    # dense weights and intercept from a calibration sample of the input distribution
    dense, cols = model._inputs(np.random.default_rng([seed, 1]), _CALIBRATION)
    w = rng.standard_normal(NUM_DENSE)
    t = dense.astype(np.float64) @ w
    w *= std * math.sqrt(_SHARES["dense"]) / max(float(t.std()), 1e-12)
    model.dense_weight = torch.from_numpy(w)
    model.bias = _solve_bias(model._logits(dense.astype(np.float64), cols), positive_rate)
    return model


def make_synthetic_criteo(
    *,
    seed: int,
    train_size: int = 200_000,
    test_size: int = 50_000,
    cardinality: int = 1000,
    cardinalities: list[int] | None = None,
    zipf: float = 1.1,
    positive_rate: float = 0.25,
    signal: float = 1.0,
    effect_decay: float = 1.0,
    num_interactions: int = 4,
    interaction_rank: int = 4,
) -> tuple[Dataset, PlantedClickModel]:
    """The data set of ``synthetic_criteo`` and the planted model that labelled it."""
    cards = [cardinality] * NUM_SPARSE if cardinalities is None else list(cardinalities)
    _check("train_size", train_size >= 2, train_size, "an int >= 2")
    _check("test_size", test_size >= 2, test_size, "an int >= 2")
    _check("cardinality", cardinality >= 1, cardinality, "an int >= 1")
    _check("cardinalities", len(cards) == NUM_SPARSE, cardinalities, f"{NUM_SPARSE} ints")
    _check("cardinalities", min(cards) >= 1, cardinalities, "every value >= 1")
    _check("zipf", zipf >= 0, zipf, "a float >= 0 (0 = uniform ids)")
    _check("positive_rate", 0 < positive_rate < 1, positive_rate, "a float in (0, 1)")
    _check("signal", signal >= 0, signal, "a float >= 0")
    _check("effect_decay", effect_decay >= 0, effect_decay, "a float >= 0")
    max_pairs = NUM_SPARSE // 2
    _check("num_interactions", 1 <= num_interactions <= max_pairs, num_interactions,
           f"an int in [1, {max_pairs}]")  # fmt: skip
    _check("interaction_rank", interaction_rank >= 1, interaction_rank, "an int >= 1")
    model = planted_click_model(
        seed=seed,
        cardinalities=cards,
        zipf=zipf,
        positive_rate=positive_rate,
        signal=signal,
        effect_decay=effect_decay,
        num_interactions=num_interactions,
        interaction_rank=interaction_rank,
    )
    info: dict[str, Any] = {"num_dense": NUM_DENSE, "cardinalities": cards}
    splits = []
    for k, (name, size) in enumerate((("train", train_size), ("test", test_size))):
        dense, cols = model._inputs(np.random.default_rng([seed, 2 + k]), size)
        prob = _sigmoid(model._logits(dense.astype(np.float64), cols))  # (N,)
        label = torch.from_numpy(np.random.default_rng([seed, 4 + k]).random(size) < prob)
        label = label.to(torch.float32)
        p = torch.from_numpy(prob)
        suffix = "" if name == "test" else "_train"
        info[f"planted_auc{suffix}"] = auc(p, label)
        info[f"planted_logloss{suffix}"] = logloss_from_probs(p, label)
        info[f"{name}_size"] = size
        if name == "train":
            info["positive_rate"] = float(label.double().mean())
        sparse = torch.from_numpy(np.ascontiguousarray(cols.T))  # (N, 26)
        splits.append(
            ArraySplit({"dense": torch.from_numpy(dense), "sparse": sparse, "label": label})
        )
    return Dataset(splits[0], splits[1], info, Sampling.SHUFFLE), model


@DATASETS.register("synthetic_criteo", task="recsys")
def synthetic_criteo(
    *,
    seed: int,
    train_size: int = 200_000,
    test_size: int = 50_000,
    cardinality: int = 1000,
    cardinalities: list[int] | None = None,
    zipf: float = 1.1,
    positive_rate: float = 0.25,
    signal: float = 1.0,
    effect_decay: float = 1.0,
    num_interactions: int = 4,
    interaction_rank: int = 4,
) -> Dataset:
    """Criteo-like clicks from a planted model (see the module docstring); ``cardinalities``
    (26 ints) overrides ``cardinality``; ``signal`` scales the planted logit (0: no signal)."""
    data, _ = make_synthetic_criteo(
        seed=seed,
        train_size=train_size,
        test_size=test_size,
        cardinality=cardinality,
        cardinalities=cardinalities,
        zipf=zipf,
        positive_rate=positive_rate,
        signal=signal,
        effect_decay=effect_decay,
        num_interactions=num_interactions,
        interaction_rank=interaction_rank,
    )
    return data
