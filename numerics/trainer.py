"""One trainer for image, language and recommendation recipes.

``train(recipe, out)`` reads top to bottom as the run does:

1. data and model from the registries, seeded by ``train.seed`` (``torch.manual_seed`` before
   the model is built, so the same seed gives the same initial weights);
2. ``quantize_model`` swaps every Linear/Conv/Embedding/Matmul for its quantized version under
   the recipe's numerics policy; telemetry if ``logging.telemetry_every``; a periodic
   regularizer if the format is ``periodic_*``;
3. in data-parallel runs (``nproc > 1``, see ``numerics.launch``) DDP wraps the model and the
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

Ctrl-C (SIGINT) or SIGTERM is noted and acted on at the end of the current step: the checkpoint
is saved and ``KeyboardInterrupt`` propagates; ``--resume`` continues bit for bit (CPU) as if
never stopped. A second Ctrl-C stops at once without saving. An exception writes a ``failed``
summary holding the traceback before it propagates.
"""

from __future__ import annotations

import math
import platform
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from numerics import tasks
from numerics.data.base import DATASETS, ArraySplit, Dataset, Sampling, WindowSplit
from numerics.embedding_cache import CachedEmbedding
from numerics.largebatch import LARS, WarmupFactor, cowclip_, cowclip_scaling, id_counts
from numerics.largebatch import lr_scale_factor as _lr_scale_factor
from numerics.logger import Logger, NullLogger, flatten, make_logger
from numerics.loss_scale import LossScaler
from numerics.models.base import MODELS
from numerics.modules import quantize_model
from numerics.optim import QuantizedOptimizer
from numerics.periodic import AmplitudeSchedule, PeriodicRegularizer
from numerics.recipe import Recipe, recipe_label
from numerics.rundir import MetricsWriter, RunDir, atomic_torch_save
from numerics.telemetry import Telemetry

StepHook = Callable[[int], None]


class RunDirError(RuntimeError):
    """The output folder holds another run, or a run with a different config."""


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


