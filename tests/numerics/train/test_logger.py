"""Experiment loggers, for real and offline: runs are read back with wandb's own reader
(``wandb leet inspect``, a separate program), never with numerics code."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from numerics.train.logger import NullLogger, WandbLogger, flatten, make_logger, wandb_credentials

ROOT = Path(__file__).resolve().parents[3]
WANDB_CLI = Path(sys.executable).parent / "wandb"
CLEARED = (
    "WANDB_API_KEY",
    "WANDB_IDENTITY_TOKEN_FILE",
    "WANDB_MODE",
    "WANDB_BASE_URL",
    "WANDB_DIR",
    "WANDB_SILENT",
    "WANDB_PROJECT",
    "WANDB_ENTITY",
)


def _hermetic(mp: pytest.MonkeyPatch, home: Path) -> None:
    """No credentials anywhere (the real ~/.netrc is hidden) and wandb's own files in ``home``."""
    for var in CLEARED:
        mp.delenv(var, raising=False)
    mp.setenv("NETRC", str(home / "no-netrc"))
    for var, sub in (("WANDB_CONFIG_DIR", "cfg"), ("WANDB_CACHE_DIR", "cache")):
        mp.setenv(var, str(home / sub))
    mp.setenv("WANDB_DATA_DIR", str(home / "data"))


@pytest.fixture(scope="module", autouse=True)
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("wandb-home")
    with pytest.MonkeyPatch.context() as mp:
        _hermetic(mp, home)
        yield home


def _inspect(run_path: str, *args: str) -> str:
    out = subprocess.run(
        [str(WANDB_CLI), "leet", "inspect", *args, run_path],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return out.stdout


def _read_run(run_path: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(summary object, records) of a run folder, as wandb's reader sees them."""
    summary = json.loads(_inspect(run_path, "--summary", "--json"))
    records = [json.loads(line) for line in _inspect(run_path, "--json").splitlines() if line]
    return summary, records


def _history(records: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {
        r["history"]["step"].get("num", 0): r["history"]["item"]
        for r in records
        if r["type"] == "history"
    }


def _offline_folders(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


# --- pure helpers -----------------------------------------------------------------------------
def test_flatten_prefixes_names_with_the_split() -> None:
    assert flatten("train", {"loss": 1, "lr": 0.5}) == {"train/loss": 1.0, "train/lr": 0.5}
    assert flatten("numerics/fc1", {"weights/sqnr_db": 30.0}) == {
        "numerics/fc1/weights/sqnr_db": 30.0
    }


def test_null_logger_does_nothing(tmp_path: Path) -> None:
    lg = NullLogger()
    lg.log({"train/loss": float("nan")}, 0)
    lg.summary({"status": "completed", "anything": object()})
    for status in ("completed", "diverged", "failed", "interrupted", "completed"):
        lg.finish(status)
    assert lg.run_path is None and lg.mode == "off"
    with pytest.raises(ValueError, match="status='done'; allowed: completed, diverged"):
        lg.finish("done")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "cloud"}, "logging.wandb='cloud'; allowed: off, offline, online"),
        ({"project": "a/b"}, r"logging.project='a/b'; allowed: 1 to 128 characters"),
        ({"project": ""}, "logging.project=''"),
        ({"init_timeout": 0.0}, "init_timeout=0.0; allowed"),
    ],
)
def test_make_logger_rejects_bad_arguments(
    tmp_path: Path, kwargs: dict[str, Any], match: str
) -> None:
    args: dict[str, Any] = {"mode": "off", "project": "p", "init_timeout": 5.0} | kwargs
    with pytest.raises(ValueError, match=match):
        make_logger(args.pop("mode"), run_dir=tmp_path, config={}, name="n", **args)


def test_credentials_come_from_env_or_netrc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert wandb_credentials() is None  # the module's hermetic env
    rc = tmp_path / "netrc"
    rc.write_text("machine example.org login user password secret\n")
    monkeypatch.setenv("NETRC", str(rc))
    assert wandb_credentials() is None  # an entry for another host
    rc.write_text("machine api.wandb.ai login user password k" + "0" * 39 + "\n")
    assert wandb_credentials() == str(rc)
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert wandb_credentials() is None  # a self-hosted server needs its own entry
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_credentials() == "WANDB_API_KEY"


