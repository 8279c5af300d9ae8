"""The run-directory contract: atomic files, metrics lines, statuses."""

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from numerics.train import rundir
from numerics.train.rundir import MetricsWriter, RunDir
from numerics.train.summary import SCHEMA_VERSION, RunSummary


def test_non_finite_values_are_strict_json_strings(tmp_path: Path) -> None:
    p = tmp_path / "m.jsonl"
    w = MetricsWriter(p)
    w.write(3, "telemetry", {"sqnr": math.inf, "x": math.nan, "y": -math.inf, "z": 0.5})
    w.close()
    lines = p.read_text().splitlines()
    recs = [json.loads(line) for line in lines]  # strict: no Infinity tokens
    assert [r["value"] for r in recs] == ["inf", "nan", "-inf", 0.5]
    assert all(set(r) == {"step", "split", "name", "value"} for r in recs)
    assert rundir.metric_value("inf") == math.inf


def test_torn_last_line_is_skipped_and_truncate_drops_later_steps(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    w = MetricsWriter(rd.metrics)
    for s in range(5):
        w.write(s, "train", {"loss": float(s)})
    w.close()
    with rd.metrics.open("a") as f:
        f.write('{"step": 5, "split": "tr')  # a crash mid-write
    assert [r["step"] for r in rd.read_metrics()] == [0, 1, 2, 3, 4]
    rd.truncate_metrics(2)
    assert [r["step"] for r in rd.read_metrics()] == [0, 1, 2]
    assert rundir.last_values(rd.read_metrics(), "train") == {"loss": 2.0}


def test_summary_status_is_checked_and_config_is_yaml(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    with pytest.raises(ValueError, match="completed"):
        RunSummary(status="done")  # type: ignore[arg-type]
    assert rd.read_summary() is None
    rd.write_summary(RunSummary(status="diverged", metrics={"auc": math.nan}))
    on_disk = json.loads(rd.summary.read_text())
    assert on_disk["status"] == "diverged" and on_disk["metrics"] == {"auc": "nan"}
    assert on_disk["schema_version"] == SCHEMA_VERSION
    back = rd.read_summary()
    assert back is not None and back.status == "diverged" and back.metrics == {"auc": "nan"}
    rd.summary.write_text('{"status": "done"}')  # malformed: not a run summary
    assert rd.read_summary() is None
    rd.write_config({"train": {"betas": (0.9, 0.99)}})
    assert yaml.safe_load(rd.config.read_text()) == {"train": {"betas": [0.9, 0.99]}}


def test_atomic_torch_save_round_trips(tmp_path: Path) -> None:
    p = tmp_path / "checkpoint.pt"
    rundir.atomic_torch_save(p, {"w": torch.arange(4.0)})
    assert torch.equal(torch.load(p)["w"], torch.arange(4.0))
