"""Byte corpora against independent computations.

The stdlib selection is re-derived here with ``os.walk`` (not the module's ``rglob``), its bytes
joined and hashed with ``hashlib``; entropies come from ``scipy.stats.entropy`` or a planted
histogram; the tinyshakespeare split is nanoGPT's published one (1,003,854 / 111,540 bytes).
"""

import hashlib
import json
import math
import os
import re
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import entropy

from numerics.data.base import DATASETS, Sampling, WindowSplit
from numerics.data.text import stdlib, stdlib_sources, textfile

STDLIB = Path(sysconfig.get_paths()["stdlib"])
EXCLUDED = {"test", "tests", "idle_test", "site-packages", "__pycache__"}


def _walk_stdlib() -> list[str]:
    """The selection, independently: os.walk, pruning excluded folders as it goes."""
    out = []
    for dirpath, dirnames, filenames in os.walk(STDLIB):
        dirnames[:] = [d for d in dirnames if d not in EXCLUDED]
        rel = Path(dirpath).relative_to(STDLIB)
        out += [(rel / f).as_posix() for f in filenames if f.endswith(".py")]
    return sorted(out)


def _split(files: list[str], every: int) -> tuple[bytes, bytes]:
    test = [(STDLIB / f).read_bytes() for i, f in enumerate(files) if i % every == every - 1]
    train = [(STDLIB / f).read_bytes() for i, f in enumerate(files) if i % every != every - 1]
    return b"\n".join(train), b"\n".join(test)


def _bytes(t: torch.Tensor) -> bytes:
    return t.numpy().tobytes()


def test_registered_as_language_datasets():
    for name in ("stdlib", "textfile"):
        assert DATASETS.meta(name) == {"task": "language"}
    assert DATASETS.get("stdlib") is stdlib and DATASETS.get("textfile") is textfile


def test_stdlib_selection_is_sorted_deterministic_and_has_no_tests():
    files = stdlib_sources()
    assert files == _walk_stdlib() and files == sorted(files)
    assert len(files) > 300  # a real standard library
    for f in files:
        assert not EXCLUDED & set(f.split("/")), f
    assert "os.py" in files and "json/decoder.py" in files
    assert stdlib_sources() == files


def test_stdlib_full_corpus_counts():
    files = _walk_stdlib()
    ds = stdlib(seed=0)
    n_test = len(files) // 20
    sizes = [(STDLIB / f).stat().st_size for f in files]
    assert ds.info["files"] == len(files) and ds.info["test_files"] == n_test
    test_size = sum(s for i, s in enumerate(sizes) if i % 20 == 19)
    n_train = len(files) - n_test
    assert ds.info["test_bytes"] == test_size + n_test - 1  # one b"\n" between two files
    assert ds.info["train_bytes"] == sum(sizes) - test_size + n_train - 1
    assert ds.info["train_bytes"] > 5_000_000
    assert 3.0 < ds.info["unigram_bits_per_byte"] < 6.0


def test_stdlib_slice_bytes_hash_and_entropy():
    cap = 150_000
    ds = stdlib(seed=3, block_size=64, val_every=3, max_bytes=cap)
    all_files = _walk_stdlib()
    sizes = [(STDLIB / f).stat().st_size for f in all_files]
    n = 0  # the longest prefix whose files, with one b"\n" between two, fit the cap
    while n < len(all_files) and sum(sizes[: n + 1]) + n <= cap:
        n += 1
    assert sum(sizes[:n]) + n - 1 <= cap < sum(sizes[: n + 1]) + n
    train, test = _split(all_files[:n], 3)
    assert _bytes(ds.train.data) == train and _bytes(ds.test.data) == test
    assert ds.info["corpus_sha256"] == hashlib.sha256(train + test).hexdigest()
    assert (ds.info["train_bytes"], ds.info["test_bytes"]) == (len(train), len(test))
    assert ds.info["files"] == n and ds.info["block_size"] == 64 and ds.info["vocab_size"] == 256
    counts = np.bincount(np.frombuffer(train, dtype=np.uint8), minlength=256)
    assert ds.info["unigram_bits_per_byte"] == pytest.approx(entropy(counts, base=2), rel=1e-12)
    assert ds.sampling is Sampling.RANDOM
    assert isinstance(ds.train, WindowSplit) and ds.train.block_size == 64
    json.dumps(ds.info)  # summaries serialise it


