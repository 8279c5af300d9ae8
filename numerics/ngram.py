"""A byte-level n-gram model with interpolated modified Kneser-Ney smoothing: the reference a
byte-level language model has to beat.

The unigram entropy says what a model learns from byte frequencies alone; a smoothed n-gram
model fitted on the same training bytes says what ``order - 1`` bytes of context give with
nothing but counting. A GPT near the n-gram's bits per byte has learned little more than
n-gram statistics.

Technique: interpolated modified Kneser-Ney (Chen & Goodman 1998, "An Empirical Study of
Smoothing Techniques for Language Modeling", Harvard TR-10-98; Kneser & Ney 1995). With ``h``
the ``k - 1`` bytes before ``w`` and ``h'`` its last ``k - 2``::

    p_k(w | h) = max(c_k(h w) - D_k(c_k(h w)), 0) / c_k(h .)  +  gamma_k(h) p_{k-1}(w | h')
    gamma_k(h) = (D_k1 N1(h .) + D_k2 N2(h .) + D_k3 N3+(h .)) / c_k(h .)
    p_0(w) = 1 / 256

where ``c_k(h .)`` sums ``c_k(h v)`` over the bytes ``v`` and ``N_r(h .)`` counts the bytes
``v`` with ``c_k(h v) = r`` (``N3+``: ``>= 3``). At the highest order ``c_k`` is the raw count in
the training bytes; below it, the continuation count ``N1+(. h w)``, the number of distinct
bytes seen just before ``h w``. Each order has three discounts from its own count-of-counts
``n_r`` (how many k-grams have count ``r``): ``Y = n1 / (n1 + 2 n2)``, ``D_k1 = 1 - 2Y n2/n1``,
``D_k2 = 2 - 3Y n3/n2``, ``D_k3 = 3 - 4Y n4/n3``. A context never seen in training
(``c_k(h .) = 0``) gives ``p_k = p_{k-1}``.

Where we choose among variants (as KenLM does): the discounts of a lower order come from its
continuation counts; where an order's estimate is undefined or out of range (some ``n_r = 0``,
or not ``0 < D_kr <= r``, as on tiny corpora) that order uses ``FALLBACK_DISCOUNTS`` (KenLM's
``--discount_fallback``); the bytes are one stream with no sentence boundaries, so the k-gram
at the very start of the training bytes, having no left neighbour, adds no continuation count.

A byte with fewer than ``order - 1`` bytes of context before it (the first bytes of a window a
language model reads) is scored by the model of the order its context allows, as that model
fitted alone would score it: its top level with raw counts over the same continuation levels.
``KneserNey`` keeps every order's raw counts for this.

Fitting packs every k-gram into a ``uint64`` key (big-endian: the oldest byte highest, so a
context's k-grams are neighbours in sorted order) and sorts the highest order's keys once, in
place (8 bytes per training byte); the lower orders' raw counts are sums over those sorted
groups, their continuation counts the suffixes of the distinct keys one order up. Scoring is
one ``np.searchsorted`` per table and order. No Python loop runs over the bytes;
``MAX_ORDER`` is 8 (eight bytes fill a key).

``window_bits_per_byte`` scores the bytes a language model is evaluated on with the left
context it has: a window starting at ``s`` predicts bytes ``s+1 .. s+T``, and the byte at
``s+1+t`` sees the ``t+1`` bytes from ``s`` on. ``cached_window_bits_per_byte`` keeps the
result on disk, keyed by the corpus hash, the order and the scored windows.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from numerics.files import atomic_write_json

MAX_ORDER = 8
VOCAB = 256
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)  # KenLM's fallback for unusable count-of-counts
CACHE_VERSION = 1  # bump when a change alters the numbers the cache holds


def _as_bytes(data: bytes | bytearray | np.ndarray) -> np.ndarray:
    arr = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes | bytearray) else data
    if arr.dtype != np.uint8 or arr.ndim != 1:
        raise ValueError("ngram: data must be bytes or a 1-d uint8 array")
    return arr


def gram_keys(data: np.ndarray, k: int) -> np.ndarray:
    """The ``uint64`` key of every k-gram of ``data`` (``len(data) - k + 1`` of them), the
    oldest byte in the highest bits: ``sum_j data[i + j] << 8 (k - 1 - j)``."""
    n = len(data) - k + 1
    if n <= 0:
        return np.empty(0, dtype=np.uint64)
    key = data[:n].astype(np.uint64)
    for j in range(1, k):
        key <<= np.uint64(8)
        key |= data[j : j + n]
    return key


def discounts(counts: np.ndarray) -> tuple[float, float, float]:
    """Chen & Goodman's ``(D1, D2, D3+)`` from the count-of-counts of ``counts``, or
    ``FALLBACK_DISCOUNTS`` where they are undefined or out of range."""
    n1, n2, n3, n4 = (int(np.count_nonzero(counts == r)) for r in (1, 2, 3, 4))
    if min(n1, n2, n3, n4) == 0:
        return FALLBACK_DISCOUNTS
    y = n1 / (n1 + 2 * n2)
    d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    if not all(0.0 < dr <= r for r, dr in enumerate(d, start=1)):
        return FALLBACK_DISCOUNTS
    return d


@dataclass(frozen=True)
class _Order:
    """One order's tables, all sorted by key: the k-grams with their (raw or continuation)
    counts, and each context's total count and interpolation weight numerator."""

    grams: np.ndarray  # (G,) uint64 k-gram keys
    counts: np.ndarray  # (G,) int64
    discount: np.ndarray  # (4,) float64: the discount of a count 0, 1, 2, >= 3
    contexts: np.ndarray  # (H,) uint64 (k-1)-byte context keys
    totals: np.ndarray  # (H,) float64: c(h .)
    backoff: np.ndarray  # (H,) float64: D1 N1(h .) + D2 N2(h .) + D3 N3+(h .)

    @classmethod
    def build(cls, grams: np.ndarray, counts: np.ndarray) -> _Order:
        d1, d2, d3 = discounts(counts)
        ctx = grams >> np.uint64(8)
        first = np.flatnonzero(np.r_[True, ctx[1:] != ctx[:-1]])  # each context's first gram
        totals = np.add.reduceat(counts, first).astype(np.float64)
        ones = np.add.reduceat(counts == 1, first)
        twos = np.add.reduceat(counts == 2, first)
        more = np.add.reduceat(counts >= 3, first)
        return cls(
            grams=grams,
            counts=counts.astype(np.int64),
            discount=np.array([0.0, d1, d2, d3]),
            contexts=ctx[first],
            totals=totals,
            backoff=d1 * ones + d2 * twos + d3 * more,
        )


