"""Criteo click logs from local files: the Kaggle / Terabyte TSV and DeepCTR's CSV.

Criteo's Display Advertising Challenge (Kaggle ``train.txt``) and the Terabyte logs store one
impression per line: the label, 13 integer count features (I1..I13) and 26 categorical
features (C1..C26) given as 32-bit hexadecimal hashes, tab-separated, any of the 39 features
possibly empty. DeepCTR's examples ship a CSV of the same columns with a header row (``label,
I1..I13, C1..C26``; counts may be written ``260.0``). Both go through one parser,
``parse_criteo_rows``, and are preprocessed as DLRM does for Kaggle:

- dense: missing -> 0, negative -> 0, then ``log(1 + x)`` (float32);
- sparse: a hex id ``h`` -> ``int(h, 16) % (hash_size - 1) + 1`` in ``[1, hash_size)``, a
  missing id -> 0, so every table has ``hash_size`` rows (DLRM hashes with ``% hash_size`` and
  has no reserved missing row; we keep 0 for it so missing never collides with a real id);
- label: 0 or 1.

Split by time, as DLRM splits Kaggle: the first rows train, the last ``test_fraction`` test.
A malformed line (wrong field count, a non-integer count, a non-hex id, a label other than 0/1)
raises ``ValueError`` naming the file and line. Parsing is plain Python (~10 us a row): use
``limit`` for a quick look at a large file.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from numerics.data.base import DATASETS, ArraySplit, Dataset, Sampling

NUM_DENSE = 13
NUM_SPARSE = 26
COLUMNS = ["label"] + [f"I{j}" for j in range(1, NUM_DENSE + 1)]
COLUMNS += [f"C{j}" for j in range(1, NUM_SPARSE + 1)]
_HEX = re.compile(r"[0-9a-fA-F]+")
_CHUNK = 1 << 16  # rows converted to numpy at a time


def _count(text: str) -> float:
    """An integer count written ``17`` or ``17.0``; raises ValueError otherwise."""
    try:
        return float(int(text))
    except ValueError:
        v = float(text)  # raises for non-numbers
        if not v.is_integer():
            raise ValueError(text) from None
        return v


def parse_criteo_rows(
    rows: Iterable[tuple[int, Sequence[str]]], *, source: str, hash_size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Preprocess ``(line_number, 40 fields in the order label, I1..I13, C1..C26)`` rows into
    ``dense`` float32 (N, 13), ``sparse`` int64 (N, 26) and ``label`` float32 (N,)."""
    mod = hash_size - 1
    dense_parts: list[np.ndarray] = []
    sparse_parts: list[np.ndarray] = []
    label_parts: list[np.ndarray] = []
    dense_rows: list[list[float]] = []
    sparse_rows: list[list[int]] = []
    labels: list[float] = []

    def flush() -> None:
        if labels:
            dense_parts.append(np.array(dense_rows, dtype=np.float64).reshape(-1, NUM_DENSE))
            sparse_parts.append(np.array(sparse_rows, dtype=np.int64).reshape(-1, NUM_SPARSE))
            label_parts.append(np.array(labels, dtype=np.float32))
            dense_rows.clear()
            sparse_rows.clear()
            labels.clear()

    for line, fields in rows:
        where = f"{source}, line {line}"
        if len(fields) != len(COLUMNS):
            raise ValueError(
                f"{where}: {len(fields)} fields; expected {len(COLUMNS)} "
                f"(label, {NUM_DENSE} integer and {NUM_SPARSE} categorical features)"
            )
        if fields[0] not in ("0", "1", "0.0", "1.0"):
            raise ValueError(f"{where}: label {fields[0]!r}; expected 0 or 1")
        labels.append(float(fields[0]))
        dense = []
        for j in range(1, 1 + NUM_DENSE):
            text = fields[j]
            try:
                dense.append(max(_count(text), 0.0) if text else 0.0)
            except ValueError:
                raise ValueError(
                    f"{where}: {COLUMNS[j]} = {text!r} is not an integer (or empty)"
                ) from None
        dense_rows.append(dense)
        sparse = []
        for j in range(1 + NUM_DENSE, len(COLUMNS)):
            text = fields[j]
            if not text:
                sparse.append(0)
            elif _HEX.fullmatch(text):
                sparse.append(int(text, 16) % mod + 1)
            else:
                raise ValueError(f"{where}: {COLUMNS[j]} = {text!r} is not a hex id (or empty)")
        sparse_rows.append(sparse)
        if len(labels) == _CHUNK:
            flush()
    flush()
    if not label_parts:
        raise ValueError(f"{source}: no data rows")
    dense_np = np.log1p(np.concatenate(dense_parts)).astype(np.float32)
    return (
        torch.from_numpy(dense_np),
        torch.from_numpy(np.concatenate(sparse_parts)),
        torch.from_numpy(np.concatenate(label_parts)),
    )


