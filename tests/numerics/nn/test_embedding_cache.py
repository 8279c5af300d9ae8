"""The int8/int4 embedding with an fp32 cache (``numerics.nn.embedding_cache``).

Oracles: rows planted on a power-of-two grid whose codes are known by hand; an fp32
``nn.Embedding`` / ``F.embedding_bag`` over the same rows; ``numerics.quantize`` with the
per-row integer formats; plain SGD on an ``nn.Embedding`` fed gradients that are small dyadic
numbers (so every sum is exact whatever its order and the two updates must agree bit for bit);
a Hoeffding bound for the mean of stochastic rounding; and byte counts by hand.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import numerics
from numerics.nn.embedding_cache import (
    CachedEmbedding,
    Storage,
    dequantize_rows,
    pack_int4,
    quantize_rows,
    unpack_int4,
)

S = 2.0**-7  # a row whose largest magnitude is 127 * S has int8 scale exactly S


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# --- row codecs -----------------------------------------------------------------------------------
def test_quantize_rows_planted_codes() -> None:
    rows = torch.tensor([[127 * S, 3 * S, -64 * S, 3.4 * S, -2.5 * S], [0.0] * 5])
    codes, scales = quantize_rows(rows, "int8")
    assert codes.dtype == torch.int8
    assert codes.tolist() == [[127, 3, -64, 3, -2], [0] * 5]  # 3.4 -> 3, -2.5 -> -2 (even)
    assert scales.tolist() == [S, 1.0]  # an all-zero row gets scale 1, as numerics.quantize
    codes4, scales4 = quantize_rows(torch.tensor([[1.75, -0.75, 0.625, 0.0]]), Storage.INT4)
    assert codes4.tolist() == [[7, -3, 2, 0]] and scales4.tolist() == [0.25]


@pytest.mark.parametrize("storage", ["int8", "int4"])
@pytest.mark.parametrize("rounding", ["nearest_even", "stochastic"])
def test_codes_times_scales_equal_numerics_quantize(storage: str, rounding: str) -> None:
    rows = randn(33, 17, seed=1) * torch.logspace(-3, 3, 33)[:, None]
    codes, scales = quantize_rows(rows, storage, rounding, generator=5)
    expected = numerics.quantize(rows, f"{storage}_pc", rounding, generator=5, axis=-1)
    assert torch.equal(dequantize_rows(codes, scales), expected)
    qmax = 127 if storage == "int8" else 7
    assert int(codes.abs().max()) <= qmax


def test_int4_packing_round_trips() -> None:
    codes = torch.arange(-8, 8, dtype=torch.int8).repeat(3, 1)[:, :15]  # odd width
    packed = pack_int4(codes)
    assert packed.dtype == torch.uint8 and packed.shape == (3, 8)
    assert torch.equal(unpack_int4(packed, 15), codes)
    # column 0 in the low nibble: -8 -> 0x8, -7 -> 0x9 in the high nibble
    assert int(packed[0, 0]) == 0x98


def test_stochastic_write_back_is_unbiased_and_beats_nearest() -> None:
    # 4 rows, each repeated n times in one call: the scale depends on the row only, and each
    # element gets its own random bits (a counter-based hash of its position).
    n = 4096
    x = randn(4, 64, seed=2)
    # plant tiny updates on row 0: its step is S (127 S is its largest value) and the others
    # sit 0.1 step above a level, where nearest rounding loses the update entirely
    k = torch.randint(-120, 121, (63,), generator=torch.Generator().manual_seed(3))
    x[0, 0], x[0, 1:] = 127 * S, (k + 0.1) * S
    codes, scales = quantize_rows(x.repeat_interleave(n, 0), "int8", "stochastic", generator=11)
    mean = dequantize_rows(codes, scales).reshape(4, n, 64).mean(1)  # (4, 64)
    step = scales.reshape(4, n)[:, 0]
    # Each rounded value lies in [lo, lo + s] (s the row's step), so the mean of n independent
    # roundings deviates from its expectation by t with probability <= 2 exp(-2 n t^2 / s^2)
    # (Hoeffding); t = 5 s / sqrt(n) gives < 4e-22 per element, < 1e-19 over all 256. The
    # expectation itself is x up to the 23-bit quantisation of the probability (<= 2**-23 s).
    bound = (5 / math.sqrt(n) + 2.0**-23) * step[:, None]
    assert bool(((mean - x).abs() <= bound).all())
    nearest_codes, nearest_scales = quantize_rows(x[:1], "int8")
    drift_nearest = dequantize_rows(nearest_codes, nearest_scales)[0, 1:] - x[0, 1:]
    assert step[0] == S
    assert torch.allclose(drift_nearest, torch.full((63,), -0.1 * S), rtol=1e-4, atol=0)
    assert abs(float((mean[0, 1:] - x[0, 1:]).mean())) < 0.01 * S


# --- forward --------------------------------------------------------------------------------------
@pytest.mark.parametrize("storage", ["int8", "int4"])
def test_forward_cached_rows_are_the_fp32_rows_and_uncached_are_dequantized(storage: str) -> None:
    weight = randn(10, 5, seed=3)
    weight[6] = torch.tensor([127 * S, 3 * S, -64 * S, 3.4 * S, -2.5 * S])
    emb = CachedEmbedding(10, 5, storage, cache_fraction=0.3, weight=weight)
    assert emb.cache_ids.tolist() == [0, 1, 2]
    ref = nn.Embedding.from_pretrained(weight)
    ids = torch.tensor([[2, 0, 1], [1, 1, 2]])
    assert torch.equal(emb(ids), ref(ids))  # bit for bit
    out = emb(torch.tensor([6, 9, 4]))
    if storage == "int8":
        assert out[0].tolist() == [c * S for c in (127, 3, -64, 3, -2)]
    qmax = 127 if storage == "int8" else 7
    for row, i in zip(out[1:], (9, 4), strict=True):
        scale = weight[i].abs().max() / qmax
        codes = torch.round(weight[i] * (1 / scale)).clamp(-qmax, qmax)
        assert torch.equal(row, codes * scale)


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_pooled_forward_matches_embedding_bag(mode: str) -> None:
    emb = CachedEmbedding(30, 6, "int4", cache_fraction=0.2, mode=mode, seed=4)
    table = emb.dense_weight()
    ids = torch.tensor([[0, 7, 7, 29], [3, 5, 1, 12]])
    torch.testing.assert_close(emb(ids), F.embedding_bag(ids, table, mode=mode))
    flat = torch.tensor([4, 0, 22, 22, 5, 9])
    offsets = torch.tensor([0, 3, 3, 5])  # the second bag is empty -> zeros
    got = emb(flat, offsets)
    torch.testing.assert_close(got, F.embedding_bag(flat, table, offsets, mode=mode))
    assert got[1].abs().max() == 0


# --- training -------------------------------------------------------------------------------------
def train_pair(
    storage: str, cache_fraction: float, steps: int, seed: int = 0
) -> tuple[CachedEmbedding, nn.Embedding, torch.Tensor]:
    """Train a CachedEmbedding and an fp32 nn.Embedding with the same dyadic gradients."""
    n, dim, lr = 20, 8, 2.0**-4
    weight = randn(n, dim, seed=5)
    emb = CachedEmbedding(n, dim, storage, cache_fraction=cache_fraction, seed=seed, weight=weight)
    ref = nn.Embedding.from_pretrained(weight.clone(), freeze=False)
    opt = torch.optim.SGD([emb.cache_weight], lr=lr)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=lr)
    g = torch.Generator().manual_seed(6)
    for _ in range(steps):
        ids = torch.randint(0, n, (4, 6), generator=g)  # repeats and cache hits and misses
        upstream = torch.randint(-8, 9, (4, 6, dim), generator=g) * 2.0**-3
        for module, optimizer in ((emb, opt), (ref, ref_opt)):
            optimizer.zero_grad()
            (module(ids) * upstream).sum().backward()
            optimizer.step()
        emb.step(lr)
    return emb, ref, weight


@pytest.mark.parametrize("storage", ["int8", "int4"])
def test_cached_rows_train_exactly_as_fp32(storage: str) -> None:
    emb, ref, weight = train_pair(storage, 0.25, steps=6)
    cached = emb.cache_ids
    assert cached.tolist() == [0, 1, 2, 3, 4]
    assert not torch.equal(ref.weight[cached], weight[cached])  # they did train
    assert torch.equal(emb.cache_weight[emb.cache_slots], ref.weight[cached])
    # uncached rows follow the fp32 run loosely: each of their <= 6 write-backs errs by less
    # than one step of the row (scales move little over 6 steps), and int4 steps are coarse
    dense, target = emb.dense_weight(), ref.weight.detach()
    steps = (dense - target).abs() / emb.scales[:, None]
    assert float(steps[5:].max()) <= 6.0


def test_whole_table_in_cache_is_plain_fp32_training() -> None:
    emb, ref, _ = train_pair("int8", 1.0, steps=4)
    assert torch.equal(emb.dense_weight(), ref.weight.detach())


def test_training_is_reproducible_from_the_seed() -> None:
    a, _, _ = train_pair("int4", 0.1, steps=4, seed=7)
    b, _, _ = train_pair("int4", 0.1, steps=4, seed=7)
    c, _, _ = train_pair("int4", 0.1, steps=4, seed=8)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.scales, b.scales)
    assert not torch.equal(a.codes, c.codes)


def test_untouched_and_zero_gradient_rows_are_not_rewritten() -> None:
    emb = CachedEmbedding(12, 4, cache_fraction=0.0, seed=1)
    before = emb.codes.clone()
    out = emb(torch.tensor([3, 5]))
    (out[0] * 1.0).sum().backward()  # row 5 looked up, but its gradient is zero
    emb.step(0.5)
    changed = (emb.codes != before).any(dim=1).nonzero().squeeze(1).tolist()
    assert changed == [3]


def test_nearest_write_back_loses_small_updates_stochastic_keeps_them() -> None:
    """Rows (1, 64/127), on the int8 grid of step 1/127: an update of 0.1 step to the second
    element is lost by nearest rounding every time, and kept in expectation by stochastic
    rounding."""
    weight = torch.tensor([[1.0, 64 / 127]]).repeat(400, 1)
    near = CachedEmbedding(400, 2, cache_fraction=0.0, rounding="nearest_even", weight=weight)
    sr = CachedEmbedding(400, 2, cache_fraction=0.0, seed=3, weight=weight)
    start = near.dense_weight()
    assert torch.equal(start, sr.dense_weight())
    grad = torch.tensor([0.0, -0.1 / 127])  # lr 1: the second element moves up by 0.1 step
    for emb in (near, sr):
        for _ in range(5):
            out = emb(torch.arange(400))
            (out * grad).sum().backward()
            emb.step(1.0)
    assert torch.equal(near.dense_weight(), start)  # every update rounded away
    gained = float((sr.dense_weight()[:, 1] - start[:, 1]).mean()) * 127  # 5 x 0.1 expected
    assert abs(gained - 0.5) < 0.1


# --- the cache ------------------------------------------------------------------------------------
def test_refresh_holds_the_most_frequent_ids() -> None:
    emb = CachedEmbedding(50, 4, cache_fraction=0.1, seed=2)  # 5 rows, 0..4 at first
    planted = {7: 10, 3: 9, 40: 8, 12: 7, 25: 6, 0: 6, 30: 5, 1: 1}  # 25 and 0 tie: 0 wins
    ids = torch.tensor([i for i, c in planted.items() for _ in range(c)])
    with torch.no_grad():
        emb(ids[torch.randperm(ids.numel(), generator=torch.Generator().manual_seed(0))])
        emb.cache_weight[emb.cache_slots[3]] += 0.375  # train row 3 in fp32 (it stays)
        emb.cache_weight[emb.cache_slots[4]] += 0.25  # and row 4 (it leaves)
    kept3 = emb.cache_weight[emb.cache_slots[3]].detach().clone()
    row4 = emb.cache_weight[emb.cache_slots[4]].detach().clone()
    admitted_store = emb.stored_rows(torch.tensor([7, 12, 40]))
    report = emb.refresh_cache()
    assert emb.cache_ids.tolist() == [0, 3, 7, 12, 40]
    assert report.admitted.tolist() == [7, 12, 40] and report.evicted.tolist() == [1, 2, 4]
    assert report.slots.tolist() == [1, 2, 4]  # freed slots, in order
    table = emb.dense_weight()
    assert torch.equal(table[3], kept3)  # stayed: untouched fp32
    assert torch.equal(table[[7, 12, 40]], admitted_store)  # admitted: dequantized
    step4 = float(emb.scales[4])
    assert float((table[4] - row4).abs().max()) <= step4  # evicted: SR write-back
    assert step4 == pytest.approx(float(row4.abs().max()) / 127)


def test_refresh_every_and_refresh_guards() -> None:
    emb = CachedEmbedding(40, 4, cache_fraction=0.05, refresh_every=2, seed=3)  # 2 rows
    for _ in range(2):
        out = emb(torch.tensor([17, 17, 33]))
        out.sum().backward()
        with pytest.raises(RuntimeError, match="step"):
            emb.refresh_cache()  # uncached gradients would be lost
        emb.step(0.1)
    assert emb.cache_ids.tolist() == [17, 33]
    assert emb.cache_weight.grad is not None
    assert emb.cache_weight.grad.abs().max() == 0  # reassigned slots drop stale gradients


def test_eval_mode_neither_counts_nor_records() -> None:
    emb = CachedEmbedding(10, 4, cache_fraction=0.0).eval()
    emb(torch.tensor([1, 2]))
    assert emb.counts.sum() == 0 and emb._pending == []


# --- memory ---------------------------------------------------------------------------------------
def test_bytes_used_by_hand() -> None:
    used = CachedEmbedding(1000, 64, "int8", cache_fraction=0.05).bytes_used()
    assert (used.codes, used.scales) == (1000 * 64, 1000 * 4)
    assert (used.cache_rows, used.cache_index) == (50 * 64 * 4, 50 * 8 * 2)
    assert (used.counters, used.fp32_table) == (1000 * 8, 1000 * 64 * 4)
    assert used.total == 64000 + 4000 + 12800 + 800 + 8000
    assert used.compression == pytest.approx(256000 / 89600)
    used4 = CachedEmbedding(1000, 63, "int4", cache_fraction=0.01).bytes_used()
    assert used4.codes == 1000 * 32  # 63 nibbles -> 32 bytes per row
    assert used4.total == 32000 + 4000 + 10 * 63 * 4 + 10 * 16 + 8000


# --- arguments ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [
        ({"num_embeddings": 0}, "num_embeddings="),
        ({"dim": 0}, "dim="),
        ({"storage": "fp8"}, "storage="),
        ({"mode": "max"}, "mode="),
        ({"cache_fraction": 1.5}, "cache_fraction="),
        ({"refresh_every": -1}, "refresh_every="),
        ({"rounding": "up"}, "rounding="),
        ({"weight": torch.zeros(3, 3)}, "weight"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, object], arg: str) -> None:
    args: dict[str, object] = {"num_embeddings": 10, "dim": 4, **kwargs}
    with pytest.raises(ValueError, match=arg):
        CachedEmbedding(**args)  # type: ignore[arg-type]


def test_bad_calls() -> None:
    emb = CachedEmbedding(10, 4)
    with pytest.raises(ValueError, match="lr="):
        emb.step(-1.0)
    with pytest.raises(ValueError, match="offsets"):
        emb(torch.tensor([1]), torch.tensor([0]))
    with pytest.raises(IndexError, match="ids"):
        emb(torch.tensor([10]))
    with pytest.raises(TypeError, match="ids"):
        emb(torch.tensor([1.0]))
    bag = CachedEmbedding(10, 4, mode="sum")
    with pytest.raises(ValueError, match="ids"):
        bag(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="offsets"):
        bag(torch.tensor([1, 2]), torch.tensor([1]))
