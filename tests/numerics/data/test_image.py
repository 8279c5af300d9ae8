"""Image datasets (``numerics.data.image``).

Oracles: scikit-learn's documented digits (1797 images, 10 classes) and its own stratified
``train_test_split``; CIFAR-10 batch files written here in the official format from known
bytes, with the expected tensors rebuilt from those bytes; the planted templates of the
synthetic images, whose two-class Bayes accuracy has the closed form Phi(d / (2 sigma)).
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from numerics.data.base import DATASETS, ArraySplit, Sampling
from numerics.data.image import cifar10, digits, synthetic_images, synthetic_templates


def test_registered_for_image_task() -> None:
    assert {"digits", "synthetic_images", "cifar10"} <= set(DATASETS.names(task="image"))


# digits ----------------------------------------------------------------------------------


def test_digits_sizes_split_and_normalisation() -> None:
    ds = digits(seed=0)
    assert isinstance(ds.train, ArraySplit) and isinstance(ds.test, ArraySplit)
    assert ds.sampling is Sampling.SHUFFLE
    xtr, ytr = ds.train.tensors["x"], ds.train.tensors["y"]
    xte, yte = ds.test.tensors["x"], ds.test.tensors["y"]
    assert len(ytr) + len(yte) == 1797  # scikit-learn's documented size
    assert len(yte) == math.ceil(0.2 * 1797) and len(ytr) == 1797 - len(yte)
    assert xtr.dtype == torch.float32 and xtr.shape == (len(ytr), 1, 8, 8)
    assert ytr.dtype == torch.int64
    assert ds.info["num_classes"] == 10 and ds.info["in_channels"] == 1
    assert ds.info["image_size"] == 8
    assert (ds.info["train_size"], ds.info["test_size"]) == (len(ytr), len(yte))

    # the oracle: sklearn's stratified split with random_state=0, scaled and standardised here
    bunch = load_digits()
    tr, te = train_test_split(np.arange(1797), test_size=0.2, stratify=bunch.target, random_state=0)
    pixels = bunch.images / 16.0
    mean, std = pixels[tr].mean(), pixels[tr].std()
    expected_tr = torch.tensor((pixels[tr] - mean) / std, dtype=torch.float32).unsqueeze(1)
    expected_te = torch.tensor((pixels[te] - mean) / std, dtype=torch.float32).unsqueeze(1)
    torch.testing.assert_close(xtr, expected_tr, rtol=0, atol=1e-6)
    torch.testing.assert_close(xte, expected_te, rtol=0, atol=1e-6)
    assert torch.equal(ytr, torch.tensor(bunch.target[tr]))
    assert torch.equal(yte, torch.tensor(bunch.target[te]))

    # train split standardised; test split only roughly (held-out statistics)
    assert abs(xtr.double().mean().item()) < 1e-6
    assert abs(xtr.double().std(unbiased=False).item() - 1) < 1e-6
    assert abs(xte.double().mean().item()) > 1e-6

    # stratified: every class keeps its share (within one image) in the test split
    per_class = np.bincount(bunch.target, minlength=10)
    test_counts = np.bincount(yte.numpy(), minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * per_class) <= 1)


def test_digits_do_not_depend_on_seed() -> None:
    a, b = digits(seed=0), digits(seed=12345)
    for split in ("train", "test"):
        for key in ("x", "y"):
            assert torch.equal(getattr(a, split).tensors[key], getattr(b, split).tensors[key])


def test_digits_test_fraction() -> None:
    ds = digits(seed=0, test_fraction=0.5)
    assert len(ds.test) == math.ceil(0.5 * 1797)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="test_fraction"):
            digits(seed=0, test_fraction=bad)


# synthetic_images ------------------------------------------------------------------------


def test_synthetic_deterministic_per_seed() -> None:
    kw = {"train_size": 64, "test_size": 32, "image_size": 8}
    a, b, c = (synthetic_images(seed=s, **kw) for s in (3, 3, 4))
    for key in ("x", "y"):
        assert torch.equal(a.train.tensors[key], b.train.tensors[key])
        assert torch.equal(a.test.tensors[key], b.test.tensors[key])
    assert not torch.equal(a.train.tensors["x"], c.train.tensors["x"])
    assert not torch.equal(a.test.tensors["x"], c.test.tensors["x"])
    # the test split does not move when the train split grows
    d = synthetic_images(seed=3, train_size=128, test_size=32, image_size=8)
    assert torch.equal(a.test.tensors["x"], d.test.tensors["x"])


def test_synthetic_defaults_learnable_by_class_means() -> None:
    ds = synthetic_images(seed=0)
    xtr, ytr = ds.train.tensors["x"], ds.train.tensors["y"]
    assert xtr.shape == (4096, 3, 32, 32) and xtr.dtype == torch.float32
    assert ds.test.tensors["x"].shape == (1024, 3, 32, 32)
    assert ds.info["num_classes"] == 10 and ds.info["in_channels"] == 3
    assert set(ytr.tolist()) == set(range(10))
    # a nearest-class-mean classifier fitted on train finds the planted structure
    means = torch.stack([xtr[ytr == k].mean(0) for k in range(10)]).flatten(1)  # (10, D)
    xte, yte = ds.test.tensors["x"].flatten(1), ds.test.tensors["y"]
    pred = torch.cdist(xte, means).argmin(1)
    assert (pred == yte).float().mean().item() >= 0.99


def test_synthetic_planted_templates_and_noise() -> None:
    noise = 0.5
    ds = synthetic_images(seed=7, train_size=2000, image_size=8, channels=2, noise=noise)
    t = synthetic_templates(7, num_classes=10, channels=2, image_size=8)  # (10, 2, 8, 8)
    resid = ds.train.tensors["x"] - t[ds.train.tensors["y"]]
    assert abs(resid.mean().item()) < 0.01
    assert abs(resid.std().item() - noise) < 0.01


def test_synthetic_two_class_bayes_accuracy_closed_form() -> None:
    """Two templates t0, t1 and noise sigma: the nearest template is right with probability
    Phi(|t1 - t0| / (2 sigma)) (the noise along t1 - t0 is N(0, sigma^2))."""
    seed, sigma = 5, 2.5
    kw = {"channels": 1, "image_size": 4, "num_classes": 2, "noise": sigma}
    ds = synthetic_images(seed=seed, train_size=8, test_size=20000, **kw)
    t = synthetic_templates(seed, 2, 1, 4).flatten(1)  # (2, 16)
    x, y = ds.test.tensors["x"].flatten(1).double(), ds.test.tensors["y"]
    d0 = ((x - t[0].double()) ** 2).sum(1)
    d1 = ((x - t[1].double()) ** 2).sum(1)
    ours = ((d1 < d0).long() == y).double().mean().item()
    assert ds.info["planted_accuracy"] == pytest.approx(ours, abs=1e-12)
    dist = (t[1] - t[0]).norm().item()
    phi = 0.5 * (1 + math.erf(dist / (2 * sigma) / math.sqrt(2)))
    assert 0.6 < phi < 0.95  # a problem where the ceiling is informative
    assert ours == pytest.approx(phi, abs=0.015)  # ~5 standard errors at n = 20000


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"train_size": 0}, "train_size=0"),
        ({"num_classes": 1}, "num_classes=1"),
        ({"noise": -1.0}, "noise=-1.0"),
        ({"image_size": 0}, "image_size=0"),
    ],
)
def test_synthetic_bad_options(kw: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        synthetic_images(seed=0, **kw)


# cifar10 ---------------------------------------------------------------------------------


def known_bytes(n: int, salt: int) -> np.ndarray:
    """(n, 3072) uint8 with every value a known function of (example, position)."""
    i = np.arange(n).reshape(-1, 1)
    j = np.arange(3072).reshape(1, -1)
    return ((i * 37 + j * 11 + salt * 101 + (j // 1024) * 50) % 256).astype(np.uint8)


def write_batch(path: Path, data: np.ndarray, labels: list[int], *, bytes_keys: bool) -> None:
    batch: dict[Any, Any] = {"data": data, "labels": labels, "batch_label": "test batch"}
    if bytes_keys:  # what Python 3 gives for the official Python 2 files with encoding="bytes"
        batch = {k.encode(): v for k, v in batch.items()}
    with path.open("wb") as f:
        pickle.dump(batch, f, protocol=2)


@pytest.fixture
def cifar_dir(tmp_path: Path) -> Path:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    write_batch(root / "data_batch_1", known_bytes(4, 1), [3, 0, 9, 3], bytes_keys=True)
    write_batch(root / "data_batch_2", known_bytes(2, 2), [1, 2], bytes_keys=False)
    write_batch(root / "test_batch", known_bytes(3, 3), [5, 6, 7], bytes_keys=True)
    return root


def expected_images(raw: np.ndarray, train_raw: np.ndarray) -> torch.Tensor:
    """Channel-first reshape of the bytes, then per-channel (x/255 - mean) / std with the
    train split's statistics (population std)."""
    tr = torch.tensor(train_raw, dtype=torch.float64).reshape(-1, 3, 32, 32) / 255
    mean = tr.mean(dim=(0, 2, 3), keepdim=True)
    std = tr.std(dim=(0, 2, 3), unbiased=False, keepdim=True)
    x = torch.tensor(raw, dtype=torch.float64).reshape(-1, 3, 32, 32) / 255
    return ((x - mean) / std).float()


