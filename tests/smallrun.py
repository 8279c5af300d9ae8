"""Tiny runs of real recipes: overrides that shrink a run to two steps on small data, and small
files in the formats the file-reading datasets take (CIFAR-10 pickles, Criteo TSV, text)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np


def _cifar(folder: Path) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                 "test_batch"):  # fmt: skip
        batch = {
            b"data": rng.integers(0, 256, (64, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, 64).tolist(),
        }
        with (folder / name).open("wb") as f:
            pickle.dump(batch, f)
    return folder


def _criteo_tsv(path: Path) -> Path:
    rng = np.random.default_rng(0)
    lines = []
    for _ in range(600):
        dense = [str(int(v)) if v >= 0 else "" for v in rng.integers(-1, 50, 13)]
        ids = [f"{int(v):08x}" for v in rng.integers(0, 2**32, 26)]
        lines.append("\t".join([str(int(rng.random() < 0.3)), *dense, *ids]))
    path.write_text("\n".join(lines) + "\n")
    return path


def _text(path: Path) -> Path:
    path.write_text("To be, or not to be, that is the question:\n" * 400)
    return path


def small_overrides(data: str, tmp: Path) -> list[str]:
    """Overrides that keep a recipe's model and numerics but make its run tiny: two steps on
    small data (``data`` is the recipe's dataset name; files are written under ``tmp``)."""
    sets = [
        "train.steps=2",
        "train.epochs=null",
        "train.max_eval_batches=2",
        "train.eval_batch_size=64",
        "train.warmup=0",
        "train.eval_every=0",
        "train.checkpoint_every=0",
        "train.batch_size=16",
        "train.base_batch_size=16",
        "logging.progress=false",
    ]
    if data == "cifar10":
        sets.append(f"data.path={_cifar(tmp / 'cifar-10-batches-py')}")
    elif data == "criteo_tsv":
        sets += [f"data.path={_criteo_tsv(tmp / 'train.txt')}", "data.hash_size=1000"]
    elif data == "textfile":
        sets.append(f"data.path={_text(tmp / 'corpus.txt')}")
    elif data == "stdlib":
        sets += ["data.max_bytes=400000", "data.val_every=2"]
    elif data == "synthetic_criteo":
        sets += ["data.train_size=2000", "data.test_size=500"]
    elif data == "synthetic_images":
        sets += ["data.train_size=64", "data.test_size=32"]
    return sets


def tiny_config() -> dict[str, object]:
    """A resolved recipe that trains in about a second: a 3-step digits MLP."""
    from numerics.train import recipe as recipes

    return recipes.from_dict(
        {
            "task": "image",
            "model": {"name": "mlp", "hidden": [16]},
            "data": {"name": "digits"},
            "train": {"steps": 3, "batch_size": 32, "lr": 0.05, "optimizer": "sgd"},
            "logging": {"progress": False},
        }
    ).to_dict()


def collect(executor: Any, specs: list[Any]) -> dict[str, Any]:
    """Run ``specs`` through ``executor`` and return each run id's summary, checking that
    ``on_done`` reports every spec exactly once."""
    done: dict[str, Any] = {}

    def on_done(spec: Any, summary: Any) -> None:
        assert spec.run_id not in done  # once per spec
        done[spec.run_id] = summary

    executor.run(specs, on_done)
    return done
