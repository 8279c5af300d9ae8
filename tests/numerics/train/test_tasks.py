"""The language task's validation windows and the n-gram reference scored on them.

The reference is checked against the bytes evaluation really reads: the ``x``/``y`` batches
of the validation split, each ``y[t]`` scored by the model's distribution after ``x[:t+1]``.
"""

from __future__ import annotations

import math
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from numerics import ngram
from numerics.data.base import DATASETS, WindowSplit
from numerics.train import recipe as recipes
from numerics.train import tasks
from numerics.train.trainer import train

STDLIB = Path(sysconfig.get_paths()["stdlib"])


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_bytes((STDLIB / "argparse.py").read_bytes() + (STDLIB / "textwrap.py").read_bytes())
    return path


def test_validation_windows_tile_the_split_from_its_first_byte() -> None:
    split = WindowSplit(torch.zeros(1000, dtype=torch.uint8), 64)
    batches = tasks.language_eval_windows(split, 4, None)
    starts = torch.cat(batches)
    assert starts.tolist() == list(range(0, 1000 - 64, 64))  # 15 windows, none past the end
    assert [len(b) for b in batches] == [4, 4, 4, 3]
    assert torch.equal(torch.cat(tasks.language_eval_windows(split, 4, 2)), starts[:8])


def test_the_reference_scores_the_bytes_validation_scores(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = DATASETS.get("textfile")(seed=0, path=str(corpus), block_size=32)
    ref = tasks.TASKS[tasks.TaskName.LANGUAGE].reference
    assert ref is not None
    got = ref(data, 4, 3)
    assert got["kneser_ney_order"] == tasks.KNESER_NEY_ORDER == 5
    train_bytes = data.train.data.numpy()  # type: ignore[union-attr]
    model = ngram.KneserNey(train_bytes, 5)
    bits = []
    for idx in tasks.language_eval_windows(data.test, 4, 3):  # type: ignore[arg-type]
        b = data.test.batch(idx)
        for x, y in zip(b["x"].tolist(), b["y"].tolist(), strict=True):
            bits += [-math.log2(model.distribution(bytes(x[: t + 1]))[y[t]]) for t in range(32)]
    assert len(bits) == 3 * 4 * 32
    assert got["kneser_ney_bits_per_byte"] == pytest.approx(float(np.mean(bits)), rel=1e-12)
    assert len(list((tmp_path / "cache" / "numerics" / "ngram").iterdir())) == 1  # cached


def test_a_language_run_reports_the_reference_beside_the_unigram_entropy(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rec = recipes.from_dict(
        {
            "task": "language",
            "model": {"name": "gpt", "n_layer": 1, "n_head": 1, "n_embd": 16},
            "data": {"name": "textfile", "path": str(corpus), "block_size": 32},
            "train": {"steps": 2, "batch_size": 4, "lr": 1e-3, "optimizer": "adamw",
                      "eval_batch_size": 8, "max_eval_batches": 2},
            "logging": {"progress": False},
        }
    )  # fmt: skip
    info = train(rec, tmp_path / "run").data_info
    data = DATASETS.get("textfile")(seed=0, path=str(corpus), block_size=32)
    ref = tasks.TASKS[tasks.TaskName.LANGUAGE].reference
    assert ref is not None
    assert info["kneser_ney_bits_per_byte"] == ref(data, 8, 2)["kneser_ney_bits_per_byte"]
    assert info["kneser_ney_order"] == 5
    assert info["kneser_ney_bits_per_byte"] < info["unigram_bits_per_byte"] - 1.0
