"""Recipe files: one YAML file says everything a run does, and is checked before anything runs.

A recipe names a ``task`` (image | language | recsys), a ``model`` and a ``data`` constructor
(registry name plus keyword options), the ``train`` loop's hyperparameters, the ``numerics``
policy (``numerics.policy``), an optional ``large_batch`` rule (``numerics.largebatch``) and
``logging``. Three ways recipes compose:

- ``base: ../image/digits.yaml`` starts from another recipe (path relative to the file that
  names it; chains allowed, a cycle is an error). The two are deep-merged: mappings merge key by
  key, anything else (lists included) replaces.
- overrides ``KEY.PATH=VALUE`` (the CLI's ``--set``) are applied in order after the merge; the
  value is parsed as YAML, with one fix: YAML 1.1 reads ``1e-3`` as a string, ours as a float.
- ``Recipe.to_dict()`` writes the fully resolved recipe (every default filled in, the constructor
  defaults of ``model``/``data`` too), so a run directory's ``config.yaml`` is itself a recipe.

Validation is strict and happens once, in ``from_dict``: unknown keys at every level, wrong
types (a bool is not an int; an int is accepted for a float), out-of-range values, and the
``model``/``data`` options checked against the constructor's keyword-only parameters and their
type annotations. Every ``RecipeError`` starts with the file that holds the offending key
(``<recipe>`` for a plain dict) and the dotted key path, then says what is allowed.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import enum
import importlib
import inspect
import math
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from numerics import policy as policy_mod
from numerics.enums import parse_enum
from numerics.largebatch import Decay, ScalingRule
from numerics.policy import Policy
from numerics.recipe_files import (
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
KeyPath = tuple[str | int, ...]  # a key path: ("train", "betas", 1)


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
    every: int = 10
    telemetry_every: int = 0
    progress: bool = True
    wandb: Wandb = Wandb.OFF
    project: str = "numerics"


@dataclass(frozen=True, kw_only=True)
class PeriodicConfig:
    """The periodic regularizer's schedule (a ``periodic_*`` format; 1811.09862): ``lambda``
    ramps linearly from 0 at ``start_fraction`` of the steps to ``lambda_max`` over
    ``ramp_fraction`` of them; the weights are hard-rounded to the grid after the last step."""

    lambda_max: float = 1e-4
    start_fraction: float = 0.5
    ramp_fraction: float = 0.25


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
    periodic: PeriodicConfig = field(default_factory=PeriodicConfig)
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
            "logging": _plain_config(self.logging),
            "periodic": _plain_config(self.periodic),
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


# ---------------------------------------------------------------------------------------------
# Value converters: return the value in its Python form or raise _Bad(what is allowed)

Conv = Callable[[Any], Any]


class _Bad(Exception):
    def __init__(self, need: str, at: KeyPath = (), value: Any = None, hint: str = "") -> None:
        super().__init__(need)
        self.need, self.at, self.value, self.hint = need, at, value, hint


def _integer(lo: int | None = None) -> Conv:
    need = {None: "an integer", 0: "an integer >= 0", 1: "a positive integer"}.get(lo)
    need = need or f"an integer >= {lo}"

    def conv(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or (lo is not None and v < lo):
            raise _Bad(need, value=v)
        return v

    return conv


def _number(
    lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False
) -> Conv:
    if lo is not None and hi is not None:
        need = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        need = f"a number {'>' if lo_open else '>='} {lo:g}"
    else:
        need = "a finite number"

    def conv(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise _Bad(need, value=v)
        x = float(v)
        if lo is not None and not (x > lo if lo_open else x >= lo):
            raise _Bad(need, value=v)
        if hi is not None and not (x < hi if hi_open else x <= hi):
            raise _Bad(need, value=v)
        return x

    return conv


def _optional(inner: Conv) -> Conv:
    def conv(v: Any) -> Any:
        if v is None:
            return None
        try:
            return inner(v)
        except _Bad as bad:
            need = bad.need if bad.at else bad.need + " or null"
            raise _Bad(need, bad.at, bad.value, bad.hint) from None

    return conv


def _boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Bad("true or false", value=v)
    return v


def _string(v: Any) -> str:
    if not isinstance(v, str):
        raise _Bad("a string", value=v)
    return v


def _name(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _Bad("a non-empty string", value=v)
    return v


def _choice(cls: type[enum.Enum], aliases: Mapping[Any, str] | None = None) -> Conv:
    allowed = [str(m.value) for m in cls]

    def conv(v: Any) -> enum.Enum:
        if aliases and not isinstance(v, str) and v in aliases:
            v = aliases[v]
        if isinstance(v, str | cls):
            try:
                return parse_enum(cls, v, "value")
            except ValueError:
                pass
        close = difflib.get_close_matches(str(v).lower(), allowed, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise _Bad(f"one of {', '.join(allowed)}", value=v, hint=hint)

    return conv


def _sequence(inner: Conv, need: str, n: int | None = None, as_tuple: bool = True) -> Conv:
    def conv(v: Any) -> Any:
        if not isinstance(v, list | tuple) or (n is not None and len(v) != n):
            raise _Bad(need, value=v)
        out = []
        for i, x in enumerate(v):
            try:
                out.append(inner(x))
            except _Bad as bad:
                raise _Bad(bad.need, (i, *bad.at), bad.value, bad.hint) from None
        return tuple(out) if as_tuple else out

    return conv


def _increasing(inner: Conv) -> Conv:
    def conv(v: Any) -> Any:
        out = inner(v)
        if list(out) != sorted(set(out)):
            raise _Bad("a strictly increasing list of positive integers", value=v)
        return out

    return conv


_UNIT = _number(0.0, 1.0, hi_open=True)
_TRAIN: dict[str, Conv] = {
    "steps": _optional(_integer(1)),
    "epochs": _optional(_number(0.0, lo_open=True)),
    "batch_size": _integer(1),
    "base_batch_size": _optional(_integer(1)),
    "lr": _number(0.0, lo_open=True),
    "optimizer": _choice(Optimizer),
    "momentum": _UNIT,
    "nesterov": _boolean,
    "weight_decay": _number(0.0),
    "betas": _sequence(_UNIT, "a list of two numbers in [0, 1)", n=2),
    "eps": _number(0.0),
    "lr_scaling": _choice(ScalingRule),
    "warmup": _integer(0),
    "warmup_start_factor": _optional(_number(0.0, 1.0)),
    "decay": _choice(Decay),
    "milestones": _increasing(_sequence(_integer(1), "a list of positive integers")),
    "gamma": _number(0.0, lo_open=True),
    "final_factor": _number(0.0, 1.0),
    "seed": _integer(0),
    "grad_clip": _optional(_number(0.0, lo_open=True)),
    "eval_every": _integer(0),
    "eval_batch_size": _integer(1),
    "max_eval_batches": _optional(_integer(1)),
    "checkpoint_every": _integer(0),
}
_LARGE_BATCH: dict[str, Conv] = {
    "rule": _choice(LargeBatchRule),
    "r": _number(0.0, lo_open=True),
    "zeta": _number(0.0),
    "clip_absent": _boolean,
    "embedding_lr": _optional(_number(0.0, lo_open=True)),
    "embedding_l2": _number(0.0),
    "dense_rule": _choice(ScalingRule),
    "trust_coefficient": _number(0.0, lo_open=True),
}
_LOGGING: dict[str, Conv] = {
    "every": _integer(1),
    "telemetry_every": _integer(0),
    "progress": _boolean,
    "wandb": _choice(Wandb, {False: "off"}),  # YAML 1.1 reads a bare `off` as false
    "project": _name,
}
_PERIODIC: dict[str, Conv] = {
    "lambda_max": _number(0.0),
    "start_fraction": _number(0.0, 1.0),
    "ramp_fraction": _number(0.0, 1.0),
}
TOP_KEYS = ("task", "model", "data", "train", "numerics", "large_batch", "logging", "periodic")


def _hint_conv(hint: Any) -> tuple[Conv, str]:
    """A converter for a constructor annotation and its name; ValueError if unsupported."""
    if hint is Any:
        return (lambda v: copy.deepcopy(v)), "any"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        inner, name = _hint_conv(next(a for a in args if a is not type(None)))
        return _optional(_renamed(inner, name)), f"{name} or null"
    if origin is list and len(args) == 1:
        inner, name = _hint_conv(args[0])
        return _sequence(_renamed(inner, name), f"list[{name}]", as_tuple=False), f"list[{name}]"
    for typ, conv in ((int, _integer()), (float, _number()), (bool, _boolean), (str, _string)):
        if hint is typ:
            return _renamed(conv, typ.__name__), typ.__name__
    raise ValueError(
        f"annotation {hint!r} is not supported in recipes; allowed: int, float, "
        "bool, str, X | None, list[int], list[float], list[str]"
    )


def _renamed(inner: Conv, name: str) -> Conv:
    def conv(v: Any) -> Any:
        try:
            return inner(v)
        except _Bad as bad:
            raise _Bad(name if not bad.at else bad.need, bad.at, bad.value) from None

    return conv


# ---------------------------------------------------------------------------------------------
# Error context: which file a key came from, and which keys came from --set


@dataclass
class _Ctx:
    source: str
    files: dict[tuple[Any, ...], str] = field(default_factory=dict)  # key path -> file
    sets: list[tuple[tuple[str, ...], str]] = field(default_factory=list)  # (path, "--set ..")

    def file(self, at: KeyPath) -> str:
        """The file that set the key at ``at`` (or its nearest parent)."""
        for i in range(len(at), 0, -1):
            if at[:i] in self.files:
                return self.files[at[:i]]
        return self.source

    def note(self, at: KeyPath) -> str:
        """`` [from --set K=V]`` when an override set this key, a parent or a child of it."""
        sets = [t for p, t in self.sets if p[: len(at)] == at or at[: len(p)] == p]
        return f" [from {sets[-1]}]" if sets else ""

    def err(self, path: KeyPath, msg: str, at: KeyPath | None = None) -> RecipeError:
        at = path if at is None else at
        where = f"{_dotted(path)}: " if path else ""
        return RecipeError(f"{self.file(at)}: {where}{msg}{self.note(at)}")

    def unknown(self, path: KeyPath, allowed: Sequence[str]) -> RecipeError:
        key = str(path[-1])
        close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return self.err(path, f"unknown key; allowed: {', '.join(allowed)}{hint}")

    def convert(self, value: Any, conv: Conv, path: KeyPath) -> Any:
        try:
            return conv(value)
        except _Bad as bad:
            full = (*path, *bad.at)
            raise self.err(full, f"must be {bad.need}, got {bad.value!r}{bad.hint}") from None


def _dotted(path: KeyPath) -> str:
    out = ""
    for k in path:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else str(k))
    return out


# ---------------------------------------------------------------------------------------------
# Building a Recipe from a dict


def from_dict(d: Mapping[str, Any], source: str | None = None) -> Recipe:
    """Validate a recipe mapping (``base`` already resolved) and build the ``Recipe``."""
    return _build(d, _Ctx(source or "<recipe>"), source)


def _section(raw: Any, convs: Mapping[str, Conv], path: KeyPath, ctx: _Ctx) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ctx.err(path, f"must be a mapping with keys {', '.join(convs)}, got {raw!r}")
    for key in raw:
        if key not in convs:
            raise ctx.unknown((*path, str(key)), list(convs))
    return {k: ctx.convert(v, convs[k], (*path, k)) for k, v in raw.items()}


def _build(d: Mapping[str, Any], ctx: _Ctx, source: str | None) -> Recipe:
    if not isinstance(d, Mapping):
        raise ctx.err((), f"a recipe must be a mapping with keys {', '.join(TOP_KEYS)}")
    for key in d:
        if key == "base":
            raise ctx.err(("base",), "only recipe files may have a base (use recipe.load)")
        if key not in TOP_KEYS:
            raise ctx.unknown((str(key),), TOP_KEYS)
    for key in ("task", "model", "data", "train"):
        if d.get(key) is None:
            raise ctx.err((key,), "required")
    task = d["task"]
    if task not in TASKS:
        close = difflib.get_close_matches(str(task), TASKS, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ctx.err(("task",), f"unknown task {task!r}; allowed: {', '.join(TASKS)}{hint}")

    for package in ("numerics.models", "numerics.data"):  # registers every constructor
        importlib.import_module(package)
    from numerics.data.base import DATASETS
    from numerics.models.base import MODELS

    model = _options(d["model"], "model", MODELS, task, ctx, skip=())
    data = _options(d["data"], "data", DATASETS, task, ctx, skip=("seed",))
    train = _train(d["train"], ctx)
    policy = _numerics(d.get("numerics"), ctx)
    lb = LargeBatchConfig(**_section(d.get("large_batch"), _LARGE_BATCH, ("large_batch",), ctx))
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
    logging = LoggingConfig(**_section(d.get("logging"), _LOGGING, ("logging",), ctx))
    periodic = PeriodicConfig(**_section(d.get("periodic"), _PERIODIC, ("periodic",), ctx))
    return Recipe(task, model, data, train, policy, lb, logging, periodic, source)


def _train(raw: Any, ctx: _Ctx) -> TrainConfig:
    p = ("train",)
    vals = _section(raw, _TRAIN, p, ctx)
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
    raw: Any, section: str, registry: Any, task: str, ctx: _Ctx, skip: tuple[str, ...]
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
        raise ctx.err((*p, "name"), f"unknown {kind} {name!r}{hint} {known}")
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
            close = difflib.get_close_matches(str(opt), list(params), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ctx.err(
                p,
                f"option {opt!r} is not accepted by {kind} {key!r}{why}; allowed: "
                f"{', '.join(params) or 'none'}{hint}",
                at=(*p, str(opt)),
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


def _numerics(raw: Any, ctx: _Ctx) -> Policy:
    p = ("numerics",)
    where, suffix = f"{ctx.file(p)}: numerics", ctx.note(p)
    if isinstance(raw, str):
        if raw in policy_mod.PRESETS:
            return policy_mod.preset(raw)
        try:
            return policy_mod.from_dict({"format": raw}, where)
        except ValueError as exc:
            detail = str(exc).removeprefix(f"{where}.format: ")
            raise RecipeError(
                f"{where}: {raw!r} is not a preset (presets: "
                f"{', '.join(policy_mod.PRESETS)}) nor a format: {detail}{suffix}"
            ) from None
    if raw is not None and not isinstance(raw, Mapping):
        raise ctx.err(p, f"must be a preset or format name or a policy mapping, got {raw!r}")
    try:
        return policy_mod.from_dict(raw, where)
    except (ValueError, TypeError) as exc:
        msg = str(exc) if str(exc).startswith(where) else f"{where}: {exc}"
        raise RecipeError(msg + suffix) from None


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
            raise RecipeError(f"{referrer}: base: cycle: {cycle}")
        seen.append(real)
        d = _read(current, referrer)
        chain.append((current, d))
        base = d.pop("base", None)
        if base is None:
            break
        if not isinstance(base, str) or not base.strip():
            raise RecipeError(
                f"{current}: base: must be a path (relative to this file), got {base!r}"
            )
        referrer = current
        current = os.path.normpath(os.path.join(os.path.dirname(current), base))
    merged: dict[str, Any] = {}
    files: dict[tuple[Any, ...], str] = {}
    for file, d in reversed(chain):
        merged = merge(merged, d)
        _record(files, d, file)
    merged, sets = _apply(merged, overrides, name)
    for p, _ in sets:  # a key set by --set is reported against the file named on the CLI
        _mark(files, p, name)
    return _build(merged, _Ctx(name, files, sets), name)
