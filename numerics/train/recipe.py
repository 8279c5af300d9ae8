"""Recipe files: one YAML file says everything a run does, and is checked before anything runs.

A recipe names a ``task`` (image | language | recsys), a ``model`` and a ``data`` constructor
(registry name plus keyword options), the ``train`` loop's hyperparameters, the ``numerics``
policy (``numerics.nn.policy``), an optional ``large_batch`` rule (``numerics.nn.largebatch``) and
``logging``. Three ways recipes compose:

- ``base: ../image/digits.yaml`` starts from another recipe (path relative to the file that
  names it; chains allowed, a cycle is an error). The two are deep-merged: mappings merge key by
  key, anything else (lists included) replaces.
- overrides ``KEY.PATH=VALUE`` (the CLI's ``--set``) are applied in order after the merge; the
  value is parsed as YAML, with one fix: YAML 1.1 reads ``1e-3`` as a string, ours as a float.
- ``Recipe.to_dict()`` writes the fully resolved recipe (every default filled in, the constructor
  defaults of ``model``/``data`` too), so a run directory's ``config.yaml`` is itself a recipe.
  The one exception: the logging keys that only add output files (``OUTPUT_ONLY_LOGGING``, the
  TensorBoard ones) are left out while they hold their defaults.

Validation is strict and happens once, in ``from_dict``: unknown keys at every level, wrong
types (a bool is not an int; an int is accepted for a float), out-of-range values, and the
``model``/``data`` options checked against the constructor's keyword-only parameters and their
type annotations. Every ``RecipeError`` (a ``UserError``, see ``numerics.errors``) starts with
the file that holds the offending key (``<recipe>`` for a plain dict) and the dotted key path,
then says what is allowed; the checks are built from ``numerics.validate``, the layer that
policies and sweeps use too.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import enum
import importlib
import inspect
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from numerics import formats
from numerics import validate as val
from numerics.errors import ConfigError
from numerics.formats.registry import UnknownFormatError
from numerics.nn import policy as policy_mod
from numerics.nn.largebatch import Decay, ScalingRule
from numerics.nn.policy import Policy
from numerics.train.recipe_files import (
    Override,
    RecipeError,
    YamlLoader,
    _apply,
    _mark,
    _read,
    _record,
    apply_overrides,
    merge,
)

# re-exported: the recipe API is one import (``from numerics import recipe``)
__all__ = [
    "Override",
    "Recipe",
    "RecipeError",
    "YamlLoader",
    "apply_overrides",
    "from_dict",
    "load",
    "merge",
    "recipe_label",
]

TASKS = ("image", "language", "recsys")
KeyPath = val.KeyPath
Conv = val.Conv


class Optimizer(enum.Enum):
    SGD = "sgd"
    ADAM = "adam"
    ADAMW = "adamw"


class LargeBatchRule(enum.Enum):
    NONE = "none"
    COWCLIP = "cowclip"
    LARS = "lars"


class Wandb(enum.Enum):
    OFF = "off"
    OFFLINE = "offline"
    ONLINE = "online"


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The training loop. Exactly one of ``steps``/``epochs``; ``base_batch_size`` (the batch size
    ``lr`` was tuned at) defaults to ``batch_size`` and is always an int after construction."""

    steps: int | None = None
    epochs: float | None = None
    batch_size: int
    base_batch_size: int | None = None
    lr: float
    optimizer: Optimizer = Optimizer.SGD
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    lr_scaling: ScalingRule = ScalingRule.LINEAR
    warmup: int = 0
    warmup_start_factor: float | None = None  # None: 1 / lr scale factor (Goyal et al.)
    decay: Decay = Decay.NONE
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    final_factor: float = 0.0
    seed: int = 0
    grad_clip: float | None = None
    eval_every: int = 0
    eval_batch_size: int = 1024
    max_eval_batches: int | None = None
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        if self.base_batch_size is None:
            object.__setattr__(self, "base_batch_size", self.batch_size)


