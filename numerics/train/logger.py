"""Experiment loggers: one small interface, a do-nothing one, a Weights & Biases one, and one
that fans out to several (wandb and TensorBoard, ``numerics.train.tensorboard_logger``, can
both be on).

As in nanoGPT, the training loop calls the logger unconditionally and the choice of logger is
made once, at the start: ``make_logger("off", ...)`` gives a ``NullLogger`` whose methods do
nothing, so logging needs no ``if`` in the loop. The interface (``Logger``):

    log({"train/loss": 0.31, "eval/accuracy": 0.9}, step)   flat names, steps never decrease
    histograms({"weights/fc1": tensor}, step)   value distributions (TensorBoard only)
    summary({"status": ..., "metrics": {...}, "format": ...})  the run's final summary
    finish(status)     completed | diverged | failed | interrupted; idempotent

A wandb logger (``WandbLogger`` or ``NullLogger``, from ``make_logger``) also says where its
run went: ``run_path``, the local wandb run folder (None for NullLogger), and ``mode``.

``flatten("train", {"loss": 1.0})`` gives ``{"train/loss": 1.0}``, the names wandb groups into
panels by their prefix.

The wandb logger is built so that wandb can never stop or crash a training run. What wandb 0.31
does when left to itself (measured): with no API key and no ``WANDB_MODE``, ``wandb.init`` raises
at once when not on a terminal but waits forever at a login prompt on one; with a key and no
network it fails only after ``init_timeout`` (default 90 s, plus retries); and a process killed
before ``finish`` loses the unflushed tail of the run file. So ``make_logger``:

- asks for ``online`` only when credentials exist (``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE``
  or a netrc entry for the wandb host, read with the ``netrc`` module), otherwise downgrades to
  ``offline`` with one warning line, so wandb never reaches its login prompt (offline runs skip
  login altogether);
- always passes an explicit ``mode`` and ``Settings(init_timeout=..., silent=True,
  console="off")``: a dead network costs ``init_timeout`` seconds, then the run goes on offline;
  if offline fails too, it goes on with a ``NullLogger``;
- wraps every later call: the first exception inside wandb becomes one warning line and the
  logger turns into a no-op;
- finishes the run from an ``atexit`` hook (status ``failed``) if the process exits without
  calling ``finish``, so the tail of the run file is flushed. SIGINT/SIGTERM are the trainer's:
  it stops at a step end and calls ``finish("interrupted")``.

The run files go to ``<run_dir>/wandb/offline-run-*`` (``run-*`` online); upload offline runs
later with ``wandb sync <run_dir>/wandb/offline-run-*``. ``wandb`` is imported only when a wandb
logger is asked for: importing it takes about a second.
"""

from __future__ import annotations

import atexit
import netrc
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from numerics.enums import parse_enum
from numerics.train.recipe import Wandb

if TYPE_CHECKING:
    from torch import Tensor

# finish(status) -> the wandb exit code: 0 marks the wandb run "finished", 1 "failed". A diverged
# run ran to its own conclusion (summary.status says "diverged"), so it is not a wandb failure.
EXIT_CODES = {"completed": 0, "diverged": 0, "failed": 1, "interrupted": 1}
DEFAULT_HOST = "https://api.wandb.ai"
_PROJECT_FORBIDDEN = "/\\#?%:"  # wandb rejects project names with these (and > 128 chars)
_MAX_TAG = 64  # wandb rejects tags longer than this


class Logger(Protocol):
    """What the trainer logs through; see the module docstring."""

    def log(self, values: dict[str, float], step: int) -> None: ...

    def histograms(self, values: Mapping[str, Tensor], step: int) -> None: ...

    def summary(self, values: dict[str, Any]) -> None: ...

    def finish(self, status: str) -> None: ...


def flatten(split: str, values: Mapping[str, float]) -> dict[str, float]:
    """``{"loss": 1.0}`` under split ``train`` -> ``{"train/loss": 1.0}``."""
    return {f"{split}/{k}": float(v) for k, v in values.items()}


def check_status(status: str) -> int:
    """The wandb exit code of a run status; ValueError for a status that is not one."""
    if status not in EXIT_CODES:
        raise ValueError(f"status={status!r}; allowed: {', '.join(EXIT_CODES)}")
    return EXIT_CODES[status]


def warn(backend: str, msg: str) -> None:
    """The one line a logging backend prints when it gives up on something."""
    print(f"{backend} logging: {msg}", file=sys.stderr, flush=True)


def _warn(msg: str) -> None:
    warn("wandb", msg)


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message``, for a one-line warning."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


class NullLogger:
    """Logs nothing; every method returns at once."""

    run_path: str | None = None
    mode = "off"

    def log(self, values: dict[str, float], step: int) -> None:
        pass

    def histograms(self, values: Mapping[str, Tensor], step: int) -> None:
        pass

    def summary(self, values: dict[str, Any]) -> None:
        pass

    def finish(self, status: str) -> None:
        check_status(status)


class FanOutLogger:
    """Every call goes to each of ``loggers`` in turn (each one is failure-proof itself)."""

    def __init__(self, *loggers: Logger) -> None:
        self.loggers = loggers

    def log(self, values: dict[str, float], step: int) -> None:
        for lg in self.loggers:
            lg.log(values, step)

    def histograms(self, values: Mapping[str, Tensor], step: int) -> None:
        for lg in self.loggers:
            lg.histograms(values, step)

    def summary(self, values: dict[str, Any]) -> None:
        for lg in self.loggers:
            lg.summary(values)

    def finish(self, status: str) -> None:
        check_status(status)
        for lg in self.loggers:
            lg.finish(status)


