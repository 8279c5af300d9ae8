"""Evaluate a trained run under another numerics policy: direct-cast inference.

``evaluate(run_dir, overrides, out)`` reads the run's resolved recipe (its ``config.yaml``) and
its model (``checkpoint.pt``, read weights-only), applies ``overrides`` in the recipe's own
``KEY=VALUE`` syntax, builds the model under the resulting numerics policy, loads the trained
weights into it, and evaluates it on the run's validation split. Only the inference side may
change: ``numerics.*`` (format, rounding, per-role casts, per-layer overrides) and the
evaluation's size (``train.eval_batch_size``, ``train.max_eval_batches``); anything that would
change the data or the model is refused.

Under the run's own policy with nearest rounding the metrics equal the run's own final
evaluation bit for bit (the same weights, the same casts, a deterministic evaluation). A policy
with stochastic rounding draws fresh bits from the run's seed, so it is an evaluation, not a
replay of the run's last one.

Calibration (``calibrate=N``, ``--calibrate N``): before evaluating, the run's first ``N``
training batches (its sampler's steps 0..N-1) go through the model in fp32 and fix the scale
of every activation cast in a per-tensor integer format (``numerics.nn.calibration``); the
format label gets ``-cal<N>`` and the summary ``calibration_batches`` (0 when nothing was
calibrated: a policy without such casts runs no calibration batch) and ``calibrated_casts``.

The evaluation folder is run-like: ``config.yaml`` (the evaluated recipe; its ``numerics`` is
the inference policy) and ``summary.json`` (a ``RunSummary`` whose ``format`` is the inference
policy's label, with the source run and the format it was trained in under ``source_run`` and
``trained_format``). ``numerics compare`` tables a folder of them like training runs: rows the
source runs' recipe and training format, columns the inference format, intervals over the
training seeds. A sweep file with an ``evaluate`` section runs many of them through the sweep
executors (``numerics.sweeps.evalsweep``): each job is ``run_evaluation``.
"""

from __future__ import annotations

import contextlib
import platform
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from numerics.data.base import Dataset
from numerics.errors import MissingInputError, UserError
from numerics.nn import calibration
from numerics.nn.modules import quantize_model
from numerics.provenance import provenance
from numerics.train import recipe as recipes
from numerics.train import tasks
from numerics.train.rundir import RunDir
from numerics.train.summary import RunSummary
from numerics.train.trainer import (
    BatchSampler,
    data_and_model,
    header,
    read_checkpoint,
    run_policy,
)

#: the recipe keys an evaluation may override (a key or a dotted prefix of one)
ALLOWED = ("numerics", "train.eval_batch_size", "train.max_eval_batches")


def _key(override: recipes.Override) -> str:
    return (override[0] if isinstance(override, tuple) else override.split("=", 1)[0]).strip()


def allowed_key(key: str) -> bool:
    """Whether an evaluation may override recipe key ``key`` (``ALLOWED``)."""
    return any(key == a or key.startswith(a + ".") for a in ALLOWED)


def check_override(override: recipes.Override) -> None:
    if not allowed_key(_key(override)):
        raise UserError(
            f"{override!r}: an evaluation changes only the inference side of a trained run",
            key="--set",
            value=override,
            allowed=", ".join(ALLOWED),
            note=" (allowed: numerics and the keys under it, train.eval_batch_size, "
            "train.max_eval_batches)",
        )


def inference_recipe(config: Path, overrides: Sequence[recipes.Override]) -> recipes.Recipe:
    """The run's resolved recipe with ``overrides`` applied. When the overrides name a
    numerics key, the policy starts from fp32 (keeping the run's ``numerics.seed``): the
    resolved config spells out every role's cast, so ``numerics.format=F`` on top of it would
    change nothing; an evaluation's policy is what its overrides say."""
    d = yaml.load(config.read_text(), Loader=recipes.YamlLoader)
    if not isinstance(d, dict):
        raise UserError("not a recipe mapping", file=str(config))
    if any(_key(o).startswith("numerics") for o in overrides):
        seed = (d.get("numerics") or {}).get("seed")
        d["numerics"] = {"format": "fp32", **({"seed": seed} if seed is not None else {})}
    return recipes.with_overrides(d, list(overrides), str(config))


