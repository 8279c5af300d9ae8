"""Large-batch rules (``numerics.nn.largebatch``) against hand-computed numbers.

Oracles: numbers worked out by hand in the comments; the CowClip README's Criteo table
(bytedance/LargeBatchCTR) for the scaling rule; ``torch.optim.SGD`` for LARS's excluded params; and
a NumPy transcription of the authors' TensorFlow ``clip_id_norm`` for CowClip on random rows.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from numerics.nn.largebatch import (
    LARS,
    CowClip,
    Decay,
    ScalingRule,
    WarmupFactor,
    cowclip_,
    cowclip_scaling,
    id_counts,
    lr_scale_factor,
    scale_lr,
    warmup_schedule,
)


# --- lr scaling -----------------------------------------------------------------------------------
def test_scale_lr_hand_computed() -> None:
    # Goyal et al.: 0.1 per 256 images; at 8192 the batch is k = 32 times larger
    assert scale_lr(0.1, 8192, 256, "linear") == pytest.approx(3.2)
    assert scale_lr(0.1, 8192, 256, "sqrt") == pytest.approx(0.1 * 4 * math.sqrt(2))
    assert scale_lr(0.1, 8192, 256, ScalingRule.NONE) == 0.1
    assert scale_lr(0.4, 128, 256, "linear") == pytest.approx(0.2)  # smaller batch: k = 1/2
    assert lr_scale_factor(1024, 256, "sqrt") == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [
        ({"rule": "cubic"}, "rule"),
        ({"batch_size": 0}, "batch_size"),
        ({"base_batch_size": -8}, "base_batch_size"),
    ],
)
def test_scale_lr_errors_name_the_argument(kwargs: dict, arg: str) -> None:
    call = {"lr": 0.1, "batch_size": 512, "base_batch_size": 256, "rule": "linear", **kwargs}
    with pytest.raises(ValueError, match=rf"^{arg}=") as exc:
        scale_lr(**call)
    if arg == "rule":
        assert "none, linear, sqrt" in str(exc.value)


# --- warmup ---------------------------------------------------------------------------------------
def _lrs(sched: torch.optim.lr_scheduler.LambdaLR, opt: torch.optim.Optimizer, n: int) -> list:
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def _sgd(lr: float) -> torch.optim.SGD:
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)


def test_warmup_then_cosine_hand_computed() -> None:
    # base lr 0.1 at 256, batch 2048: k = 8, scaled lr 0.8, start at 0.8 / 8 = 0.1
    opt = _sgd(0.8)
    start = 1 / lr_scale_factor(2048, 256, "linear")
    lrs = _lrs(warmup_schedule(opt, 4, 12, start, "cosine"), opt, 14)
    assert lrs[0] == pytest.approx(0.1)  # the unscaled lr
    assert lrs[2] == pytest.approx(0.45)  # 0.8 * (0.125 + 0.875 * 2/4)
    assert lrs[4] == pytest.approx(0.8)  # end of warmup: the scaled lr
    assert lrs[8] == pytest.approx(0.4)  # half-way down the cosine: 0.8 * (1 + cos(pi/2)) / 2
    assert lrs[12] == pytest.approx(0.0, abs=1e-12)  # cosine end
    assert lrs[13] == pytest.approx(0.0, abs=1e-12)  # held after total_steps


def test_warmup_cosine_final_factor_and_no_decay() -> None:
    f = WarmupFactor(4, 12, 0.25, Decay.COSINE, final_factor=0.1)
    assert f(12) == pytest.approx(0.1)
    assert f(10) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi * 0.75)) / 2)
    flat = WarmupFactor(4, 12, 0.25)
    assert [flat(s) for s in (0, 1, 4, 11, 100)] == pytest.approx([0.25, 0.4375, 1, 1, 1])


def test_warmup_then_step_decay() -> None:
    opt = _sgd(0.8)
    lrs = _lrs(warmup_schedule(opt, 2, 10, 0.5, "step", milestones=(5, 8), gamma=0.1), opt, 10)
    assert lrs[:2] == pytest.approx([0.4, 0.6])
    assert lrs[2:5] == pytest.approx([0.8] * 3)
    assert lrs[5:8] == pytest.approx([0.08] * 3)
    assert lrs[8:] == pytest.approx([0.008] * 2)


@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [
        ({"decay": "linear"}, "decay"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"total_steps": 3}, "total_steps"),
        ({"start_factor": 1.5}, "start_factor"),
        ({"decay": "step", "milestones": (8, 6)}, "milestones"),
        ({"decay": "step"}, "milestones"),
    ],
)
def test_warmup_errors_name_the_argument(kwargs: dict, arg: str) -> None:
    call = {"warmup_steps": 4, "total_steps": 12, "start_factor": 0.1, **kwargs}
    with pytest.raises(ValueError, match=rf"^{arg}=") as exc:
        warmup_schedule(_sgd(0.1), **call)
    if arg == "decay":
        assert "none, cosine, step" in str(exc.value)


# --- LARS -----------------------------------------------------------------------------------------
def test_lars_one_step_hand_computed() -> None:
    w = nn.Parameter(torch.tensor([[3.0, 0.0], [0.0, 4.0]]))  # ||w|| = 5
    b = nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = LARS([w, b], lr=0.5, momentum=0.9, weight_decay=0.2, trust_coefficient=0.03, eps=0.0)
    w.grad = torch.tensor([[0.6, 0.8], [0.0, 0.0]])  # ||g|| = 1
    b.grad = torch.tensor([0.6, 0.8])
    opt.step()
    # trust = 0.03 * 5 / (1 + 0.2 * 5) = 0.075; g + wd*w = [[1.2, 0.8], [0, 0.8]]
    # step = 0.5 * 0.075 * [[1.2, 0.8], [0, 0.8]] = [[0.045, 0.03], [0, 0.03]]
    assert torch.allclose(w, torch.tensor([[2.955, -0.03], [0.0, 3.97]]), rtol=0, atol=1e-6)
    # the bias is excluded: plain SGD, no trust ratio, no decay: b - 0.5 * g
    assert torch.allclose(b, torch.tensor([2.7, 3.6]), rtol=0, atol=1e-6)

    # second step, same gradient: buf = 0.9 * buf + trust2 * (g + wd * w1)
    opt.step()
    w1 = [[2.955, -0.03], [0.0, 3.97]]
    g = [[0.6, 0.8], [0.0, 0.0]]
    n_w1 = math.sqrt(sum(x * x for row in w1 for x in row))
    trust2 = 0.03 * n_w1 / (1.0 + 0.2 * n_w1)
    buf1 = [[0.075 * 1.2, 0.075 * 0.8], [0.0, 0.075 * 0.8]]
    want = [
        [w1[i][j] - 0.5 * (0.9 * buf1[i][j] + trust2 * (g[i][j] + 0.2 * w1[i][j])) for j in (0, 1)]
        for i in (0, 1)
    ]
    assert torch.allclose(w, torch.tensor(want), rtol=0, atol=1e-6)
    assert torch.allclose(b, torch.tensor([3 - 0.3 - 0.5 * 1.9 * 0.6, 4 - 0.4 - 0.5 * 1.9 * 0.8]))


def test_lars_excluded_params_match_torch_sgd() -> None:
    torch.manual_seed(0)
    b0, n0 = torch.randn(5), torch.randn(3)
    grads = [(torch.randn(5), torch.randn(3)) for _ in range(3)]
    p_lars = [nn.Parameter(b0.clone()), nn.Parameter(n0.clone())]
    p_sgd = [nn.Parameter(b0.clone()), nn.Parameter(n0.clone())]
    lars = LARS(p_lars, lr=0.1, momentum=0.9, weight_decay=0.5)
    sgd = torch.optim.SGD(p_sgd, lr=0.1, momentum=0.9)
    for gb, gn in grads:
        for ps, opt in ((p_lars, lars), (p_sgd, sgd)):
            ps[0].grad, ps[1].grad = gb.clone(), gn.clone()
            opt.step()
    for a, s in zip(p_lars, p_sgd, strict=True):
        assert torch.allclose(a, s, rtol=0, atol=1e-6)
    assert not torch.allclose(p_lars[0], b0, atol=1e-3)  # it did move


def test_lars_exclusion_is_configurable() -> None:
    b = nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = LARS([b], lr=0.5, weight_decay=0.2, trust_coefficient=0.03, eps=0.0, exclude_1d=False)
    b.grad = torch.tensor([0.6, 0.8])
    opt.step()
    # adapted like a matrix: 0.5 * 0.075 * ([0.6, 0.8] + 0.2 * [3, 4]) = [0.045, 0.06]
    assert torch.allclose(b, torch.tensor([2.955, 3.94]), rtol=0, atol=1e-6)

    w = nn.Parameter(torch.tensor([[3.0, 0.0], [0.0, 4.0]]))
    opt = LARS([{"params": [w], "adapt": False}], lr=0.5, weight_decay=0.2)
    w.grad = torch.tensor([[0.6, 0.8], [0.0, 0.0]])
    opt.step()
    assert torch.allclose(w, torch.tensor([[2.7, -0.4], [0.0, 4.0]]), rtol=0, atol=1e-6)


def test_lars_zero_weight_falls_back_to_trust_one() -> None:
    w = nn.Parameter(torch.zeros(2, 2))
    opt = LARS([w], lr=0.5, momentum=0.0)
    w.grad = torch.tensor([[1.0, 0.0], [0.0, -2.0]])
    opt.step()
    assert torch.equal(w, torch.tensor([[-0.5, 0.0], [0.0, 1.0]]))


@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [
        ({"lr": -1.0}, "lr"),
        ({"momentum": 1.0}, "momentum"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"trust_coefficient": 0.0}, "trust_coefficient"),
        ({"eps": -1.0}, "eps"),
    ],
)
def test_lars_errors_name_the_argument(kwargs: dict, arg: str) -> None:
    with pytest.raises(ValueError, match=rf"^{arg}="):
        LARS([nn.Parameter(torch.zeros(2, 2))], **{"lr": 0.1, **kwargs})


# --- CowClip --------------------------------------------------------------------------------------
def _planted_table() -> nn.Embedding:
    emb = nn.Embedding(10, 4)
    with torch.no_grad():
        emb.weight.fill_(0.1)
        emb.weight[3] = torch.tensor([0.5, 0.5, 0.5, 0.5])  # ||w|| = 1
        emb.weight[5] = torch.tensor([0.0, 0.6, 0.8, 0.0])  # ||w|| = 1
        emb.weight[7] = torch.tensor([0.3, 0.4, 0.0, 0.0])  # ||w|| = 0.5
        emb.weight[9] = 0.0  # a zero-initialised row
    return emb


def test_cowclip_clips_rare_id_and_leaves_frequent_id_alone() -> None:
    emb = _planted_table()
    # id 3 x 50, modest per-occurrence gradient [1/64, 0, 0, 0]: row grad [0.78125, 0, 0, 0]
    # id 5 x 2, per-occurrence [3, 0, 0, 4]: row grad [6, 0, 0, 8], norm 10
    # id 7 x 1, huge gradient [300, 400, 0, 0], norm 500
    # id 9 x 3 (zero row), per-occurrence [1, 0, 0, 0]: row grad [3, 0, 0, 0]
    ids = torch.tensor([3] * 50 + [5, 5, 7, 9, 9, 9])
    v = torch.cat(
        [
            torch.tensor([[1 / 64, 0.0, 0.0, 0.0]]).repeat(50, 1),
            torch.tensor([[3.0, 0.0, 0.0, 4.0]]).repeat(2, 1),
            torch.tensor([[300.0, 400.0, 0.0, 0.0]]),
            torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(3, 1),
        ]
    )
    (emb(ids) * v).sum().backward()
    assert emb.weight.grad is not None
    before = emb.weight.grad.clone()
    r, zeta = 0.5, 0.1  # floor on ||w||: r * sqrt(4) * zeta = 0.1
    CowClip([emb], r=r, zeta=zeta).clip_([ids])
    g = emb.weight.grad
    # id 3: threshold 0.5 * 50 * 1 = 25 > 0.78125, bit-for-bit unchanged
    assert torch.equal(g[3], before[3])
    assert torch.equal(g[3], torch.tensor([0.78125, 0.0, 0.0, 0.0]))
    # id 7: threshold 0.5 * 1 * max(0.5, 0.1) = 0.25; [300, 400] / 500 * 0.25
    assert torch.allclose(g[7], torch.tensor([0.15, 0.2, 0.0, 0.0]), rtol=1e-6, atol=0)
    assert float(g[7].norm()) == pytest.approx(0.25, rel=1e-6)
    # id 5: the count multiplies the threshold: 0.5 * 2 * 1 = 1; [6, 0, 0, 8] / 10
    assert torch.allclose(g[5], torch.tensor([0.6, 0.0, 0.0, 0.8]), rtol=1e-6, atol=0)
    # id 9, zero row: the zeta floor: r * c * (r * sqrt(d) * zeta) = 0.5 * 3 * 0.1 = 0.15
    assert torch.allclose(g[9], torch.tensor([0.15, 0.0, 0.0, 0.0]), rtol=1e-6, atol=0)
    # ids not in the batch: no gradient, still none
    assert torch.equal(g[[0, 1, 2, 4, 6, 8]], torch.zeros(6, 4))


def test_cowclip_absent_rows_untouched_unless_clip_absent() -> None:
    w = torch.zeros(3, 2)
    w[1] = torch.tensor([0.6, 0.8])  # ||w|| = 1
    grad = torch.zeros(3, 2)
    grad[1] = torch.tensor([3.0, 4.0])  # e.g. an L2 term in the loss: norm 5, count 0
    counts = torch.tensor([2, 0, 0])
    out = cowclip_(w, grad.clone(), counts, r=0.5, zeta=0.0)
    assert torch.equal(out[1], torch.tensor([3.0, 4.0]))
    # the authors' code counts an absent id as 1: threshold 0.5 * 1 * 1 = 0.5
    out = cowclip_(w, grad.clone(), counts, r=0.5, zeta=0.0, clip_absent=True)
    assert torch.allclose(out[1], torch.tensor([0.3, 0.4]), rtol=1e-6, atol=0)


def _authors_clip_id_norm(w, g, ratio, ids, cnts, min_w):  # type: ignore[no-untyped-def]
    # NumPy transcription of clip.py clip_id_norm (bytedance/LargeBatchCTR), dense branch
    clipnorm = np.maximum(np.linalg.norm(w, axis=-1), min_w)
    full = np.ones(clipnorm.shape[0], dtype=np.int32)
    full[ids] = cnts
    clip_t = ratio * clipnorm * full.astype(np.float32)
    l2sum = np.sum(g * g, axis=-1)
    l2norm = np.sqrt(np.where(l2sum > 0, l2sum, np.ones_like(l2sum)))
    return g * clip_t[:, None] / np.maximum(l2norm, clip_t)[:, None]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cowclip_matches_authors_code(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, d, r, zeta = 40, 8, 0.7, 1e-2
    w = (rng.standard_normal((n, d)) * rng.choice([0.0, 1e-3, 1.0], size=(n, 1))).astype(np.float32)
    g = (rng.standard_normal((n, d)) * rng.choice([1e-3, 1.0, 100.0], size=(n, 1))).astype(
        np.float32
    )
    batch = rng.integers(0, n, size=60)
    uniq, cnts = np.unique(batch, return_counts=True)
    want = _authors_clip_id_norm(w, g, r, uniq, cnts, r * math.sqrt(d) * zeta)
    counts = id_counts(torch.from_numpy(batch), n)
    w_t, g_t = torch.from_numpy(w), torch.from_numpy(g.copy())
    got = cowclip_(w_t, g_t, counts, r, zeta, clip_absent=True)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-7)
    assert (np.linalg.norm(want, axis=1) < np.linalg.norm(g, axis=1) * 0.99).any()  # some clip


def test_cowclip_embedding_bag() -> None:
    bag = nn.EmbeddingBag(6, 2, mode="sum")
    with torch.no_grad():
        bag.weight.copy_(torch.tensor([[0.6, 0.8]] * 6))  # every ||w|| = 1
    ids = torch.tensor([[1, 2], [1, 4]])  # id 1 twice, 2 and 4 once
    (bag(ids) * torch.tensor([[3.0, 4.0], [3.0, 4.0]])).sum().backward()
    CowClip([bag], r=1.0, zeta=0.0).clip_([ids])
    g = bag.weight.grad
    assert g is not None
    assert torch.allclose(g[1], torch.tensor([1.2, 1.6]))  # [6, 8] clipped to 1 * 2 * 1
    assert torch.allclose(g[2], torch.tensor([0.6, 0.8]))  # [3, 4] clipped to 1
    assert torch.equal(g[0], torch.zeros(2))


def test_id_counts_is_a_bincount() -> None:
    assert id_counts(torch.tensor([[0, 2], [2, 2]]), 4).tolist() == [1, 0, 3, 0]
    with pytest.raises(ValueError, match=r"^ids"):
        id_counts(torch.tensor([0, 4]), 4)
    with pytest.raises(ValueError, match=r"^ids"):
        id_counts(torch.tensor([0.0, 1.0]), 4)


@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [
        ({"r": 0.0}, "r"),
        ({"zeta": -1e-5}, "zeta"),
        ({"grad": torch.zeros(5, 3)}, "grad"),
        ({"counts": torch.zeros(4)}, "counts"),
        ({"embedding_weight": torch.zeros(5)}, "embedding_weight"),
    ],
)
def test_cowclip_errors_name_the_argument(kwargs: dict, arg: str) -> None:
    call = {
        "embedding_weight": torch.zeros(5, 2),
        "grad": torch.zeros(5, 2),
        "counts": torch.zeros(5),
        "r": 1.0,
        "zeta": 1e-5,
        **kwargs,
    }
    with pytest.raises(ValueError, match=rf"^{arg}[=:]"):
        cowclip_(**call)


def test_cowclip_object_errors() -> None:
    emb = nn.Embedding(4, 2)
    with pytest.raises(ValueError, match=r"^embeddings: .*twice"):
        CowClip([emb, emb])
    with pytest.raises(ValueError, match=r"^embeddings: Linear"):
        CowClip([nn.Linear(2, 2)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"^ids: 2 tensors for 1 tables"):
        CowClip([emb]).clip_([torch.tensor([0]), torch.tensor([1])])


def test_cowclip_scaling_reproduces_readme_criteo_table() -> None:
    # README (bytedance/LargeBatchCTR, as revised 2023-02-08), Criteo: bs 1K lr 8e-4, l2 1e-5;
    # embedding lr 1e-4; its 8K command: --l2 8e-05 --lr 22.6274e-4
    for bs, lr, l2 in [(2048, 11.31e-4, 2e-5), (8192, 22.62e-4, 8e-5), (131072, 90.50e-4, 128e-5)]:
        h = cowclip_scaling(bs, 1024, embedding_lr=1e-4, dense_lr=8e-4, embedding_l2=1e-5)
        assert h.batch_size == bs
        assert h.embedding_lr == 1e-4
        assert h.dense_lr == pytest.approx(lr, rel=1e-3)  # the table rounds to 4 digits
        assert h.embedding_l2 == pytest.approx(l2)
    h = cowclip_scaling(4096, 1024, 1e-4, 8e-4, 1e-4, dense_rule="linear")
    assert h.dense_lr == pytest.approx(32e-4)
    with pytest.raises(ValueError, match=r"^base_batch_size="):
        cowclip_scaling(4096, 0, 1e-4, 8e-4, 1e-4)
    with pytest.raises(ValueError, match=r"^rule="):
        cowclip_scaling(4096, 1024, 1e-4, 8e-4, 1e-4, dense_rule="cube")