class WandbLogger:
    """A started wandb run (``make_logger`` builds it). Any exception inside wandb turns it into a
    no-op after one warning line; ``finish`` runs at most once, from the trainer or at exit."""

    def __init__(self, run: Any, mode: str) -> None:
        self.run: Any = run  # the wandb Run; None once finished or broken
        self.mode = mode
        self.run_path: str | None = str(run.settings.sync_dir)
        self._finished = False
        atexit.register(self._at_exit)

    def _call(self, what: str, fn: Callable[..., None], *args: Any) -> None:
        if self.run is None:
            return
        try:
            fn(*args)
        except Exception as exc:  # wandb must never stop the run
            self.run = None
            atexit.unregister(self._at_exit)
            _warn(
                f"{what} failed ({first_line(exc)}); wandb logging is off for the rest of the run"
            )

    def log(self, values: dict[str, float], step: int) -> None:
        self._call("log", self._log, values, step)

    def _log(self, values: dict[str, float], step: int) -> None:
        self.run.log({k: float(v) for k, v in values.items()}, step=step)

    def histograms(self, values: Mapping[str, Tensor], step: int) -> None:
        pass  # histograms go to TensorBoard only

    def summary(self, values: dict[str, Any]) -> None:
        self._call("summary", self._summary, values)

    def _summary(self, values: dict[str, Any]) -> None:
        self.run.summary.update(dict(values))

    def finish(self, status: str) -> None:
        code = check_status(status)
        if self._finished:
            return
        self._finished = True
        atexit.unregister(self._at_exit)
        self._call("summary", self._summary, {"status": status})
        self._call("finish", self._finish, code)
        self.run = None

    def _finish(self, exit_code: int) -> None:
        self.run.finish(exit_code=exit_code)

    def _at_exit(self) -> None:
        self.finish("failed")


def wandb_credentials() -> str | None:
    """Where wandb would find credentials for its host (``WANDB_BASE_URL``, default
    api.wandb.ai), without importing wandb: the variable's name or the netrc file; else None."""
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        if os.environ.get(var):
            return var
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or DEFAULT_HOST).netloc
    if env := os.environ.get("NETRC"):
        path = Path(env).expanduser()
    else:
        path = Path("~/.netrc").expanduser()
        if not path.exists() and Path("~/_netrc").expanduser().exists():
            path = Path("~/_netrc").expanduser()
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None
    return str(path) if entry is not None and entry[2] else None


def _tags(tags: Sequence[str]) -> list[str]:
    out: list[str] = []
    for t in tags:
        t = str(t).strip()[:_MAX_TAG]
        if t and t not in out:
            out.append(t)
    return out


def make_logger(
    mode: Wandb | str,
    *,
    project: str,
    run_dir: str | Path,
    config: dict[str, Any],
    name: str,
    group: str | None = None,
    tags: Sequence[str] = (),
    job_type: str | None = None,
    init_timeout: float = 20.0,
) -> WandbLogger | NullLogger:
    """The logger for ``logging.wandb`` = ``mode`` (off | offline | online); never raises for a
    wandb problem (see the module docstring), only for bad arguments. ``group`` is the sweep name,
    ``tags`` e.g. the format and task; run files go under ``<run_dir>/wandb``."""
    m = parse_enum(Wandb, mode, "logging.wandb")
    if not project or len(project) > 128 or any(c in project for c in _PROJECT_FORBIDDEN):
        raise ValueError(
            f"logging.project={project!r}; allowed: 1 to 128 characters, none of "
            f"{' '.join(_PROJECT_FORBIDDEN)}"
        )
    if not init_timeout > 0:
        raise ValueError(f"init_timeout={init_timeout!r}; allowed: a number of seconds > 0")
    if m is Wandb.OFF:
        return NullLogger()
    if m is Wandb.ONLINE and wandb_credentials() is None:
        _warn("no wandb credentials (wandb login, WANDB_API_KEY or a netrc entry); logging offline")
        m = Wandb.OFFLINE
    try:
        import wandb
    except Exception as exc:
        _warn(f"cannot import wandb ({first_line(exc)}); not logging to wandb")
        return NullLogger()

    Path(run_dir).mkdir(parents=True, exist_ok=True)

    def start(run_mode: str) -> Any:
        return wandb.init(
            project=project,
            dir=str(run_dir),
            config=dict(config),
            name=name,
            group=group,
            tags=_tags(tags),
            job_type=job_type,
            mode=run_mode,  # type: ignore[arg-type]
            reinit="create_new",  # every logger owns its own run; no global wandb.run
            settings=wandb.Settings(init_timeout=init_timeout, silent=True, console="off"),
        )

    if m is Wandb.ONLINE:
        try:
            run = start("online")
            if not run.offline:  # (offline: chosen at a login prompt wandb showed after all)
                print(f"wandb: logging online to {run.url}", file=sys.stderr, flush=True)
            return WandbLogger(run, "offline" if run.offline else "online")
        except Exception as exc:
            _warn(f"online start failed ({first_line(exc)}); logging offline")
    try:
        run = start("offline")
    except Exception as exc:
        _warn(f"offline start failed ({first_line(exc)}); not logging to wandb")
        return NullLogger()
    logger = WandbLogger(run, "offline")
    print(
        f"wandb: offline run in {logger.run_path}; upload with `wandb sync {logger.run_path}`",
        file=sys.stderr,
        flush=True,
    )
    return logger
