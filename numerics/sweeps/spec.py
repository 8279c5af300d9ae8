"""Sweeps: one YAML file names recipes and the values to try; every combination becomes a run.

A sweep file uses wandb's sweep syntax for ``parameters``; each key is a recipe key exactly as
``numerics train --set`` takes it::

    name: demo                      # runs go to <results>/demo/<run id>/
    recipe: recipes/image/digits_resnet.yaml     # or a list of recipe files
    method: grid                    # grid | random
    count: 10                       # random only: how many runs
    seed: 0                         # random only: the sampling seed
    parameters:
      numerics.format: {values: [fp32, bf16]}
      train.steps: {value: 100}     # a constant
      train.lr: {distribution: log_uniform_values, min: 1.0e-4, max: 1.0e-1}   # random only
    executor: {kind: local, jobs: 2}              # local | ray | slurm, then its options

Expansion. ``grid`` is the cartesian product of every ``values`` list (constants are lists of
one): recipes outermost, then the parameters in file order, the first key varying slowest.
``random`` draws ``count`` runs from ``numpy.random.default_rng(seed)``: per run, the recipe
(uniformly, only if there are several), then each parameter in file order (``values``: a
uniform choice; distributions as wandb defines them, see ``DISTRIBUTIONS``). Every run is built
as a ``Recipe`` (``recipe.load(file, overrides)``) before anything runs, so a typo or a bad
value fails the whole sweep up front with the sweep file and the parameter in the message.

Run ids. A run is named by what it computes, not by its position in the sweep:
``<recipe_label>-<first 8 hex digits of sha256(json of the resolved recipe)>``. Re-expanding
the same file (or an edited one that still contains the run) finds the same folders, which is
what makes ``--resume`` and re-running a sweep cheap, and two points that resolve to the same
config (a constant spelled twice, a random draw repeated) collapse into one run.

An ``evaluate`` section in place of ``recipe`` makes an evaluation sweep: trained runs
evaluated at every point of a grid of inference policies (``numerics.sweeps.evalsweep``).

Running a sweep is ``numerics.sweeps.engine``; its command line ``numerics.sweeps.cli``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from numerics import validate as val
from numerics.errors import ConfigError, MissingInputError, UserError
from numerics.files import jsonable
from numerics.nn.periodic import PeriodicSpec
from numerics.sweeps import evalsweep
from numerics.sweeps.executors.base import RunSpec
from numerics.train import recipe as recipes
from numerics.train.rundir import RunDir

METHODS = ("grid", "random")
EXECUTORS = ("local", "ray", "slurm")
TOP_KEYS = (
    "name", "description", "recipe", "evaluate", "method", "count", "seed", "parameters",
    "executor",
)  # fmt: skip
# distribution -> (required keys, optional keys with wandb's defaults)
DISTRIBUTIONS: dict[str, tuple[tuple[str, ...], dict[str, float]]] = {
    "constant": (("value",), {}),
    "categorical": (("values",), {}),
    "int_uniform": (("min", "max"), {}),
    "uniform": (("min", "max"), {}),
    "log_uniform_values": (("min", "max"), {}),
    "q_uniform": (("min", "max"), {"q": 1.0}),
    "normal": ((), {"mu": 0.0, "sigma": 1.0}),
    "log_normal": ((), {"mu": 0.0, "sigma": 1.0}),
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class SweepError(ConfigError):
    """A sweep file that cannot be used: ``<file>: <key>: what is wrong; what is allowed``."""


# ---------------------------------------------------------------------------------------------
# The sweep file


@dataclass(frozen=True)
class Parameter:
    """One swept recipe key: its distribution and its spec as written (wandb syntax)."""

    key: str
    distribution: str
    spec: dict[str, Any]

    def arg(self, name: str) -> Any:
        return self.spec.get(name, DISTRIBUTIONS[self.distribution][1].get(name))

    def sample(self, rng: np.random.Generator) -> Any:
        d, lo, hi = self.distribution, self.arg("min"), self.arg("max")
        if d == "constant":
            return self.spec["value"]
        if d == "categorical":
            return self.spec["values"][int(rng.integers(len(self.spec["values"])))]
        if d == "int_uniform":
            return int(rng.integers(lo, hi, endpoint=True))
        if d == "uniform":
            return float(rng.uniform(lo, hi))
        if d == "log_uniform_values":  # log x ~ U(log min, log max)
            return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        if d == "q_uniform":  # round(U(min, max) / q) * q; ints stay ints
            q = self.arg("q")
            x = round(float(rng.uniform(lo, hi)) / q) * q
            return int(x) if all(isinstance(v, int) for v in (lo, hi, q)) else float(x)
        if d == "normal":
            return float(rng.normal(self.arg("mu"), self.arg("sigma")))
        return float(rng.lognormal(self.arg("mu"), self.arg("sigma")))  # log_normal


@dataclass(frozen=True)
class Sweep:
    """A validated sweep file. ``recipes`` are resolved paths (none in an evaluation sweep,
    which has ``evaluate``); ``raw`` is the file's data."""

    path: str
    name: str
    recipes: tuple[str, ...]
    method: str
    parameters: tuple[Parameter, ...]
    count: int | None = None
    seed: int = 0
    executor: dict[str, Any] = field(default_factory=lambda: {"kind": "local"})
    raw: dict[str, Any] = field(default_factory=dict)
    evaluate: evalsweep.Evaluate | None = None