def _lookup(table: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``keys`` in the sorted ``table`` (clamped) and whether each was found."""
    if not len(table):
        return np.zeros(len(keys), dtype=np.int64), np.zeros(len(keys), dtype=bool)
    i = np.minimum(np.searchsorted(table, keys), len(table) - 1)
    return i, table[i] == keys


def _interpolate(level: _Order, ctx: np.ndarray, word: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """``p_k(word | ctx)`` from ``level``'s counts and ``lower`` = ``p_{k-1}(word | ctx')``."""
    ci, seen = _lookup(level.contexts, ctx)
    gi, found = _lookup(level.grams, (ctx << np.uint64(8)) | word)
    c = np.where(found, level.counts[gi], 0)
    mass = np.maximum(c - level.discount[np.minimum(c, 3)], 0.0)
    return np.where(seen, (mass + level.backoff[ci] * lower) / level.totals[ci], lower)


def _prefix_counts(
    grams: np.ndarray, counts: np.ndarray, last: int
) -> tuple[np.ndarray, np.ndarray]:
    """Raw counts of the (k-1)-grams from the sorted raw k-gram table: each (k-1)-gram occurs
    once per k-gram it starts, plus once at the very end of the data (``last``, its key)."""
    prefix = grams >> np.uint64(8)
    first = np.flatnonzero(np.r_[True, prefix[1:] != prefix[:-1]])
    keys, sums = prefix[first], np.add.reduceat(counts, first)
    i = int(np.searchsorted(keys, np.uint64(last)))
    if i < len(keys) and keys[i] == last:
        sums[i] += 1
    else:
        keys, sums = np.insert(keys, i, np.uint64(last)), np.insert(sums, i, 1)
    return keys, sums


def _count(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct keys, sorted, and how often each occurs (``np.unique``, but sorting
    ``keys`` in place: the highest order's keys are 8 bytes per training byte)."""
    keys.sort()
    first = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return keys[first], np.diff(np.r_[first, len(keys)])


