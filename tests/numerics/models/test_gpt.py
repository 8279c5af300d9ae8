"""The byte-level GPT against independent oracles.

- standard attention: torch's ``F.scaled_dot_product_attention(is_causal=True)`` on q, k, v
  taken from the layer's own weights;
- talking heads: the paper's equations (Shazeer et al. 2020, arXiv 2003.02436) written out
  with ``torch.einsum``;
- causality: perturbing the future never moves past logits;
- the parameter count: the GPT-2 formula by hand;
- quantization: ``quantize_model`` reaches every Linear, Embedding and Matmul;
- learning: a tiny model beats the unigram entropy of the standard-library bytes.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from numerics.data.text import stdlib
from numerics.models.base import MODELS
from numerics.models.gpt import gpt
from numerics.nn.modules import Matmul, QEmbedding, QLinear, QMatmul, quantize_model

INFO = {"vocab_size": 256, "block_size": 16}


def _model(**kw: object) -> nn.Module:
    torch.manual_seed(0)
    opts = {"n_layer": 2, "n_head": 4, "n_embd": 32, **kw}
    return gpt(INFO, **opts).eval()


def _qkv(attn: nn.Module, x: torch.Tensor, nh: int) -> tuple[torch.Tensor, ...]:
    """q, k, v as (B, nh, T, hs), computed from the layer's weights."""
    B, T, C = x.shape
    w = attn.c_attn.weight  # (3C, C), rows: q, k, v
    q, k, v = (x @ w[i * C : (i + 1) * C].T for i in range(3))
    return tuple(t.view(B, T, nh, C // nh).transpose(1, 2) for t in (q, k, v))


def _randomise_talking(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for block in model.h:
        for lin in (block.attn.talk_logits, block.attn.talk_weights):
            with torch.no_grad():
                lin.weight.copy_(torch.eye(4) + 0.5 * torch.randn(4, 4, generator=g))


def test_registered_for_language_with_block_size_from_info():
    assert MODELS.get("gpt") is gpt
    assert MODELS.meta("gpt") == {"task": "language"}
    m = gpt(INFO, n_layer=1, n_head=2, n_embd=8)
    assert m.wpe.num_embeddings == 16 and m.wte.num_embeddings == 256
    assert gpt(INFO, n_layer=1, n_head=2, n_embd=8, block_size=5).wpe.num_embeddings == 5


def test_attention_equals_torch_sdpa():
    model = _model()
    attn = model.h[1].attn
    x = torch.randn(3, 11, 32)
    q, k, v = _qkv(attn, x, nh=4)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
    want = y.transpose(1, 2).reshape(3, 11, 32) @ attn.c_proj.weight.T
    with torch.no_grad():
        got = attn(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_talking_heads_start_as_standard_attention():
    plain, talking = _model(), _model(talking_heads=True)
    missing, unexpected = talking.load_state_dict(plain.state_dict(), strict=False)
    assert unexpected == [] and all(".talk_" in k for k in missing) and len(missing) == 4
    x = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(talking(x), plain(x), rtol=0, atol=1e-6)


def test_talking_heads_match_the_papers_einsums():
    model = _model(talking_heads=True)
    _randomise_talking(model)
    attn = model.h[0].attn
    B, T, C, nh, hs = 2, 9, 32, 4, 8
    X = torch.randn(B, T, C)
    # the paper's P_q, P_k, P_v: (h, d, k); P_o: (h, v, d); P_l, P_w: (h, h)
    W = attn.c_attn.weight.detach()
    P_q, P_k, P_v = (W[i * C : (i + 1) * C].view(nh, hs, C).permute(0, 2, 1) for i in range(3))
    P_o = attn.c_proj.weight.detach().T.reshape(nh, hs, C)
    P_l, P_w = attn.talk_logits.weight.detach().T, attn.talk_weights.weight.detach().T
    Q = torch.einsum("bnd,hdk->bnhk", X, P_q)
    K = torch.einsum("bmd,hdk->bmhk", X, P_k)
    V = torch.einsum("bmd,hdv->bmhv", X, P_v)
    J = torch.einsum("bnhk,bmhk->bnmh", Q, K) / math.sqrt(hs)  # dot-product logits
    L = torch.einsum("bnmh,hl->bnml", J, P_l)  # talking-heads projection of the logits
    future = torch.ones(T, T).triu(1).bool().view(1, T, T, 1)  # m > n
    Wt = torch.softmax(L.masked_fill(future, float("-inf")), dim=2)  # over m
    U = torch.einsum("bnml,lh->bnmh", Wt, P_w)  # talking-heads projection of the weights
    Out = torch.einsum("bnmh,bmhv->bnhv", U, V)
    want = torch.einsum("bnhv,hvd->bnd", Out, P_o)
    with torch.no_grad():
        got = attn(X)
        attn.talk_logits, attn.talk_weights = None, None
        plain = attn(X)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert (got - plain).abs().max() > 1e-3  # the mixing changed the output


@pytest.mark.parametrize("talking", [False, True])
def test_causal_the_future_never_moves_the_past(talking: bool):
    model = _model(talking_heads=talking)
    if talking:
        _randomise_talking(model)
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 256, (3, 16), generator=g)
    with torch.no_grad():
        base = model(x)
        for t in (1, 5, 15):
            x2 = x.clone()
            x2[:, t:] = torch.randint(0, 256, (3, 16 - t), generator=g)
            out = model(x2)
            torch.testing.assert_close(out[:, :t], base[:, :t], rtol=0, atol=1e-6)
            assert (out[:, t:] - base[:, t:]).abs().max() > 1e-4  # the future did change


@pytest.mark.parametrize(
    ("bias", "talking", "tie"), [(False, False, True), (True, False, True), (True, True, False)]
)
def test_parameter_count_is_the_gpt2_formula(bias: bool, talking: bool, tie: bool):
    V, T, L, nh, d = 256, 16, 3, 4, 24
    model = gpt(
        INFO, n_layer=L, n_head=nh, n_embd=d, bias=bias, talking_heads=talking, tie_weights=tie
    )
    ln = 2 * d if bias else d  # LayerNorm: weight (+ bias)
    per_layer = 12 * d * d + 2 * ln  # qkv 3d^2, proj d^2, MLP 8d^2; two LayerNorms
    if bias:
        per_layer += 3 * d + d + 4 * d + d  # qkv, proj, fc, MLP proj
    if talking:
        per_layer += 2 * nh * nh
    want = V * d + T * d + L * per_layer + ln + (0 if tie else V * d)
    assert sum(p.numel() for p in model.parameters()) == want
    assert (model.lm_head.weight is model.wte.weight) == tie


def test_gpt2_init_scales_residual_projections():
    torch.manual_seed(0)
    model = gpt(INFO, n_layer=8, n_head=4, n_embd=128)
    for name, p in model.named_parameters():
        want = 0.02 / math.sqrt(2 * 8) if name.endswith("c_proj.weight") else 0.02
        if name.endswith(("c_fc.weight", "c_attn.weight", "c_proj.weight", "wte.weight")):
            assert abs(p.std().item() / want - 1) < 0.05, name
            assert abs(p.mean().item()) < 0.05 * want, name


@pytest.mark.parametrize("talking", [False, True])
def test_quantize_model_swaps_every_product(talking: bool):
    L = 3
    model = gpt(INFO, n_layer=L, n_head=4, n_embd=32, talking_heads=talking)
    x = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        ref = model(x)
    before = [type(m) for m in model.modules()]
    n_lin = L * (4 + (2 if talking else 0)) + 1  # qkv, proj, fc, mlp proj (+ 2 talking), head
    assert before.count(nn.Linear) == n_lin
    assert before.count(nn.Embedding) == 2 and before.count(Matmul) == 2 * L
    quantize_model(model, "bf16")
    after = [type(m) for m in model.modules()]
    assert after.count(QLinear) == n_lin
    assert after.count(QEmbedding) == 2 and after.count(QMatmul) == 2 * L
    assert not {nn.Linear, nn.Embedding, Matmul} & set(after)
    assert model.lm_head.weight is model.wte.weight  # still tied
    with torch.no_grad():
        out = model(x)
    assert not torch.equal(out, ref)  # bf16 casts happened...
    torch.testing.assert_close(out, ref, rtol=0.05, atol=0.05)  # ...and are small


def test_dropout_only_in_training():
    model = _model(dropout=0.2)
    x = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
        model.train()
        assert not torch.equal(model(x), model(x))


def test_bad_options_are_named():
    with pytest.raises(ValueError, match=r"n_embd=30 must be divisible by n_head=4"):
        gpt(INFO, n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="dropout"):
        gpt(INFO, dropout=1.0)
    with pytest.raises(ValueError, match="block_size"):
        gpt({"vocab_size": 256})
    model = _model()
    with pytest.raises(ValueError, match=r"T=17 exceeds block_size=16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_a_tiny_gpt_learns_stdlib_bytes():
    """150 small AdamW steps take a tiny model clearly below the unigram entropy (the best loss
    without context), measured on held-out files. One intra-op thread: for ops this small a
    second thread only adds synchronisation (10x slower when the cores are shared)."""
    ds = stdlib(seed=0, block_size=32, val_every=5, max_bytes=300_000)
    unigram_nats = ds.info["unigram_bits_per_byte"] * math.log(2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = gpt(ds.info, n_layer=2, n_head=4, n_embd=48)
        opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
        g = torch.Generator().manual_seed(0)
        for _ in range(150):
            b = ds.train.batch(torch.randint(len(ds.train), (16,), generator=g))
            loss = F.cross_entropy(model(b["x"]).flatten(0, 1), b["y"].flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            b = ds.test.batch(torch.randint(len(ds.test), (256,), generator=g))
            val = F.cross_entropy(model(b["x"]).flatten(0, 1), b["y"].flatten()).item()
    finally:
        torch.set_num_threads(threads)
    assert val < unigram_nats - 0.4, (val, unigram_nats)