def _evaluate(
    task: tasks.Task, model: nn.Module, data: Dataset, recipe: Recipe, device: torch.device
) -> dict[str, float]:
    was = model.training
    model.eval()
    try:
        t = recipe.train
        return task.evaluate(model, data.test, t.eval_batch_size, t.max_eval_batches, device)
    finally:
        model.train(was)


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
) -> dict[str, Any]:
    """Train ``recipe`` into the run directory ``out``; returns the summary.

    ``resume``: continue from ``out``'s checkpoint (start fresh if it has none; return the
    summary unchanged if the run already ended). Without it, a folder that holds a run is
    refused. ``rank``/``world``: set by ``numerics.launch`` in data-parallel runs (the process
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
            rd.write_summary(
                {
                    "status": "failed",
                    "task": recipe.task,
                    "recipe": recipe.source,
                    "format": recipe.numerics.label(),
                    "seed": recipe.train.seed,
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(),
                }
            )
        raise


def _check_same_config(rd: RunDir, config: dict[str, Any]) -> None:
    import yaml

    from numerics.rundir import jsonable

    try:
        old = yaml.safe_load(rd.config.read_text())
    except FileNotFoundError:
        return
    new = jsonable(config)
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


def _train(
    recipe: Recipe,
    rd: RunDir,
    resume: bool,
    progress: bool | None,
    device: torch.device,
    rank: int,
    world: int,
    hooks: Sequence[StepHook],
) -> dict[str, Any]:
    wall0 = time.perf_counter()
    main = rank == 0
    t, log = recipe.train, recipe.logging
    task = tasks.get(recipe.task)
    if t.batch_size % world:
        raise ValueError(f"train.batch_size={t.batch_size} must be divisible by nproc={world}")
    local_b = t.batch_size // world

    # 1. data and model
    torch.manual_seed(t.seed)
    data_opts = {k: v for k, v in recipe.data.items() if k != "name"}
    data: Dataset = DATASETS.get(recipe.data["name"])(seed=t.seed, **data_opts)
    model_opts = {k: v for k, v in recipe.model.items() if k != "name"}
    model: nn.Module = MODELS.get(recipe.model["name"])(data.info, **model_opts)
    n_params = sum(p.numel() for p in model.parameters())
    # reference values that depend on the validation slice (the language n-gram's bits)
    references: dict[str, float | int] = {}
    if main and task.reference is not None:
        references = task.reference(data, t.eval_batch_size, t.max_eval_batches)

    # 2. numerics: SR streams seeded from numerics.seed and train.seed
    policy = replace(recipe.numerics, seed=recipe.numerics.seed * 1_000_003 + t.seed)
    telemetry = Telemetry(log.telemetry_every) if log.telemetry_every else None
    model = quantize_model(model, policy, telemetry=telemetry).to(device)
    steps = total_steps(recipe, data)
    reg = _periodic(recipe, model, steps)

    # 3. data parallel
    net: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        from numerics import comm

        ddp = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
        comm.register(ddp, policy)
        net = ddp

    # 4. optimizer, schedule, loss scaling
    base_b = t.base_batch_size or t.batch_size
    scale = _lr_scale_factor(t.batch_size, base_b, _v(t.lr_scaling))
    opt, scale, tables = _optimizer(recipe, model, scale)
    target_lrs = [g["lr"] for g in opt.param_groups]
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
    scaler = LossScaler(policy.loss_scale)
    cached = [m for m in model.modules() if isinstance(m, CachedEmbedding)]
    lb = recipe.large_batch
    emb_l2 = 0.0
    if tables:
        emb_l2 = lb.embedding_l2 * t.batch_size / base_b

    # 5. resume
    sampler = BatchSampler(len(data.train), t.batch_size, t.seed, data.sampling)
    start, acc, elapsed, resumes = 0, {"loss": 0.0, "n": 0, "units": 0}, 0.0, 0
    if resume and rd.checkpoint.exists():
        ck = torch.load(rd.checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["loss_scale"])
        model.numerics_caster.load_state_dict(ck["caster"])  # type: ignore[union-attr]
        torch.set_rng_state(ck["torch_rng"])
        for m, (gen, n) in zip(cached, ck.get("cached", []), strict=True):
            m.generator.set_state(gen)
            m.num_steps = n
        if reg is not None and ck.get("periodic") is not None:
            reg._deltas, reg._grid_step = ck["periodic"]
        if telemetry is not None and ck.get("telemetry") is not None:
            telemetry.load_state_dict(ck["telemetry"])
        start, acc, elapsed = ck["next_step"], ck["acc"], ck["elapsed"]
        resumes = ck.get("resumes", 0) + 1
        if main:
            rd.truncate_metrics(start)

    def save_checkpoint(next_step: int) -> None:
        if not main:
            return
        atomic_torch_save(
            rd.checkpoint,
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "loss_scale": scaler.state_dict(),
                "caster": model.numerics_caster.state_dict(),  # type: ignore[union-attr]
                "torch_rng": torch.get_rng_state(),
                "periodic": (reg._deltas, reg._grid_step) if reg is not None else None,
                "telemetry": telemetry.state_dict() if telemetry is not None else None,
                "cached": [(m.generator.get_state(), m.num_steps) for m in cached],
                "next_step": next_step,
                "acc": dict(acc),
                "elapsed": elapsed + time.perf_counter() - wall0,
                "resumes": resumes,
            },
        )

    sink = _Sink(rd, recipe, main)
    show = (log.progress if progress is None else progress) and main
    bar = tqdm(
        total=steps, initial=start, disable=not show, unit="step", dynamic_ncols=True,
        desc=recipe_label(recipe), mininterval=0.5, file=sys.stderr,
    )  # fmt: skip
    stop = _StopFlag()
    stop.install()
    status, reason = "completed", None
    step = start
    t_log = time.perf_counter()
    in_step = False
    rate = f"{task.unit}_per_s"
    try:
        model.train()
        for step in range(start, steps):
            in_step = True
            factor = schedule(step)
            for g, lr in zip(opt.param_groups, target_lrs, strict=True):
                g["lr"] = lr * factor
            if telemetry is not None:
                telemetry.begin_step(step)
            idx = sampler.indices(step)
            batch = {
                k: v.to(device, non_blocking=True)
                for k, v in data.train.batch(idx[rank * local_b : (rank + 1) * local_b]).items()
            }
            loss = task.loss(net, batch)
            # one all-reduce carries the loss and the stop flag, so all ranks act alike
            shared = torch.stack([loss.detach().float().cpu(), torch.tensor(float(stop.requested))])
            if world > 1:
                shared = shared.to(device)
                dist.all_reduce(shared)
                shared = shared.cpu() / torch.tensor([world, 1.0])
            loss_v, stop_now = float(shared[0]), bool(shared[1] > 0)
            if not math.isfinite(loss_v):
                status, reason = "diverged", f"loss {loss_v} at step {step}"
                break
            total = loss + reg.penalty(step) if reg is not None else loss
            opt.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            finite = scaler.unscale_(opt)
            if not finite and not scaler.enabled:
                status, reason = "diverged", f"non-finite gradients at step {step}"
                break
            if finite and tables:
                _cowclip(tables, idx, data, lb, emb_l2)
            if finite and t.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            if finite:
                opt.step()
                for m in cached:  # int8/int4 rows outside the fp32 cache: SGD, SR write-back
                    m.step(opt.param_groups[0]["lr"])
            scaler.update(finite)
            if telemetry is not None and telemetry.active:
                sink.emit(step + 1, "telemetry", telemetry.flush())
            acc["loss"] += loss_v
            acc["n"] += 1
            acc["units"] += task.units(batch) * world
            in_step = False
            last = step == steps - 1
            if main and ((step + 1) % log.every == 0 or last):
                now = time.perf_counter()
                rec = {
                    "loss": acc["loss"] / acc["n"],
                    "lr": opt.param_groups[0]["lr"],
                    rate: acc["units"] / max(now - t_log, 1e-9),
                }
                if scaler.enabled:
                    rec["loss_scale"] = scaler.scale_value
                sink.emit(step + 1, "train", rec)
                bar.set_postfix(
                    {"loss": f"{rec['loss']:.4f}", f"{task.unit}/s": f"{rec[rate]:.0f}"}
                )
                acc.update(loss=0.0, n=0, units=0)
                t_log = now
            if t.eval_every and (step + 1) % t.eval_every == 0 and not last and main:
                sink.emit(step + 1, "eval", _evaluate(task, model, data, recipe, device))
            if t.checkpoint_every and (step + 1) % t.checkpoint_every == 0 and not last:
                save_checkpoint(step + 1)
            bar.update(1)
            for hook in hooks:
                hook(step)
            if stop_now:
                raise KeyboardInterrupt
        else:
            step = steps
    except KeyboardInterrupt:
        if not in_step:
            save_checkpoint(step + 1)
            if main:
                print(
                    f"\ninterrupted after step {step + 1} of {steps}; checkpoint saved in "
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

    # 6. final evaluation and summary
    steps_done = step  # steps == total when completed, the failing step's index otherwise
    final: dict[str, float] = {}
    extra: dict[str, Any] = {}
    if main:
        try:
            final = _evaluate(task, model, data, recipe, device)
        except Exception as exc:  # a diverged model may not even evaluate
            if status == "completed":
                raise
            extra["eval_error"] = f"{type(exc).__name__}: {exc}"
        if reg is not None and status == "completed":
            extra["metrics_before_hardening"] = final
            distance = reg.distance()  # mean |w - nearest level| / step, before rounding
            report = reg.harden_()
            extra["hardening"] = {
                "bits": report.bits,
                "max_change_steps": report.max_change_steps,
                "mean_distance_steps": distance,
            }
            final = _evaluate(task, model, data, recipe, device)
        sink.emit(steps_done, "eval", final)
    save_checkpoint(steps_done if status != "completed" else steps)
    wall = elapsed + time.perf_counter() - wall0
    summary: dict[str, Any] = {
        "status": status,
        "task": recipe.task,
        "recipe": recipe.source,
        "label": recipe_label(recipe),
        "model": recipe.model["name"],
        "data": recipe.data["name"],
        "format": recipe.numerics.label(),
        "numerics": recipe.numerics.to_dict(),
        "seed": t.seed,
        "metrics": final,
        "primary_metric": task.primary,
        "steps": steps_done,
        "total_steps": steps,
        "batch_size": t.batch_size,
        "lr": t.lr * scale,
        "wall_s": round(wall, 3),
        "peak_memory_mb": round(_peak_memory_mb(device), 1),
        "parameters": n_params,
        "device": str(device),
        "nproc": world,
        "resumes": resumes,
        "skipped_steps": scaler.skipped,
        "cancelled_update_fraction": getattr(opt, "cancelled_fraction", None),
        "telemetry": telemetry.totals() if telemetry is not None else None,
        "embedding_bytes": (emb_bytes := _embedding_bytes(model))["total"],
        "embedding_bytes_parts": emb_bytes,
        "embedding_fraction_of_fp32": emb_bytes["total"] / emb_bytes["fp32_table"]
        if emb_bytes["fp32_table"]
        else None,
        "data_info": {
            **{k: v for k, v in data.info.items() if not isinstance(v, list | dict)},
            **references,
        },
        "torch": torch.__version__,
        "python": platform.python_version(),
        **extra,
    }
    if reason is not None:
        summary["reason"] = reason
    if main:
        summary["wandb"] = sink.logger.mode
        rd.write_summary(summary)
    sink.close(summary)
    return summary


class _Sink:
    """Where metrics go on rank 0: metrics.jsonl, and wandb when the recipe asks for it (a
    ``NullLogger`` otherwise, and on other ranks). Telemetry keeps its ``numerics/...`` names."""

    def __init__(self, rd: RunDir, recipe: Recipe, main: bool) -> None:
        self.writer = MetricsWriter(rd.metrics) if main else None
        log = recipe.logging
        self.logger: Logger = NullLogger()
        if main and _v(log.wandb) != "off":
            self.logger = make_logger(
                log.wandb,
                project=log.project,
                run_dir=rd.path,
                config=recipe.to_dict(),
                name=rd.path.name,
                group=rd.path.parent.name,  # the sweep's folder
                tags=(recipe.numerics.label(), recipe.task, str(recipe.model["name"])),
                job_type="train",
            )

    def emit(self, step: int, split: str, values: dict[str, float]) -> None:
        if self.writer is None:
            return
        self.writer.write(step, split, values)
        self.logger.log(values if split == "telemetry" else flatten(split, values), step)

    def finish(self, status: str) -> None:
        if self.writer is not None:
            self.writer.close()
        self.logger.finish(status)

    def close(self, summary: dict[str, Any]) -> None:
        if self.writer is not None:
            self.logger.summary(summary)
        self.finish(summary["status"])


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