class KneserNey:
    """An interpolated modified Kneser-Ney byte model of order ``order`` (1..``MAX_ORDER``)
    fitted on ``data``; ``order = 1`` is the discounted unigram interpolated with the uniform
    distribution.

    It holds every lower order's model too (their top levels use raw counts): a byte with
    fewer than ``order - 1`` bytes of context available is scored by the model of the order
    its context allows, exactly as that model fitted alone would score it."""

    def __init__(self, data: bytes | bytearray | np.ndarray, order: int) -> None:
        if not 1 <= order <= MAX_ORDER:
            raise ValueError(f"ngram: order={order}; allowed: 1..{MAX_ORDER}")
        arr = _as_bytes(data)
        if len(arr) < order:
            raise ValueError(f"ngram: {len(arr)} training bytes; order {order} needs {order}")
        self.order = order
        grams, counts = _count(gram_keys(arr, order))
        raw = [(grams, counts)]  # raw counts, orders order..1
        cont: list[tuple[np.ndarray, np.ndarray]] = []  # continuation counts, order-1..1
        for k in range(order - 1, 0, -1):
            above = raw[-1][0]  # the distinct (k+1)-grams
            # the distinct left neighbours of each k-gram: the distinct (k+1)-grams ending in it
            cont.append(_count(above & np.uint64((1 << (8 * k)) - 1)))
            raw.append(_prefix_counts(*raw[-1], int(gram_keys(arr[-k:], k)[0])))
        # index k - 1 holds order k
        self._raw = [_Order.build(g, c) for g, c in raw[::-1]]
        self._cont = [_Order.build(g, c) for g, c in cont[::-1]]

    @property
    def discounts(self) -> list[tuple[float, float, float]]:
        """``(D1, D2, D3+)`` of orders 1..order as this model uses them (the lower orders'
        from continuation counts)."""
        levels = [*self._cont, self._raw[-1]]
        return [(float(o.discount[1]), float(o.discount[2]), float(o.discount[3]))
                for o in levels]  # fmt: skip

    def probabilities(
        self, stream: np.ndarray, positions: np.ndarray, context: np.ndarray | None = None
    ) -> np.ndarray:
        """``p(stream[i] | up to order - 1 bytes before i)`` for each ``i`` in ``positions``
        (float64). ``context[j]``, if given, caps how many bytes before ``positions[j]`` may be
        used (default: all there are); a byte with ``j < order - 1`` of them gets the order
        ``j + 1`` model's probability."""
        stream = _as_bytes(stream)
        pos = np.asarray(positions, dtype=np.int64)
        if len(pos) and (pos.min() < 0 or pos.max() >= len(stream)):
            raise ValueError("ngram: positions outside the stream")
        avail = pos if context is None else np.minimum(pos, context)
        top = np.minimum(avail, self.order - 1) + 1  # the order each byte is scored at
        word = stream[pos].astype(np.uint64)
        out = np.empty(len(pos))
        lower = np.full(len(pos), 1.0 / VOCAB)  # p_0, then the continuation chain p_k
        ctx = np.zeros(len(pos), dtype=np.uint64)  # the k-1 bytes before pos, packed
        for k in range(1, self.order + 1):
            if k > 1:  # one more byte of context, the oldest so the highest
                older = stream[np.maximum(pos - (k - 1), 0)].astype(np.uint64)
                ctx |= older << np.uint64(8 * (k - 2))
            here = np.flatnonzero(top == k)
            out[here] = _interpolate(self._raw[k - 1], ctx[here], word[here], lower[here])
            if k < self.order:
                lower = _interpolate(self._cont[k - 1], ctx, word, lower)
        return out

    def distribution(self, context: bytes) -> np.ndarray:
        """``p(w | context)`` for the 256 bytes ``w`` (the last ``order - 1`` bytes count)."""
        tail = bytes(context)[len(context) - min(len(context), self.order - 1) :]
        # 256 copies of the context, each followed by one candidate byte: (256, len(tail) + 1)
        rows = np.empty((VOCAB, len(tail) + 1), dtype=np.uint8)
        rows[:, :-1] = np.frombuffer(tail, dtype=np.uint8)
        rows[:, -1] = np.arange(VOCAB)
        pos = np.arange(VOCAB) * (len(tail) + 1) + len(tail)
        return self.probabilities(rows.reshape(-1), pos, np.full(VOCAB, len(tail)))  # (256,)


