"""Cost of a training step under a numerics policy, relative to the same step in fp32.

    python benchmarks/bench_step_cost.py [--steps 30] [--policies fp32 bf16 mxfp8_training]

Small models of the kinds the recipes train (an MLP and a CNN on 8x8 digit-sized images, a
byte-level transformer block with its attention matmuls, a DLRM-style model with embedding
bags), each converted with ``quantize_model`` and trained with ``QuantizedOptimizer`` (SGD
momentum; Adam for the transformer). Reports the median step time (forward, backward,
optimizer) over ``--steps`` timed steps after warm-up, and the ratio to fp32. Targets (issue
3): bf16 <= 1.5x, an MX policy <= 2.5x.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from numerics.nn.modules import Matmul, quantize_model
from numerics.nn.optim import QuantizedOptimizer


class Block(nn.Module):
    """One pre-norm transformer block, (B, T, C) -> (B, T, C), attention through Matmul."""

    def __init__(self, c: int = 128, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.qkv, self.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)
        self.scores, self.mix = Matmul(), Matmul()
        self.fc1, self.fc2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        att = self.scores(q, k.transpose(-2, -1).contiguous()) * (c // self.heads) ** -0.5
        mask = torch.ones(t, t, dtype=torch.bool).tril()
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)  # (B, nh, T, T)
        y = self.mix(att, v.contiguous()).transpose(1, 2).reshape(b, t, c)
        x = x + self.proj(y)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TinyGPT(nn.Module):
    def __init__(self, vocab: int = 256, c: int = 128, layers: int = 2, t: int = 64) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, c), nn.Embedding(t, c)
        self.blocks = nn.Sequential(*[Block(c) for _ in range(layers)])
        self.head = nn.Linear(c, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        return self.head(self.blocks(x))


class TinyDLRM(nn.Module):
    def __init__(self, tables: int = 8, rows: int = 1000, d: int = 16) -> None:
        super().__init__()
        self.bottom = nn.Sequential(nn.Linear(13, 64), nn.ReLU(), nn.Linear(64, d), nn.ReLU())
        self.emb = nn.ModuleList([nn.EmbeddingBag(rows, d, mode="sum") for _ in range(tables)])
        n = tables + 1
        self.top = nn.Sequential(nn.Linear(d + n * (n - 1) // 2, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, dense: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        z = [self.bottom(dense)] + [e(ids[:, i : i + 1]) for i, e in enumerate(self.emb)]
        t = torch.stack(z, 1)  # (B, n, d)
        inter = t @ t.transpose(1, 2)
        iu = torch.triu_indices(t.shape[1], t.shape[1], 1)
        return self.top(torch.cat([z[0], inter[:, iu[0], iu[1]]], 1)).squeeze(1)


def workloads() -> dict[str, tuple[Callable[[], nn.Module], Callable[..., torch.Tensor], str]]:
    """name -> (model factory, loss(model, generator), optimizer kind)."""

    def mlp_loss(m: nn.Module, g: torch.Generator) -> torch.Tensor:
        x, y = torch.randn(128, 64, generator=g), torch.randint(0, 10, (128,), generator=g)
        return F.cross_entropy(m(x), y)

    def cnn_loss(m: nn.Module, g: torch.Generator) -> torch.Tensor:
        x, y = torch.randn(128, 1, 8, 8, generator=g), torch.randint(0, 10, (128,), generator=g)
        return F.cross_entropy(m(x), y)

    def gpt_loss(m: nn.Module, g: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, 256, (16, 65), generator=g)
        return F.cross_entropy(m(idx[:, :-1]).reshape(-1, 256), idx[:, 1:].reshape(-1))

    def dlrm_loss(m: nn.Module, g: torch.Generator) -> torch.Tensor:
        dense, ids = (
            torch.randn(256, 13, generator=g),
            torch.randint(0, 1000, (256, 8), generator=g),
        )
        y = torch.randint(0, 2, (256,), generator=g).float()
        return F.binary_cross_entropy_with_logits(m(dense, ids), y)

    def mlp() -> nn.Module:
        return nn.Sequential(
            nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
        )

    def cnn() -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
        )  # fmt: skip

    return {
        "mlp (digits-sized)": (mlp, mlp_loss, "sgd"),
        "cnn (8x8 images)": (cnn, cnn_loss, "sgd"),
        "transformer (2 blocks, T=64)": (TinyGPT, gpt_loss, "adam"),
        "dlrm (8 tables)": (TinyDLRM, dlrm_loss, "sgd"),
    }


def make_step(
    factory: Callable[[], nn.Module], loss_fn: Callable[..., torch.Tensor], kind: str, policy: str
) -> Callable[[], None]:
    """One training step (forward, backward, optimizer) of ``factory()`` under ``policy``."""
    torch.manual_seed(0)
    model = quantize_model(copy.deepcopy(factory()), policy)
    opt = QuantizedOptimizer(
        model.parameters(), kind, model=model, lr=1e-3, momentum=0.9 if kind == "sgd" else 0.0
    )
    g = torch.Generator().manual_seed(0)

    def step() -> None:
        opt.zero_grad()
        loss_fn(model, g).backward()
        opt.step()

    return step


def step_times(
    factory: Callable[[], nn.Module],
    loss_fn: Callable[..., torch.Tensor],
    kind: str,
    policies: list[str],
    steps: int,
) -> list[float]:
    """Median step time per policy. The policies' steps are interleaved (one step of each in
    turn), so drift in a shared machine's speed affects every policy alike."""
    runs = [make_step(factory, loss_fn, kind, p) for p in policies]
    for _ in range(5):  # warm-up: first calls compile kernels and allocate
        for run in runs:
            run()
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(steps):
        for run, out in zip(runs, times, strict=True):
            start = time.perf_counter()
            run()
            out.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--policies", nargs="+", default=["fp32", "bf16", "mxfp8_training"])
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; median step time "
        f"over {args.steps} steps after 5 warm-up, policies interleaved step by step"
    )
    head = f"{'model':30s}" + "".join(f"{p:>24s}" for p in args.policies)
    print(head)
    for name, (factory, loss_fn, kind) in workloads().items():
        ts = step_times(factory, loss_fn, kind, args.policies, args.steps)
        cells = [f"{t * 1e3:8.2f} ms ({t / ts[0]:4.2f}x)" for t in ts]
        print(f"{name:30s}" + "".join(f"{c:>24s}" for c in cells))


if __name__ == "__main__":
    main()
