"""A byte-level GPT: a decoder-only transformer in the nanoGPT style, with optional talking heads.

The model reads ``T`` byte ids and predicts, at every position, the next byte::

    x (B, T) -> tok_emb + pos_emb -> n_layer x Block -> LayerNorm -> lm_head -> logits (B, T, V)

Each ``Block`` is pre-LayerNorm: ``x = x + attn(ln_1(x))`` then ``x = x + mlp(ln_2(x))``, where
the MLP is ``Linear(d, 4d) -> GELU -> Linear(4d, d)`` and the attention is causal multi-head
self-attention: queries, keys and values come from one ``Linear(d, 3d)``, each of the ``nh``
heads of width ``hs = d / nh`` scores ``q k^T / sqrt(hs)``, the future is masked to ``-inf``,
a softmax over the keys gives weights that average the values, and a ``Linear(d, d)`` mixes the
heads back. The language-model head shares its weight with the token embedding (weight tying,
Press & Wolf 2017), as GPT-2 does.

Quantization reaches every product: the projections are plain ``nn.Linear``, the embeddings
``nn.Embedding``, and the two activation-by-activation products of attention (``q @ k^T`` and
``att @ v``) go through ``numerics.nn.modules.Matmul``, so ``quantize_model`` swaps all of them.
(``F.scaled_dot_product_attention`` would hide both products in one fused kernel.)

Talking-heads attention (Shazeer et al. 2020, arXiv 2003.02436) lets the heads exchange
information: with ``J[b, h, n, m]`` the scaled dot-product logits, it mixes across heads before
and after the softmax with two learned ``nh x nh`` matrices::

    L[b, l, n, m] = sum_h J[b, h, n, m] P_l[h, l]      # logits projection
    W = softmax_m(causal_mask(L))
    U[b, h, n, m] = sum_l W[b, l, n, m] P_w[l, h]      # weights projection
    O = U @ V

Each projection is an ``nn.Linear(nh, nh, bias=False)`` over the head axis (``P = weight^T``),
so it is quantized like any other layer, and is initialised to the identity: a fresh model with
``talking_heads=True`` computes exactly what standard attention computes. The mask is applied
after the logits projection; the weights projection then mixes weights that are zero at every
masked position for every head, so they stay zero and causality holds.

Initialisation follows GPT-2 / nanoGPT: every Linear and Embedding weight ~ N(0, 0.02), biases
zero, and the projections that write into the residual stream (``attn.c_proj``, ``mlp.c_proj``)
~ N(0, 0.02 / sqrt(2 n_layer)) so the residual stream's variance does not grow with depth. The
draws use torch's global generator: seed it (``torch.manual_seed``) before building the model.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from numerics.models.base import MODELS
from numerics.nn.modules import Matmul

INIT_STD = 0.02


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention; optionally talking heads (see the module docstring)."""

    def __init__(
        self, n_embd: int, n_head: int, block_size: int, dropout: float, bias: bool, talking: bool
    ) -> None:
        super().__init__()
        if n_embd % n_head != 0:
            raise ValueError(
                f"gpt: n_embd={n_embd} must be divisible by n_head={n_head} "
                "(the head size is n_embd / n_head)"
            )
        self.n_head, self.n_embd = n_head, n_embd
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)  # q, k, v for all heads
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)  # output projection
        self.qk = Matmul()  # q @ k^T
        self.av = Matmul()  # att @ v
        self.talk_logits: nn.Linear | None = None
        self.talk_weights: nn.Linear | None = None
        if talking:
            self.talk_logits = nn.Linear(n_head, n_head, bias=False)
            self.talk_weights = nn.Linear(n_head, n_head, bias=False)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)
        mask = torch.tril(torch.ones(block_size, block_size, dtype=torch.bool))
        self.register_buffer("causal", mask.view(1, 1, block_size, block_size), persistent=False)

    @staticmethod
    def _over_heads(lin: nn.Linear, att: torch.Tensor) -> torch.Tensor:
        # (B, nh, T, T) -> (B, T, T, nh) -> Linear over heads -> (B, nh, T, T)
        return lin(att.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        nh, hs = self.n_head, C // self.n_head
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # each (B, T, C)
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        att = self.qk(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, nh, T, T)
        if self.talk_logits is not None:
            att = self._over_heads(self.talk_logits, att)  # (B, nh, T, T)
        causal: torch.Tensor = self.causal  # type: ignore[assignment]
        att = att.masked_fill(~causal[:, :, :T, :T], float("-inf"))
        att = F.softmax(att, dim=-1)  # (B, nh, T, T), zero above the diagonal
        if self.talk_weights is not None:
            att = self._over_heads(self.talk_weights, att)  # still zero above the diagonal
        att = self.attn_dropout(att)
        y = self.av(att, v)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side: (B, T, C)
        return self.resid_dropout(self.c_proj(y))  # (B, T, C)


class MLP(nn.Module):
    def __init__(self, n_embd: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: attention then MLP, each added to the residual."""

    def __init__(
        self, n_embd: int, n_head: int, block_size: int, dropout: float, bias: bool, talking: bool
    ) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, block_size, dropout, bias, talking)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Token + position embeddings, ``n_layer`` blocks, a final LayerNorm and the lm head."""

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        n_layer: int,
        n_head: int,
        n_embd: int,
        dropout: float,
        bias: bool,
        talking_heads: bool,
        tie_weights: bool,
    ) -> None:
        super().__init__()
        for name, val in (("vocab_size", vocab_size), ("block_size", block_size)):
            if val < 1:
                raise ValueError(f"gpt: {name}={val}; must be a positive integer")
        for name, val in (("n_layer", n_layer), ("n_head", n_head), ("n_embd", n_embd)):
            if val < 1:
                raise ValueError(f"gpt: {name}={val}; must be a positive integer")
        if n_embd % n_head != 0:
            raise ValueError(
                f"gpt: n_embd={n_embd} must be divisible by n_head={n_head} "
                "(the head size is n_embd / n_head)"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"gpt: dropout={dropout}; allowed: 0 <= dropout < 1")
        self.block_size = block_size
        self.wte = nn.Embedding(vocab_size, n_embd)  # token embedding
        self.wpe = nn.Embedding(block_size, n_embd)  # learned position embedding
        self.drop = nn.Dropout(dropout)
        self.h = nn.ModuleList(
            Block(n_embd, n_head, block_size, dropout, bias, talking_heads) for _ in range(n_layer)
        )
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        if tie_weights:
            self.wte.weight = self.lm_head.weight  # one (V, C) tensor, both ways
        self.apply(_init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # writes into the residual stream
                nn.init.normal_(p, mean=0.0, std=INIT_STD / math.sqrt(2 * n_layer))
        for block in self.h:
            attn: Any = block.attn
            for lin in (attn.talk_logits, attn.talk_weights):
                if lin is not None:
                    with torch.no_grad():
                        lin.weight.copy_(torch.eye(n_head))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        if idx.shape[1] > self.block_size:
            raise ValueError(
                f"gpt: input length T={T} exceeds block_size={self.block_size} "
                "(the number of learned positions)"
            )
        pos = torch.arange(T, device=idx.device)  # (T,)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for block in self.h:
            x = block(x)  # (B, T, C)
        return self.lm_head(self.ln_f(x))  # (B, T, V)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)


@MODELS.register("gpt", task="language")
def gpt(
    info: dict[str, Any],
    *,
    n_layer: int = 4,
    n_head: int = 4,
    n_embd: int = 128,
    block_size: int | None = None,
    dropout: float = 0.0,
    bias: bool = False,
    talking_heads: bool = False,
    tie_weights: bool = True,
) -> nn.Module:
    """A byte-level GPT over ``info["vocab_size"]`` symbols; ``block_size`` defaults to
    ``info["block_size"]`` (the dataset's window)."""
    if "vocab_size" not in info:
        raise ValueError("gpt: dataset info has no 'vocab_size' (a language dataset provides it)")
    if block_size is None:
        if "block_size" not in info:
            raise ValueError("gpt: block_size not given and dataset info has no 'block_size'")
        block_size = int(info["block_size"])
    return GPT(
        vocab_size=int(info["vocab_size"]),
        block_size=block_size,
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        dropout=dropout,
        bias=bias,
        talking_heads=talking_heads,
        tie_weights=tie_weights,
    )
