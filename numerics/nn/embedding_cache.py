"""An embedding table stored in int8/int4 with its most-used rows cached and trained in fp32.

Yang, Huang, Park, Tang and Tulloch, "Mixed-Precision Embedding Using a Cache",
arXiv:2010.11305. Recommendation models hold huge embedding tables, and most lookups hit a
small set of popular rows. So: store every row in low precision (here symmetric int8 or int4
codes with one fp32 scale per row, ``scale = amax / qmax``, the project's ``int8_pc`` /
``int4_pc`` formats along the row), keep the most frequently used rows in a full-precision
cache, and train the rest in low precision, writing their updates back with stochastic rounding
so that small updates survive in expectation instead of being rounded away.

Design (one module, ``CachedEmbedding``):

- Store: ``codes`` (N, dim) int8, or (N, ceil(dim/2)) uint8 for int4 (two's-complement nibbles,
  the even column in the low nibble), and ``scales`` (N,) fp32. Every row has a stored copy;
  for cached rows it is stale until the row is evicted.
- Cache: ``cache_weight`` (C, dim) fp32, an ``nn.Parameter`` trained by the caller's optimizer,
  ``C = floor(cache_fraction * N + 1/2)``. The index is ``cache_ids`` (C,) sorted row ids and
  ``cache_slots`` (C,) their slots in ``cache_weight``; a lookup is a binary search. At
  construction the cache holds rows ``0..C-1``.
- Counts: ``counts`` (N,) int64, the number of times each id was looked up in training mode
  (a running total, no decay). ``refresh_cache()`` (on demand, or every ``refresh_every`` calls
  of ``step``) makes the cache hold the top-C ids by count, ties to the lower id. Rows that stay
  keep their slot and their fp32 values; an evicted row is written to the store with
  stochastic rounding; an admitted row is dequantized into the freed slot (the freed slots in
  ascending order go to the admitted ids in ascending order).
- Forward: cached rows come from ``cache_weight`` (gradients flow to it); uncached rows are
  dequantized (``code * scale`` in fp32) into a leaf tensor that records its gradient (in
  training mode with gradients enabled). No fp32 copy of the uncached rows outlives the step.
- ``step(lr)``: plain SGD on the uncached rows touched since the last step,
  ``row <- dequant(row) - lr * grad`` (gradients of repeated ids summed), written back with
  stochastic rounding (``numerics.quantize(..., "stochastic", generator)``, one fp32 scale per
  row recomputed from the updated row). Rows whose gradient is exactly zero are not rewritten.

A training loop: ``loss.backward(); optimizer.step(); emb.step(lr); optimizer.zero_grad()``.
Call ``emb.step`` after ``optimizer.step``: a refresh inside ``step`` moves rows between slots
(it zeroes the gradient of the slots it reassigns). Optimizer state kept per slot (momentum,
Adam moments) stays with the slot, so after a refresh a newly admitted row inherits the state
of the row it replaced; use plain SGD for ``cache_weight`` or reset that state after a refresh
(``refresh_cache`` returns the slots it reassigned).

Randomness: one CPU ``torch.Generator`` seeded from ``seed`` draws the initial rows (N(0, 1),
as ``nn.Embedding``) and the keys of every stochastic write-back, so a run is reproducible from
the seed. ``state_dict`` carries the generator's state and the step count (the module's extra
state), so a checkpointed table resumes its write-back stream where it stopped.

Where we differ from the paper: the paper's cache works like a hardware cache, admitting rows
as they are accessed (LRU or LFU); we refresh the whole cache to the top-C ids by a running
count at chosen moments. The paper's store follows FBGEMM's row-wise quantization (a scale and
a bias per row); we use the project's symmetric integer formats (a scale only). Uncached rows
are trained with plain SGD only (no per-row optimizer state), and the initial table is
quantized with round-to-nearest-even.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from numerics import formats
from numerics.formats import IntFormat
from numerics.quantize import quantize


class Storage(enum.Enum):
    INT8 = "int8"
    INT4 = "int4"

    @property
    def format(self) -> IntFormat:
        fmt = formats.get(f"{self.value}_pc")
        assert isinstance(fmt, IntFormat)
        return fmt


class BagMode(enum.Enum):
    SUM = "sum"
    MEAN = "mean"


# --- row codecs -----------------------------------------------------------------------------------
def quantize_rows(
    rows: torch.Tensor,
    storage: Storage | str,
    rounding: str = "nearest_even",
    generator: torch.Generator | int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes (n, dim) int8 and fp32 scales (n,) of fp32 ``rows`` (n, dim).

    The values are ``numerics.quantize(rows, "int8_pc" | "int4_pc", rounding, generator,
    axis=-1)``; the codes are those values divided by ``scale = amax / qmax`` (1 for an
    all-zero row), exact because each value is ``code * scale`` rounded once in fp32.
    """
    storage = Storage(storage)
    fmt = storage.format
    if rows.dim() != 2 or rows.dtype != torch.float32:
        raise ValueError(f"rows: expected a float32 (n, dim) tensor, got {rows.dtype} {rows.shape}")
    if not bool(torch.isfinite(rows).all()):
        raise ValueError("rows: holds inf or NaN; an integer code cannot represent it")
    values = quantize(rows, fmt, rounding, generator, axis=-1, backend="eager")
    amax = rows.abs().amax(dim=-1)
    scales = torch.where(amax > 0, amax / float(fmt.qmax), torch.ones_like(amax))
    codes = torch.round(values / scales[:, None]).clamp(-fmt.qmax, fmt.qmax)
    return codes.to(torch.int8), scales