def test_stdlib_train_and_test_share_no_file():
    ds = stdlib(seed=0, val_every=4, max_bytes=400_000)
    train, test = _bytes(ds.train.data), _bytes(ds.test.data)
    files = stdlib_sources(max_bytes=400_000)
    held = [(STDLIB / f).read_bytes() for i, f in enumerate(files) if i % 4 == 3]
    assert held and test == b"\n".join(held)
    for content in held:
        if len(content) > 2000:  # large enough to be unique to its file
            assert content not in train
    assert stdlib(seed=1, val_every=4, max_bytes=400_000).info == ds.info  # seed-independent


def test_stdlib_bad_options():
    with pytest.raises(ValueError, match="val_every=1"):
        stdlib(seed=0, val_every=1, max_bytes=100_000)
    with pytest.raises(ValueError, match="max_bytes=0"):
        stdlib(seed=0, max_bytes=0)
    first = (STDLIB / _walk_stdlib()[0]).stat().st_size
    with pytest.raises(ValueError, match=rf"max_bytes={first - 1}: .* \({first} bytes\)"):
        stdlib(seed=0, max_bytes=first - 1)
    with pytest.raises(ValueError, match=r"test split has 0 bytes"):
        stdlib(seed=0, max_bytes=20_000)  # a few files: none is the 20th
    with pytest.raises(ValueError, match="block_size=0"):
        stdlib(seed=0, block_size=0, max_bytes=100_000)


def test_textfile_tinyshakespeare_split_and_windows(shared_data: Path):
    path = shared_data / "tinyshakespeare.txt"
    raw = path.read_bytes()
    ds = textfile(seed=0, path=str(path), block_size=16)
    assert ds.info["train_bytes"] + ds.info["test_bytes"] == os.path.getsize(path)
    # nanoGPT's shakespeare_char/prepare.py reports train 1,003,854 and val 111,540 tokens
    assert (ds.info["train_bytes"], ds.info["test_bytes"]) == (1_003_854, 111_540)
    assert ds.info["corpus_sha256"] == hashlib.sha256(raw).hexdigest()
    split = ds.info["train_bytes"]
    for part, base in ((ds.train, 0), (ds.test, split)):
        idx = torch.tensor([0, 7, len(part) - 1])
        b = part.batch(idx)
        for row, i in enumerate(idx.tolist()):
            assert _bytes(b["x"][row].to(torch.uint8)) == raw[base + i : base + i + 16]
            assert _bytes(b["y"][row].to(torch.uint8)) == raw[base + i + 1 : base + i + 17]
    assert len(ds.test) == 111_540 - 16
    counts = np.bincount(np.frombuffer(raw[:split], dtype=np.uint8), minlength=256)
    assert ds.info["unigram_bits_per_byte"] == pytest.approx(entropy(counts, base=2), rel=1e-12)


def test_textfile_planted_entropy_and_fraction(tmp_path: Path):
    # train: 600 bytes, a:b:c:d = 1/2, 1/4, 1/8, 1/8 -> H = 1.75 bits exactly
    train = b"a" * 300 + b"b" * 150 + b"c" * 75 + b"d" * 75
    f = tmp_path / "planted.txt"
    f.write_bytes(train + b"z" * 400)
    ds = textfile(seed=0, path=str(f), block_size=8, val_fraction=0.4)
    assert (ds.info["train_bytes"], ds.info["test_bytes"]) == (600, 400)
    assert ds.info["unigram_bits_per_byte"] == pytest.approx(1.75, abs=1e-12)
    assert _bytes(ds.test.data) == b"z" * 400
    assert ds.info["path"] == str(f)


def test_textfile_bad_options(tmp_path: Path):
    with pytest.raises(ValueError, match=r"data\.path: required for textfile"):
        textfile(seed=0)
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        textfile(seed=0, path=str(missing))
    f = tmp_path / "t.txt"
    f.write_bytes(b"x" * 1000)
    for bad in (0.0, 1.0, -0.1, math.nan):
        with pytest.raises(ValueError, match="val_fraction"):
            textfile(seed=0, path=str(f), val_fraction=bad)
    with pytest.raises(ValueError, match="test split has 50 bytes"):
        textfile(seed=0, path=str(f), val_fraction=0.05, block_size=64)
