"""One trainer for image, language and recommendation recipes.

``train(recipe, out)`` reads top to bottom as the run does:

1. data and model from the registries, seeded by ``train.seed`` (``torch.manual_seed`` before
   the model is built, so the same seed gives the same initial weights);
2. ``quantize_model`` swaps every Linear/Conv/Embedding/Matmul for its quantized version under
   the recipe's numerics policy; telemetry if ``logging.telemetry_every``; a periodic
   regularizer if the policy has ``numerics.periodic``;
3. in data-parallel runs (``nproc > 1``, see ``numerics.train.launch``) DDP wraps the model and the
   policy's ``communication`` cast is registered as its all-reduce hook;
4. the optimizer (``QuantizedOptimizer``: sgd/adam/adamw with the policy's optimizer-state
   format, master weights or not, SR/Kahan updates; or LARS), the lr scaled by
   ``train.lr_scaling`` from ``base_batch_size`` (Goyal et al., 1706.02677), a warmup from the
   unscaled lr and an optional decay; CowClip (2204.06240) gives embeddings their own lr and L2
   and clips their gradient rows; loss scaling (1710.03740) if the policy has one;
5. the loop: the batch for step ``s`` is a pure function of ``(seed, s)`` (an epoch's
   permutation, or uniform draws for byte windows), so a resumed run sees the batches the
   uninterrupted one would. Each rank takes its slice of the global batch, so ``batch_size``
   is the global batch whatever ``nproc`` is. A non-finite loss (or non-finite gradients with
   no loss scaling to skip them) ends the run with status ``diverged``;
6. evaluation every ``eval_every`` steps and at the end; a periodic run is evaluated before and
   after its weights are hard-rounded to the grid; the summary and the final checkpoint.

The code follows that order: ``_build`` makes a ``_Run`` (steps 1-4), ``_loop`` runs the steps
(``_step`` is one optimizer step), ``_finish`` evaluates and returns the ``RunSummary``.

The checkpoint is the dict of the run's stateful parts, ``{"version", "parts": {name:
part.state_dict()}}``: the model (whose state includes the cached embedding tables' write-back
generators), the caster's SR generators, the optimizer (with its own generators and update
counts), the loss scaler, torch's RNG, the progress (next step, log accumulators, elapsed time,
resumes), and the periodic regularizer's grid and the telemetry totals when the run has them.
A new stateful part implements ``state_dict``/``load_state_dict`` and joins ``_Run.parts``. It
is read with torch's weights-only loader, so a checkpoint file cannot run code.

Ctrl-C (SIGINT) or SIGTERM is noted and acted on at the end of the current step: the checkpoint
is saved and ``KeyboardInterrupt`` propagates; ``--resume`` continues bit for bit (CPU) as if
never stopped. A second Ctrl-C stops at once without saving. An exception writes a ``failed``
summary holding the traceback before it propagates.
"""

from __future__ import annotations

import math
import pickle
import platform
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from numerics.data.base import DATASETS, ArraySplit, Dataset, Sampling, WindowSplit
from numerics.errors import UserError
from numerics.models.base import MODELS
from numerics.nn.embedding_cache import CachedEmbedding
from numerics.nn.largebatch import LARS, WarmupFactor, cowclip_, cowclip_scaling, id_counts
from numerics.nn.largebatch import lr_scale_factor as _lr_scale_factor
from numerics.nn.loss_scale import LossScaler
from numerics.nn.modules import quantize_model
from numerics.nn.optim import QuantizedOptimizer
from numerics.nn.periodic import AmplitudeSchedule, PeriodicRegularizer
from numerics.nn.policy import Policy
from numerics.nn.telemetry import Telemetry
from numerics.provenance import provenance
from numerics.train import tasks
from numerics.train.logger import (
    FanOutLogger,
    Logger,
    NullLogger,
    WandbLogger,
    flatten,
    make_logger,
)
from numerics.train.recipe import OUTPUT_ONLY_LOGGING, Recipe, recipe_label
from numerics.train.rundir import MetricsWriter, RunDir, atomic_torch_save
from numerics.train.summary import RunSummary
from numerics.train.tensorboard_logger import (
    make_tensorboard_logger,
    run_hparams,
    weight_histograms,
)

