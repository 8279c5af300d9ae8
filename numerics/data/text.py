"""Byte-level text corpora for the language task: the Python standard library and any text file.

A language dataset is a byte stream cut into a train and a test stream (``WindowSplit``): an
example is a window ``x = data[i:i+T]`` and its next bytes ``y = data[i+1:i+T+1]``, drawn at a
uniformly random offset (``Sampling.RANDOM``). The vocabulary is the 256 byte values, so no
tokenizer is involved and a model's loss is directly in nats per byte.

``stdlib`` needs no download and is real text nobody here wrote: the ``.py`` sources of the
running interpreter's standard library (about 12 MB on CPython 3.11), without test suites and
installed packages. Files are selected and sorted by relative path, so a given Python build gives
the same corpus every time; the split is by file (every ``val_every``-th file is held out), so a
test window never overlaps a training file. ``textfile`` reads one file and holds out its tail,
as nanoGPT's ``shakespeare_char`` does.

Each dataset's ``info`` records what identifies and calibrates it: ``corpus_sha256`` (SHA-256 of
the train bytes followed by the test bytes) and ``unigram_bits_per_byte``, the Shannon entropy
of the training bytes' histogram -- the loss (times ln 2) of the best model that ignores context;
a language model must get below it to have learned anything beyond byte frequencies.
"""

from __future__ import annotations

import hashlib
import math
import sys
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np
import torch

from numerics.data.base import DATASETS, Dataset, Sampling, WindowSplit

#: A folder with any of these names (anywhere in the relative path) is left out of ``stdlib``.
EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})
SEPARATOR = b"\n"  # between two files of ``stdlib``


def unigram_bits_per_byte(data: bytes) -> float:
    """Shannon entropy, in bits, of the byte histogram of ``data``."""
    counts = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256)
    p = counts[counts > 0] / len(data)
    return float(-(p * np.log2(p)).sum())


def _language_dataset(train: bytes, test: bytes, block_size: int, **facts: Any) -> Dataset:
    """Both streams as ``WindowSplit``s and the language ``info`` every corpus shares."""
    for name, data in (("train", train), ("test", test)):
        if len(data) <= block_size:
            raise ValueError(
                f"data: the {name} split has {len(data)} bytes; it needs more than "
                f"block_size={block_size} (a larger corpus, a smaller block_size, or another split)"
            )
    info: dict[str, Any] = {
        "vocab_size": 256,
        "block_size": block_size,
        "corpus_sha256": hashlib.sha256(train + test).hexdigest(),
        "unigram_bits_per_byte": unigram_bits_per_byte(train),
        "train_bytes": len(train),
        "test_bytes": len(test),
        **facts,
    }

    def stream(b: bytes) -> torch.Tensor:
        return torch.frombuffer(bytearray(b), dtype=torch.uint8)  # (N,), owns a copy

    return Dataset(
        train=WindowSplit(stream(train), block_size),
        test=WindowSplit(stream(test), block_size),
        info=info,
        sampling=Sampling.RANDOM,
    )


def _check_block_size(block_size: int) -> None:
    if block_size < 1:
        raise ValueError(f"data.block_size={block_size}; must be a positive integer")


def stdlib_root() -> Path:
    """The running interpreter's standard-library folder."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_sources(root: Path | None = None, max_bytes: int | None = None) -> list[str]:
    """The ``stdlib`` corpus's files: relative POSIX paths of the ``.py`` files under ``root``
    (default ``stdlib_root()``) outside ``EXCLUDED_DIRS``, sorted. With ``max_bytes``, the
    longest prefix of that list whose files, joined by ``SEPARATOR``, fit in ``max_bytes``."""
    root = stdlib_root() if root is None else root
    rels = sorted(
        rel
        for rel in (p.relative_to(root).as_posix() for p in root.rglob("*.py") if p.is_file())
        if not EXCLUDED_DIRS.intersection(rel.split("/")[:-1])
    )
    if max_bytes is None:
        return rels
    out: list[str] = []
    total = -len(SEPARATOR)
    for rel in rels:
        total += len(SEPARATOR) + (root / rel).stat().st_size
        if total > max_bytes:
            break
        out.append(rel)
    return out


@DATASETS.register("stdlib", task="language")
def stdlib(
    *, seed: int, block_size: int = 128, val_every: int = 20, max_bytes: int | None = None
) -> Dataset:
    """The Python standard library's ``.py`` sources as one byte stream (see the module
    docstring). File ``i`` (0-based, sorted order) is a test file when ``(i + 1) % val_every
    == 0``; each split is its files joined by ``SEPARATOR``. ``max_bytes`` keeps the first files
    that fit (whole files). ``seed`` is accepted for the common signature; nothing is random."""
    del seed
    _check_block_size(block_size)
    if val_every < 2:
        raise ValueError(f"data.val_every={val_every}; must be >= 2 (every n-th file is held out)")
    if max_bytes is not None and max_bytes < 1:
        raise ValueError(f"data.max_bytes={max_bytes}; must be a positive integer or null")
    root = stdlib_root()
    rels = stdlib_sources(root, max_bytes)
    if not rels:
        every = stdlib_sources(root)
        if not every:
            raise FileNotFoundError(f"data: no .py files under the standard library {root}")
        first = every[0]
        raise ValueError(
            f"data.max_bytes={max_bytes}: not even the first file {first} "
            f"({(root / first).stat().st_size} bytes) fits"
        )
    train_files: list[bytes] = []
    test_files: list[bytes] = []
    for i, rel in enumerate(rels):
        split = test_files if (i + 1) % val_every == 0 else train_files
        split.append((root / rel).read_bytes())
    return _language_dataset(
        SEPARATOR.join(train_files),
        SEPARATOR.join(test_files),
        block_size,
        source="python-stdlib",
        stdlib=str(root),
        python=sys.version,
        files=len(rels),
        train_files=len(train_files),
        test_files=len(test_files),
    )


@DATASETS.register("textfile", task="language")
def textfile(
    *, seed: int, path: str = "", block_size: int = 128, val_fraction: float = 0.1
) -> Dataset:
    """One file's bytes: the first ``int(n * (1 - val_fraction))`` bytes train, the rest test
    (nanoGPT's split). ``seed`` is accepted for the common signature; nothing is random."""
    del seed
    if not path:
        raise ValueError("data.path: required for textfile (a path to a plain-text file)")
    _check_block_size(block_size)
    if not (math.isfinite(val_fraction) and 0.0 < val_fraction < 1.0):
        raise ValueError(f"data.val_fraction={val_fraction}; allowed: 0 < val_fraction < 1")
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"data.path: no such file: {file}")
    data = file.read_bytes()
    n_train = int(len(data) * (1.0 - val_fraction))
    return _language_dataset(
        data[:n_train], data[n_train:], block_size, source="textfile", path=str(file)
    )
