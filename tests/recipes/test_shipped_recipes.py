"""Every shipped recipe (recipes/**/*.yaml) runs two steps through the real trainer.

The list comes from the folder, so a new recipe is covered without anyone adding it here.
Recipes that read a local file (CIFAR-10 batches, a Criteo TSV, a text corpus) get a small file
in the same format, written by the test; big synthetic sets are shrunk by overrides.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from numerics.train import recipe as recipes
from numerics.train.trainer import train
from tests.smallrun import small_overrides

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))


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
    data = recipes.load(path).data["name"]
    rec = recipes.load(path, small_overrides(data, tmp_path))
    s = train(rec, tmp_path / "run")
    assert s.status == "completed", s.reason
    assert s.steps == 2
    assert s.task == rec.task and s.metrics
    assert (tmp_path / "run" / "summary.json").exists()
    assert (tmp_path / "run" / "config.yaml").exists()


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(ROOT / "recipes").as_posix())
def test_recipe_run_evaluates_and_takes_faults(path: Path, tmp_path: Path) -> None:
    """``numerics evaluate`` and ``numerics pvf`` work on every shipped recipe's run folder:
    under the run's own policy an evaluation gives the run's own final metrics bit for bit,
    and a fault-injection study runs with the weights stored in MXINT8 (codes and scales)."""
    from numerics.train.evaluate import evaluate
    from numerics.train.pvf import pvf

    data = recipes.load(path).data["name"]
    rec = recipes.load(path, small_overrides(data, tmp_path))
    run = tmp_path / "run"
    s = train(rec, run)
    assert s.status == "completed", s.reason
    own = evaluate(run, [], tmp_path / "own")
    assert own.metrics == s.metrics
    p = pvf(run, tmp_path / "pvf", overrides=["numerics.weights=mxint8"],
            fields=["element", "scale"], faults=2, examples=4)  # fmt: skip
    assert p.status == "completed" and any("/scale" in k for k in p.metrics)