StepHook = Callable[[int], None]


class RunDirError(UserError):
    """The output folder holds another run, or a run with a different config (bad input:
    the CLI prints it as one line, exit code 2)."""


class CheckpointError(RunDirError):
    """A checkpoint that cannot be resumed: unsafe content, another layout, another run."""


def _v(x: Any) -> Any:
    """An enum's value (recipes keep enums inside), anything else as is."""
    return getattr(x, "value", x)


# --- batches ----------------------------------------------------------------------------------
class BatchSampler:
    """The global batch of step ``s`` as indices into the training split, from ``(seed, s)``."""

    def __init__(self, n: int, batch_size: int, seed: int, sampling: Sampling) -> None:
        if sampling is Sampling.SHUFFLE and n < batch_size:
            raise ValueError(
                f"train.batch_size={batch_size} exceeds the training split ({n} examples)"
            )
        self.n, self.batch_size, self.seed, self.sampling = n, batch_size, seed, sampling
        self.steps_per_epoch = max(1, n // batch_size)
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _gen(self, salt: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 1_000_003 + salt) % (2**63))

    def indices(self, step: int) -> Tensor:
        b = self.batch_size
        if self.sampling is Sampling.RANDOM:
            return torch.randint(self.n, (b,), generator=self._gen(step))
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=self._gen(-1 - epoch))
        return self._perm[i * b : (i + 1) * b]


def total_steps(recipe: Recipe, data: Dataset) -> int:
    t = recipe.train
    if t.steps is not None:
        return int(t.steps)
    assert t.epochs is not None
    n = len(data.train)
    if isinstance(data.train, WindowSplit):  # an epoch = every byte predicted once
        per_epoch = n / (t.batch_size * data.train.block_size)
    else:
        per_epoch = n // t.batch_size
    return max(1, math.ceil(float(t.epochs) * per_epoch))


