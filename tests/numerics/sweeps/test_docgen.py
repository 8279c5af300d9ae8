"""numerics docs: generated blocks from planted run directories; a partly run sweep lists
what is missing; one failed block leaves the others made; idempotent; --check."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from numerics.cli import main
from numerics.sweeps.docgen import NOTE, missing_runs, regenerate
from numerics.sweeps.spec import expand, load_sweep
from tests.numerics.sweeps.test_compare import IMG, img, plant_columns
from tests.numerics.sweeps.test_spec import TINY


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _sweep(root: Path) -> Path:
    (root / "recipes").mkdir()
    (root / "recipes" / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    (root / "sweeps").mkdir()
    sweep = {"name": "ladder", "recipe": "../recipes/tiny.yaml", "method": "grid",
             "parameters": {"numerics.format": {"values": ["fp32", "bf16"]},
                            "train.seed": {"values": [0, 1, 2]}}}  # fmt: skip
    (root / "sweeps" / "ladder.yaml").write_text(yaml.safe_dump(sweep))
    return root / "sweeps" / "ladder.yaml"


def _plant_sweep_runs(sweep_file: Path, results: Path, values: dict[str, list[float]]) -> None:
    """Completed runs in the folders the sweep expects, for the given formats and seeds."""
    for spec in expand(load_sweep(sweep_file), results).runs:
        fmt, seed = spec.params["numerics.format"], spec.params["train.seed"]
        if seed >= len(values.get(fmt, [])):
            continue
        d = Path(spec.out)
        d.mkdir(parents=True)
        (d / "config.yaml").write_text(yaml.safe_dump(spec.config))
        summary = {"status": "completed", "task": "image", "model": "mlp", "data": "digits",
                   "format": fmt, "seed": seed, "metrics": img(values[fmt][seed]),
                   "primary_metric": "accuracy"}  # fmt: skip
        (d / "summary.json").write_text(json.dumps(summary))


def test_compare_block_table_legend_note_and_plot(project: Path) -> None:
    plant_columns(
        project / "results" / "x", {"fp32": [0.80, 0.81, 0.79], "bf16": [0.70, 0.72, 0.71]}
    )
    doc = project / "doc.md"
    doc.write_text("# Title\n\nintro\n<!-- numerics: compare results/x --plot m.png -->\nstale "
                   "text\n<!-- numerics: end -->\n\noutro\n")  # fmt: skip
    assert main(["docs", "doc.md", "--check"]) == 1  # stale
    assert not (project / "m.png").exists()  # --check writes nothing, not even the plot
    assert main(["docs", "doc.md"]) == 0
    text = doc.read_text()
    assert text.startswith("# Title\n\nintro\n<!-- numerics: compare results/x --plot m.png -->\n")
    assert text.endswith("<!-- numerics: end -->\n\noutro\n") and "stale" not in text
    row = next(line for line in text.splitlines() if line.startswith(f"| {IMG} |"))
    assert "| **0.8000 ± 0.0248 (n=3)" in row  # fp32 significantly best: bold
    assert "Δ-0.0900 ± 0.0248 |" in row  # the same noise, shifted: paired
    assert "95% CI (Student t, over seeds)" in text and NOTE in text
    assert (project / "m.png").read_bytes().startswith(b"\x89PNG")
    assert main(["docs", "doc.md", "--check"]) == 0  # text and plot up to date
    (project / "m.png").write_bytes(b"old plot")
    assert main(["docs", "doc.md", "--check"]) == 1  # a stale plot is stale
    assert (project / "m.png").read_bytes() == b"old plot"
    assert main(["docs", "doc.md"]) == 0
    assert (project / "m.png").read_bytes().startswith(b"\x89PNG")
    assert main(["docs", "doc.md", "--check"]) == 0  # idempotent
    assert regenerate(text)[0] == text
    only, _, _ = regenerate("<!-- numerics: compare results/x --where format=bf16 -->\n"
                            "<!-- numerics: end -->")  # fmt: skip
    assert "| recipe | metric | bf16 |" in only and "3 runs: 3 completed" in only


def test_blocks_split_what_differs_and_pool_on_request(project: Path) -> None:
    """A block's table splits cells as ``numerics compare`` does (the results folder's
    sweep.yaml keys first); ``--pool`` in the block pools a key and its legend says so."""
    x = project / "results" / "x"
    plant_columns(x, {"fp32": [0.80, 0.81]}, model_width=8)  # fmt: skip
    plant_columns(x / "w16", {"fp32": [0.90, 0.91]}, model_width=16)
    (x / "sweep.yaml").write_text(yaml.safe_dump({"swept": ["model.width", "train.seed"]}))
    doc = project / "doc.md"
    doc.write_text(
        "<!-- numerics: compare results/x -->\n<!-- numerics: end -->\n"
        "<!-- numerics: cell results/x --row image/mlp/digits --column 16 --by model.width "
        "--baseline 8 --><!-- numerics: end -->\n"
        "<!-- numerics: compare results/x --pool model.width -->\n<!-- numerics: end -->\n"
    )
    assert main(["docs", "doc.md"]) == 0
    split, cell, pooled = doc.read_text().split("<!-- numerics: end -->")[:3]
    assert "| fp32 · 8 | fp32 · 16 |" in split and "then model.width" in split
    assert cell.endswith("0.9050 ± 0.0635 (n=2) Δ+0.1000 ± 0.0000 *")  # to width 8
    assert "| fp32 |" in pooled and "(n=4)" in pooled
    assert "pooled on purpose (--pool): model.width" in pooled


def test_partly_run_sweep_lists_missing_cells(project: Path) -> None:
    sweep_file = _sweep(project)
    results = project / "results"
    _plant_sweep_runs(sweep_file, results, {"fp32": [0.80, 0.81, 0.79], "bf16": [0.75]})
    total, missing = missing_runs("sweeps/ladder.yaml", "results/ladder")
    assert total == 6
    assert missing == {"tiny · {'numerics.format': 'bf16'}": ["1", "2"]}
    block = "<!-- numerics: compare results/ladder --sweep sweeps/ladder.yaml -->\n"
    text, errors, _ = regenerate(block + "<!-- numerics: end -->")
    assert not errors
    assert "Missing: 2 of the 6 runs `sweeps/ladder.yaml` asks for" in text
    assert "- tiny · {'numerics.format': 'bf16'}: seeds 1, 2" in text
    assert "0.7500 (n=1) Δ-0.0500 (untested)" in text  # the partial cell is still shown

    empty, errors, _ = regenerate("<!-- numerics: compare results/none --sweep sweeps/ladder.yaml "
                               "-->\n<!-- numerics: end -->")  # fmt: skip
    assert "block failed" in empty and "its runs go to <results>/ladder" in empty
    assert errors and "not results/none" in errors[0]

    for spec in expand(load_sweep(sweep_file), results).runs:  # an interrupted run
        d = Path(spec.out)
        if not d.exists():
            d.mkdir(parents=True)
            (d / "config.yaml").write_text(yaml.safe_dump(spec.config))
    text, _, _ = regenerate("<!-- numerics: compare results/ladder --sweep sweeps/ladder.yaml -->"
                         "\n<!-- numerics: end -->")  # fmt: skip
    assert "Missing: 2 of the 6" in text and "2 unfinished" in text


def test_a_bad_block_does_not_stop_the_others(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plant_columns(project / "results" / "x", {"fp32": [0.8, 0.9], "bf16": [0.7, 0.8]})
    doc = project / "doc.md"
    doc.write_text(
        "<!-- numerics: compare results/x --frobnicate -->\nold\n<!-- numerics: end -->\n"
        "| claim | ours |\n|---|---|\n| a | <!-- numerics: cell results/x --row "
        f"{IMG} --column bf16 -->?<!-- numerics: end --> |\n"
        "<!-- numerics: tabulate x -->\n<!-- numerics: end -->\n"
    )
    assert main(["docs", "doc.md"]) == 1
    text = doc.read_text()
    assert "unrecognized arguments: --frobnicate" in text
    assert "unknown block 'tabulate x': allowed: compare, cell, qsnr, include" in text
    # the inline cell block stays on its line, inside the table
    cell = "--column bf16 -->0.7500 ± 0.6353 (n=2) Δ-0.1000 ± 0.0000<!-- numerics: end --> |"
    assert f"| a | <!-- numerics: cell results/x --row {IMG} {cell}\n" in text
    err = capsys.readouterr().err
    assert "doc.md" in err and "frobnicate" in err
    assert main(["docs", "nowhere.md"]) == 2


def test_qsnr_block(project: Path) -> None:
    block = "<!-- numerics: qsnr --formats int8 mx6 --dist uniform --numel 4096 -->\n"
    text, errors, _ = regenerate(block + "<!-- numerics: end -->")
    assert not errors
    line = next(x for x in text.splitlines() if x.startswith("| int8 |"))
    assert abs(float(line.split("|")[3]) - 48.1) < 0.3
    assert "| mx6 | 6 |" in text
    assert os.path.exists("doc.md") is False  # regenerate writes nothing


def test_include_copies_a_section_without_its_markers(project: Path) -> None:
    plant_columns(project / "results" / "x", {"fp32": [0.8, 0.9], "bf16": [0.7, 0.8]})
    cell = f"<!-- numerics: cell results/x --row {IMG} --column bf16 -->?<!-- numerics: end -->"
    (project / "f.md").write_text(f"# F\n\n## Summary\n\n| a | {cell} |\n\n## Next\n\nmore\n")
    assert main(["docs", "f.md"]) == 0
    text, errors, _ = regenerate("<!-- numerics: include f.md --heading Summary -->\n"
                              "<!-- numerics: end -->")  # fmt: skip
    assert not errors
    body = text.split("-->\n", 1)[1].rsplit("\n<!-- numerics: end", 1)[0]
    assert body == "| a | 0.7500 ± 0.6353 (n=2) Δ-0.1000 ± 0.0000 |"  # no markers, no "## Next"
    assert regenerate(text)[0] == text  # stable: the copy holds no markers to match
    bad, errors, _ = regenerate(
        "<!-- numerics: include f.md --heading Nope -->\n<!-- numerics: end -->"
    )
    assert errors and "no section '## Nope'" in bad


def test_cost_block_sums_the_recorded_wall_times(project: Path) -> None:
    plant_columns(project / "results" / "a", {"fp32": [0.8, 0.9]}, wall_s=90.0)
    plant_columns(project / "results" / "b", {"fp32": [0.8], "bf16": [0.7]}, wall_s=30.0)
    text, errors, _ = regenerate(
        "<!-- numerics: cost results/a results/b results/none --jobs 2 -->\n<!-- numerics: end -->"
    )
    assert not errors
    lines = text.splitlines()
    assert "| `a` | 2 | 3.0 | 1.5 |" in lines  # 2 x 90 s = 3 min; over 2 jobs 1.5
    assert "| `b` | 2 | 1.0 | 0.5 |" in lines
    assert "| `results/none` | no runs yet | | |" in lines
    assert "| all | 4 | 4.0 | 2.0 |" in lines
    bad, errors, _ = regenerate(
        "<!-- numerics: cost results/a --jobs 0 -->\n<!-- numerics: end -->"
    )
    assert errors and "--jobs=0" in bad


def test_pvf_block_renders_the_fault_table(project: Path) -> None:
    from scipy.stats import binomtest

    (project / "p").mkdir()
    counts = {"faults": 10, "trials": 100}
    cells = [{"component": "top", "bit": 30, **counts, "changed": 25},
             {"component": "emb", "bit": None, **counts, "changed": 0}]  # fmt: skip
    doc = {"source_run": "results/demo/run-s0", "seed": 4, "examples": 10, "cells": cells}
    (project / "p" / "pvf.json").write_text(json.dumps(doc))
    text, errors, _ = regenerate("<!-- numerics: pvf p -->\n<!-- numerics: end -->")
    assert not errors
    ci = binomtest(25, 100).proportion_ci(method="wilson")
    assert f"| top | 30 | 10 | 100 | 0.2500 | [{ci.low:.4f}, {ci.high:.4f}] |" in text
    assert "| emb | any | 10 | 100 | 0.0000 | [0.0000, 0.0370] |" in text
    assert "`run-s0`, 10 evaluation examples per fault, seed 4:" in text
    empty, errors, _ = regenerate("<!-- numerics: pvf nowhere -->\n<!-- numerics: end -->")
    assert not errors and "No fault-injection results in `nowhere` yet." in empty
