"""Click-through-rate models for the recsys task: DLRM and DeepFM.

Both read one impression as 13 dense features (B, 13) and 26 categorical ids (B, 26), look each
id up in its own embedding table (``self.embeddings[i]`` reads ``sparse[:, i]``), and return a
click logit (B,). The layers are plain ``nn.Linear`` / ``nn.Embedding`` (dense gradients) and
``numerics.nn.modules.Matmul`` for DLRM's activation-by-activation product, so
``numerics.nn.modules.quantize_model`` reaches every product.

DLRM (Naumov et al., "Deep Learning Recommendation Model for Personalization and
Recommendation Systems", arXiv:1906.00091; facebookresearch/dlrm ``dlrm_s_pytorch.py``):
a bottom MLP maps the dense features to a vector of the embedding width; with the 26
embeddings that makes 27 vectors; the ``dot`` interaction takes the dot product of every pair
(the strictly lower triangle of the 27 x 27 Gram matrix, no self-interaction) and concatenates
the 351 products with the bottom MLP's output; ``cat`` concatenates the 27 vectors instead. A
top MLP maps that to one logit. Every layer but the last is followed by ReLU (the bottom MLP's
last one too, as in the reference). Initialisation as in the reference code: embedding table
of ``n`` rows ``U(-sqrt(1/n), sqrt(1/n))``, Linear ``m -> n`` weights ``N(0, 2/(m+n))`` and
biases ``N(0, 1/n)``. We differ in using one ``nn.Embedding`` per table instead of
``nn.EmbeddingBag`` (one id per table and example, so the two agree).

DeepFM (Guo, Tang, Ye, Li and He, "DeepFM: A Factorization-Machine based Neural Network for
CTR Prediction", arXiv:1703.04247): logit = first order + second order + deep, sharing the
field embeddings between the FM and the deep part.
- first order: a scalar weight per id (``self.linear_embeddings``, a second set of tables of
  width 1) plus ``nn.Linear(13, 1)`` on the dense features, whose bias is the global bias;
- second order: the factorization machine over the 26 field embeddings and one more field,
  the dense features projected to the embedding width by ``nn.Linear(13, dim, bias=False)``;
  with vectors ``v_1..v_27`` it is ``sum_{i<j} <v_i, v_j> = 1/2 sum_k ((sum_i v_ik)^2 -
  sum_i v_ik^2)``, computed in O(27 dim);
- deep: an MLP (ReLU, optional dropout) over the 26 embeddings concatenated with the 13 raw
  dense features, ending in one output.
Embeddings start at ``N(0, 0.01^2)``, first-order weights at 0, the dense projection at
``U(-0.01/sqrt(13), 0.01/sqrt(13))`` (torch's default, 100x larger, lets the dense field's
cross terms swamp the others early on: up to 0.01 AUC worse on the synthetic data), the other
Linear layers at torch's defaults. The FM sums every pair of fields with equal weight, so it can
represent a planted set of ``P`` rank-``r`` field interactions exactly only with
``embedding_dim >= P r`` (one subspace per pair); DLRM's top MLP weighs each dot product and
needs only ``r``.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor, nn

from numerics.models.base import MODELS
from numerics.nn.embedding_cache import CachedEmbedding
from numerics.nn.modules import Matmul


def _recsys_info(info: dict[str, Any]) -> tuple[int, list[int]]:
    for key in ("num_dense", "cardinalities"):
        if key not in info:
            raise ValueError(
                f"info: missing {key!r}; a recsys model needs num_dense and cardinalities"
            )
    cards = [int(c) for c in info["cardinalities"]]
    if not cards or min(cards) < 1:
        raise ValueError(f"info.cardinalities: {cards}; need a non-empty list of ints >= 1")
    return int(info["num_dense"]), cards


def _dlrm_mlp(sizes: list[int], *, last_relu: bool) -> nn.Sequential:
    """Linear layers ``sizes[0] -> sizes[1] -> ...`` with ReLU between, initialised as DLRM."""
    layers: list[nn.Module] = []
    for k, (m, n) in enumerate(itertools.pairwise(sizes)):
        lin = nn.Linear(m, n)
        with torch.no_grad():
            lin.weight.normal_(0.0, math.sqrt(2.0 / (m + n)))
            lin.bias.normal_(0.0, math.sqrt(1.0 / n))
        layers.append(lin)
        if last_relu or k < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class DLRM(nn.Module):
    """DLRM with a bottom MLP, per-table embeddings, a dot or cat interaction and a top MLP."""

    def __init__(
        self,
        num_dense: int,
        cardinalities: list[int],
        embedding_dim: int,
        bottom_mlp: list[int],
        top_mlp: list[int],
        interaction: str,
        embedding_cache: str = "none",
        cache_fraction: float = 0.1,
        cache_refresh_every: int = 100,
        cache_rounding: str = "stochastic",
    ) -> None:
        super().__init__()
        if embedding_cache not in ("none", "int8", "int4"):
            raise ValueError(
                f"model.embedding_cache: {embedding_cache!r}; allowed: 'none', 'int8', 'int4'"
            )
        if interaction not in ("dot", "cat"):
            raise ValueError(f"model.interaction: {interaction!r}; allowed: 'dot', 'cat'")
        if not bottom_mlp or bottom_mlp[-1] != embedding_dim:
            raise ValueError(
                f"model.bottom_mlp: {bottom_mlp}; its last width must equal "
                f"embedding_dim={embedding_dim} (the dense vector joins the embeddings)"
            )
        if min([embedding_dim, *bottom_mlp, *top_mlp]) < 1:
            raise ValueError("model: embedding_dim and every MLP width must be >= 1")
        self.interaction = interaction
        tables = [nn.Embedding(n, embedding_dim) for n in cardinalities]
        for emb, n in zip(tables, cardinalities, strict=True):
            nn.init.uniform_(emb.weight, -math.sqrt(1.0 / n), math.sqrt(1.0 / n))
        modules: list[nn.Module] = list(tables)
        if embedding_cache != "none":  # int8/int4 tables with an fp32 cache (2010.11305)
            modules = [
                CachedEmbedding(
                    t.num_embeddings,
                    embedding_dim,
                    storage=embedding_cache,
                    cache_fraction=cache_fraction,
                    refresh_every=cache_refresh_every,
                    seed=int(torch.randint(2**31, ())),
                    weight=t.weight.detach(),
                    rounding=cache_rounding,
                )
                for t in tables
            ]
        self.embeddings = nn.ModuleList(modules)
        self.bottom = _dlrm_mlp([num_dense, *bottom_mlp], last_relu=True)
        num_vectors = 1 + len(cardinalities)
        if interaction == "dot":
            self.interact = Matmul()
            rows, cols = torch.tril_indices(num_vectors, num_vectors, offset=-1)  # i > j
            self.register_buffer("pair_rows", rows, persistent=False)
            self.register_buffer("pair_cols", cols, persistent=False)
            top_in = embedding_dim + num_vectors * (num_vectors - 1) // 2
        else:
            top_in = embedding_dim * num_vectors
        self.top = _dlrm_mlp([top_in, *top_mlp, 1], last_relu=False)

    def forward(self, dense: Tensor, sparse: Tensor) -> Tensor:
        x = self.bottom(dense)  # (B, d)
        ly = [emb(sparse[:, i]) for i, emb in enumerate(self.embeddings)]  # 26 x (B, d)
        if self.interaction == "dot":
            t = torch.stack([x, *ly], dim=1)  # (B, 27, d)
            z = self.interact(t, t.transpose(1, 2))  # (B, 27, 27)
            r = torch.cat([x, z[:, self.pair_rows, self.pair_cols]], dim=1)  # (B, d + 351)
        else:
            r = torch.cat([x, *ly], dim=1)  # (B, 27 d)
        return self.top(r).squeeze(1)  # (B,)


class DeepFM(nn.Module):
    """DeepFM: first-order weights + an FM over the field embeddings + an MLP, summed."""

    def __init__(
        self,
        num_dense: int,
        cardinalities: list[int],
        embedding_dim: int,
        hidden: list[int],
        dropout: float,
    ) -> None:
        super().__init__()
        if embedding_dim < 1 or (hidden and min(hidden) < 1):
            raise ValueError(
                f"model: embedding_dim={embedding_dim}, hidden={hidden}; widths must be >= 1"
            )
        if not 0 <= dropout < 1:
            raise ValueError(f"model.dropout: {dropout}; need a float in [0, 1)")
        tables = [nn.Embedding(n, embedding_dim) for n in cardinalities]
        weights = [nn.Embedding(n, 1) for n in cardinalities]
        for emb, lin in zip(tables, weights, strict=True):
            nn.init.normal_(emb.weight, 0.0, 0.01)
            nn.init.zeros_(lin.weight)
        self.embeddings = nn.ModuleList(tables)
        self.linear_embeddings = nn.ModuleList(weights)
        self.dense_linear = nn.Linear(num_dense, 1)  # first order of dense + global bias
        self.dense_embedding = nn.Linear(num_dense, embedding_dim, bias=False)  # FM field
        bound = 0.01 / math.sqrt(num_dense)  # about an embedding's scale for log1p counts
        nn.init.uniform_(self.dense_embedding.weight, -bound, bound)
        layers: list[nn.Module] = []
        width = len(cardinalities) * embedding_dim + num_dense
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, 1))
        self.deep = nn.Sequential(*layers)

    def forward(self, dense: Tensor, sparse: Tensor) -> Tensor:
        first = self.dense_linear(dense).squeeze(1)  # (B,)
        for i, lin in enumerate(self.linear_embeddings):
            first = first + lin(sparse[:, i]).squeeze(1)
        e = torch.stack([emb(sparse[:, i]) for i, emb in enumerate(self.embeddings)], 1)
        v = torch.cat([e, self.dense_embedding(dense).unsqueeze(1)], dim=1)  # (B, 27, k)
        second = 0.5 * (v.sum(dim=1).square() - v.square().sum(dim=1)).sum(dim=1)  # (B,)
        deep = self.deep(torch.cat([e.flatten(1), dense], dim=1)).squeeze(1)  # (B,)
        return first + second + deep


@MODELS.register("dlrm", task="recsys")
def dlrm(
    info: dict[str, Any],
    *,
    embedding_dim: int = 16,
    bottom_mlp: list[int] = [64, 16],  # noqa: B006 (copied, never mutated)
    top_mlp: list[int] = [64, 32],  # noqa: B006
    interaction: str = "dot",
    embedding_cache: str = "none",
    cache_fraction: float = 0.1,
    cache_refresh_every: int = 100,
    cache_rounding: str = "stochastic",
) -> DLRM:
    """DLRM; the last ``bottom_mlp`` width must equal ``embedding_dim``; a final Linear to one
    output follows ``top_mlp``; ``interaction``: "dot" or "cat". ``embedding_cache`` "int8" or
    "int4" stores every table in that format with ``cache_fraction`` of its rows (the most
    used, refreshed every ``cache_refresh_every`` steps) in fp32
    (``numerics.nn.embedding_cache.CachedEmbedding``; the trainer steps the stored rows), written
    back with ``cache_rounding`` (stochastic, or nearest_even for the ablation)."""
    num_dense, cards = _recsys_info(info)
    return DLRM(
        num_dense,
        cards,
        embedding_dim,
        list(bottom_mlp),
        list(top_mlp),
        interaction,
        embedding_cache,
        cache_fraction,
        cache_refresh_every,
        cache_rounding,
    )


@MODELS.register("deepfm", task="recsys")
def deepfm(
    info: dict[str, Any],
    *,
    embedding_dim: int = 10,
    hidden: list[int] = [200, 200],  # noqa: B006 (copied, never mutated)
    dropout: float = 0.0,
) -> DeepFM:
    """DeepFM; ``hidden``: the deep part's widths (a final Linear to one output follows)."""
    num_dense, cards = _recsys_info(info)
    return DeepFM(num_dense, cards, embedding_dim, list(hidden), dropout)