# --- signals ----------------------------------------------------------------------------------
class _StopFlag:
    """SIGINT/SIGTERM set a flag the loop checks at step ends; a second signal stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            self.restore()
            raise KeyboardInterrupt
        self.requested = True

    def install(self) -> None:
        if not _main_thread():
            return
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handler)

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# --- the run ----------------------------------------------------------------------------------
def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _optimizer(
    recipe: Recipe, model: nn.Module, scale: float
) -> tuple[torch.optim.Optimizer, float, list[nn.Embedding]]:
    """The optimizer with each group's target lr, the lr scale factor used for warmup, and
    the embedding tables CowClip clips (empty unless the rule is cowclip)."""
    t, lb = recipe.train, recipe.large_batch
    rule = _v(lb.rule)
    if rule == "lars":
        opt: torch.optim.Optimizer = LARS(
            model.parameters(),
            lr=t.lr * scale,
            momentum=t.momentum,
            weight_decay=t.weight_decay,
            trust_coefficient=lb.trust_coefficient,
        )
        return opt, scale, []
    tables: list[nn.Embedding] = []
    if rule == "cowclip":
        tables = list(getattr(model, "embeddings", []))
        if not all(isinstance(m, nn.Embedding) for m in tables):
            raise ValueError(
                "large_batch.rule=cowclip clips nn.Embedding rows; the model's tables are "
                "cached int8/int4 tables (model.embedding_cache); use one or the other"
            )
        if not tables:
            raise ValueError(
                f"large_batch.rule=cowclip: model {recipe.model['name']!r} has no `embeddings` "
                "tables to clip; CowClip applies to recommendation models"
            )
        base = t.base_batch_size or t.batch_size
        hp = cowclip_scaling(
            t.batch_size,
            base,
            embedding_lr=lb.embedding_lr if lb.embedding_lr is not None else t.lr,
            dense_lr=t.lr,
            embedding_l2=lb.embedding_l2,
            dense_rule=lb.dense_rule,
        )
        emb_ids = {id(m.weight) for m in tables}
        dense = [p for p in model.parameters() if id(p) not in emb_ids]
        groups: list[dict[str, Any]] = [
            {"params": dense, "lr": hp.dense_lr},
            {"params": [m.weight for m in tables], "lr": hp.embedding_lr, "weight_decay": 0.0},
        ]
        scale = hp.dense_lr / t.lr
    else:
        groups = [{"params": list(model.parameters()), "lr": t.lr * scale}]
    opt = QuantizedOptimizer(
        groups,
        _v(t.optimizer),
        model=model,
        lr=t.lr * scale,
        momentum=t.momentum if _v(t.optimizer) == "sgd" else 0.0,
        nesterov=t.nesterov,
        weight_decay=t.weight_decay,
        betas=tuple(t.betas),  # type: ignore[arg-type]
        eps=t.eps,
    )
    return opt, scale, tables


def _periodic(recipe: Recipe, model: nn.Module, steps: int) -> PeriodicRegularizer | None:
    spec = recipe.numerics.periodic
    if spec is None:
        return None
    start, ramp = int(spec.start_fraction * steps), int(spec.ramp_fraction * steps)
    amplitude = AmplitudeSchedule(spec.lambda_max, start=start, ramp_steps=ramp)
    return PeriodicRegularizer.from_spec(model, spec, amplitude=amplitude)


def train(
    recipe: Recipe,
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool | None = None,
    device: str | None = None,
    rank: int = 0,
    world: int = 1,
    hooks: Sequence[StepHook] = (),
) -> RunSummary:
    """Train ``recipe`` into the run directory ``out``; returns the summary.

    ``resume``: continue from ``out``'s checkpoint (start fresh if it has none; return the
    summary unchanged if the run already ended). Without it, a folder that holds a run is
    refused. ``rank``/``world``: set by ``numerics.train.launch`` in data-parallel runs (the process
    group must be initialised). ``hooks`` are called with the step index after every step.
    """
    rd = RunDir(out)
    main = rank == 0
    config = recipe.to_dict()
    done = rd.read_summary()
    if done is not None or rd.checkpoint.exists():
        if not resume:
            raise RunDirError(
                f"{rd.path}: already holds a run ({'summary.json' if done else 'checkpoint.pt'}); "
                "pass --resume to continue it, or --out for a new folder"
            )
        _check_same_config(rd, config)
        if done is not None:
            return done
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if main:
        rd.write_config(config)
    try:
        return _train(recipe, rd, resume, progress, dev, rank, world, hooks)
    except (KeyboardInterrupt, RunDirError):
        raise
    except Exception as exc:
        if main:
            rd.write_summary(RunSummary.failed(exc, traceback.format_exc(), **header(recipe)))
        raise


def header(recipe: Recipe) -> dict[str, Any]:
    """What ran: the summary fields a run has from its recipe alone, failed or not."""
    return {
        "task": recipe.task,
        "recipe": recipe.source,
        "label": recipe_label(recipe),
        "model": recipe.model["name"],
        "data": recipe.data["name"],
        "format": recipe.numerics.label(),
        "numerics": recipe.numerics.to_dict(),
        "seed": recipe.train.seed,
    }


def _check_same_config(rd: RunDir, config: dict[str, Any]) -> None:
    import yaml

    from numerics.files import jsonable

    try:
        old = yaml.safe_load(rd.config.read_text())
    except FileNotFoundError:
        return
    new = jsonable(config)
    for cfg in (old, new):  # a run that only turns TensorBoard on or off is the same run
        if isinstance(cfg, dict) and isinstance(cfg.get("logging"), dict):
            cfg["logging"] = {
                k: v for k, v in cfg["logging"].items() if k not in OUTPUT_ONLY_LOGGING
            }
    if old != new:
        keys = sorted(_diff(old, new))
        raise RunDirError(
            f"{rd.path}: holds a run of a different config (differs at {', '.join(keys)}); "
            "resume with the same recipe and --set values, or use another --out"
        )


def _diff(a: Any, b: Any, prefix: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for k in a.keys() | b.keys():
            out |= _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return set() if a == b else {prefix.rstrip(".")}


# --- the run's stateful parts --------------------------------------------------------------------
class Stateful(Protocol):
    """A part of a run that a checkpoint saves and a resume restores."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class Progress:
    """Where the run is: the next step, the train-log accumulators since the last log line,
    the seconds spent before this process, and how often it was resumed. The batch of a step
    is a pure function of (seed, step), so the next step is the data position."""

    next_step: int = 0
    acc: dict[str, float] = field(default_factory=lambda: {"loss": 0.0, "n": 0, "units": 0})
    elapsed: float = 0.0
    resumes: int = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "next_step": self.next_step,
            "acc": dict(self.acc),
            "elapsed": self.elapsed,
            "resumes": self.resumes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.next_step, self.acc = int(state["next_step"]), dict(state["acc"])
        self.elapsed, self.resumes = float(state["elapsed"]), int(state["resumes"])


