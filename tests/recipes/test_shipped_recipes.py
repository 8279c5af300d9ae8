"""Every shipped recipe (recipes/**/*.yaml) runs two steps through the real trainer.

The list comes from the folder, so a new recipe is covered without anyone adding it here.
Recipes that read a local file (CIFAR-10 batches, a Criteo TSV, a text corpus) get a small file
in the same format, written by the test; big synthetic sets are shrunk by overrides.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from numerics import recipe as recipes
from numerics.trainer import train

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))


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


def small_overrides(recipe_path: Path, tmp: Path) -> list[str]:
    """Overrides that keep the recipe's model and numerics but make its data small."""
    raw = recipes.load(recipe_path)
    data = raw.data["name"]
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


def test_the_recipes_folder_holds_the_shipped_recipes() -> None:
    names = {p.relative_to(ROOT / "recipes").as_posix() for p in RECIPES}
    required = (
        "image/digits_resnet.yaml",
        "language/stdlib_gpt.yaml",
        "recsys/synthetic_dlrm.yaml",
        "recsys/synthetic_deepfm_cowclip.yaml",
    )
    for name in required:
        assert name in names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(ROOT / "recipes").as_posix())
def test_recipe_trains_two_steps(path: Path, tmp_path: Path) -> None:
    rec = recipes.load(path, small_overrides(path, tmp_path))
    s = train(rec, tmp_path / "run")
    assert s["status"] == "completed", s.get("reason")
    assert s["steps"] == 2
    assert s["task"] == rec.task and s["metrics"]
    assert (tmp_path / "run" / "summary.json").exists()
    assert (tmp_path / "run" / "config.yaml").exists()