def test_cifar10_loads_official_format(cifar_dir: Path) -> None:
    ds = cifar10(seed=0, path=str(cifar_dir), train_batches=[1])
    train_raw, test_raw = known_bytes(4, 1), known_bytes(3, 3)
    x = ds.train.tensors["x"]
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    assert ds.train.tensors["y"].tolist() == [3, 0, 9, 3]
    assert ds.test.tensors["y"].tolist() == [5, 6, 7]
    assert ds.test.tensors["y"].dtype == torch.int64
    torch.testing.assert_close(x, expected_images(train_raw, train_raw), rtol=0, atol=1e-5)
    torch.testing.assert_close(
        ds.test.tensors["x"], expected_images(test_raw, train_raw), rtol=0, atol=1e-5
    )
    # one known pixel: example 2, green (c=1), row 5, column 7 is byte 1024 + 5*32 + 7
    mean, std = ds.info["mean"], ds.info["std"]
    byte = int(train_raw[2, 1024 + 5 * 32 + 7])
    assert x[2, 1, 5, 7].item() * std[1] + mean[1] == pytest.approx(byte / 255, abs=1e-5)
    assert ds.info["num_classes"] == 10 and ds.info["in_channels"] == 3
    assert ds.info["image_size"] == 32
    assert (ds.info["train_size"], ds.info["test_size"]) == (4, 3)
    assert ds.sampling is Sampling.SHUFFLE