class TorchRng:
    """torch's global CPU generator (dropout, and whatever else draws from it)."""

    def state_dict(self) -> dict[str, Any]:
        return {"cpu": torch.get_rng_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["cpu"].cpu())


CHECKPOINT_VERSION = 2


def save_checkpoint(path: Path, parts: dict[str, Stateful]) -> None:
    """``{"version", "parts": {name: part.state_dict()}}``, written atomically."""
    state = {name: part.state_dict() for name, part in parts.items()}
    atomic_torch_save(path, {"version": CHECKPOINT_VERSION, "parts": state})


def read_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """The parts saved in ``path`` (name -> state). The file is read with torch's weights-only
    loader (tensors and plain data only), so a checkpoint someone else wrote cannot run code."""
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused: it holds objects other than tensors and plain data, and "
            f"checkpoints are loaded weights-only so that loading never runs code ({exc})"
        ) from None
    if not isinstance(ck, dict) or ck.get("version") != CHECKPOINT_VERSION:
        version = ck.get("version", 1) if isinstance(ck, dict) else "?"
        raise CheckpointError(
            f"{path}: checkpoint layout version {version}, this numerics reads version "
            f"{CHECKPOINT_VERSION}; finish the run with the numerics that started it, or "
            "delete checkpoint.pt to run it again from the start"
        )
    parts: dict[str, Any] = ck["parts"]
    return parts


def load_checkpoint(path: Path, parts: dict[str, Stateful], device: torch.device) -> None:
    """Restore every part from ``path`` (``read_checkpoint``); the parts must be the run's."""
    saved = read_checkpoint(path, device)
    if set(saved) != set(parts):
        raise CheckpointError(
            f"{path}: holds parts {sorted(saved)}, the run has {sorted(parts)}; it is not "
            "this run's checkpoint"
        )
    for name, part in parts.items():
        part.load_state_dict(saved[name])


# --- building a run ------------------------------------------------------------------------------
@dataclass
class _Run:
    """Everything one training run holds: built by ``_build``, stepped by ``_loop``."""

    recipe: Recipe
    task: tasks.Task
    data: Dataset
    model: nn.Module
    net: nn.Module  # the model, or its DDP wrapper
    opt: torch.optim.Optimizer
    target_lrs: list[float]
    schedule: WarmupFactor
    scaler: LossScaler
    reg: PeriodicRegularizer | None
    telemetry: Telemetry | None
    cached: list[CachedEmbedding]
    tables: list[nn.Embedding]  # the tables CowClip clips
    emb_l2: float
    sampler: BatchSampler
    steps: int
    lr_scale: float
    n_params: int
    references: dict[str, float | int]
    device: torch.device
    rank: int
    world: int
    progress: Progress = field(default_factory=Progress)

    def parts(self) -> dict[str, Stateful]:
        """The checkpoint's parts. The model's state holds the cached tables' generators."""
        caster = self.model.numerics_caster
        parts: dict[str, Stateful] = {
            "model": self.model,
            "caster": caster,  # type: ignore[dict-item]
            "optimizer": self.opt,
            "loss_scale": self.scaler,
            "rng": TorchRng(),
            "progress": self.progress,
        }
        if self.reg is not None:
            parts["periodic"] = self.reg
        if self.telemetry is not None:
            parts["telemetry"] = self.telemetry
        return parts


