"""The Kneser-Ney byte model against independent computations.

The oracle is a brute-force interpolated modified Kneser-Ney written here with Python dicts and
the formulas of Chen & Goodman (1998) as they read (counts by slicing ``bytes``, continuation
counts as sets of left neighbours, probabilities by recursion); the module packs keys into
integers and works with sorted arrays. Small probabilities are also computed by hand.
"""

import json
import sysconfig
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from numerics import ngram
from numerics.data.text import unigram_bits_per_byte

STDLIB = Path(sysconfig.get_paths()["stdlib"])
FALLBACK = (0.5, 1.0, 1.5)


# --- the oracle -------------------------------------------------------------------------------
def _discounts(counts: Counter) -> tuple[float, float, float]:
    n = {r: sum(1 for c in counts.values() if c == r) for r in (1, 2, 3, 4)}
    if min(n.values()) == 0:
        return FALLBACK
    y = n[1] / (n[1] + 2 * n[2])
    d = (1 - 2 * y * n[2] / n[1], 2 - 3 * y * n[3] / n[2], 3 - 4 * y * n[4] / n[3])
    if not (0 < d[0] <= 1 and 0 < d[1] <= 2 and 0 < d[2] <= 3):
        return FALLBACK
    return d


class Level:
    """One order's counts (raw or continuation) with per-context sums, as dicts."""

    def __init__(self, counts: Counter) -> None:
        self.counts = counts
        self.d = _discounts(counts)
        self.total: dict[bytes, int] = defaultdict(int)
        self.n: dict[tuple[bytes, int], int] = defaultdict(int)  # (context, 1|2|3) -> N_r
        for g, c in counts.items():
            self.total[g[:-1]] += c
            self.n[g[:-1], min(c, 3)] += 1


class Oracle:
    def __init__(self, data: bytes, order: int) -> None:
        self.order = order
        self.raw = {
            k: Level(Counter(data[i : i + k] for i in range(len(data) - k + 1)))
            for k in range(1, order + 1)
        }
        self.cont = {}
        for k in range(1, order):
            left: dict[bytes, set[int]] = defaultdict(set)
            for g in self.raw[k + 1].counts:
                left[g[1:]].add(g[0])
            self.cont[k] = Level(Counter({g: len(v) for g, v in left.items()}))

    def _p(self, w: int, h: bytes, k: int, top: bool) -> float:
        if k == 0:
            return 1 / 256
        h = h[len(h) - (k - 1) :] if k > 1 else b""
        lower = self._p(w, h, k - 1, top=False)
        lv = self.raw[k] if top else self.cont[k]
        total = lv.total.get(h, 0)
        if total == 0:
            return lower
        c = lv.counts.get(h + bytes([w]), 0)
        d = (0.0, *lv.d)[min(c, 3)]
        gamma = sum(lv.d[r - 1] * lv.n.get((h, r), 0) for r in (1, 2, 3)) / total
        return max(c - d, 0) / total + gamma * lower

    def prob(self, w: int, context: bytes) -> float:
        """p(w | context), at the order the context's length allows (at most ``order``)."""
        k = min(len(context) + 1, self.order)
        return self._p(w, context, k, top=True)


# --- corpora ----------------------------------------------------------------------------------
def _text(n: int) -> bytes:
    """``n`` bytes of real text: the start of stdlib's textwrap.py and argparse.py."""
    return ((STDLIB / "textwrap.py").read_bytes() + (STDLIB / "argparse.py").read_bytes())[:n]


@pytest.fixture(scope="module")
def corpus() -> bytes:
    return _text(6000)


TINY = b"Zqx " + b"abracadabra, abba, cab; a bad cab! " * 2  # fallback discounts


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("size", ["text", "tiny"])
def test_probabilities_match_the_brute_force_oracle(corpus: bytes, size: str, order: int) -> None:
    data = corpus if size == "text" else TINY + b"abracadabra. dab cabbage"
    train, test = data[:-1000], data[-1000:]
    if size == "tiny":
        train, test = TINY, data[len(TINY) :]
    model, oracle = ngram.KneserNey(train, order), Oracle(train, order)
    assert model.discounts[-1] == pytest.approx(oracle.raw[order].d, rel=1e-12)
    for k in range(1, order):
        assert model.discounts[k - 1] == pytest.approx(oracle.cont[k].d, rel=1e-12)
    if size == "text":
        assert all(d != FALLBACK for d in model.discounts)  # estimated from count-of-counts
    else:
        assert FALLBACK in model.discounts
    stream = np.frombuffer(test, dtype=np.uint8)
    pos = np.arange(len(test))
    got = model.probabilities(stream, pos)
    want = [oracle.prob(test[i], test[max(0, i - order + 1) : i]) for i in pos]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=0)