def inference_label(recipe: recipes.Recipe, calibrate: int = 0) -> str:
    """An evaluation's format label: the policy's, with ``-cal<N>`` when ``calibrate`` batches
    fix some of its casts' scales."""
    label = recipe.numerics.label()
    if calibrate and calibration.policy_calibrates(recipe.numerics):
        return f"{label}-cal{calibrate}"
    return label


def check_calibrate(calibrate: Any, key: str = "--calibrate") -> int:
    """The number of calibration batches, checked: an integer >= 0."""
    if isinstance(calibrate, bool) or not isinstance(calibrate, int) or calibrate < 0:
        raise UserError(
            "must be the number of training batches that calibrate the activation scales, an "
            f"integer >= 0 (0: no calibration), got {calibrate!r}",
            key=key,
            value=calibrate,
            allowed="an integer >= 0 (0: no calibration)",
        )
    return calibrate


def default_out(run_dir: str | Path, label: str, results: str | Path | None = None) -> Path:
    """``<results>/<run folder>--<inference format label>``; results defaults to
    ``results/evals``."""
    folder = Path(results) if results is not None else Path("results") / "evals"
    return folder / f"{Path(run_dir).name}--{label.replace('/', '_')}"


def run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """The run directories named: each path that holds a checkpoint.pt, else the folders one
    level down that do (a sweep's results folder), in name order."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise MissingInputError("no such run directory", file=str(p))
        if (p / "checkpoint.pt").exists():
            out.append(p)
            continue
        inner = sorted(d for d in p.glob("*/") if (d / "checkpoint.pt").exists())
        if not inner:
            raise MissingInputError(
                "neither a run directory nor a folder of them (no checkpoint.pt in it or one "
                "level down)",
                file=str(p),
            )
        out += inner
    return out


def evaluate_many(
    runs: Sequence[str | Path],
    formats: Sequence[str],
    overrides: Sequence[str] = (),
    results: str | Path | None = None,
    device: str | None = None,
    calibrate: int = 0,
) -> list[RunSummary]:
    """Every run in ``runs`` (``run_dirs``) in every format of ``formats`` (each as
    ``numerics.format=F`` after ``overrides``; none: ``overrides`` alone), one folder each
    under ``results``. An evaluation whose folder already holds a summary is kept, not
    redone, so an interrupted batch continues where it stopped."""
    for o in overrides:
        check_override(o)
    check_calibrate(calibrate)
    done: list[RunSummary] = []
    for run in run_dirs(runs):
        grid: list[list[str]] = [[f"numerics.format={f}"] for f in formats] or [[]]
        for extra in grid:
            sets = [*overrides, *extra]
            src = source_dir(run)
            recipe = inference_recipe(src.config, sets)
            out = default_out(run, inference_label(recipe, calibrate), results)
            kept = RunDir(out).read_summary()
            if kept is None:
                kept = _evaluate(src, recipe, sets, out, device, calibrate)
            done.append(kept)
    return done


def source_dir(run_dir: str | Path) -> RunDir:
    """The run directory, checked to hold what an evaluation reads."""
    src = RunDir(run_dir)
    if not src.path.is_dir():
        raise MissingInputError("no such run directory", file=str(src.path))
    if not src.config.exists():
        raise MissingInputError("no config.yaml: not a run directory", file=str(src.path))
    if not src.checkpoint.exists():
        raise MissingInputError(
            "no checkpoint.pt: the run kept no model to evaluate (it was deleted, or the run "
            "failed before its first checkpoint)",
            file=str(src.path),
        )
    return src


def evaluate(
    run_dir: str | Path,
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
    device: str | None = None,
    calibrate: int = 0,
) -> RunSummary:
    """Evaluate the trained run in ``run_dir`` under ``overrides`` (after ``calibrate``
    calibration batches); write the evaluation folder ``out`` (default ``default_out``) and
    return its summary."""
    for o in overrides:
        check_override(o)
    check_calibrate(calibrate)
    src = source_dir(run_dir)
    recipe = inference_recipe(src.config, overrides)
    return _evaluate(src, recipe, overrides, out, device, calibrate)


def run_evaluation(
    run_dir: str | Path,
    config: Mapping[str, Any],
    out: str | Path,
    device: str | None = None,
    calibrate: int = 0,
) -> RunSummary:
    """One job of an evaluation sweep: the run in ``run_dir`` under ``config``, the inference
    recipe the sweep built with ``inference_recipe`` (``Recipe.to_dict()``), after
    ``calibrate`` calibration batches, into ``out``.
    A failure is recorded in ``out`` as a ``failed`` summary that still names the source run
    and its training format (so ``numerics compare`` counts it in its row) and re-raised."""
    src = RunDir(run_dir)
    recipe: recipes.Recipe | None = None
    try:
        recipe = recipes.from_dict(dict(config), source=str(src.config))
        return _evaluate(source_dir(run_dir), recipe, [], out, device, calibrate)
    except Exception as exc:
        extra: dict[str, Any] = {"source_run": str(src.path)}
        with contextlib.suppress(OSError, UserError):  # gone or unreadable: the error says so
            extra["trained_format"] = recipes.load(src.config).numerics.label()
        what = header(recipe) if recipe is not None else {}
        RunDir(out).write_summary(
            RunSummary.failed(exc, traceback.format_exc(), **what, extra=extra)
        )
        raise


def _evaluate(
    src: RunDir,
    recipe: recipes.Recipe,
    overrides: Sequence[recipes.Override],
    out: str | Path | None,
    device: str | None,
    calibrate: int = 0,
) -> RunSummary:
    wall0 = time.perf_counter()
    trained = recipes.load(src.config)
    dev = torch.device(device or "cpu")
    data, model = data_and_model(recipe)
    n_params = sum(p.numel() for p in model.parameters())
    model = quantize_model(model, run_policy(recipe)).to(dev)
    state = read_checkpoint(src.checkpoint, dev)["model"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(
            f"the model built under this policy does not take the run's weights (missing "
            f"{sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]})",
            file=str(src.checkpoint),
            key="--set" if overrides else None,
            value=list(overrides),
        )
    task = tasks.get(recipe.task)
    t = recipe.train
    model.eval()
    cal = calibration.attach(model) if calibrate else None
    if cal is not None:
        _calibrate(model, cal, recipe, data, task, calibrate, dev)
    metrics = task.evaluate(model, data.test, t.eval_batch_size, t.max_eval_batches, dev)
    label = inference_label(recipe, calibrate)
    summary = RunSummary(
        status="completed",
        **(header(recipe) | {"format": label}),
        metrics=metrics,
        primary_metric=task.primary,
        parameters=n_params,
        wall_s=round(time.perf_counter() - wall0, 3),
        device=str(dev),
        torch=torch.__version__,
        python=platform.python_version(),
        provenance=provenance(dev),
        extra={
            "source_run": str(src.path),
            "trained_format": trained.numerics.label(),
            "calibration_batches": cal.batches if cal is not None else 0,
            "calibrated_casts": len(cal.amax) if cal is not None else 0,
        },
    )
    rd = RunDir(out if out is not None else default_out(src.path, label))
    rd.write_config(recipe.to_dict())
    rd.write_summary(summary)
    return summary


@torch.no_grad()
def _calibrate(
    model: torch.nn.Module,
    cal: calibration.Calibration,
    recipe: recipes.Recipe,
    data: Dataset,
    task: tasks.Task,
    n: int,
    dev: torch.device,
) -> None:
    """The run's first ``n`` training batches (its sampler's, a pure function of the seed and
    the step) through ``model`` while ``cal`` observes, then the scales fixed."""
    t = recipe.train
    sampler = BatchSampler(len(data.train), t.batch_size, t.seed, data.sampling)
    for step in range(n):
        batch = data.train.batch(sampler.indices(step))
        task.loss(model, {k: v.to(dev) for k, v in batch.items()})
    cal.fix(n)