def data_and_model(recipe: Recipe) -> tuple[Dataset, nn.Module]:
    """The recipe's dataset and its model in fp32, before ``quantize_model``: seeded by
    ``train.seed`` (``torch.manual_seed`` first, so a seed gives the same initial weights)."""
    seed = recipe.train.seed
    torch.manual_seed(seed)
    data_opts = {k: v for k, v in recipe.data.items() if k != "name"}
    data: Dataset = DATASETS.get(recipe.data["name"])(seed=seed, **data_opts)
    model_opts = {k: v for k, v in recipe.model.items() if k != "name"}
    return data, MODELS.get(recipe.model["name"])(data.info, **model_opts)


def run_policy(recipe: Recipe) -> Policy:
    """The recipe's numerics policy with its SR streams seeded from numerics.seed and
    train.seed, so two seeds of one recipe draw different bits."""
    return replace(recipe.numerics, seed=recipe.numerics.seed * 1_000_003 + recipe.train.seed)


def _build(recipe: Recipe, device: torch.device, rank: int, world: int) -> _Run:
    t, log = recipe.train, recipe.logging
    task = tasks.get(recipe.task)
    if t.batch_size % world:
        raise ValueError(f"train.batch_size={t.batch_size} must be divisible by nproc={world}")

    # 1. data and model
    data, model = data_and_model(recipe)
    n_params = sum(p.numel() for p in model.parameters())
    # reference values that depend on the validation slice (the language n-gram's bits)
    references: dict[str, float | int] = {}
    if rank == 0 and task.reference is not None:
        references = task.reference(data, t.eval_batch_size, t.max_eval_batches)

    # 2. numerics: SR streams seeded from numerics.seed and train.seed
    policy = run_policy(recipe)
    telemetry = Telemetry(log.telemetry_every) if log.telemetry_every else None
    model = quantize_model(model, policy, telemetry=telemetry).to(device)
    steps = total_steps(recipe, data)
    reg = _periodic(recipe, model, steps)

    # 3. data parallel
    net: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        from numerics.nn import comm

        ddp = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
        comm.register(ddp, policy)
        net = ddp

    # 4. optimizer, schedule, loss scaling
    base_b = t.base_batch_size or t.batch_size
    scale = _lr_scale_factor(t.batch_size, base_b, _v(t.lr_scaling))
    opt, scale, tables = _optimizer(recipe, model, scale)
    start_factor = t.warmup_start_factor
    if start_factor is None:
        start_factor = min(1.0, 1.0 / scale) if t.warmup else 1.0
    schedule = WarmupFactor(
        t.warmup,
        max(steps, t.warmup),
        start_factor,
        recipe.train.decay,
        tuple(t.milestones),
        t.gamma,
        t.final_factor,
    )
    return _Run(
        recipe=recipe,
        task=task,
        data=data,
        model=model,
        net=net,
        opt=opt,
        target_lrs=[g["lr"] for g in opt.param_groups],
        schedule=schedule,
        scaler=LossScaler(policy.loss_scale),
        reg=reg,
        telemetry=telemetry,
        cached=[m for m in model.modules() if isinstance(m, CachedEmbedding)],
        tables=tables,
        emb_l2=recipe.large_batch.embedding_l2 * t.batch_size / base_b if tables else 0.0,
        sampler=BatchSampler(len(data.train), t.batch_size, t.seed, data.sampling),
        steps=steps,
        lr_scale=scale,
        n_params=n_params,
        references=references,
        device=device,
        rank=rank,
        world=world,
    )


# --- training ------------------------------------------------------------------------------------
def _train(
    recipe: Recipe,
    rd: RunDir,
    resume: bool,
    progress: bool | None,
    device: torch.device,
    rank: int,
    world: int,
    hooks: Sequence[StepHook],
) -> RunSummary:
    wall0 = time.perf_counter()
    run = _build(recipe, device, rank, world)
    main = rank == 0
    if resume and rd.checkpoint.exists():
        load_checkpoint(rd.checkpoint, run.parts(), device)
        run.progress.resumes += 1
        if main:
            rd.truncate_metrics(run.progress.next_step)

    def checkpoint(next_step: int) -> None:
        if main:
            p = run.progress
            elapsed = p.elapsed + time.perf_counter() - wall0
            saved = Progress(next_step, dict(p.acc), elapsed, p.resumes)
            save_checkpoint(rd.checkpoint, {**run.parts(), "progress": saved})

    sink = _Sink(rd, recipe, main, run.progress.next_step)
    show = (recipe.logging.progress if progress is None else progress) and main
    bar = tqdm(
        total=run.steps, initial=run.progress.next_step, disable=not show, unit="step",
        dynamic_ncols=True, desc=recipe_label(recipe), mininterval=0.5, file=sys.stderr,
    )  # fmt: skip
    status, reason, steps_done = _loop(run, sink, bar, checkpoint, hooks, rd)
    summary = _finish(run, sink, checkpoint, status, reason, steps_done)
    summary.wall_s = round(run.progress.elapsed + time.perf_counter() - wall0, 3)
    if main:
        summary.wandb = sink.wandb.mode
        rd.write_summary(summary)
    sink.close(summary)
    return summary


