"""Image classification data: scikit-learn's 8x8 digits, planted synthetic images, CIFAR-10.

Every dataset returns ``x`` float32 (N, C, H, W), normalised with statistics of its train split
only (the test split is held out, so it must not leak into the preprocessing), and ``y`` int64
(N,) class indices.

- ``digits``: the 1797 8x8 handwritten digits bundled with scikit-learn (no download), pixel
  values 0..16 scaled to [0, 1], then standardised with one scalar mean and (population) std.
  The train/test split is stratified by class and fixed (``random_state=0``): it does not depend
  on the run's seed, so runs with different seeds are evaluated on the same held-out images.
- ``synthetic_images``: a planted problem for speed runs. Each class has a template image drawn
  from N(0, 1) per pixel; an example is its class's template plus N(0, noise^2) per pixel.
  With equal priors and isotropic noise the Bayes-optimal classifier is "nearest template",
  and its accuracy on the test split is reported as ``info["planted_accuracy"]``: the ceiling
  a model can approach.
- ``cifar10``: the python-pickle batches of https://www.cs.toronto.edu/~kriz/cifar.html read
  from a local directory; per-channel standardisation with the train split's statistics.
  The batches are pickles, and unpickling can execute arbitrary code: only point ``path`` at
  files you trust (the official archive).
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from numerics.data.base import DATASETS, ArraySplit, Dataset, Sampling

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_CLASSES = 10
CIFAR10_PIXELS = 3 * 32 * 32


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}; expected a positive integer")
    return value


def _split(x: torch.Tensor, y: torch.Tensor) -> ArraySplit:
    return ArraySplit({"x": x.contiguous(), "y": y.long().contiguous()})


@DATASETS.register("digits", task="image")
def digits(*, seed: int, test_fraction: float = 0.2) -> Dataset:
    """scikit-learn's 8x8 digits; ``seed`` is accepted but the data and the split are fixed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    del seed  # the split is fixed on purpose (see the module docstring)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction!r}; allowed 0 < test_fraction < 1")
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64) / 16.0  # (1797, 8, 8) in [0, 1]
    labels = np.asarray(bunch.target, dtype=np.int64)  # (1797,)
    try:
        train_idx, test_idx = train_test_split(
            np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=0
        )
    except ValueError as e:  # too few test examples to hold every class
        raise ValueError(f"test_fraction={test_fraction!r}: {e}") from e
    mean = float(images[train_idx].mean())
    std = float(images[train_idx].std())  # population std (ddof=0)
    x = torch.from_numpy((images - mean) / std).float().unsqueeze(1)  # (1797, 1, 8, 8)
    y = torch.from_numpy(labels)
    tr, te = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    info: dict[str, Any] = {
        "num_classes": 10,
        "in_channels": 1,
        "image_size": 8,
        "train_size": len(train_idx),
        "test_size": len(test_idx),
        "mean": mean,
        "std": std,
    }
    return Dataset(_split(x[tr], y[tr]), _split(x[te], y[te]), info, Sampling.SHUFFLE)