def test_off_never_imports_wandb(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys
        from numerics.train.logger import make_logger
        lg = make_logger("off", project="p", run_dir={str(tmp_path / "run")!r}, config={{}},
                         name="n")
        lg.log({{"train/loss": 1.0}}, 1); lg.summary({{}}); lg.finish("completed")
        print(type(lg).__name__, "wandb" in sys.modules)
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["NullLogger", "False"]
    assert not (tmp_path / "run").exists()


# --- one real offline run, shared -------------------------------------------------------------
LONG_TAG = "t" * 80
LOGGED = [  # (step, values): train and telemetry share step 10 and are merged into one row
    (10, flatten("train", {"loss": 2.5, "lr": 0.1})),
    (10, {"numerics/fc1/weights/sqnr_db": float("inf")}),
    (20, flatten("train", {"loss": 1.25, "lr": 0.05})),
    (20, flatten("eval", {"accuracy": 0.75})),
    (30, flatten("train", {"loss": 0.5, "lr": 0.025})),
]


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """make_logger("online") with no credentials: downgraded to offline, logged, finished."""
    run_dir = tmp_path_factory.mktemp("run")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        lg = make_logger(
            "online",
            project="numerics-test",
            run_dir=run_dir,
            config={"train": {"lr": 0.1}, "seed": 3},
            name="digits-fp8",
            group="sweep-a",
            tags=("fp8_e4m3", "image", LONG_TAG, "image"),
            job_type="train",
        )
        for step, values in LOGGED:
            lg.log(values, step)
        lg.summary({"status": "completed", "format": "fp8_e4m3", "metrics": {"accuracy": 0.75}})
        lg.finish("completed")
        lg.finish("interrupted")  # idempotent: the first status stands
    summary, records = _read_run(str(lg.run_path))
    return {"logger": lg, "run_dir": run_dir, "stderr": err.getvalue(), "summary": summary,
            "records": records}  # fmt: skip


def test_online_without_credentials_downgrades_to_offline(offline_run: dict[str, Any]) -> None:
    lg, run_dir = offline_run["logger"], offline_run["run_dir"]
    warnings = [ln for ln in offline_run["stderr"].splitlines() if ln.startswith("wandb logging:")]
    assert len(warnings) == 1 and "no wandb credentials" in warnings[0], offline_run["stderr"]
    assert isinstance(lg, WandbLogger) and lg.mode == "offline"
    folders = _offline_folders(run_dir)
    assert [str(f) for f in folders] == [lg.run_path]
    assert len(list(folders[0].glob("run-*.wandb"))) == 1
    assert f"wandb sync {lg.run_path}" in offline_run["stderr"]


def test_offline_run_holds_logged_values(offline_run: dict[str, Any]) -> None:
    hist = _history(offline_run["records"])
    assert sorted(hist) == [10, 20, 30]
    expected: dict[int, dict[str, float]] = {}
    for step, values in LOGGED:
        expected.setdefault(step, {}).update(values)
    for step, values in expected.items():
        got = {k: float(v) for k, v in hist[step].items() if not k.startswith("_")}
        assert got == values, step
    assert math.isinf(float(hist[10]["numerics/fc1/weights/sqnr_db"]))


def test_offline_run_holds_summary_config_and_metadata(offline_run: dict[str, Any]) -> None:
    s = offline_run["summary"]
    assert s["state"] == "finished" and s["exit_code"] == 0
    assert s["project"] == "numerics-test" and s["name"] == "digits-fp8"
    assert s["config"]["train"] == {"lr": 0.1} and s["config"]["seed"] == 3
    assert s["tags"] == ["fp8_e4m3", "image", "t" * 64]  # deduplicated, cut to wandb's 64
    summ = s["summary"]
    assert summ["status"] == "completed" and summ["format"] == "fp8_e4m3"
    assert summ["metrics"] == {"accuracy": 0.75}
    assert summ["train/loss"] == 0.5 and summ["eval/accuracy"] == 0.75  # the last logged
    (run,) = [r["run"] for r in offline_run["records"] if r["type"] == "run"]
    assert run["run_group"] == "sweep-a" and run["job_type"] == "train"


# --- failures never reach the caller ----------------------------------------------------------
def _fake_init(monkeypatch: pytest.MonkeyPatch, fail: set[str]) -> list[str]:
    import wandb

    real, modes = wandb.init, []

    def init(**kwargs: Any) -> Any:
        modes.append(kwargs["mode"])
        if kwargs["mode"] in fail:
            raise wandb.errors.CommError(f"simulated {kwargs['mode']} failure\nsecond line")
        return real(**kwargs)

    monkeypatch.setattr(wandb, "init", init)
    return modes


def _warnings(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("wandb logging:")]


def test_online_failure_falls_back_and_a_wandb_error_turns_logging_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)  # credentials: online is tried
    modes = _fake_init(monkeypatch, fail={"online"})
    lg = make_logger("online", project="p", run_dir=tmp_path, config={}, name="n")
    assert modes == ["online", "offline"]
    assert isinstance(lg, WandbLogger) and lg.mode == "offline"
    assert [str(f) for f in _offline_folders(tmp_path)] == [lg.run_path]
    assert _warnings(capsys) == [
        "wandb logging: online start failed (CommError: simulated online failure); logging offline"
    ]
    run = lg.run

    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(run, "log", boom)
    lg.log({"train/loss": 1.0}, 1)  # raises inside wandb: one warning, then a no-op
    lg.log({"train/loss": 2.0}, 2)
    lg.summary({"status": "completed"})
    lg.finish("completed")
    warns = _warnings(capsys)
    assert len(warns) == 1 and "log failed (RuntimeError: disk full)" in warns[0]
    assert lg.run is None
    monkeypatch.undo()
    run.finish()  # the test's own cleanup of the abandoned run


