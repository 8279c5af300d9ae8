"""The trainer through its real loop, on the digits MLP (fast): resume, divergence, failure,
the run-directory contract, periodic hardening, data parallelism."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from numerics.data.base import Sampling
from numerics.train import recipe as recipes
from numerics.train.rundir import RunDir
from numerics.train.trainer import BatchSampler, CheckpointError, RunDirError, train


def make(overrides: dict[str, Any] | None = None, **train_keys: Any) -> recipes.Recipe:
    d: dict[str, Any] = {
        "task": "image",
        "model": {"name": "mlp", "hidden": [32], "dropout": 0.1},
        "data": {"name": "digits"},
        "train": {"steps": 12, "batch_size": 32, "lr": 0.05, "optimizer": "sgd",
                  "momentum": 0.9, "eval_batch_size": 512, **train_keys},
        "logging": {"every": 3, "progress": False},
    }  # fmt: skip
    d = recipes.merge(d, overrides or {})
    return recipes.from_dict(d)


def weights(run: Path) -> dict[str, torch.Tensor]:
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    return ck["parts"]["model"]  # type: ignore[no-any-return]


# --- batches ----------------------------------------------------------------------------------
def test_shuffle_sampler_visits_every_example_once_per_epoch() -> None:
    s = BatchSampler(100, 10, seed=3, sampling=Sampling.SHUFFLE)
    epoch0 = torch.cat([s.indices(i) for i in range(10)])
    epoch1 = torch.cat([s.indices(i) for i in range(10, 20)])
    assert sorted(epoch0.tolist()) == list(range(100)) == sorted(epoch1.tolist())
    assert not torch.equal(epoch0, epoch1)
    fresh = BatchSampler(100, 10, seed=3, sampling=Sampling.SHUFFLE)
    assert torch.equal(fresh.indices(13), s.indices(13))  # a pure function of (seed, step)
    with pytest.raises(ValueError, match="batch_size=200"):
        BatchSampler(100, 200, seed=0, sampling=Sampling.SHUFFLE)


def test_random_sampler_depends_on_seed_and_step_only() -> None:
    a = BatchSampler(10_000, 16, seed=1, sampling=Sampling.RANDOM)
    b = BatchSampler(10_000, 16, seed=1, sampling=Sampling.RANDOM)
    assert torch.equal(a.indices(7), b.indices(7))
    assert not torch.equal(a.indices(7), a.indices(8))
    assert int(a.indices(7).max()) < 10_000


# --- the run directory ------------------------------------------------------------------------
def test_run_directory_contract(tmp_path: Path) -> None:
    r = make({"numerics": {"format": "bf16"}}, eval_every=6)
    s = train(r, tmp_path / "run")
    rd = RunDir(tmp_path / "run")
    on_disk = json.loads(rd.summary.read_text())
    assert on_disk == json.loads(json.dumps(s.to_dict()))
    for key in ("status", "task", "recipe", "format", "numerics", "seed", "metrics", "steps",
                "wall_s", "peak_memory_mb"):  # fmt: skip
        assert key in on_disk, key
    assert on_disk["status"] == "completed" and on_disk["format"] == "bf16-opt:bf16-comm:bf16"
    assert on_disk["steps"] == 12 and 0 <= on_disk["metrics"]["accuracy"] <= 1
    # config.yaml is the resolved recipe, and re-runnable as one
    assert recipes.load(rd.config) == r
    recs = rd.read_metrics()
    assert all(set(x) == {"step", "split", "name", "value"} for x in recs)
    assert [x["step"] for x in recs if x["name"] == "loss" and x["split"] == "train"] == [
        3,
        6,
        9,
        12,
    ]
    evals = [x for x in recs if x["split"] == "eval" and x["name"] == "accuracy"]
    assert [x["step"] for x in evals] == [6, 12]
    assert evals[-1]["value"] == on_disk["metrics"]["accuracy"]


def test_final_accuracy_is_the_model_s_accuracy_on_the_test_split(tmp_path: Path) -> None:
    """An independent evaluation: rebuild the model from the checkpoint and count."""
    from numerics.data.base import DATASETS
    from numerics.models.base import MODELS

    r = make()
    s = train(r, tmp_path)
    data = DATASETS.get("digits")(seed=0)
    model = MODELS.get("mlp")(data.info, hidden=[32], dropout=0.1)
    model.load_state_dict(weights(tmp_path))
    model.eval()
    with torch.no_grad():
        pred = model(data.test.tensors["x"]).argmax(-1)
    expect = int((pred == data.test.tensors["y"]).sum()) / len(pred)
    assert s.metrics["accuracy"] == pytest.approx(expect, abs=1e-9)


def test_a_folder_holding_a_run_is_refused_and_a_changed_config_cannot_resume(
    tmp_path: Path,
) -> None:
    train(make(), tmp_path)
    before = (tmp_path / "summary.json").read_text()
    with pytest.raises(RunDirError, match="pass --resume"):
        train(make(), tmp_path)
    with pytest.raises(RunDirError, match=r"train\.lr"):
        train(make(lr=0.1), tmp_path, resume=True)
    assert (tmp_path / "summary.json").read_text() == before  # nothing lost
    # resuming a finished run returns its summary
    assert train(make(), tmp_path, resume=True).to_dict() == json.loads(before)


# --- resume -----------------------------------------------------------------------------------
def _interrupt_at(n: int) -> Any:
    def hook(step: int) -> None:
        if step == n:
            raise KeyboardInterrupt

    return hook


@pytest.mark.parametrize(
    "numerics",
    [
        {"format": "fp32"},
        # SR streams, weights in the format with no master copy, bf16 optimizer state
        {
            "format": "bf16",
            "rounding": "stochastic",
            "master_weights": False,
            "update_rounding": "stochastic",
        },
    ],
    ids=["fp32", "bf16-sr-nomaster"],
)
def test_resume_equals_an_uninterrupted_run(tmp_path: Path, numerics: dict[str, Any]) -> None:
    r = make({"numerics": numerics}, checkpoint_every=4, optimizer="adam", lr=0.01)
    full = train(r, tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        train(r, tmp_path / "cut", hooks=[_interrupt_at(6)])
    rd = RunDir(tmp_path / "cut")
    assert rd.read_summary() is None  # no summary for an unfinished run
    ck = torch.load(rd.checkpoint, weights_only=True)  # plain data only
    assert ck["version"] == 2
    # the checkpoint is the dict of the run's stateful parts (telemetry, periodic: when used)
    assert set(ck["parts"]) == {"model", "caster", "optimizer", "loss_scale", "rng", "progress"}
    assert ck["parts"]["progress"]["next_step"] == 7
    resumed = train(r, tmp_path / "cut", resume=True)
    assert resumed.metrics == full.metrics
    assert resumed.resumes == 1
    # the cancelled-update count is part of the optimizer's state: resumed, it is the same
    assert resumed.cancelled_update_fraction == full.cancelled_update_fraction
    if numerics.get("master_weights") is False:
        assert 0.0 < full.cancelled_update_fraction < 1.0
    else:
        assert full.cancelled_update_fraction is None
    wf, wc = weights(tmp_path / "full"), weights(tmp_path / "cut")
    assert all(torch.equal(wf[k], wc[k]) for k in wf)  # bit for bit

    # the metrics log holds each step once, as the uninterrupted run's does
    def train_steps(run: Path) -> list[int]:
        return [x["step"] for x in RunDir(run).read_metrics() if x["name"] == "loss"]

    assert train_steps(tmp_path / "cut") == train_steps(tmp_path / "full")


# --- divergence and failure -------------------------------------------------------------------
def test_a_diverging_run_is_reported_as_diverged(tmp_path: Path) -> None:
    r = make(lr=1e6, momentum=0.0)
    s = train(r, tmp_path)
    assert s.status == "diverged"
    assert s.steps < 12 and s.reason is not None
    assert RunDir(tmp_path).read_summary().status == "diverged"  # type: ignore[union-attr]


def test_a_failing_run_writes_a_failed_summary_with_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from numerics.train import tasks

    def broken(model: Any, batch: Any) -> torch.Tensor:
        raise RuntimeError("planted failure")

    task = tasks.TASKS[tasks.TaskName.IMAGE]
    monkeypatch.setitem(
        tasks.TASKS, tasks.TaskName.IMAGE, tasks.Task(
            task.name, broken, task.evaluate, task.primary, task.higher_is_better, task.unit
        ),
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="planted failure"):
        train(make(), tmp_path)
    s = RunDir(tmp_path).read_summary()
    assert s is not None and s.status == "failed"
    assert "planted failure" in s.error and "Traceback" in s.traceback


# --- numerics features through the loop -------------------------------------------------------
def test_periodic_regularizer_hardens_weights_onto_the_grid(tmp_path: Path) -> None:
    periodic = {"kind": "sin2", "bits": 3, "lambda_max": 1e-3, "start_fraction": 0.5}
    r = make({"numerics": {"format": "fp32", "periodic": periodic}, "model": {"dropout": 0.0}})
    s = train(r, tmp_path)
    assert s.status == "completed" and s.metrics_before_hardening is not None
    # the mean distance to the grid before rounding, in grid steps: between 0 (on the grid)
    # and 0.5 (every weight halfway), and at most the largest change the rounding made
    d = s.hardening["mean_distance_steps"]
    assert 0.0 <= d <= 0.5 and d <= s.hardening["max_change_steps"] + 1e-9
    w = weights(tmp_path)
    for name in ("net.0.weight", "net.2.weight") if "net.0.weight" in w else []:
        assert torch.unique(w[name]).numel() <= 7  # 2**3 - 1 levels
    linear = [k for k, v in w.items() if k.endswith("weight") and v.dim() == 2]
    assert linear
    for k in linear:
        assert torch.unique(w[k]).numel() <= 7, k  # 3 bits: levels -3..3 times delta


def test_dynamic_loss_scaling_is_logged(tmp_path: Path) -> None:
    r = make({"numerics": {"format": "fp16", "loss_scale": "dynamic"}})
    s = train(r, tmp_path)
    assert s.status == "completed"
    scales = [x["value"] for x in RunDir(tmp_path).read_metrics() if x["name"] == "loss_scale"]
    assert scales and scales[0] == 65536.0


def test_telemetry_is_logged_every_n_steps(tmp_path: Path) -> None:
    r = make({"numerics": {"format": "fp8_e4m3"}, "logging": {"telemetry_every": 5}})
    train(r, tmp_path)
    tel = [x for x in RunDir(tmp_path).read_metrics() if x["split"] == "telemetry"]
    assert sorted({x["step"] for x in tel}) == [1, 6, 11]  # steps 0, 5, 10 done
    assert any(x["name"].endswith("/activations/sqnr_db") for x in tel)
    # the summary pools each role over the logged steps: the count-weighted mean of the layers'
    # per-step fractions (each step's cast counts are the same, so weights are the counts)
    s = RunDir(tmp_path).read_summary()
    assert s is not None and set(s.telemetry) >= {"weights", "activations", "errors"}
    under = [x["value"] for x in tel if x["name"].endswith("/errors/underflow")]
    assert min(under) <= s.telemetry["errors"]["underflow"] <= max(under)
    assert s.telemetry["errors"]["underflow"] > 0  # fp8_e4m3 errors do underflow


def test_config_yaml_records_resolved_overrides(tmp_path: Path) -> None:
    src = tmp_path / "r.yaml"
    src.write_text(yaml.safe_dump(make().to_dict()))
    r = recipes.load(src, ["numerics.format=mxfp8_e4m3", "train.seed=2"])
    s = train(r, tmp_path / "run")
    assert s.format.startswith("mxfp8_e4m3") and s.seed == 2
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["numerics"]["format"] == "mxfp8_e4m3" and cfg["train"]["seed"] == 2


def test_two_processes_train_like_one_with_the_whole_batch(tmp_path: Path) -> None:
    """Data parallel: each rank takes half the global batch; DDP averages gradients; with no
    batch norm and no dropout the result matches one process (up to fp32 summation order)."""
    from numerics.train.launch import train_parallel

    r = make({"model": {"dropout": 0.0}}, steps=6)
    one = train(r, tmp_path / "one")
    two = train_parallel(r, tmp_path / "two", nproc=2, progress=False)
    assert two.status == "completed" and two.nproc == 2
    w1, w2 = weights(tmp_path / "one"), weights(tmp_path / "two")
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-5, atol=1e-6)
    assert two.metrics["accuracy"] == pytest.approx(one.metrics["accuracy"], abs=0.01)


def test_wandb_offline_run_holds_the_run_s_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real wandb, offline (no credentials): the run files exist and, read back with wandb's
    own reader, hold the final metrics the summary reports."""
    import json as _json
    import shutil
    import subprocess
    import sys

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    s = train(make({"logging": {"wandb": "online"}}, steps=6), tmp_path / "sweep" / "run")
    assert s.wandb == "offline"  # no credentials: downgraded, not stuck at a prompt
    runs = list((tmp_path / "sweep" / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    exe = shutil.which("wandb", path=str(Path(sys.executable).parent))
    assert exe is not None
    out = subprocess.run(
        [exe, "leet", "inspect", "--summary", "--json", str(runs[0])],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    back = _json.loads(out.stdout)
    summary = back.get("summary", back)
    assert summary["eval/accuracy"] == pytest.approx(s.metrics["accuracy"])
    assert summary["status"] == "completed"


def test_resume_with_an_int4_embedding_cache_is_exact(tmp_path: Path) -> None:
    """Cached int4 tables (codes, scales, counts, cache index, SR generators) resume exactly;
    the summary counts the tables' bytes (int4 codes + fp32 row scales + the fp32 cache)."""
    d = {
        "task": "recsys",
        "model": {"name": "dlrm", "embedding_cache": "int4", "cache_fraction": 0.1,
                  "cache_refresh_every": 2},
        "data": {"name": "synthetic_criteo", "train_size": 2000, "test_size": 500,
                 "cardinality": 50},
        "train": {"steps": 8, "batch_size": 64, "lr": 0.05, "optimizer": "sgd",
                  "checkpoint_every": 3},
        "logging": {"progress": False},
    }  # fmt: skip
    r = recipes.from_dict(d)
    full = train(r, tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        train(r, tmp_path / "cut", hooks=[_interrupt_at(4)])
    resumed = train(r, tmp_path / "cut", resume=True)
    assert resumed.metrics == full.metrics
    wf, wc = weights(tmp_path / "full"), weights(tmp_path / "cut")
    assert any(k.endswith("codes") for k in wf)
    assert all(torch.equal(wf[k], wc[k]) for k in wf if not k.endswith("_extra_state"))
    # each cached table's write-back generator and step count, in the model's state
    extra = [k for k in wf if k.endswith("_extra_state")]
    assert len(extra) == 26
    for k in extra:
        assert wf[k]["num_steps"] == wc[k]["num_steps"] == 8
        assert torch.equal(wf[k]["generator"], wc[k]["generator"])
    # 26 tables of 50 rows x 16: int4 codes (8 bytes a row), a 4-byte scale and an 8-byte use
    # count per row; 5 cached fp32 rows with their id and slot (two int64)
    assert full.embedding_bytes == 26 * (50 * (8 + 4 + 8) + 5 * (16 * 4 + 2 * 8))
    parts = full.embedding_bytes_parts
    assert parts == {"total": full.embedding_bytes, "fp32_table": 26 * 50 * 16 * 4,
                     "codes": 26 * 50 * 8, "scales": 26 * 50 * 4, "counters": 26 * 50 * 8,
                     "cache_rows": 26 * 5 * 16 * 4, "cache_index": 26 * 5 * 16}  # fmt: skip
    assert full.embedding_fraction_of_fp32 == full.embedding_bytes / (26 * 50 * 64)


class _Planted:
    """Pickles as a call of Path.touch: loading it with the full unpickler would run it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def _cut_run(tmp_path: Path) -> tuple[recipes.Recipe, Path, dict[str, Any]]:
    """A run stopped after step 5: its recipe, its checkpoint's path and contents."""
    r = make(checkpoint_every=4)
    with pytest.raises(KeyboardInterrupt):
        train(r, tmp_path / "run", hooks=[_interrupt_at(5)])
    ck_path = tmp_path / "run" / "checkpoint.pt"
    return r, ck_path, torch.load(ck_path, weights_only=True)


def test_a_checkpoint_carrying_code_is_refused_unrun(tmp_path: Path) -> None:
    r, ck_path, ck = _cut_run(tmp_path)
    marker = tmp_path / "ran"
    ck["parts"]["progress"]["acc"] = _Planted(marker)
    torch.save(ck, ck_path)
    with pytest.raises(CheckpointError, match=r"refused.*weights-only"):
        train(r, tmp_path / "run", resume=True)
    assert not marker.exists()  # the planted call never ran
    assert RunDir(tmp_path / "run").read_summary() is None  # no failed summary over the run


def test_a_checkpoint_of_another_layout_or_run_is_refused(tmp_path: Path) -> None:
    r, ck_path, ck = _cut_run(tmp_path)
    torch.save({"model": ck["parts"]["model"], "next_step": 5}, ck_path)  # the old flat layout
    with pytest.raises(CheckpointError, match=r"layout version 1.*reads version 2"):
        train(r, tmp_path / "run", resume=True)
    del ck["parts"]["loss_scale"]
    torch.save(ck, ck_path)
    with pytest.raises(CheckpointError, match="not this run's checkpoint"):
        train(r, tmp_path / "run", resume=True)