def dequantize_rows(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """``code * scale`` in fp32: (n, dim) from int8 codes (n, dim) and scales (n,)."""
    return codes.to(torch.float32) * scales[:, None]


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """int8 codes (n, dim) in [-8, 7] -> uint8 (n, ceil(dim/2)), column 2j in the low nibble."""
    if codes.shape[-1] % 2:
        codes = F.pad(codes, (0, 1))
    nibbles = (codes.to(torch.int16) & 0xF).to(torch.uint8)  # two's complement, 4 bits
    return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor, dim: int) -> torch.Tensor:
    """The inverse of ``pack_int4``: uint8 (n, ceil(dim/2)) -> int8 codes (n, dim)."""
    low = (packed & 0xF).to(torch.int16)
    high = (packed >> 4).to(torch.int16)
    nibbles = torch.stack([low, high], dim=-1).flatten(-2)[:, :dim]  # (n, 2 * ceil(dim/2))
    return torch.where(nibbles >= 8, nibbles - 16, nibbles).to(torch.int8)


# --- reports --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EmbeddingBytes:
    """Memory held by a ``CachedEmbedding``, against the plain fp32 table it replaces."""

    codes: int  # the quantized store: 1 byte per int8 value, 1/2 byte per int4 value (packed)
    scales: int  # one fp32 scale per row
    cache_rows: int  # fp32 cached rows
    cache_index: int  # sorted ids + slots, int64 each
    counters: int  # int64 access count per row
    fp32_table: int  # what nn.Embedding would hold

    @property
    def store(self) -> int:
        return self.codes + self.scales

    @property
    def cache(self) -> int:
        return self.cache_rows + self.cache_index

    @property
    def total(self) -> int:
        return self.store + self.cache + self.counters

    @property
    def compression(self) -> float:
        return self.fp32_table / self.total


@dataclass(frozen=True)
class CacheRefresh:
    admitted: torch.Tensor  # row ids that entered the cache (ascending)
    evicted: torch.Tensor  # row ids that left it, written back with stochastic rounding
    slots: torch.Tensor  # the slots they swapped in, admitted[i] now in slots[i]


