"""TensorBoard logging (``logging.tensorboard: true``): event files a local TensorBoard reads.

Written with ``torch.utils.tensorboard.SummaryWriter`` (the ``tensorboard`` package's writer),
in two runs per run folder, so that ``tensorboard --logdir results/<sweep>`` shows every run of
the sweep under its run id:

    <run>/tensorboard/          every scalar the trainer logs (train/..., eval/..., the
                                telemetry's numerics/<layer>/<role>/<stat>) and, every
                                ``logging.histogram_every`` steps, the histograms
                                weights/<layer> and weights_qerror/<layer> (w - q(w))
    <run>/tensorboard/hparams/  the HParams session, written once the run has its summary: the
                                hyperparameters (``run_hparams``: the numerics policy flattened
                                into columns), the run's status, and its final metrics as the
                                scalars eval/<metric>

Why not ``SummaryWriter.add_hparams``: besides the session it writes an Experiment summary,
and TensorBoard's HParams plugin takes the columns of the whole logdir from the first
Experiment it finds (``backend_context._find_experiment_tag``): one run's metrics, so a sweep
that mixes tasks would lose the other tasks' columns. Without one the plugin builds the table
from every session, with a column for every scalar tag in a session's run and the runs below
it; that is why the session is a run of its own holding only the final metrics, not the run
of the per-step scalars (with telemetry on, hundreds of tags). The session is the
SessionStartInfo/SessionEndInfo pair of torch's ``hparams()``, the summaries ``add_hparams``
writes. Booleans are written as the strings ``true``/``false``: torch's ``hparams()`` would
turn them into the numbers 1 and 0.

Histograms: the weights of ``logging.histogram_layers`` layers (evenly spaced over the
quantized layers that have weights, first and last included) and, where the layer's weight
cast is not exact, the cast's error ``w - q(w)``: ``q`` is the layer's forward weight cast
(format, rounding, saturation, block axis), made again outside the training step; stochastic
rounding draws from a generator seeded with the step, so the run's own random streams are
untouched. Only finite values are counted.

Like the wandb logger this one never stops a run: an import or start failure prints one
``tensorboard logging:`` line and gives a ``NullLogger``; the first exception after that (a
full disk, a writer thread that died) prints one line and turns the logger into a no-op. On
``--resume`` the writer is opened with ``purge_step`` at the step the run resumes from, so
TensorBoard drops what the interrupted attempt logged past its checkpoint.
"""

from __future__ import annotations

import atexit
import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from numerics.nn.modules import QConv1d, QConv2d, Quantized
from numerics.nn.policy import ROLES, Cast
from numerics.quantize import quantize
from numerics.train.logger import NullLogger, check_status, first_line, warn
from numerics.train.recipe import Recipe

HParam = str | float
SESSION = "hparams"  # the session's run, below the run's tensorboard folder
FLUSH_SECS = 10  # how stale a live TensorBoard may be (torch's default is 120 s)


def _warn(msg: str) -> None:
    warn("tensorboard", msg)


def run_hparams(recipe: Recipe) -> dict[str, HParam]:
    """The HParams columns of a run: what ran, the numerics policy flattened (its label, the
    format and rounding, each role's cast label, master weights, update rounding, loss
    scaling) and the training set-up (optimizer, batch sizes, lr and its scaling rule, the
    large-batch rule, steps, seed), named by their recipe keys."""
    p, t = recipe.numerics, recipe.train
    hp: dict[str, Any] = {
        "task": recipe.task,
        "model": recipe.model["name"],
        "data": recipe.data["name"],
        "format": p.label(),
        "numerics.format": p.format,
        "numerics.rounding": p.rounding.value,
        **{f"numerics.{role}": getattr(p, role).label() for role in ROLES},
        "numerics.master_weights": p.master_weights,
        "numerics.update_rounding": p.update_rounding.value,
        "numerics.update_method": p.update_method,
        "numerics.loss_scale": p.loss_scale.kind,
        "train.optimizer": t.optimizer.value,
        "train.batch_size": t.batch_size,
        "train.base_batch_size": t.base_batch_size,
        "train.lr": t.lr,
        "train.lr_scaling": t.lr_scaling.value,
        "large_batch.rule": recipe.large_batch.rule.value,
        "train.steps": t.steps,
        "train.epochs": t.epochs,
        "train.seed": t.seed,
    }
    return {k: _hparam(v) for k, v in hp.items() if v is not None}


def _hparam(v: Any) -> HParam:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return float(v)
    return str(v)