def _stream(seed: int, stream: int) -> torch.Generator:
    """An independent generator per (seed, stream): templates 0, train 1, test 2."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r}; expected an integer >= 0")
    state = np.random.SeedSequence([seed, stream]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)  # < 2**63


def synthetic_templates(
    seed: int, num_classes: int, channels: int, image_size: int
) -> torch.Tensor:
    """The class templates of ``synthetic_images`` for this seed: (K, C, S, S), N(0, 1)."""
    g = _stream(seed, 0)
    return torch.randn(num_classes, channels, image_size, image_size, generator=g)


@DATASETS.register("synthetic_images", task="image")
def synthetic_images(
    *,
    seed: int,
    train_size: int = 4096,
    test_size: int = 1024,
    channels: int = 3,
    image_size: int = 32,
    num_classes: int = 10,
    noise: float = 1.0,
) -> Dataset:
    """Class template + Gaussian noise; templates and examples drawn from ``seed``."""
    for name, v in (("train_size", train_size), ("test_size", test_size)):
        _positive(name, v)
    _positive("channels", channels)
    _positive("image_size", image_size)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes={num_classes!r}; expected an integer >= 2")
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise={noise!r}; expected a finite value >= 0")
    templates = synthetic_templates(seed, num_classes, channels, image_size)  # (K, C, S, S)
    # One stream per split, derived from the seed, so train_size does not change the test set.
    splits = []
    for stream, n in ((1, train_size), (2, test_size)):
        g = _stream(seed, stream)
        y = torch.randint(num_classes, (n,), generator=g)  # (N,)
        eps = torch.randn(n, channels, image_size, image_size, generator=g)
        splits.append((templates[y] + noise * eps, y))  # (N, C, S, S)
    (x_tr, y_tr), (x_te, y_te) = splits
    # Bayes-optimal rule (equal priors, isotropic noise): the nearest template.
    dist = torch.cdist(x_te.flatten(1), templates.flatten(1))  # (N_test, K)
    planted = (dist.argmin(dim=1) == y_te).double().mean().item()
    info: dict[str, Any] = {
        "num_classes": num_classes,
        "in_channels": channels,
        "image_size": image_size,
        "train_size": train_size,
        "test_size": test_size,
        "noise": float(noise),
        "planted_accuracy": planted,
    }
    return Dataset(_split(x_tr, y_tr), _split(x_te, y_te), info, Sampling.SHUFFLE)


def _missing(what: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"CIFAR-10 data not found: {what} does not exist. Download {CIFAR10_URL}, extract it "
        "and point data.path at the extracted cifar-10-batches-py directory"
    )


def load_cifar10_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file: (uint8 images (N, 3, 32, 32), int64 labels (N,)).

    The file is unpickled: that can run arbitrary code, so read only trusted files."""
    if not file.is_file():
        raise _missing(file)
    try:
        with file.open("rb") as f:
            batch = pickle.load(f, encoding="latin1")  # the official batches are Python 2 pickles
    except Exception as e:  # unpickling a damaged file can raise almost anything
        raise ValueError(f"{file}: not a readable CIFAR-10 batch pickle ({e!r})") from e
    if not isinstance(batch, dict):
        raise ValueError(f"{file}: expected a pickled dict, got {type(batch).__name__}")
    # Python 2 str keys load as str with latin1; a batch written by Python 3 has bytes keys.
    data = batch.get("data", batch.get(b"data"))
    labels = batch.get("labels", batch.get(b"labels"))
    if data is None or labels is None:
        raise ValueError(f"{file}: the dict lacks 'data' or 'labels' (keys: {list(batch)})")
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR10_PIXELS:
        raise ValueError(
            f"{file}: data is {data.dtype} {data.shape}; expected uint8 (N, {CIFAR10_PIXELS})"
        )
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{file}: labels are {labels.dtype} {labels.shape}; expected {data.shape[0]} integers"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= CIFAR10_CLASSES):
        raise ValueError(f"{file}: labels outside 0..{CIFAR10_CLASSES - 1}")
    # Each row is 1024 red, then 1024 green, then 1024 blue values, each plane row-major.
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and population std of uint8 images (N, 3, H, W) on the [0, 1]
    scale, from 256-bin histograms (no float copy of the whole split)."""
    levels = np.arange(256, dtype=np.float64) / 255.0
    mean, std = np.empty(3), np.empty(3)
    for c in range(3):
        counts = np.bincount(images[:, c].ravel(), minlength=256).astype(np.float64)
        n = counts.sum()
        mean[c] = (counts * levels).sum() / n
        std[c] = math.sqrt((counts * (levels - mean[c]) ** 2).sum() / n)
    return mean, std


def _normalise(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images).float().div_(255.0)  # (N, 3, 32, 32)
    x.sub_(torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
    return x.div_(torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))


@DATASETS.register("cifar10", task="image")
def cifar10(
    *,
    seed: int,
    path: str = "data/cifar-10-batches-py",
    train_batches: list[int] = [1, 2, 3, 4, 5],  # noqa: B006 (read, never mutated)
    limit: int | None = None,
) -> Dataset:
    """CIFAR-10 from the official python batches in ``path`` (``data_batch_1..5``,
    ``test_batch``); ``limit`` keeps the first ``limit`` train examples."""
    del seed  # the official split is fixed
    batches = list(train_batches)
    if not batches or any(isinstance(b, bool) or b not in range(1, 6) for b in batches):
        raise ValueError(f"train_batches={train_batches!r}; allowed a non-empty list from 1..5")
    if limit is not None:
        _positive("limit", limit)
    root = Path(path).expanduser()
    if not root.is_dir():
        raise _missing(root)
    parts = [load_cifar10_batch(root / f"data_batch_{b}") for b in batches]
    x_tr = np.concatenate([p[0] for p in parts])  # (N, 3, 32, 32) uint8
    y_tr = np.concatenate([p[1] for p in parts])
    if limit is not None:
        x_tr, y_tr = x_tr[:limit], y_tr[:limit]
    x_te, y_te = load_cifar10_batch(root / "test_batch")
    mean, std = _channel_stats(x_tr)
    if (std == 0).any():
        raise ValueError(f"{root}: a colour channel is constant over the train split (std 0)")
    info: dict[str, Any] = {
        "num_classes": CIFAR10_CLASSES,
        "in_channels": 3,
        "image_size": 32,
        "train_size": len(y_tr),
        "test_size": len(y_te),
        "mean": mean.tolist(),
        "std": std.tolist(),
        "path": str(root),
    }
    return Dataset(
        _split(_normalise(x_tr, mean, std), torch.from_numpy(y_tr)),
        _split(_normalise(x_te, mean, std), torch.from_numpy(y_te)),
        info,
        Sampling.SHUFFLE,
    )