def window_positions(starts: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The bytes windows starting at ``starts`` predict, and each one's available context: the
    window at ``s`` predicts ``s+1 .. s+T`` and byte ``s+1+t`` sees the ``t+1`` bytes from ``s``.
    Both (len(starts) * T,), window by window."""
    t = np.arange(block_size, dtype=np.int64)
    s = np.asarray(starts, dtype=np.int64).reshape(-1, 1)
    return (s + 1 + t).reshape(-1), np.broadcast_to(t + 1, (len(s), block_size)).reshape(-1)


def window_bits_per_byte(
    model: KneserNey, stream: np.ndarray, starts: np.ndarray, block_size: int
) -> float:
    """Mean ``-log2 p`` over the bytes the windows at ``starts`` predict, each with only its
    window's bytes as context (what a language model with ``block_size`` positions sees)."""
    pos, ctx = window_positions(starts, block_size)
    return float(-np.log2(model.probabilities(stream, pos, ctx)).mean())


def cache_dir() -> Path:
    """Where ``cached_window_bits_per_byte`` keeps its results: ``$XDG_CACHE_HOME`` (default
    ``~/.cache``) ``/numerics/ngram``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "numerics" / "ngram"


def cached_window_bits_per_byte(
    train: np.ndarray,
    stream: np.ndarray,
    starts: np.ndarray,
    block_size: int,
    order: int,
    corpus_sha256: str | None,
    folder: Path | None = None,
) -> float:
    """``window_bits_per_byte`` of the order-``order`` model fitted on ``train``, read from
    ``folder`` (default ``cache_dir()``) when an earlier run stored it. ``corpus_sha256`` must
    identify ``train`` and ``stream`` (the language datasets' ``info`` has it; None: computed,
    not cached); the windows are part of the key. A cache that cannot be read or written is
    recomputed, never an error."""
    starts = np.asarray(starts, dtype=np.int64)
    if corpus_sha256 is None:
        return window_bits_per_byte(KneserNey(train, order), stream, starts, block_size)
    key = {
        "version": CACHE_VERSION,
        "corpus_sha256": corpus_sha256,
        "order": order,
        "block_size": block_size,
        "windows": len(starts),
        "starts_sha256": hashlib.sha256(starts.tobytes()).hexdigest(),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    path = (cache_dir() if folder is None else folder) / f"kn{order}-{digest[:32]}.json"
    try:
        stored = json.loads(path.read_text())
        if stored["key"] == key:
            return float(stored["bits_per_byte"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    bpb = window_bits_per_byte(KneserNey(train, order), stream, starts, block_size)
    with contextlib.suppress(OSError):  # a cache we cannot write only costs time
        atomic_write_json(path, {"key": key, "bits_per_byte": bpb})
    return bpb