def histogram_layers(model: nn.Module, n: int) -> list[tuple[str, Tensor, Cast, int]]:
    """``n`` quantized layers with weights, evenly spaced in module order (first and last
    included; all of them when there are no more): (name, weight, weight cast, block axis)."""
    layers = [
        (name or "model", weight, m.numerics.weights, _weight_axis(m))
        for name, m in model.named_modules()
        if isinstance(m, Quantized) and isinstance(weight := getattr(m, "weight", None), Tensor)
    ]
    if len(layers) <= n:
        return layers
    if n == 1:
        return layers[:1]
    return [layers[round(i * (len(layers) - 1) / (n - 1))] for i in range(n)]


def _weight_axis(m: Quantized) -> int:
    # the block axis of the forward weight cast (numerics.nn.modules.functional): input
    # channels for convolutions, the last axis for Linear and the embedding tables' rows
    return 1 if isinstance(m, QConv1d | QConv2d) else -1


@torch.no_grad()
def weight_histograms(model: nn.Module, n_layers: int, step: int) -> dict[str, Tensor]:
    """``weights/<layer>`` and ``weights_qerror/<layer>`` (w - q(w), layers whose weight cast
    is not exact) for the layers ``histogram_layers`` picks; see the module docstring."""
    out: dict[str, Tensor] = {}
    for name, weight, c, axis in histogram_layers(model, n_layers):
        w = weight.detach().float()
        out[f"weights/{name}"] = w
        if not c.is_identity:
            q = quantize(w, c.format, c.rounding, step, axis, c.saturate)  # seed: the step
            out[f"weights_qerror/{name}"] = w - q
    return out


class TensorBoardLogger:
    """A run's TensorBoard writer (``make_tensorboard_logger`` builds it); see the module
    docstring. ``writer`` is None once finished or broken."""

    def __init__(self, writer: Any, path: Path, hparams: Mapping[str, HParam]) -> None:
        self.writer: Any = writer
        self.path = path
        self.hparams = dict(hparams)
        self._finished = False
        atexit.register(self._at_exit)

    def _call(self, what: str, fn: Callable[..., None], *args: Any) -> None:
        if self.writer is None:
            return
        try:
            fn(*args)
        except Exception as exc:  # TensorBoard must never stop the run
            writer, self.writer = self.writer, None
            atexit.unregister(self._at_exit)
            with contextlib.suppress(Exception):
                writer.close()
            _warn(
                f"{what} failed ({first_line(exc)}); TensorBoard logging is off for the rest "
                "of the run"
            )

    def log(self, values: dict[str, float], step: int) -> None:
        self._call("log", self._log, values, step)

    def _log(self, values: dict[str, float], step: int) -> None:
        for tag, v in values.items():
            self.writer.add_scalar(tag, float(v), step)

    def histograms(self, values: Mapping[str, Tensor], step: int) -> None:
        self._call("histograms", self._histograms, values, step)

    def _histograms(self, values: Mapping[str, Tensor], step: int) -> None:
        for tag, t in values.items():
            v = t.detach().float().flatten().cpu()
            v = v[torch.isfinite(v)]
            if v.numel():
                self.writer.add_histogram(tag, v, step)

    def summary(self, values: dict[str, Any]) -> None:
        self._call("hparams", self._session, values)

    def _session(self, values: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        hp = {**self.hparams, "status": str(values.get("status"))}
        metrics = {f"eval/{k}": float(v) for k, v in (values.get("metrics") or {}).items()}
        step = int(values.get("steps") or 0)
        _, start, end = hparams(hp, metrics)  # the Experiment is left out: see the docstring
        with SummaryWriter(log_dir=str(self.path / SESSION)) as w:
            w.file_writer.add_summary(start, step)
            w.file_writer.add_summary(end, step)
            for tag, v in metrics.items():
                w.add_scalar(tag, v, step)

    def finish(self, status: str) -> None:
        check_status(status)
        if self._finished:
            return
        self._finished = True
        atexit.unregister(self._at_exit)
        self._call("close", self._close)
        self.writer = None

    def _close(self) -> None:
        self.writer.close()

    def _at_exit(self) -> None:
        self.finish("failed")


def make_tensorboard_logger(
    log_dir: str | Path, hparams: Mapping[str, HParam], start_step: int = 0
) -> TensorBoardLogger | NullLogger:
    """A writer for ``log_dir`` (``<run>/tensorboard``); ``start_step`` > 0 when the run
    resumes there. Never raises for a TensorBoard problem: one warning and a NullLogger."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception as exc:
        _warn(f"cannot import torch.utils.tensorboard ({first_line(exc)}); not logging to it")
        return NullLogger()
    try:
        writer = SummaryWriter(
            log_dir=str(log_dir), purge_step=start_step or None, flush_secs=FLUSH_SECS
        )
    except Exception as exc:
        _warn(f"cannot start a writer in {log_dir} ({first_line(exc)}); not logging to it")
        return NullLogger()
    return TensorBoardLogger(writer, Path(log_dir), hparams)