def _loop(
    run: _Run,
    sink: _Sink,
    bar: Any,
    checkpoint: Callable[[int], None],
    hooks: Sequence[StepHook],
    rd: RunDir,
) -> tuple[str, str | None, int]:
    """The step loop: (status, why it stopped early, the steps done). Ctrl-C or SIGTERM
    saves the checkpoint at the end of the current step and re-raises KeyboardInterrupt."""
    t, log, acc = run.recipe.train, run.recipe.logging, run.progress.acc
    main, rate = run.rank == 0, f"{run.task.unit}_per_s"
    stop = _StopFlag()
    stop.install()
    status, reason = "completed", None
    step = start = run.progress.next_step
    t_log = time.perf_counter()
    in_step = False
    if start == 0:
        sink.histograms(0, run.model)  # the initial weights
    try:
        run.model.train()
        for step in range(start, run.steps):
            in_step = True
            outcome = _step(run, sink, step, stop.requested)
            if isinstance(outcome, str):
                status, reason = "diverged", outcome
                break
            loss_v, units, stop_now = outcome
            acc["loss"] += loss_v
            acc["n"] += 1
            acc["units"] += units
            in_step = False
            last = step == run.steps - 1
            if main and ((step + 1) % log.every == 0 or last):
                now = time.perf_counter()
                rec = {
                    "loss": acc["loss"] / acc["n"],
                    "lr": run.opt.param_groups[0]["lr"],
                    rate: acc["units"] / max(now - t_log, 1e-9),
                }
                if run.scaler.enabled:
                    rec["loss_scale"] = run.scaler.scale_value
                sink.emit(step + 1, "train", rec)
                bar.set_postfix(
                    {"loss": f"{rec['loss']:.4f}", f"{run.task.unit}/s": f"{rec[rate]:.0f}"}
                )
                acc.update(loss=0.0, n=0, units=0)
                t_log = now
            if t.eval_every and (step + 1) % t.eval_every == 0 and not last and main:
                sink.emit(step + 1, "eval", _evaluate(run))
            if log.histogram_every and ((step + 1) % log.histogram_every == 0 or last):
                sink.histograms(step + 1, run.model)
            if t.checkpoint_every and (step + 1) % t.checkpoint_every == 0 and not last:
                checkpoint(step + 1)
            bar.update(1)
            for hook in hooks:
                hook(step)
            if stop_now:
                raise KeyboardInterrupt
        else:
            step = run.steps
    except KeyboardInterrupt:
        if not in_step:
            checkpoint(step + 1)
            if main:
                print(
                    f"\ninterrupted after step {step + 1} of {run.steps}; checkpoint saved in "
                    f"{rd.path}; continue with --resume",
                    file=sys.stderr,
                )
        sink.finish("interrupted")
        raise
    except Exception:
        sink.finish("failed")
        raise
    finally:
        stop.restore()
        bar.close()
    return status, reason, step  # step == steps when completed, the failing step's otherwise