def _allowed(items: Sequence[str]) -> str:
    return ", ".join(items)


def _number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)


def _parameter(key: Any, spec: Any, ctx: val.Context) -> Parameter:
    at = ("parameters", str(key))
    if not isinstance(key, str) or not all(k.strip() for k in key.split(".")):
        raise ctx.err(at, "a parameter key must be a dotted recipe key like train.lr", value=key)
    if not isinstance(spec, Mapping):
        raise ctx.err(
            at,
            f"must be a mapping (wandb syntax) with value, values or distribution, got {spec!r}",
            value=spec,
        )
    spec = dict(spec)
    dists = _allowed(list(DISTRIBUTIONS))
    if "distribution" in spec:
        dist = spec["distribution"]
        if dist not in DISTRIBUTIONS:
            raise ctx.err(
                at, f"unknown distribution {dist!r}; allowed: {dists}", value=dist, allowed=dists
            )
    elif "value" in spec and "values" in spec:
        raise ctx.err(at, "give value (a constant) or values (a list), not both")
    elif "value" in spec or "values" in spec:
        dist = "constant" if "value" in spec else "categorical"
    else:
        hint = (
            " (with min/max, add distribution: uniform, int_uniform or log_uniform_values)"
            if "min" in spec or "max" in spec
            else ""
        )
        raise ctx.err(
            at,
            f"needs value (a constant), values (a list) or distribution (one of {dists}){hint}",
            value=spec,
        )
    required, optional = DISTRIBUTIONS[dist]
    allowed = ["distribution", *required, *optional]
    for k in spec:
        if k not in allowed:
            raise ctx.err(
                at,
                f"unknown key {k!r} for distribution {dist}; allowed: {_allowed(allowed)}",
                value=k,
                allowed=_allowed(allowed),
            )
    for k in required:
        if k not in spec:
            raise ctx.err(at, f"distribution {dist} needs {_allowed(required)} ({k} missing)")
    p = Parameter(key, dist, spec)
    if dist == "categorical" and (not isinstance(spec["values"], list) or not spec["values"]):
        raise ctx.err(
            at, f"values must be a non-empty list, got {spec['values']!r}", value=spec["values"]
        )
    for k in ("min", "max", "q", "mu", "sigma"):
        if k in allowed and not _number(p.arg(k)):
            raise ctx.err(at, f"{k} must be a finite number, got {p.arg(k)!r}", value=p.arg(k))
    if dist == "int_uniform" and not all(isinstance(spec[k], int) for k in ("min", "max")):
        raise ctx.err(at, f"int_uniform needs integer min and max, got {spec}", value=spec)
    if "min" in required and not spec["min"] < spec["max"]:
        raise ctx.err(at, f"min ({spec['min']}) must be < max ({spec['max']})", value=spec)
    if dist == "log_uniform_values" and spec["min"] <= 0:
        raise ctx.err(at, f"log_uniform_values needs min > 0, got {spec['min']}", value=spec["min"])
    for k in ("q", "sigma"):
        if k in allowed and p.arg(k) <= 0:
            raise ctx.err(at, f"{k} must be > 0, got {p.arg(k)}", value=p.arg(k))
    return p