def test_cifar10_batches_concatenate_and_limit(cifar_dir: Path) -> None:
    ds = cifar10(seed=0, path=str(cifar_dir), train_batches=[2, 1])  # str keys in batch 2
    assert ds.train.tensors["y"].tolist() == [1, 2, 3, 0, 9, 3]
    raw = np.concatenate([known_bytes(2, 2), known_bytes(4, 1)])
    torch.testing.assert_close(ds.train.tensors["x"], expected_images(raw, raw), atol=1e-5, rtol=0)
    limited = cifar10(seed=0, path=str(cifar_dir), train_batches=[1, 2], limit=3)
    assert limited.train.tensors["y"].tolist() == [3, 0, 9]
    raw3 = known_bytes(4, 1)[:3]
    torch.testing.assert_close(
        limited.test.tensors["x"], expected_images(known_bytes(3, 3), raw3), atol=1e-5, rtol=0
    )


def test_cifar10_missing_directory_and_file(tmp_path: Path, cifar_dir: Path) -> None:
    missing = tmp_path / "nowhere" / "cifar-10-batches-py"
    with pytest.raises(FileNotFoundError) as err:
        cifar10(seed=0, path=str(missing))
    assert str(missing) in str(err.value)
    assert "cifar-10-python.tar.gz" in str(err.value)
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        cifar10(seed=0, path=str(cifar_dir), train_batches=[1, 3])


def test_cifar10_malformed_files(cifar_dir: Path) -> None:
    (cifar_dir / "data_batch_1").write_bytes(b"this is not a pickle")
    with pytest.raises(ValueError, match="data_batch_1"):
        cifar10(seed=0, path=str(cifar_dir), train_batches=[1])
    write_batch(cifar_dir / "data_batch_2", np.zeros((2, 100), np.uint8), [0, 1], bytes_keys=True)
    with pytest.raises(ValueError, match=r"data_batch_2.*3072"):
        cifar10(seed=0, path=str(cifar_dir), train_batches=[2])


def test_cifar10_bad_options(cifar_dir: Path) -> None:
    with pytest.raises(ValueError, match="train_batches"):
        cifar10(seed=0, path=str(cifar_dir), train_batches=[6])
    with pytest.raises(ValueError, match="train_batches"):
        cifar10(seed=0, path=str(cifar_dir), train_batches=[])
    with pytest.raises(ValueError, match="limit=0"):
        cifar10(seed=0, path=str(cifar_dir), limit=0)