def _step(run: _Run, sink: _Sink, step: int, stop_requested: bool) -> tuple[float, int, bool] | str:
    """One optimizer step: (the mean loss over ranks, the units it trained on, whether a rank
    asked to stop), or why the run diverged."""
    t, opt, scaler, reg = run.recipe.train, run.opt, run.scaler, run.reg
    factor = run.schedule(step)
    for g, lr in zip(opt.param_groups, run.target_lrs, strict=True):
        g["lr"] = lr * factor
    if run.telemetry is not None:
        run.telemetry.begin_step(step)
    idx = run.sampler.indices(step)
    local_b = t.batch_size // run.world
    rows = idx[run.rank * local_b : (run.rank + 1) * local_b]
    batch = {k: v.to(run.device, non_blocking=True) for k, v in run.data.train.batch(rows).items()}
    loss = run.task.loss(run.net, batch)
    # one all-reduce carries the loss and the stop flag, so all ranks act alike
    shared = torch.stack([loss.detach().float().cpu(), torch.tensor(float(stop_requested))])
    if run.world > 1:
        shared = shared.to(run.device)
        dist.all_reduce(shared)
        shared = shared.cpu() / torch.tensor([run.world, 1.0])
    loss_v, stop_now = float(shared[0]), bool(shared[1] > 0)
    if not math.isfinite(loss_v):
        return f"loss {loss_v} at step {step}"
    total = loss + reg.penalty(step) if reg is not None else loss
    opt.zero_grad(set_to_none=True)
    scaler.scale(total).backward()
    finite = scaler.unscale_(opt)
    if not finite and not scaler.enabled:
        return f"non-finite gradients at step {step}"
    if finite and run.tables:
        _cowclip(run.tables, idx, run.data, run.recipe.large_batch, run.emb_l2)
    if finite and t.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), t.grad_clip)
    if finite:
        opt.step()
        for m in run.cached:  # int8/int4 rows outside the fp32 cache: SGD, SR write-back
            m.step(opt.param_groups[0]["lr"])
    scaler.update(finite)
    if run.telemetry is not None and run.telemetry.active:
        sink.emit(step + 1, "telemetry", run.telemetry.flush())
    return loss_v, run.task.units(batch) * run.world, stop_now


def _evaluate(run: _Run) -> dict[str, float]:
    was = run.model.training
    run.model.eval()
    try:
        t = run.recipe.train
        test = run.data.test
        return run.task.evaluate(run.model, test, t.eval_batch_size, t.max_eval_batches, run.device)
    finally:
        run.model.train(was)


def _finish(
    run: _Run,
    sink: _Sink,
    checkpoint: Callable[[int], None],
    status: str,
    reason: str | None,
    steps_done: int,
) -> RunSummary:
    """The final evaluation (before and after hardening, for a periodic run), the final
    checkpoint, and the summary (its wall time and logger mode are the caller's)."""
    recipe, t, main = run.recipe, run.recipe.train, run.rank == 0
    final: dict[str, float] = {}
    extra: dict[str, Any] = {}
    if main:
        try:
            final = _evaluate(run)
        except Exception as exc:  # a diverged model may not even evaluate
            if status == "completed":
                raise
            extra["eval_error"] = f"{type(exc).__name__}: {exc}"
        if run.reg is not None and status == "completed":
            extra["metrics_before_hardening"] = final
            distance = run.reg.distance()  # mean |w - nearest level| / step, before rounding
            report = run.reg.harden_()
            extra["hardening"] = {
                "bits": report.bits,
                "max_change_steps": report.max_change_steps,
                "mean_distance_steps": distance,
            }
            final = _evaluate(run)
        sink.emit(steps_done, "eval", final)
    checkpoint(steps_done if status != "completed" else run.steps)
    emb_bytes = _embedding_bytes(run.model)
    return RunSummary(
        status=status,  # type: ignore[arg-type]
        **header(recipe),
        metrics=final,
        primary_metric=run.task.primary,
        steps=steps_done,
        total_steps=run.steps,
        batch_size=t.batch_size,
        lr=t.lr * run.lr_scale,
        peak_memory_mb=round(_peak_memory_mb(run.device), 1),
        parameters=run.n_params,
        device=str(run.device),
        nproc=run.world,
        resumes=run.progress.resumes,
        skipped_steps=run.scaler.skipped,
        cancelled_update_fraction=getattr(run.opt, "cancelled_fraction", None),
        telemetry=run.telemetry.totals() if run.telemetry is not None else None,
        embedding_bytes=emb_bytes["total"],
        embedding_bytes_parts=emb_bytes,
        embedding_fraction_of_fp32=emb_bytes["total"] / emb_bytes["fp32_table"]
        if emb_bytes["fp32_table"]
        else None,
        data_info={
            **{k: v for k, v in run.data.info.items() if not isinstance(v, list | dict)},
            **run.references,
        },
        torch=torch.__version__,
        python=platform.python_version(),
        provenance=provenance(run.device),
        reason=reason,
        **extra,
    )