@dataclass(frozen=True, kw_only=True)
class LargeBatchConfig:
    """``rule`` none | cowclip (2204.06240) | lars (1708.03888) and their hyperparameters."""

    rule: LargeBatchRule = LargeBatchRule.NONE
    r: float = 1.0
    zeta: float = 1e-5
    clip_absent: bool = False
    embedding_lr: float | None = None  # None: train.lr, unscaled
    embedding_l2: float = 0.0
    dense_rule: ScalingRule = ScalingRule.SQRT
    trust_coefficient: float = 0.001


@dataclass(frozen=True, kw_only=True)
class LoggingConfig:
    """Where a run's metrics go besides metrics.jsonl: the tqdm bar, wandb, TensorBoard
    (``tensorboard``: event files in ``<run>/tensorboard``, see
    ``numerics.train.tensorboard_logger``; ``histogram_every``: histograms of the weights and
    their quantization error for ``histogram_layers`` layers there every N steps, 0 off)."""

    every: int = 10
    telemetry_every: int = 0
    progress: bool = True
    wandb: Wandb = Wandb.OFF
    project: str = "numerics"
    tensorboard: bool = False
    histogram_every: int = 0
    histogram_layers: int = 3


# Keys that only add output files. ``Recipe.to_dict`` leaves them out at their defaults, so a
# recipe that does not use them resolves to the config it had before they existed (its
# config.yaml, and the run id hashed from it, stay the same).
OUTPUT_ONLY_LOGGING = ("tensorboard", "histogram_every", "histogram_layers")