def test_a_short_context_gets_the_lower_order_model(corpus: bytes) -> None:
    """A byte with j < order - 1 bytes of context is scored by the order j + 1 model."""
    train, test = corpus[:5000], corpus[5000:]
    model = ngram.KneserNey(train, 4)
    stream = np.frombuffer(test, dtype=np.uint8)
    pos = np.arange(10, len(test))
    for j in range(4):
        alone = ngram.KneserNey(train, j + 1).probabilities(stream, pos)
        np.testing.assert_allclose(
            model.probabilities(stream, pos, np.full(len(pos), j)), alone, rtol=1e-12
        )


def test_windows_score_each_byte_with_its_window_context(corpus: bytes) -> None:
    train, test = corpus[:5000], corpus[5000:]
    model, oracle = ngram.KneserNey(train, 3), Oracle(train, 3)
    starts, block = np.array([0, 16, 32, 100]), 16
    pos, ctx = ngram.window_positions(starts, block)
    assert pos[:17].tolist() == [*range(1, 17), 17] and ctx[:17].tolist() == [*range(1, 17), 1]
    bits = [
        -np.log2(oracle.prob(test[s + 1 + t], test[max(s, s + 1 + t - 2) : s + 1 + t]))
        for s in starts
        for t in range(block)
    ]
    got = ngram.window_bits_per_byte(model, np.frombuffer(test, dtype=np.uint8), starts, block)
    assert got == pytest.approx(float(np.mean(bits)), rel=1e-12)


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_every_distribution_sums_to_one(corpus: bytes, order: int) -> None:
    model = ngram.KneserNey(corpus[:5000], order)
    contexts = [b"", b"s", b"se", b"self", b"def ", b"\n    ", b"\x00\x01", b"zq\xff\xfe"]
    for h in contexts:  # seen, partly seen and unseen contexts, shorter and longer than order
        p = model.distribution(h)
        assert p.shape == (256,) and (p > 0).all()
        assert p.sum() == pytest.approx(1.0, abs=1e-12), h


def test_hand_computed_probabilities() -> None:
    """ "abracadabra", order 2. Bigrams ab br ra x2, ac ca ad da x1: n3 = 0, so the fallback
    discounts (0.5, 1, 1.5) at every order here."""
    model = ngram.KneserNey(b"abracadabra", 2)
    assert model.discounts == [FALLBACK, FALLBACK]
    # below the bigrams, continuation counts: a follows r, c, d (3); b, r, c, d follow one byte
    # each (1); 7 in all, four of them 1: gamma = (0.5 * 4 + 1.5 * 1) / 7 = 1/2
    p1 = {w: n / 7 + 0.5 / 256 for w, n in {"a": 1.5, "b": 0.5, "c": 0.5, "z": 0.0}.items()}
    unseen = model.distribution(b"z")  # "z" never occurs: the bigram level adds nothing
    for w, p in p1.items():
        assert unseen[ord(w)] == pytest.approx(p, rel=1e-12)
    # after "a": ab 2, ac 1, ad 1, total 4; gamma = (0.5 * 2 + 1 * 1) / 4 = 1/2
    after_a = model.distribution(b"a")
    assert after_a[ord("b")] == pytest.approx((2 - 1) / 4 + 0.5 * p1["b"], rel=1e-12)
    assert after_a[ord("c")] == pytest.approx((1 - 0.5) / 4 + 0.5 * p1["c"], rel=1e-12)
    assert after_a[ord("a")] == pytest.approx(0.5 * p1["a"], rel=1e-12)
    # after "r": ra 2, total 2, gamma = 1 * 1 / 2
    assert model.distribution(b"r")[ord("a")] == pytest.approx(0.5 + 0.5 * p1["a"], rel=1e-12)
    # no context at all: the order-1 model, raw counts a 5, b 2, r 2, c 1, d 1 of 11;
    # gamma = (0.5 * 2 + 1 * 2 + 1.5 * 1) / 11
    first = model.distribution(b"")
    gamma = 4.5 / 11
    for w, c in {"a": 5 - 1.5, "b": 2 - 1.0, "d": 1 - 0.5, "z": 0.0}.items():
        assert first[ord(w)] == pytest.approx(c / 11 + gamma / 256, rel=1e-12)