class _Sink:
    """Where metrics go on rank 0: metrics.jsonl, and wandb and TensorBoard when the recipe
    asks for them (``NullLogger``s otherwise, and on other ranks). Telemetry keeps its
    ``numerics/...`` names. ``start_step``: the step the run starts or resumes at."""

    def __init__(self, rd: RunDir, recipe: Recipe, main: bool, start_step: int) -> None:
        self.writer = MetricsWriter(rd.metrics) if main else None
        log = recipe.logging
        self.wandb: WandbLogger | NullLogger = NullLogger()
        tensorboard: Logger = NullLogger()
        self.histogram_layers = 0  # histograms only go to TensorBoard
        if main and log.tensorboard:
            tensorboard = make_tensorboard_logger(
                rd.path / "tensorboard", run_hparams(recipe), start_step
            )
            self.histogram_layers = log.histogram_layers
        if main and _v(log.wandb) != "off":
            self.wandb = make_logger(
                log.wandb,
                project=log.project,
                run_dir=rd.path,
                config=recipe.to_dict(),
                name=rd.path.name,
                group=rd.path.parent.name,  # the sweep's folder
                tags=(recipe.numerics.label(), recipe.task, str(recipe.model["name"])),
                job_type="train",
            )
        self.logger: Logger = FanOutLogger(self.wandb, tensorboard)

    def emit(self, step: int, split: str, values: dict[str, float]) -> None:
        if self.writer is None:
            return
        self.writer.write(step, split, values)
        self.logger.log(values if split == "telemetry" else flatten(split, values), step)

    def histograms(self, step: int, model: nn.Module) -> None:
        if self.histogram_layers:
            self.logger.histograms(weight_histograms(model, self.histogram_layers, step), step)

    def finish(self, status: str) -> None:
        if self.writer is not None:
            self.writer.close()
        self.logger.finish(status)

    def close(self, summary: RunSummary) -> None:
        if self.writer is not None:
            self.logger.summary(summary.to_dict())
        self.finish(summary.status)


def _embedding_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes the model's embedding tables hold, by part: ``total``; for cached tables also the
    ``codes``, ``scales``, ``cache_rows``, ``cache_index`` and ``counters``, and
    ``fp32_table``, what the same tables take in fp32 (plain tables count there too)."""
    parts: dict[str, int] = {"total": 0, "fp32_table": 0}
    for m in model.modules():
        if isinstance(m, CachedEmbedding):
            used = m.bytes_used()
            parts["total"] += used.total
            for name in ("codes", "scales", "cache_rows", "cache_index", "counters"):
                parts[name] = parts.get(name, 0) + int(getattr(used, name))
            parts["fp32_table"] += used.fp32_table
        elif isinstance(m, nn.Embedding | nn.EmbeddingBag):
            parts["total"] += m.weight.numel() * m.weight.element_size()
            parts["fp32_table"] += m.weight.numel() * 4
    return parts


def _cowclip(
    tables: list[nn.Embedding],
    global_idx: Tensor,
    data: Dataset,
    lb: Any,
    l2: float,
) -> None:
    """L2 on the tables (scaled with the batch, in the gradient before clipping, as the
    CowClip authors do), then each table's rows clipped by their id counts in the global batch
    (every rank counts the same global batch, so all clip alike)."""
    assert isinstance(data.train, ArraySplit)  # recsys data
    sparse = data.train.tensors["sparse"][global_idx]  # (B_global, tables): the ids only
    with torch.no_grad():
        for i, m in enumerate(tables):
            g = m.weight.grad
            if g is None:
                continue
            if l2:
                g.add_(m.weight, alpha=2.0 * l2)
            counts = id_counts(sparse[:, i], m.num_embeddings)
            cowclip_(m.weight, g, counts, lb.r, lb.zeta, clip_absent=lb.clip_absent)