@dataclass(frozen=True)
class Recipe:
    """A validated recipe. ``model``/``data`` hold ``name`` and every constructor option."""

    task: str
    model: dict[str, Any]
    data: dict[str, Any]
    train: TrainConfig
    numerics: Policy = field(default_factory=Policy)
    large_batch: LargeBatchConfig = field(default_factory=LargeBatchConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    source: str | None = field(default=None, compare=False)

    @property
    def model_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.model.items() if k != "name"}

    @property
    def data_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.data.items() if k != "name"}

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain YAML-able data; ``from_dict`` gives an equal Recipe."""
        return {
            "task": self.task,
            "model": _plain(self.model),
            "data": _plain(self.data),
            "train": _plain_config(self.train),
            "numerics": self.numerics.to_dict(),
            "large_batch": _plain_config(self.large_batch),
            "logging": _logging_dict(self.logging),
        }


def _logging_dict(cfg: LoggingConfig) -> dict[str, Any]:
    default = LoggingConfig()
    return {
        k: v
        for k, v in _plain_config(cfg).items()
        if k not in OUTPUT_ONLY_LOGGING or getattr(cfg, k) != getattr(default, k)
    }


def recipe_label(recipe: Recipe) -> str:
    """A short run tag: ``image-resnet20-digits-bf16-s0``."""
    r = recipe
    return f"{r.task}-{r.model['name']}-{r.data['name']}-{r.numerics.label()}-s{r.train.seed}"


def _plain(v: Any) -> Any:
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def _plain_config(cfg: Any) -> dict[str, Any]:
    return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


_UNIT = val.number(0.0, 1.0, hi_open=True)
_TRAIN: dict[str, Conv] = {
    "steps": val.optional(val.integer(1)),
    "epochs": val.optional(val.number(0.0, lo_open=True)),
    "batch_size": val.integer(1),
    "base_batch_size": val.optional(val.integer(1)),
    "lr": val.number(0.0, lo_open=True),
    "optimizer": val.choice(Optimizer),
    "momentum": _UNIT,
    "nesterov": val.boolean,
    "weight_decay": val.number(0.0),
    "betas": val.sequence(_UNIT, "a list of two numbers in [0, 1)", n=2),
    "eps": val.number(0.0),
    "lr_scaling": val.choice(ScalingRule),
    "warmup": val.integer(0),
    "warmup_start_factor": val.optional(val.number(0.0, 1.0)),
    "decay": val.choice(Decay),
    "milestones": val.increasing(val.sequence(val.integer(1), "a list of positive integers")),
    "gamma": val.number(0.0, lo_open=True),
    "final_factor": val.number(0.0, 1.0),
    "seed": val.integer(0),
    "grad_clip": val.optional(val.number(0.0, lo_open=True)),
    "eval_every": val.integer(0),
    "eval_batch_size": val.integer(1),
    "max_eval_batches": val.optional(val.integer(1)),
    "checkpoint_every": val.integer(0),
}
_LARGE_BATCH: dict[str, Conv] = {
    "rule": val.choice(LargeBatchRule),
    "r": val.number(0.0, lo_open=True),
    "zeta": val.number(0.0),
    "clip_absent": val.boolean,
    "embedding_lr": val.optional(val.number(0.0, lo_open=True)),
    "embedding_l2": val.number(0.0),
    "dense_rule": val.choice(ScalingRule),
    "trust_coefficient": val.number(0.0, lo_open=True),
}
_LOGGING: dict[str, Conv] = {
    "every": val.integer(1),
    "telemetry_every": val.integer(0),
    "progress": val.boolean,
    "wandb": val.choice(Wandb, {False: "off"}),  # YAML 1.1 reads a bare `off` as false
    "project": val.name,
    "tensorboard": val.boolean,
    "histogram_every": val.integer(0),
    "histogram_layers": val.integer(1),
}
TOP_KEYS = ("task", "model", "data", "train", "numerics", "large_batch", "logging")


def _hint_conv(hint: Any) -> tuple[Conv, str]:
    """A converter for a constructor annotation and its name; ValueError if unsupported."""
    if hint is Any:
        return (lambda v: copy.deepcopy(v)), "any"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        inner, name = _hint_conv(next(a for a in args if a is not type(None)))
        return val.optional(val.renamed(inner, name)), f"{name} or null"
    if origin is list and len(args) == 1:
        inner, name = _hint_conv(args[0])
        return val.sequence(
            val.renamed(inner, name), f"list[{name}]", as_tuple=False
        ), f"list[{name}]"
    for typ, conv in (
        (int, val.integer()),
        (float, val.number()),
        (bool, val.boolean),
        (str, val.string),
    ):
        if hint is typ:
            return val.renamed(conv, typ.__name__), typ.__name__
    raise ValueError(
        f"annotation {hint!r} is not supported in recipes; allowed: int, float, "
        "bool, str, X | None, list[int], list[float], list[str]"
    )


# ---------------------------------------------------------------------------------------------
# Building a Recipe from a dict


def from_dict(d: Mapping[str, Any], source: str | None = None) -> Recipe:
    """Validate a recipe mapping (``base`` already resolved) and build the ``Recipe``."""
    return _build(d, val.Context(source or "<recipe>", error=RecipeError), source)


def _build(d: Mapping[str, Any], ctx: val.Context, source: str | None) -> Recipe:
    if not isinstance(d, Mapping):
        raise ctx.err((), f"a recipe must be a mapping with keys {', '.join(TOP_KEYS)}")
    for key in d:
        if key == "base":
            raise ctx.err(("base",), "only recipe files may have a base (use recipe.load)")
        if key == "periodic":
            raise _periodic_moved(d[key], ctx)
        if key not in TOP_KEYS:
            raise ctx.unknown((str(key),), TOP_KEYS)
    for key in ("task", "model", "data", "train"):
        if d.get(key) is None:
            raise ctx.err((key,), "required")
    task = d["task"]
    if task not in TASKS:
        hint, allowed = val.did_you_mean(task, TASKS), ", ".join(TASKS)
        raise ctx.err(
            ("task",),
            f"unknown task {task!r}; allowed: {allowed}{hint}",
            value=task,
            allowed=allowed,
        )

    for package in ("numerics.models", "numerics.data"):  # registers every constructor
        importlib.import_module(package)
    from numerics.data.base import DATASETS
    from numerics.models.base import MODELS

    model = _options(d["model"], "model", MODELS, task, ctx, skip=())
    data = _options(d["data"], "data", DATASETS, task, ctx, skip=("seed",))
    train = _train(d["train"], ctx)
    policy = _numerics(d.get("numerics"), ctx)
    lb = LargeBatchConfig(**ctx.section(d.get("large_batch"), _LARGE_BATCH, ("large_batch",)))
    if lb.rule is LargeBatchRule.COWCLIP and task != "recsys":
        raise ctx.err(
            ("large_batch", "rule"),
            f"cowclip clips embedding tables; allowed only with task recsys, got task {task}",
        )
    if lb.rule is LargeBatchRule.LARS and train.optimizer is not Optimizer.SGD:
        raise ctx.err(
            ("large_batch", "rule"),
            "lars is SGD with a layer-wise trust ratio; "
            f"needs train.optimizer sgd, got {train.optimizer.value}",
        )
    logging = LoggingConfig(**ctx.section(d.get("logging"), _LOGGING, ("logging",)))
    return Recipe(task, model, data, train, policy, lb, logging, source)


def _train(raw: Any, ctx: val.Context) -> TrainConfig:
    p = ("train",)
    vals = ctx.section(raw, _TRAIN, p)
    for key in ("lr", "batch_size"):
        if vals.get(key) is None:
            raise ctx.err((*p, key), "required")
    steps, epochs = vals.get("steps"), vals.get("epochs")
    if (steps is None) == (epochs is None):
        what = "both given" if steps is not None else "neither given"
        raise ctx.err(p, f"exactly one of steps, epochs is required ({what})")
    warmup = vals.get("warmup", 0)
    if steps is not None and warmup >= steps:
        raise ctx.err((*p, "warmup"), f"must be < train.steps ({steps}), got {warmup}")
    if vals.get("decay") is Decay.STEP and not vals.get("milestones"):
        raise ctx.err((*p, "milestones"), "decay: step needs at least one milestone")
    opt = vals.get("optimizer", Optimizer.SGD)
    if vals.get("nesterov") and (opt is not Optimizer.SGD or vals.get("momentum", 0.9) == 0):
        raise ctx.err((*p, "nesterov"), "needs optimizer sgd and momentum > 0")
    return TrainConfig(**vals)


def _options(
    raw: Any, section: str, registry: Any, task: str, ctx: val.Context, skip: tuple[str, ...]
) -> dict[str, Any]:
    """Check a ``model``/``data`` section against the registered constructor's signature."""
    p: KeyPath = (section,)
    kind = registry.kind
    known = f"(known for task {task}: {', '.join(sorted(registry.names(task=task))) or 'none'})"
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, Mapping):
        raise ctx.err(p, f"must be a mapping with 'name' and the {kind}'s options, got {raw!r}")
    name = raw.get("name")
    if name is None:
        raise ctx.err((*p, "name"), f"required {known}")
    if not isinstance(name, str) or name not in registry:
        names = registry.names(task=task)
        close = difflib.get_close_matches(str(name).lower(), names, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ctx.err((*p, "name"), f"unknown {kind} {name!r}{hint} {known}", value=name)
    key = name.strip().lower()
    owner = registry.meta(key).get("task")
    if owner is not None and owner != task:
        raise ctx.err(
            (*p, "name"), f"{kind} {key!r} is registered for task {owner}, not task {task} {known}"
        )
    fn = registry.get(key)
    sig = inspect.signature(fn)
    params = {n: q for n, q in sig.parameters.items() if q.kind is q.KEYWORD_ONLY and n not in skip}
    open_ended = any(q.kind is q.VAR_KEYWORD for q in sig.parameters.values())
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: values are not type-checked
        hints = {}
    out: dict[str, Any] = {"name": key}
    for opt, value in raw.items():
        if opt == "name":
            continue
        if opt not in params and not open_ended:
            why = f" ({opt} is set by train.{opt})" if opt in skip else ""
            hint = val.did_you_mean(opt, list(params))
            raise ctx.err(
                p,
                f"option {opt!r} is not accepted by {kind} {key!r}{why}; allowed: "
                f"{', '.join(params) or 'none'}{hint}",
                at=(*p, str(opt)),
                value=opt,
            )
        try:
            conv, _ = _hint_conv(hints.get(opt, Any))
        except ValueError as exc:
            raise ctx.err((*p, opt), f"{kind} {key!r}: {exc}") from None
        out[opt] = ctx.convert(value, conv, (*p, opt))
    for opt, q in params.items():
        if opt in out:
            continue
        if q.default is inspect.Parameter.empty:
            raise ctx.err((*p, opt), f"required by {kind} {key!r}")
        out[opt] = _plain(q.default)
    return out


def _numerics(raw: Any, ctx: val.Context) -> Policy:
    p = ("numerics",)
    if isinstance(raw, str):
        if raw in policy_mod.PRESETS:
            return policy_mod.preset(raw)
        if policy_mod.is_periodic_name(raw):
            raise policy_mod.periodic_moved(ctx, p, raw)
        try:
            formats.get(raw)
        except UnknownFormatError as exc:
            presets = ", ".join(policy_mod.PRESETS)
            raise ctx.err(
                p,
                f"{raw!r} is not a preset (presets: {presets}) nor a format: {exc}",
                value=raw,
                allowed=f"a preset ({presets}), a format or a policy mapping",
            ) from None
        raw = {"format": raw}
    if raw is not None and not isinstance(raw, Mapping):
        raise ctx.err(
            p, f"must be a preset or format name or a policy mapping, got {raw!r}", value=raw
        )
    return policy_mod.from_dict(raw, ctx, p)


def _periodic_moved(raw: Any, ctx: val.Context) -> ConfigError:
    keys = list(raw) if isinstance(raw, Mapping) and raw else ["lambda_max"]
    instead = ", ".join(f"numerics.periodic.{k}" for k in keys)
    return ctx.err(
        ("periodic",),
        "the periodic regularizer is part of the policy now: write "
        f"{instead} (with numerics.periodic.kind and .bits, which replace the "
        "periodic_<kind>_b<bits> format)",
        value=raw,
        allowed="numerics.periodic: {kind, bits, lambda_max, start_fraction, ramp_fraction}",
    )


def load(path: str | Path, overrides: Sequence[Override] = ()) -> Recipe:
    """Read a recipe file, follow its ``base`` chain, apply ``overrides`` and validate."""
    name = str(path)
    chain: list[tuple[str, dict[str, Any]]] = []
    seen: list[str] = []
    current, referrer = name, None
    while True:
        real = os.path.realpath(current)
        if real in seen:
            cycle = " -> ".join([*(n for n, _ in chain[seen.index(real) :]), current])
            raise RecipeError(f"cycle: {cycle}", file=referrer, key="base")
        seen.append(real)
        d = _read(current, referrer)
        chain.append((current, d))
        base = d.pop("base", None)
        if base is None:
            break
        if not isinstance(base, str) or not base.strip():
            raise RecipeError(
                f"must be a path (relative to this file), got {base!r}",
                file=current,
                key="base",
                value=base,
            )
        referrer = current
        current = os.path.normpath(os.path.join(os.path.dirname(current), base))
    merged: dict[str, Any] = {}
    files: dict[tuple[Any, ...], str] = {}
    for file, d in reversed(chain):
        merged = merge(merged, d)
        _record(files, d, file)
    return _overridden(merged, files, overrides, name)


def with_overrides(d: Mapping[str, Any], overrides: Sequence[Override], source: str) -> Recipe:
    """The recipe mapping ``d`` (named ``source`` in errors, e.g. a run's config.yaml read and
    edited by the caller) with ``overrides`` applied and validated, as ``load`` does."""
    files: dict[tuple[Any, ...], str] = {}
    _record(files, d, source)
    return _overridden(dict(d), files, overrides, source)


def _overridden(
    merged: dict[str, Any],
    files: dict[tuple[Any, ...], str],
    overrides: Sequence[Override],
    name: str,
) -> Recipe:
    merged, sets = _apply(merged, overrides, name)
    for p, _ in sets:  # a key set by --set is reported against the file named on the CLI
        _mark(files, p, name)
    return _build(merged, val.Context(name, files, sets, RecipeError), name)