def test_wandb_failing_everywhere_gives_a_null_logger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    modes = _fake_init(monkeypatch, fail={"online", "offline"})
    lg = make_logger("online", project="p", run_dir=tmp_path, config={}, name="n")
    assert modes == ["online", "offline"] and isinstance(lg, NullLogger)
    warns = _warnings(capsys)
    assert len(warns) == 2
    assert "online start failed" in warns[0] and "offline start failed" in warns[1]
    assert "not logging to wandb" in warns[1]
    lg.log({"train/loss": 1.0}, 1)
    lg.finish("failed")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_real_init_timeout_falls_back_and_exit_finishes_the_run(tmp_path: Path) -> None:
    """A key but no server: online init gives up after init_timeout, the run goes on offline.
    The process then exits without finish(): left to itself wandb would close the run as
    "finished" (exit code 0); the logger's atexit hook closes it as failed, tail included."""
    run_dir = tmp_path / "run"
    code = textwrap.dedent(f"""
        from numerics.train.logger import make_logger
        lg = make_logger("online", project="p", run_dir={str(run_dir)!r}, config={{}}, name="n",
                         init_timeout=2.0)
        print(lg.mode, lg.run_path)
        lg.log({{"train/loss": 3.0}}, 1)
        lg.log({{"train/loss": 1.5}}, 2)  # the tail: only written when the run is finished
    """)
    env = dict(os.environ)
    env |= {"WANDB_API_KEY": "k" * 40, "WANDB_BASE_URL": f"http://127.0.0.1:{_closed_port()}"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    mode, run_path = out.stdout.split()
    assert mode == "offline" and Path(run_path).parent == run_dir / "wandb"
    assert Path(run_path).name.startswith("offline-run-")
    warns = [ln for ln in out.stderr.splitlines() if ln.startswith("wandb logging:")]
    assert len(warns) == 1 and "online start failed" in warns[0], out.stderr
    summary, records = _read_run(run_path)
    assert summary["exit_code"] == 1 and summary["state"] == "failed"
    assert summary["summary"]["status"] == "failed"
    hist = _history(records)
    assert hist[1]["train/loss"] == 3.0 and hist[2]["train/loss"] == 1.5