def test_discounts_follow_chen_goodman_or_fall_back() -> None:
    # n1..n4 = 4, 2, 1, 1: Y = 4 / 8, D1 = 1 - 2Y 2/4, D2 = 2 - 3Y 1/2, D3+ = 3 - 4Y 1/1
    assert ngram.discounts(np.array([1, 1, 1, 1, 2, 2, 3, 4, 9])) == (0.5, 1.25, 1.0)
    assert ngram.discounts(np.array([1, 2, 3, 5])) == FALLBACK  # no count of 4
    # n1..n4 = 10, 1, 10, 1: D2 = 2 - 3 (10/12) 10 < 0
    assert ngram.discounts(np.array([1] * 10 + [2] + [3] * 10 + [4])) == FALLBACK


def test_order_one_is_the_smoothed_unigram(corpus: bytes) -> None:
    data = np.frombuffer(corpus, dtype=np.uint8)
    counts = np.bincount(data, minlength=256).astype(float)
    nonzero = counts[counts > 0]
    n = {r: int((nonzero == r).sum()) for r in (1, 2, 3, 4)}
    d = ngram.discounts(nonzero)
    assert d == _discounts(Counter(dict(enumerate(nonzero))))  # the oracle's rule
    assert min(n.values()) > 0 and d != FALLBACK  # estimated, not the fallback
    disc = np.select([counts == 0, counts == 1, counts == 2], [0.0, d[0], d[1]], d[2])
    gamma = (d[0] * n[1] + d[1] * n[2] + d[2] * (nonzero >= 3).sum()) / len(data)
    want = np.maximum(counts - disc, 0) / len(data) + gamma / 256
    got = ngram.KneserNey(data, 1).distribution(b"previous bytes are ignored")
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_it_beats_the_unigram_entropy_on_held_out_text() -> None:
    train = np.frombuffer(
        b"".join((STDLIB / f).read_bytes() for f in ("argparse.py", "textwrap.py", "ast.py")),
        dtype=np.uint8,
    )
    held_out = np.frombuffer((STDLIB / "shlex.py").read_bytes(), dtype=np.uint8)
    starts, block = np.arange(0, len(held_out) - 64, 64), 64
    entropy = unigram_bits_per_byte(train.tobytes())
    bits = {k: ngram.window_bits_per_byte(ngram.KneserNey(train, k), held_out, starts, block)
            for k in (1, 3, 5)}  # fmt: skip
    assert bits[1] > entropy - 0.3  # order 1 knows byte frequencies only
    assert bits[3] < entropy - 1.0
    assert bits[5] < bits[3]


def test_keys_pack_the_oldest_byte_highest() -> None:
    keys = ngram.gram_keys(np.frombuffer(b"\x01\x02\x03\xff", dtype=np.uint8), 3)
    assert keys.tolist() == [0x010203, 0x0203FF]
    assert ngram.gram_keys(np.frombuffer(b"\xff" * 8, dtype=np.uint8), 8).tolist() == [2**64 - 1]
    with pytest.raises(ValueError, match="order=9"):
        ngram.KneserNey(b"abcdefghijk", 9)


def test_the_cache_stores_the_score_by_corpus_order_and_windows(
    corpus: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = np.frombuffer(corpus[:5000], dtype=np.uint8)
    test = np.frombuffer(corpus[5000:], dtype=np.uint8)
    starts = np.arange(0, 900, 32)
    args = (train, test, starts, 32, 3, "sha")
    fresh = ngram.window_bits_per_byte(ngram.KneserNey(train, 3), test, starts, 32)
    assert ngram.cached_window_bits_per_byte(*args, folder=tmp_path) == fresh
    (stored,) = tmp_path.iterdir()
    assert json.loads(stored.read_text())["bits_per_byte"] == fresh

    def refuse(*a: object) -> None:
        raise AssertionError("refitted although cached")

    with monkeypatch.context() as m:
        m.setattr(ngram, "KneserNey", refuse)
        assert ngram.cached_window_bits_per_byte(*args, folder=tmp_path) == fresh
    # another order, other windows or another corpus is another entry
    ngram.cached_window_bits_per_byte(train, test, starts, 32, 2, "sha", folder=tmp_path)
    ngram.cached_window_bits_per_byte(train, test, starts[:-1], 32, 3, "sha", folder=tmp_path)
    ngram.cached_window_bits_per_byte(train, test, starts, 32, 3, "other", folder=tmp_path)
    assert len(list(tmp_path.iterdir())) == 4
    stored.write_text("{torn")  # an unreadable entry is recomputed and rewritten
    assert ngram.cached_window_bits_per_byte(*args, folder=tmp_path) == fresh
    assert json.loads(stored.read_text())["bits_per_byte"] == fresh
    blocked = tmp_path / "file"
    blocked.write_text("")  # a cache folder that cannot be created costs time, not the run
    assert ngram.cached_window_bits_per_byte(*args, folder=blocked / "sub") == fresh
