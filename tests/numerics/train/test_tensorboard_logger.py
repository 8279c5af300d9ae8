"""TensorBoard logging through real training runs, read back with TensorBoard's own code only:
its event reader (``EventMultiplexer``), the HParams plugin's protobufs, and the real
``tensorboard`` server answering the HParams dashboard's requests."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams import plugin_data_pb2
from torch import nn

from numerics.nn.modules import quantize_model
from numerics.train import recipe as recipes
from numerics.train.logger import FanOutLogger, NullLogger
from numerics.train.rundir import RunDir
from numerics.train.tensorboard_logger import (
    TensorBoardLogger,
    histogram_layers,
    make_tensorboard_logger,
    weight_histograms,
)
from numerics.train.trainer import data_and_model, train

TENSORBOARD_CLI = Path(sys.executable).parent / "tensorboard"
SESSION_START = "_hparams_/session_start_info"
EVERYTHING = {"scalars": 0, "histograms": 0, "tensors": 0}  # keep every event


def make(logging: dict[str, Any] | None = None, **train_keys: Any) -> recipes.Recipe:
    """A 12-step digits MLP with three Linear layers: fp8 casts, the weights in MXFP8 with
    stochastic rounding; TensorBoard, telemetry and histograms (first and last layer) on."""
    return recipes.from_dict(
        {
            "task": "image",
            "model": {"name": "mlp", "hidden": [16, 16]},
            "data": {"name": "digits"},
            "train": {"steps": 12, "batch_size": 32, "lr": 0.05, "eval_every": 6,
                      "eval_batch_size": 512, **train_keys},
            "numerics": {"format": "fp8_e4m3",
                         "weights": {"format": "mxfp8_e4m3", "rounding": "stochastic"}},
            "logging": {"every": 3, "progress": False, "tensorboard": True,
                        "telemetry_every": 5, "histogram_every": 5, "histogram_layers": 2,
                        **(logging or {})},
        }
    )  # fmt: skip


def read(logdir: Path) -> EventMultiplexer:
    mux = EventMultiplexer(size_guidance=EVERYTHING).AddRunsFromDirectory(str(logdir))
    mux.Reload()
    return mux


def tb_value(x: float) -> float:
    """What a float becomes in an event file (TensorBoard stores scalars as float32)."""
    return float(np.float32(x))


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def scalars(mux: EventMultiplexer, run: str, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in mux.Scalars(run, tag)]


def start_info(mux: EventMultiplexer, run: str) -> plugin_data_pb2.SessionStartInfo:
    content = mux.PluginRunToTagToContent("hparams")[run][SESSION_START]
    return plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info


def hparam(info: plugin_data_pb2.SessionStartInfo, name: str) -> Any:
    v = info.hparams[name]
    return getattr(v, v.WhichOneof("kind"))


# --- one real run, shared ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    sweep = tmp_path_factory.mktemp("results") / "sweep"
    r = make()
    summary = train(r, sweep / "run")
    return {"recipe": r, "summary": summary, "dir": sweep / "run", "mux": read(sweep)}


def test_runs_are_the_run_folder_and_its_hparams_session(run: dict[str, Any]) -> None:
    mux = run["mux"]
    assert sorted(mux.Runs()) == ["run/tensorboard", "run/tensorboard/hparams"]
    assert list(mux.PluginRunToTagToContent("hparams")) == ["run/tensorboard/hparams"]


def test_every_logged_metric_is_a_scalar_at_its_step(run: dict[str, Any]) -> None:
    """Train, eval and telemetry rows of metrics.jsonl, each one the same in TensorBoard."""
    mux, records = run["mux"], RunDir(run["dir"]).read_metrics()
    expected: dict[str, list[tuple[int, float]]] = {}
    for rec in records:
        tag = rec["name"] if rec["split"] == "telemetry" else f"{rec['split']}/{rec['name']}"
        expected.setdefault(tag, []).append((rec["step"], tb_value(rec["value"])))
    assert {k.split("/")[0] for k in expected} == {"train", "eval", "numerics"}
    assert set(mux.Runs()["run/tensorboard"]["scalars"]) == set(expected)
    for tag, points in expected.items():
        got = scalars(mux, "run/tensorboard", tag)
        assert [s for s, _ in got] == [s for s, _ in points], tag
        assert all(same(a, b) for (_, a), (_, b) in zip(got, points, strict=True)), tag
    assert [s for s, _ in expected["train/loss"]] == [3, 6, 9, 12]
    assert [s for s, _ in expected["numerics/1/errors/underflow"]] == [1, 6, 11]
    # the last eval is the summary's final metric
    final = run["summary"].metrics["accuracy"]
    assert scalars(mux, "run/tensorboard", "eval/accuracy")[-1] == (12, tb_value(final))


def test_histograms_of_the_first_and_last_layer_at_their_steps(run: dict[str, Any]) -> None:
    mux, r = run["mux"], run["recipe"]
    _, model = data_and_model(r)
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert len(linear) == 3
    picked = [linear[0], linear[-1]]  # histogram_layers: 2
    tags = mux.Runs()["run/tensorboard"]["histograms"]
    assert sorted(tags) == sorted(
        [f"weights/{n}" for n in picked] + [f"weights_qerror/{n}" for n in picked]
    )
    for tag in tags:  # step 0 (the initial weights), every 5 steps, and the last
        assert [e.step for e in mux.Histograms("run/tensorboard", tag)] == [0, 5, 10, 12]
    final = torch.load(run["dir"] / "checkpoint.pt", weights_only=True)["parts"]["model"]
    for name in picked:
        w = final[f"{name}.weight"].double()
        (h,) = [e.histogram_value for e in mux.Histograms("run/tensorboard", f"weights/{name}")
                if e.step == 12]  # fmt: skip
        assert h.num == w.numel()
        assert (h.min, h.max) == (float(w.min()), float(w.max()))
        assert h.sum == pytest.approx(float(w.sum()), rel=1e-9, abs=1e-9)
        assert h.sum_squares == pytest.approx(float((w * w).sum()), rel=1e-9)
        (e,) = [e.histogram_value for e in mux.Histograms("run/tensorboard",
                f"weights_qerror/{name}") if e.step == 12]  # fmt: skip
        # MXFP8 E4M3 keeps 3 mantissa bits: stochastic rounding moves a value by less than
        # one ulp, at most |w| / 8; an error of zero everywhere means nothing was cast
        assert e.num == w.numel() and e.sum_squares > 0
        assert max(-e.min, e.max) <= float(w.abs().max()) / 8


def test_hparams_session_holds_the_policy_and_the_final_metrics(run: dict[str, Any]) -> None:
    mux, s = run["mux"], run["summary"]
    info = start_info(mux, "run/tensorboard/hparams")
    want = {
        "task": "image", "model": "mlp", "data": "digits", "format": s.format,
        "numerics.format": "fp8_e4m3", "numerics.rounding": "nearest_even",
        "numerics.weights": "mxfp8_e4m3-sr", "numerics.activations": "fp8_e4m3",
        "numerics.errors": "fp8_e4m3", "numerics.grads": "fp8_e4m3",
        "numerics.optimizer_state": "fp8_e4m3", "numerics.communication": "fp8_e4m3",
        "numerics.master_weights": "true", "numerics.update_rounding": "nearest_even",
        "numerics.update_method": "round", "numerics.loss_scale": "none",
        "train.optimizer": "sgd", "train.batch_size": 32.0, "train.base_batch_size": 32.0,
        "train.lr": 0.05, "train.lr_scaling": "linear", "large_batch.rule": "none",
        "train.steps": 12.0, "train.seed": 0.0, "status": "completed",
    }  # fmt: skip
    assert {k: hparam(info, k) for k in info.hparams} == want
    assert s.format == "fp8_e4m3-w:mxfp8_e4m3-sr"
    tags = mux.PluginRunToTagToContent("hparams")["run/tensorboard/hparams"]
    assert "_hparams_/experiment" not in tags  # the plugin builds the table from all sessions
    assert "_hparams_/session_end_info" in tags
    # the session's own scalars: the final metrics and nothing else, so they are the columns
    assert sorted(mux.Runs()["run/tensorboard/hparams"]["scalars"]) == [
        "eval/accuracy",
        "eval/loss",
    ]
    for name, value in s.metrics.items():
        assert scalars(mux, "run/tensorboard/hparams", f"eval/{name}") == [(12, tb_value(value))]


# --- the HParams dashboard, as the real server answers it ---------------------------------------
def _serve(logdir: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [str(TENSORBOARD_CLI), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", "0",
         "--load_fast", "false", "--reload_interval", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if m := re.search(r"(http://127\.0\.0\.1:\d+/)", line):
            return proc, m.group(1)
    proc.kill()
    raise AssertionError("tensorboard did not start")


def _post(url: str, route: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(
        f"{url}data/plugin/hparams/{route}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-XSRF-Protected": "1"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _session(run_dir: Path, task: str, metrics: dict[str, float], steps: int) -> None:
    """What a run of ``task`` leaves: per-step scalars (telemetry too) and its session."""
    lg = make_tensorboard_logger(run_dir / "tensorboard", {"task": task, "train.seed": 0.0})
    assert isinstance(lg, TensorBoardLogger)
    lg.log({"train/loss": 1.0, "numerics/fc/weights/sqnr_db": math.inf}, steps)
    lg.log({f"eval/{k}": v for k, v in metrics.items()}, steps)
    lg.summary({"status": "completed", "metrics": metrics, "steps": steps})
    lg.finish("completed")


def test_the_hparams_dashboard_lists_every_run_with_every_task_s_metrics(tmp_path: Path) -> None:
    """Two runs of two tasks: one row each, a column for each task's final metrics and none
    for the per-step tags (telemetry included)."""
    sweep = tmp_path / "sweep"
    _session(sweep / "a", "image", {"accuracy": 0.5, "loss": 1.25}, 12)
    _session(sweep / "b", "recsys", {"auc": 0.75, "logloss": 0.5}, 20)
    proc, url = _serve(sweep)
    try:
        deadline = time.monotonic() + 60
        while True:
            exp = _post(url, "experiment", {"experimentName": ""})
            if exp.get("hparamInfos") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        groups = _post(url, "session_groups", {
            "experimentName": "", "startIndex": 0, "sliceSize": 100,
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                                "STATUS_RUNNING"],
        })["sessionGroups"]  # fmt: skip
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert sorted(h["name"] for h in exp["hparamInfos"]) == ["status", "task", "train.seed"]
    assert sorted(m["name"]["tag"] for m in exp["metricInfos"]) == [
        "eval/accuracy", "eval/auc", "eval/logloss", "eval/loss",
    ]  # fmt: skip
    rows = {g["name"]: g for g in groups}
    assert sorted(rows) == ["a/tensorboard/hparams", "b/tensorboard/hparams"]
    b = rows["b/tensorboard/hparams"]
    assert b["hparams"] == {"task": "recsys", "train.seed": 0.0, "status": "completed"}
    assert {m["name"]["tag"]: (m["value"], m["trainingStep"]) for m in b["metricValues"]} == {
        "eval/auc": (0.75, 20),
        "eval/logloss": (0.5, 20),
    }


# --- resume, composition, failures -----------------------------------------------------------
def test_a_resumed_run_logs_each_step_once(tmp_path: Path) -> None:
    """A run that dies after step 10 with its checkpoint at 8 is resumed from 8: what the
    first attempt logged past 8 is purged, so step 9 is there once, with the new value."""

    def crash(step: int) -> None:
        if step == 9:
            raise RuntimeError("simulated crash")

    r = make({"telemetry_every": 0, "histogram_every": 0}, checkpoint_every=4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(r, tmp_path / "run", hooks=[crash])
    rd = RunDir(tmp_path / "run")
    rd.summary.rename(tmp_path / "run" / "summary.failed.json")  # as a sweep's --resume does
    s = train(r, tmp_path / "run", resume=True)
    assert s.status == "completed" and s.resumes == 1
    mux = read(tmp_path)
    got = scalars(mux, "run/tensorboard", "train/loss")
    want = [
        (x["step"], tb_value(x["value"]))
        for x in rd.read_metrics()
        if x["split"] == "train" and x["name"] == "loss"
    ]
    assert got == want and [step for step, _ in got] == [3, 6, 9, 12]


def test_turning_tensorboard_on_continues_the_same_run(tmp_path: Path) -> None:
    """The TensorBoard keys only add files: a run interrupted with TensorBoard off resumes
    with it on (another change is still refused), under the same run id."""
    from numerics.sweeps import spec

    def stop(step: int) -> None:
        if step == 4:
            raise KeyboardInterrupt

    quiet = {"telemetry_every": 0, "histogram_every": 0}
    off, on = make({"tensorboard": False, **quiet}), make(quiet)
    assert spec.run_id(off) == spec.run_id(on) != spec.run_id(make({"every": 4, **quiet}))
    with pytest.raises(KeyboardInterrupt):
        train(off, tmp_path / "run", hooks=[stop])
    s = train(on, tmp_path / "run", resume=True)
    assert s.status == "completed" and s.resumes == 1
    assert recipes.load(tmp_path / "run" / "config.yaml") == on
    got = scalars(read(tmp_path), "run/tensorboard", "train/loss")
    assert [step for step, _ in got] == [6, 9, 12]  # logged from the resumed step 5 on


def test_wandb_and_tensorboard_both_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    r = make({"wandb": "offline", "telemetry_every": 0, "histogram_every": 0}, steps=6)
    s = train(r, tmp_path / "sweep" / "run")
    assert s.status == "completed" and s.wandb == "offline"
    assert len(list((tmp_path / "sweep" / "run" / "wandb").glob("offline-run-*/*.wandb"))) == 1
    mux = read(tmp_path / "sweep")
    final = (6, tb_value(s.metrics["accuracy"]))
    assert scalars(mux, "run/tensorboard", "eval/accuracy")[-1] == final


def _warnings(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("tensorboard logging:")]


def test_a_writer_that_fails_mid_run_does_not_stop_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from torch.utils.tensorboard import SummaryWriter

    calls = []

    def full_disk(self: Any, tag: str, *args: Any, **kwargs: Any) -> None:
        calls.append(tag)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SummaryWriter, "add_scalar", full_disk)
    s = train(make(steps=6), tmp_path / "run")
    assert s.status == "completed"
    assert RunDir(tmp_path / "run").read_summary() == s
    warns = _warnings(capsys.readouterr().err)
    assert warns == [
        "tensorboard logging: log failed (OSError: [Errno 28] No space left on device); "
        "TensorBoard logging is off for the rest of the run"
    ]
    assert len(calls) == 1  # a no-op after the first failure: no hparams session either
    assert not (tmp_path / "run" / "tensorboard" / "hparams").exists()


def test_no_tensorboard_module_means_one_warning_and_no_logger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    s = train(make({"telemetry_every": 0}, steps=3), tmp_path / "run")
    assert s.status == "completed"
    warns = _warnings(capsys.readouterr().err)
    assert len(warns) == 1 and "cannot import torch.utils.tensorboard" in warns[0]
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_a_log_dir_that_cannot_be_made_gives_a_null_logger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "tensorboard").write_text("a file where the folder should be")
    lg = make_tensorboard_logger(tmp_path / "tensorboard", {})
    assert isinstance(lg, NullLogger)
    warns = _warnings(capsys.readouterr().err)
    assert len(warns) == 1 and "cannot start a writer in" in warns[0]
    FanOutLogger(lg, NullLogger()).finish("completed")


def test_fan_out_calls_every_logger_in_order() -> None:
    seen: list[tuple[str, str]] = []

    class Recorder(NullLogger):
        def __init__(self, name: str) -> None:
            self.name = name

        def log(self, values: dict[str, float], step: int) -> None:
            seen.append((self.name, f"log {step}"))

        def histograms(self, values: Any, step: int) -> None:
            seen.append((self.name, f"histograms {step}"))

        def summary(self, values: dict[str, Any]) -> None:
            seen.append((self.name, "summary"))

        def finish(self, status: str) -> None:
            seen.append((self.name, f"finish {status}"))

    lg = FanOutLogger(Recorder("a"), Recorder("b"))
    lg.log({"x": 1.0}, 3)
    lg.histograms({}, 4)
    lg.summary({})
    lg.finish("completed")
    assert seen == [(n, c) for c in ("log 3", "histograms 4", "summary", "finish completed")
                    for n in ("a", "b")]  # fmt: skip
    with pytest.raises(ValueError, match="status='done'"):
        lg.finish("done")


# --- the pieces ---------------------------------------------------------------------------------
def test_histogram_layers_are_evenly_spaced_first_and_last_included() -> None:
    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(5)], nn.ReLU())
    quantize_model(model, "bf16")
    names = lambda n: [name for name, *_ in histogram_layers(model, n)]  # noqa: E731
    assert names(1) == ["0"]
    assert names(2) == ["0", "4"]
    assert names(3) == ["0", "2", "4"]
    assert names(5) == names(9) == ["0", "1", "2", "3", "4"]


def test_an_exact_weight_cast_has_no_error_histogram() -> None:
    model = quantize_model(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), "fp32")
    assert sorted(weight_histograms(model, 3, step=0)) == ["weights/0", "weights/1"]
    bf16 = quantize_model(nn.Sequential(nn.Linear(4, 4)), "bf16")
    h = weight_histograms(bf16, 3, step=0)
    assert sorted(h) == ["weights/0", "weights_qerror/0"]
    w = bf16[0].weight.detach()
    torch.testing.assert_close(h["weights_qerror/0"], w - w.bfloat16().float(), rtol=0, atol=0)


def test_the_demo_sweep_turns_tensorboard_on() -> None:
    from numerics.sweeps import spec

    root = Path(__file__).resolve().parents[3]
    ex = spec.expand(spec.load_sweep(root / "sweeps" / "demo.yaml"), root / "results")
    assert all(r.config["logging"]["tensorboard"] is True for r in ex.runs)
    assert all(r.config["logging"]["histogram_every"] > 0 for r in ex.runs)