# --- the module -----------------------------------------------------------------------------------
class CachedEmbedding(nn.Module):
    """An int8/int4 embedding table with an fp32 cache of its most-used rows.

    Args:
        num_embeddings, dim: the table's shape (N, dim).
        storage: ``"int8"`` or ``"int4"``, symmetric codes with one fp32 scale per row.
        cache_fraction: the share of rows held in fp32, ``C = floor(fraction * N + 1/2)``.
        mode: None for a plain lookup (output ``ids.shape + (dim,)``), ``"sum"`` or ``"mean"``
            to pool bags, as ``nn.EmbeddingBag``: ``ids`` (B, L), or 1-d ``ids`` with
            ``offsets`` (B,) giving where each bag starts (an empty bag pools to zeros).
        refresh_every: refresh the cache every this many ``step`` calls (0: only on demand).
        rounding: how updated and evicted rows are written back to the store: ``stochastic``
            (the paper's choice, and the default) or ``nearest_even``, which loses every
            update smaller than half a code step (the ablation the paper compares against).
        seed: seeds the generator of the initial rows and of stochastic rounding.
        weight: initial rows (N, dim); None draws N(0, 1) rows from the seeded generator.
    """

    codes: torch.Tensor
    scales: torch.Tensor
    counts: torch.Tensor
    cache_ids: torch.Tensor
    cache_slots: torch.Tensor

    def __init__(
        self,
        num_embeddings: int,
        dim: int,
        storage: Storage | str = Storage.INT8,
        cache_fraction: float = 0.1,
        mode: BagMode | str | None = None,
        refresh_every: int = 0,
        seed: int = 0,
        weight: torch.Tensor | None = None,
        rounding: str = "stochastic",
    ) -> None:
        super().__init__()
        if isinstance(num_embeddings, bool) or not isinstance(num_embeddings, int):
            raise ValueError(f"num_embeddings={num_embeddings!r}; must be an int >= 1")
        if num_embeddings < 1:
            raise ValueError(f"num_embeddings={num_embeddings}; must be >= 1")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim={dim!r}; must be an int >= 1")
        try:
            self.storage = Storage(storage)
        except ValueError:
            raise ValueError(f"storage={storage!r}; allowed: int8, int4") from None
        try:
            self.mode = None if mode is None else BagMode(mode)
        except ValueError:
            raise ValueError(f"mode={mode!r}; allowed: None, sum, mean") from None
        if not (isinstance(cache_fraction, int | float) and 0.0 <= cache_fraction <= 1.0):
            raise ValueError(f"cache_fraction={cache_fraction!r}; must be in [0, 1]")
        if isinstance(refresh_every, bool) or not isinstance(refresh_every, int):
            raise ValueError(f"refresh_every={refresh_every!r}; must be an int >= 0")
        if refresh_every < 0:
            raise ValueError(f"refresh_every={refresh_every}; must be >= 0")
        if rounding not in ("stochastic", "nearest_even"):
            raise ValueError(f"rounding={rounding!r}; allowed: stochastic, nearest_even")
        self.rounding = rounding
        self.num_embeddings, self.dim = num_embeddings, dim
        self.refresh_every = refresh_every
        self.num_steps = 0
        self.generator = torch.Generator().manual_seed(seed)
        if weight is None:
            weight = torch.randn(num_embeddings, dim, generator=self.generator)
        elif weight.shape != (num_embeddings, dim) or not weight.is_floating_point():
            raise ValueError(f"weight: expected a float ({num_embeddings}, {dim}) tensor")
        weight = weight.detach().to(torch.float32)
        n_cache = min(num_embeddings, math.floor(cache_fraction * num_embeddings + 0.5))

        codes, scales = quantize_rows(weight, self.storage)
        self.register_buffer("codes", self._pack(codes))
        self.register_buffer("scales", scales)
        self.register_buffer("counts", torch.zeros(num_embeddings, dtype=torch.int64))
        ids = torch.arange(n_cache, dtype=torch.int64, device=weight.device)
        self.register_buffer("cache_ids", ids)
        self.register_buffer("cache_slots", ids.clone())
        self.cache_weight = nn.Parameter(weight[:n_cache].clone())
        # uncached rows looked up since the last step: (ids (m,), dequantized leaf (m, dim))
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def cache_rows(self) -> int:
        return self.cache_weight.shape[0]

    def get_extra_state(self) -> dict[str, object]:
        return {"generator": self.generator.get_state(), "num_steps": self.num_steps}

    def set_extra_state(self, state: dict[str, object]) -> None:
        gen, steps = state["generator"], state["num_steps"]
        assert isinstance(gen, torch.Tensor) and isinstance(steps, int)
        self.generator.set_state(gen.cpu())
        self.num_steps = steps

    def extra_repr(self) -> str:
        mode = None if self.mode is None else self.mode.value
        return (
            f"{self.num_embeddings}, {self.dim}, storage={self.storage.value}, "
            f"cache_rows={self.cache_rows}, mode={mode}"
        )

    # --- the store ------------------------------------------------------------------------------
    def _pack(self, codes: torch.Tensor) -> torch.Tensor:
        return pack_int4(codes) if self.storage is Storage.INT4 else codes

    def _codes_of(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.codes[ids]
        return unpack_int4(rows, self.dim) if self.storage is Storage.INT4 else rows

    def stored_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """The store's dequantized rows (len(ids), dim), stale for cached ids."""
        return dequantize_rows(self._codes_of(ids), self.scales[ids])

    def _write(self, ids: torch.Tensor, rows: torch.Tensor) -> None:
        """Round fp32 ``rows`` into the store at ``ids`` (stochastically by default)."""
        if ids.numel() == 0:
            return
        gen = self.generator if self.rounding == "stochastic" else None
        codes, scales = quantize_rows(rows.detach(), self.storage, self.rounding, gen)
        self.codes[ids] = self._pack(codes)
        self.scales[ids] = scales

    def _lookup(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(slot, hit) for each id; slot is meaningful where hit."""
        if self.cache_rows == 0:
            return torch.zeros_like(ids), torch.zeros_like(ids, dtype=torch.bool)
        pos = torch.searchsorted(self.cache_ids, ids).clamp(max=self.cache_rows - 1)
        return self.cache_slots[pos], self.cache_ids[pos] == ids

    @torch.no_grad()
    def dense_weight(self) -> torch.Tensor:
        """The table the module currently represents, (N, dim) fp32 (cache over store)."""
        all_ids = torch.arange(self.num_embeddings, device=self.scales.device)
        table = self.stored_rows(all_ids)
        table[self.cache_ids] = self.cache_weight[self.cache_slots]
        return table

    # --- forward --------------------------------------------------------------------------------
    def forward(self, ids: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
        if ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"ids: expected an int64 or int32 tensor, got {ids.dtype}")
        flat = ids.reshape(-1).to(torch.int64)
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self.num_embeddings):
            raise IndexError(f"ids: out of range [0, {self.num_embeddings})")
        if self.training:
            self.counts.index_add_(0, flat, torch.ones_like(flat))

        uniq, inverse = torch.unique(flat, return_inverse=True)  # (U,), (n,)
        slot, hit = self._lookup(uniq)
        hit_pos = hit.nonzero().squeeze(1)
        miss_pos = (~hit).nonzero().squeeze(1)
        cached = self.cache_weight[slot[hit_pos]]  # (h, dim), differentiable
        missed = self.stored_rows(uniq[miss_pos])  # (m, dim), a fresh leaf
        if self.training and torch.is_grad_enabled() and miss_pos.numel():
            missed.requires_grad_(True)
            self._pending.append((uniq[miss_pos], missed))
        # rows_cat holds the hits then the misses; where[u] is the row of uniq[u] in it
        rows_cat = torch.cat([cached, missed])  # (U, dim)
        where = torch.empty_like(uniq)
        where[torch.cat([hit_pos, miss_pos])] = torch.arange(uniq.numel(), device=uniq.device)
        rows = rows_cat[where[inverse]]  # (n, dim)

        if self.mode is None:
            if offsets is not None:
                raise ValueError("offsets: only for mode='sum' or 'mean'")
            return rows.reshape(*ids.shape, self.dim)
        return self._pool(rows, ids, offsets)

    def _pool(
        self, rows: torch.Tensor, ids: torch.Tensor, offsets: torch.Tensor | None
    ) -> torch.Tensor:
        if offsets is None:
            if ids.dim() != 2:
                raise ValueError("ids: pooled lookups take (B, L) ids, or 1-d ids with offsets")
            bags = rows.reshape(ids.shape[0], ids.shape[1], self.dim)  # (B, L, dim)
            return bags.sum(1) if self.mode is BagMode.SUM else bags.mean(1)
        n = rows.shape[0]
        offsets = offsets.to(torch.int64)
        bad = offsets.dim() != 1 or ids.dim() != 1 or offsets.numel() == 0
        if bad or int(offsets[0]) != 0 or bool((offsets.diff() < 0).any()):
            raise ValueError("offsets: expected 1-d, starting at 0, non-decreasing, 1-d ids")
        if int(offsets[-1]) > n:
            raise ValueError(f"offsets: last offset {int(offsets[-1])} is past the {n} ids")
        positions = torch.arange(n, device=rows.device)
        bag = torch.bucketize(positions, offsets, right=True) - 1  # (n,)
        out = rows.new_zeros(offsets.numel(), self.dim).index_add(0, bag, rows)  # (B, dim)
        if self.mode is BagMode.MEAN:
            sizes = torch.bincount(bag, minlength=offsets.numel()).clamp(min=1)
            out = out / sizes[:, None].to(out.dtype)
        return out

    # --- training -------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, lr: float) -> None:
        """SGD on the uncached rows touched since the last step, written back with SR.

        Then, every ``refresh_every`` steps, ``refresh_cache()``.
        """
        if not (isinstance(lr, int | float) and math.isfinite(lr) and lr >= 0):
            raise ValueError(f"lr={lr!r}; must be finite and >= 0")
        done = [(ids, leaf.grad) for ids, leaf in self._pending if leaf.grad is not None]
        self._pending = []
        if done:
            ids_all = torch.cat([ids for ids, _ in done])
            uniq, inverse = torch.unique(ids_all, return_inverse=True)
            grad = torch.zeros(uniq.numel(), self.dim, device=self.scales.device)
            grad.index_add_(0, inverse, torch.cat([g for _, g in done]))  # (U, dim)
            touched = (grad != 0).any(dim=1)
            ids = uniq[touched]
            self._write(ids, self.stored_rows(ids) - lr * grad[touched])
        self.num_steps += 1
        if self.refresh_every and self.num_steps % self.refresh_every == 0:
            self.refresh_cache()

    @torch.no_grad()
    def refresh_cache(self) -> CacheRefresh:
        """Make the cache hold the top-C ids by count (ties to the lower id).

        Call it between steps (after ``step``, before the next forward): it drops the records
        of uncached lookups that have no gradient yet, and refuses while some have one.
        """
        if any(leaf.grad is not None for _, leaf in self._pending):
            raise RuntimeError("refresh_cache: uncached rows hold gradients; call step(lr) first")
        self._pending = []
        device = self.scales.device
        if self.cache_rows == 0:
            empty = torch.zeros(0, dtype=torch.int64, device=device)
            return CacheRefresh(empty, empty, empty)
        # a stable descending sort keeps equal counts in ascending id order
        top = torch.sort(self.counts, descending=True, stable=True).indices[: self.cache_rows]
        slot_ids = torch.empty_like(self.cache_ids)
        slot_ids[self.cache_slots] = self.cache_ids  # (C,) the row held by each slot
        admitted = torch.sort(top[~torch.isin(top, slot_ids)]).values
        freed = (~torch.isin(slot_ids, top)).nonzero().squeeze(1)  # ascending slots
        evicted = slot_ids[freed]
        self._write(evicted, self.cache_weight[freed])
        self.cache_weight[freed] = self.stored_rows(admitted)
        if self.cache_weight.grad is not None:
            self.cache_weight.grad[freed] = 0
        slot_ids[freed] = admitted
        self.cache_ids, self.cache_slots = torch.sort(slot_ids)
        return CacheRefresh(admitted, evicted, freed)

    # --- memory ---------------------------------------------------------------------------------
    def bytes_used(self) -> EmbeddingBytes:
        def nbytes(t: torch.Tensor) -> int:
            return t.numel() * t.element_size()

        return EmbeddingBytes(
            codes=nbytes(self.codes),
            scales=nbytes(self.scales),
            cache_rows=nbytes(self.cache_weight),
            cache_index=nbytes(self.cache_ids) + nbytes(self.cache_slots),
            counters=nbytes(self.counts),
            fp32_table=self.num_embeddings * self.dim * 4,
        )