def _tsv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    with path.open(encoding="utf-8", newline="") as f:
        for line, text in enumerate(f, start=1):
            text = text.rstrip("\r\n")
            if text:  # a blank line (say, a trailing one) is no row
                yield line, text.split("\t")


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file; expected a header row {','.join(COLUMNS)}")
        names = [h.strip() for h in header]
        missing = [c for c in COLUMNS if c not in names]
        if missing:
            raise ValueError(
                f"{path}: no column {missing[0]!r} in the header (missing: {', '.join(missing)});"
                f" need label, I1..I{NUM_DENSE}, C1..C{NUM_SPARSE}"
            )
        order = [names.index(c) for c in COLUMNS]
        for fields in reader:
            if not fields:
                continue
            if len(fields) != len(names):
                raise ValueError(
                    f"{path}, line {reader.line_num}: {len(fields)} fields; the header has "
                    f"{len(names)}"
                )
            yield reader.line_num, [fields[k].strip() for k in order]


def _limited(
    rows: Iterator[tuple[int, list[str]]], limit: int | None
) -> Iterator[tuple[int, list[str]]]:
    for k, row in enumerate(rows):
        if limit is not None and k >= limit:
            return
        yield row


def load_criteo(
    path: str, *, layout: str, test_fraction: float, hash_size: int, limit: int | None
) -> Dataset:
    """Read a Criteo file (``layout`` "tsv" or "csv"), preprocess it and split it by time."""
    if not path:
        raise ValueError("data.path: required (a local Criteo file)")
    if not 0 < test_fraction < 1:
        raise ValueError(f"data.test_fraction: {test_fraction}; need a float in (0, 1)")
    if hash_size < 2:
        raise ValueError(f"data.hash_size: {hash_size}; need an int >= 2 (row 0 is 'missing')")
    if limit is not None and limit < 2:
        raise ValueError(f"data.limit: {limit}; need an int >= 2 or None (all rows)")
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"data.path: no such file: {file}")
    rows = _tsv_rows(file) if layout == "tsv" else _csv_rows(file)
    dense, sparse, label = parse_criteo_rows(
        _limited(rows, limit), source=str(file), hash_size=hash_size
    )
    n = len(label)
    n_test = math.floor(n * test_fraction + 0.5)
    if not 0 < n_test < n:
        raise ValueError(
            f"data.test_fraction: {test_fraction} of {n} rows leaves an empty split; "
            "use more rows or another fraction"
        )
    cut = n - n_test

    def split(s: slice) -> ArraySplit:
        return ArraySplit({"dense": dense[s], "sparse": sparse[s], "label": label[s]})

    info = {
        "num_dense": NUM_DENSE,
        "cardinalities": [hash_size] * NUM_SPARSE,
        "positive_rate": float(label[:cut].double().mean()),
        "train_size": cut,
        "test_size": n_test,
        "path": str(file),
    }
    return Dataset(split(slice(0, cut)), split(slice(cut, n)), info, Sampling.SHUFFLE)


@DATASETS.register("criteo_tsv", task="recsys")
def criteo_tsv(
    *,
    seed: int,
    path: str = "",
    test_fraction: float = 0.1,
    hash_size: int = 100_000,
    limit: int | None = None,
) -> Dataset:
    """Criteo Kaggle / Terabyte TSV (label, I1..I13, C1..C26; tab-separated, no header).
    ``seed`` is unused: the split is by row order."""
    del seed
    return load_criteo(
        path, layout="tsv", test_fraction=test_fraction, hash_size=hash_size, limit=limit
    )


@DATASETS.register("criteo_csv", task="recsys")
def criteo_csv(
    *,
    seed: int,
    path: str = "",
    test_fraction: float = 0.1,
    hash_size: int = 100_000,
    limit: int | None = None,
) -> Dataset:
    """Criteo as DeepCTR's CSV: a header naming label, I1..I13, C1..C26 (any order, more
    columns allowed). ``seed`` is unused: the split is by row order."""
    del seed
    return load_criteo(
        path, layout="csv", test_fraction=test_fraction, hash_size=hash_size, limit=limit
    )