def _resolve_recipe(path: Any, ctx: val.Context) -> str:
    if not isinstance(path, str) or not path.strip():
        raise ctx.err(("recipe",), "must be a recipe path or a list of them", value=path)
    sweep_path = ctx.source or ""
    if os.path.isabs(path):
        found = Path(path) if Path(path).is_file() else None
    else:
        near = Path(os.path.dirname(sweep_path)) / path
        found = near if near.is_file() else (Path(path) if Path(path).is_file() else None)
    if found is None:
        raise MissingInputError(
            f"file not found: {path} (looked next to the sweep file, then in the working "
            f"directory {os.getcwd()})",
            file=sweep_path,
            key="recipe",
            value=path,
        )
    return os.path.normpath(str(found))


_COUNT, _SEED, _JOBS = val.integer(1), val.integer(0), val.optional(val.integer(1))


def from_dict(d: Any, path: str = "<sweep>") -> Sweep:
    """Validate a sweep mapping; recipe paths are resolved against ``path``'s folder."""
    ctx = val.Context(path, error=SweepError)
    if not isinstance(d, Mapping):
        raise ctx.err((), f"a sweep file must be a mapping with keys {_allowed(TOP_KEYS)}")
    ctx.check_keys(d, TOP_KEYS, ())
    name = d.get("name", Path(path).stem)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ctx.err(
            ("name",),
            f"{name!r} is not a folder name; allowed: letters, digits, . _ + -",
            value=name,
        )
    evaluate: evalsweep.Evaluate | None = None
    paths: tuple[str, ...] = ()
    if "evaluate" in d:
        if "recipe" in d:
            raise ctx.err(
                ("evaluate",),
                "a sweep trains recipes (recipe) or evaluates trained runs (evaluate), not both",
            )
        evaluate = evalsweep.parse(d["evaluate"], ctx)
    elif d.get("recipe") is None:
        raise ctx.err(
            ("recipe",), "required (a recipe path or a list of them; or evaluate: trained runs)"
        )
    else:
        raw_recipes = d["recipe"] if isinstance(d["recipe"], list) else [d["recipe"]]
        if not raw_recipes:
            raise ctx.err(("recipe",), "the list is empty")
        paths = tuple(_resolve_recipe(r, ctx) for r in raw_recipes)
    method = d.get("method", "grid")
    if method not in METHODS:
        raise ctx.err(
            ("method",),
            f"unknown method {method!r}; allowed: {_allowed(METHODS)}",
            value=method,
            allowed=_allowed(METHODS),
        )
    if evaluate is not None and method != "grid":
        raise ctx.err(
            ("method",), "an evaluation sweep takes method grid", value=method, allowed="grid"
        )
    count = d.get("count")
    if method == "random":
        if count is None:
            raise ctx.err(("count",), "required by method random (the number of runs)")
        ctx.convert(count, _COUNT, ("count",))
    elif count is not None:
        raise ctx.err(("count",), "applies to method random only (grid runs every point)")
    seed = ctx.convert(d.get("seed", 0), _SEED, ("seed",))
    raw_params = d.get("parameters") or {}
    if not isinstance(raw_params, Mapping):
        raise ctx.err(("parameters",), "must be a mapping of recipe key -> spec", value=raw_params)
    params = tuple(_parameter(k, v, ctx) for k, v in raw_params.items())
    if evaluate is not None:
        for p in params:
            evalsweep.check_parameter(p.key, ctx)
    if method == "grid":
        for p in params:
            if p.distribution not in ("constant", "categorical"):
                raise ctx.err(
                    ("parameters", p.key),
                    f"distribution {p.distribution} needs method random; grid takes value or "
                    "values",
                )
    ex = d.get("executor") or {}
    if not isinstance(ex, Mapping):
        raise ctx.err(("executor",), "must be a mapping like {kind: local, jobs: 2}", value=ex)
    ex = {"kind": "local", **ex}
    if ex["kind"] not in EXECUTORS:
        raise ctx.err(
            ("executor", "kind"),
            f"unknown executor {ex['kind']!r}; allowed: {_allowed(EXECUTORS)}",
            value=ex["kind"],
            allowed=_allowed(EXECUTORS),
        )
    ctx.convert(ex.get("jobs"), _JOBS, ("executor", "jobs"))
    return Sweep(path, name, paths, method, params, count, seed, ex, dict(d), evaluate)


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep file."""
    name = str(path)
    try:
        text = Path(name).read_text()
    except FileNotFoundError:
        raise MissingInputError(f"sweep file not found: {name}", value=name) from None
    try:
        data = yaml.load(text, Loader=recipes.YamlLoader)  # a SafeLoader reading 1e-3 as float
    except yaml.YAMLError as exc:
        raise SweepError(f"YAML syntax error: {exc}", file=name) from None
    return from_dict(data, name)


# ---------------------------------------------------------------------------------------------
# Expansion and run ids

Point = tuple[str, dict[str, Any]]  # (recipe path, {recipe key: value})


def points(sweep: Sweep) -> list[Point]:
    """Every run of the sweep in order, before validation and de-duplication (an evaluation
    sweep's grid points, once each, with no recipe)."""
    if sweep.method == "grid":
        axes = [
            [p.spec["value"]] if p.distribution == "constant" else p.spec["values"]
            for p in sweep.parameters
        ]
        keys = [p.key for p in sweep.parameters]
        combos = list(itertools.product(*axes))
        heads = ("",) if sweep.evaluate is not None else sweep.recipes
        return [(r, dict(zip(keys, combo, strict=True))) for r in heads for combo in combos]
    rng = np.random.default_rng(sweep.seed)
    out: list[Point] = []
    for _ in range(sweep.count or 0):
        pick = len(sweep.recipes) > 1  # with a single recipe nothing is drawn for it
        r = sweep.recipes[int(rng.integers(len(sweep.recipes)))] if pick else sweep.recipes[0]
        out.append((r, {p.key: p.sample(rng) for p in sweep.parameters}))
    return out


_SCHEDULE = ("lambda_max", "start_fraction", "ramp_fraction")


def hashed_config(recipe: recipes.Recipe) -> dict[str, Any]:
    """What a run id hashes: ``legacy_layout(recipe.to_dict())`` without the logging keys that
    only add output files (``recipes.OUTPUT_ONLY_LOGGING``): TensorBoard on or off is one run."""
    d = legacy_layout(recipe.to_dict())
    d["logging"] = {k: v for k, v in d["logging"].items() if k not in recipes.OUTPUT_ONLY_LOGGING}
    return d


def legacy_layout(config: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved recipe (``Recipe.to_dict()``) in the layout it had before the periodic
    regularizer moved into the policy, so that run folders made before keep their ids.

    Then the regularizer was a format, ``numerics.format: periodic_<kind>_b<bits>`` (training in
    fp32), and every recipe had a top-level ``periodic`` section with its schedule. A policy
    with ``numerics.periodic`` and format fp32 is hashed as that format name plus the section;
    one without as the section's defaults; any other (which the old layout could not say) as
    it is, without the section.
    """
    d = copy.deepcopy(dict(config))
    periodic = d["numerics"].pop("periodic", None)
    if periodic is None:
        defaults = {f.name: f.default for f in dataclasses.fields(PeriodicSpec)}
        d["periodic"] = {k: defaults[k] for k in _SCHEDULE}
    elif d["numerics"]["format"] == "fp32":
        d["numerics"]["format"] = f"periodic_{periodic['kind']}_b{periodic['bits']}"
        d["periodic"] = {k: periodic[k] for k in _SCHEDULE}
    else:
        d["numerics"]["periodic"] = periodic
    return d


def upgrade_config(out: str | Path, config: Mapping[str, Any]) -> bool:
    """Rewrite the ``config.yaml`` of run folder ``out`` in today's layout when it holds
    ``config`` in the layout from before ``numerics.periodic`` (see ``legacy_layout``), so that
    ``--resume`` continues runs begun before the move. True if it was rewritten."""
    rd = RunDir(out)
    try:
        old = yaml.safe_load(rd.config.read_text())
    except FileNotFoundError:
        return False
    if old == jsonable(config) or old != jsonable(legacy_layout(config)):
        return False
    rd.write_config(dict(config))
    return True


def run_id(recipe: recipes.Recipe) -> str:
    """``<recipe_label>-<8 hex of sha256 of hashed_config(recipe)>``: stable, config-addressed."""
    blob = json.dumps(hashed_config(recipe), sort_keys=True)
    label = re.sub(r"[^A-Za-z0-9._+-]", "_", recipes.recipe_label(recipe))
    return f"{label}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class Expansion:
    """The runs to do, the points that collapsed into an earlier identical run, the keys
    that vary across runs (``recipe`` included when there are several recipes), and notes
    for the person running it (an evaluation sweep's skipped source runs)."""

    runs: list[RunSpec]
    duplicates: list[dict[str, Any]]
    swept: list[str]
    notes: list[str] = field(default_factory=list)


def recipe_error(sweep: Sweep, i: int, point: Point, exc: UserError) -> SweepError:
    """A run's recipe error, reported against the parameter that set the key if one did."""
    key = getattr(exc, "set_by", None)
    if key in point[1]:
        where, value = f"parameters.{key}", point[1][key]
    else:
        where, value = f"run {i + 1} ({point[0]} with {point[1]})", exc.value
    return SweepError(str(exc), file=sweep.path, key=where, value=value, allowed=exc.allowed)


def expand(sweep: Sweep, results: str | Path = "results") -> Expansion:
    """Build and validate every run; run directories are ``<results>/<name>/<run id>``."""
    if sweep.evaluate is not None:
        return evalsweep.expand(sweep, results)
    folder = Path(results).resolve() / sweep.name
    runs: dict[str, RunSpec] = {}
    duplicates: list[dict[str, Any]] = []
    for i, (path, params) in enumerate(points(sweep)):
        try:
            rec = recipes.load(path, list(params.items()))
        except UserError as exc:
            raise recipe_error(sweep, i, (path, params), exc) from None
        rid, config = run_id(rec), rec.to_dict()
        if rid in runs:
            if runs[rid].config != config:  # 32 bits of sha256 collided: a bug to report
                raise RuntimeError(f"{sweep.path}: run id {rid} names two different configs")
            duplicates.append({"recipe": path, "params": params, "same_as": rid})
            continue
        runs[rid] = RunSpec(rid, str(folder / rid), config, path, params, sweep.name)
    specs = list(runs.values())
    swept = ["recipe"] if len({s.source for s in specs}) > 1 else []
    for p in sweep.parameters:
        seen = {json.dumps(jsonable(s.params.get(p.key)), sort_keys=True) for s in specs}
        if len(seen) > 1:
            swept.append(p.key)
    return Expansion(specs, duplicates, swept)
