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

The engine writes ``<results>/<name>/sweep.yaml`` (the sweep file, the swept keys and every run
with its parameters, for ``numerics compare``), skips runs that already ended (with
``--resume``), and hands the rest to an executor (``numerics.executors``), counting
completed / diverged / failed runs as they come back.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import inspect
import itertools
import json
import math
import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from numerics import recipe as recipes
from numerics import validate as val
from numerics.errors import ConfigError, MissingInputError, UserError
from numerics.executors.base import Executor, RunSpec, Summary
from numerics.periodic import PeriodicSpec
from numerics.rundir import CHECKPOINT, CONFIG, SUMMARY, RunDir, atomic_write_text, jsonable

METHODS = ("grid", "random")
EXECUTORS = ("local", "ray", "slurm")
TOP_KEYS = ("name", "description", "recipe", "method", "count", "seed", "parameters", "executor")
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
INDEX = "sweep.yaml"
FAILED_SUMMARY = "summary.failed.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class SweepError(ConfigError):
    """A sweep file that cannot be used: ``<file>: <key>: what is wrong; what is allowed``."""


class ResultsExistError(UserError):
    """The sweep's results folder already holds runs and ``--resume`` was not given."""


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
    """A validated sweep file. ``recipes`` are resolved paths; ``raw`` is the file's data."""

    path: str
    name: str
    recipes: tuple[str, ...]
    method: str
    parameters: tuple[Parameter, ...]
    count: int | None = None
    seed: int = 0
    executor: dict[str, Any] = field(default_factory=lambda: {"kind": "local"})
    raw: dict[str, Any] = field(default_factory=dict)


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
    if d.get("recipe") is None:
        raise ctx.err(("recipe",), "required (a recipe path or a list of them)")
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
    return Sweep(path, name, paths, method, params, count, seed, ex, dict(d))


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
    """Every run of the sweep in order, before validation and de-duplication."""
    if sweep.method == "grid":
        axes = [
            [p.spec["value"]] if p.distribution == "constant" else p.spec["values"]
            for p in sweep.parameters
        ]
        keys = [p.key for p in sweep.parameters]
        return [
            (r, dict(zip(keys, combo, strict=True)))
            for r in sweep.recipes
            for combo in itertools.product(*axes)
        ]
    rng = np.random.default_rng(sweep.seed)
    out: list[Point] = []
    for _ in range(sweep.count or 0):
        pick = len(sweep.recipes) > 1  # with a single recipe nothing is drawn for it
        r = sweep.recipes[int(rng.integers(len(sweep.recipes)))] if pick else sweep.recipes[0]
        out.append((r, {p.key: p.sample(rng) for p in sweep.parameters}))
    return out


_SCHEDULE = ("lambda_max", "start_fraction", "ramp_fraction")


def hashed_config(recipe: recipes.Recipe) -> dict[str, Any]:
    """What a run id hashes: ``legacy_layout(recipe.to_dict())``."""
    return legacy_layout(recipe.to_dict())


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
    """The runs to do, the points that collapsed into an earlier identical run, and the keys
    that vary across runs (``recipe`` included when there are several recipes)."""

    runs: list[RunSpec]
    duplicates: list[dict[str, Any]]
    swept: list[str]


def _recipe_error(sweep: Sweep, i: int, point: Point, exc: UserError) -> SweepError:
    """A run's recipe error, reported against the parameter that set the key if one did."""
    key = getattr(exc, "set_by", None)
    if key in point[1]:
        where, value = f"parameters.{key}", point[1][key]
    else:
        where, value = f"run {i + 1} ({point[0]} with {point[1]})", exc.value
    return SweepError(str(exc), file=sweep.path, key=where, value=value, allowed=exc.allowed)


def expand(sweep: Sweep, results: str | Path = "results") -> Expansion:
    """Build and validate every run; run directories are ``<results>/<name>/<run id>``."""
    folder = Path(results).resolve() / sweep.name
    runs: dict[str, RunSpec] = {}
    duplicates: list[dict[str, Any]] = []
    for i, (path, params) in enumerate(points(sweep)):
        try:
            rec = recipes.load(path, list(params.items()))
        except UserError as exc:
            raise _recipe_error(sweep, i, (path, params), exc) from None
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


def index(sweep: Sweep, expansion: Expansion) -> dict[str, Any]:
    """What ``sweep.yaml`` in the results folder holds."""
    return {
        "name": sweep.name,
        "sweep_file": sweep.path,
        "sweep": sweep.raw,
        "swept": expansion.swept,
        "runs": [
            {"run_id": s.run_id, "recipe": s.source, "params": s.params} for s in expansion.runs
        ],
        "duplicates": expansion.duplicates,
    }


def write_index(sweep: Sweep, expansion: Expansion, folder: str | Path) -> Path:
    path = Path(folder) / INDEX
    atomic_write_text(path, yaml.safe_dump(jsonable(index(sweep, expansion)), sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------------
# Executors and the engine


def make_executor(kind: str, jobs: int | None, options: Mapping[str, Any]) -> Executor:
    """The executor of ``kind`` (local | ray | slurm) with ``jobs`` and its other options."""
    opts = dict(options)
    if kind == "local":
        from numerics.executors.local import LocalExecutor

        extra = sorted(set(opts) - {"threads"})
        if extra:
            raise SweepError(
                f"option(s) {', '.join(extra)} not accepted by the local executor; "
                "allowed: jobs, threads",
                key="executor",
                value=extra,
                allowed="jobs, threads",
            )
        return LocalExecutor(jobs=jobs, threads=opts.get("threads"))
    if jobs is not None:
        opts["jobs"] = jobs
    try:
        if kind == "ray":
            from numerics.executors.ray_executor import RayExecutor

            known = [n for n in inspect.signature(RayExecutor).parameters if n != "fn"]
            extra = sorted(set(opts) - set(known))
            if extra:
                raise SweepError(
                    f"option(s) {', '.join(extra)} not accepted by the ray executor; "
                    f"allowed: {', '.join(known)}",
                    key="executor",
                    value=extra,
                    allowed=", ".join(known),
                )
            return RayExecutor(**opts)
        if kind == "slurm":
            from numerics.executors.slurm import SlurmExecutor

            return SlurmExecutor(**opts)
    except ImportError as exc:
        raise SweepError(
            f"executor kind {kind} is not available: {exc} (pip install 'numerics[{kind}]')",
            value=kind,
        ) from None
    raise SweepError(
        f"unknown kind {kind!r}; allowed: {_allowed(EXECUTORS)}",
        key="executor",
        value=kind,
        allowed=_allowed(EXECUTORS),
    )


@dataclass
class Tally:
    """How the sweep's runs ended; ``skipped`` counts runs already finished before (resume),
    ``merged`` the points that resolved to the config of another run."""

    total: int
    completed: int = 0
    diverged: int = 0
    failed: int = 0
    skipped: int = 0
    merged: int = 0

    def add(self, status: Any) -> None:
        if status in ("completed", "diverged"):
            setattr(self, status, getattr(self, status) + 1)
        else:
            self.failed += 1

    @property
    def done(self) -> int:
        return self.completed + self.diverged + self.failed

    def line(self) -> str:
        notes = [f"{self.skipped} already done"] if self.skipped else []
        notes += [f"{self.merged} identical configs merged"] if self.merged else []
        return (
            f"{self.done}/{self.total} runs: {self.completed} completed, {self.diverged} "
            f"diverged, {self.failed} failed" + (f" ({'; '.join(notes)})" if notes else "")
        )


def existing_runs(folder: Path) -> list[Path]:
    """Run directories (config, summary or checkpoint inside) under a sweep's folder."""
    if not folder.is_dir():
        return []
    files = (CONFIG, SUMMARY, CHECKPOINT, FAILED_SUMMARY)
    return sorted(p for p in folder.iterdir() if any((p / f).is_file() for f in files))


def run_sweep(
    sweep: Sweep,
    results: str | Path = "results",
    executor: Executor | None = None,
    *,
    resume: bool = False,
    progress: bool | None = None,
) -> Tally:
    """Expand and run ``sweep``; returns the tally. Without ``resume`` a results folder that
    holds runs is refused (``ResultsExistError``) and nothing is touched. With it, runs that
    completed or diverged are kept, failed ones re-run (their summary moved aside to
    ``summary.failed.json``) and interrupted ones resume from their checkpoints. Ctrl-C
    propagates as ``KeyboardInterrupt`` once the executor has stopped its runs."""
    from tqdm import tqdm

    from numerics.executors.local import LocalExecutor

    expansion = expand(sweep, results)
    folder = Path(results) / sweep.name
    existing = existing_runs(folder)
    if existing and not resume:
        raise ResultsExistError(
            f"already holds {len(existing)} run folder(s); pass --resume to continue "
            "the sweep (finished runs are kept, failed and interrupted ones run again) or use "
            "another --results folder; nothing was touched",
            file=str(folder),
        )
    tally = Tally(len(expansion.runs), merged=len(expansion.duplicates))
    todo: list[RunSpec] = []
    for spec in expansion.runs:
        rd = RunDir(spec.out)
        summary = rd.read_summary() if resume else None
        if summary is not None and summary.finished:
            tally.add(summary.status)
            tally.skipped += 1
            continue
        if rd.summary.exists():  # failed (or unreadable): re-run; the checkpoint stays
            os.replace(rd.summary, rd.path / FAILED_SUMMARY)
        if resume:
            upgrade_config(rd.path, spec.config)
        todo.append(spec)
    write_index(sweep, expansion, folder)
    bar = tqdm(
        total=tally.total, initial=tally.done, unit="run", desc=sweep.name,
        disable=None if progress is None else not progress,
    )  # fmt: skip

    def on_done(spec: RunSpec, summary: Summary) -> None:
        tally.add(summary.status)
        bar.update(1)
        bar.set_postfix(completed=tally.completed, diverged=tally.diverged, failed=tally.failed)

    try:
        (executor or LocalExecutor()).run(todo, on_done)
    finally:
        bar.close()
    return tally


# ---------------------------------------------------------------------------------------------
# wandb export

_WANDB_SCRIPT = (  # $1: the recipe; then each KEY=VALUE word becomes --set KEY=VALUE
    'recipe="$1"; shift; for kv do set -- "$@" --set "$kv"; shift; done; '
    'exec numerics train "$recipe" --out {out} --set logging.wandb=online "$@"'
)
_WANDB_HEADER = """\
# numerics sweep {name}, exported for a wandb server: `wandb sweep {file}`, then
# `wandb agent ENTITY/PROJECT/SWEEP_ID` in the folder the recipe path below is relative to
# (the one `numerics sweep --export-wandb` ran in). method and parameters are the
# sweep file's, verbatim (they are wandb syntax); count becomes run_cap. wandb has no sampling
# seed, so its random draws differ from `numerics sweep`.
# command: the agent runs it once per run, a list entry `${{env}}` becoming /usr/bin/env and
# `${{args_no_hyphens}}` the run's parameters as separate KEY=VALUE words (wandb's `${{args}}`
# would give --KEY=VALUE, for argparse scripts). `numerics train` takes recipe keys through
# `--set KEY=VALUE`, so the short sh script puts --set before each word, and writes each run to
# {out_doc}/wandb-<the agent's run id> (WANDB_RUN_ID is set by the agent).
"""


def wandb_config(sweep: Sweep) -> dict[str, Any]:
    """The equivalent wandb sweep configuration (one recipe per wandb sweep)."""
    from numerics import tasks

    if len(sweep.recipes) != 1:
        raise SweepError(
            "a wandb sweep runs one command, so --export-wandb needs a single recipe, got "
            f"{len(sweep.recipes)}; write one sweep file per recipe",
            file=sweep.path,
            key="recipe",
        )
    recipe = sweep.recipes[0]
    task = tasks.get(recipes.load(recipe).task)
    out = shlex.quote(f"results/{sweep.name}") + '/wandb-"$WANDB_RUN_ID"'
    cfg: dict[str, Any] = {
        "name": sweep.name,
        "program": "numerics",
        "method": sweep.method,
        "metric": {
            "name": f"eval/{task.primary}",
            "goal": "maximize" if task.higher_is_better else "minimize",
        },
    }
    if sweep.method == "random":
        cfg["run_cap"] = sweep.count
    cfg["parameters"] = sweep.raw.get("parameters") or {}
    cfg["command"] = [
        "${env}", "sh", "-c", _WANDB_SCRIPT.format(out=out), "numerics-sweep", recipe,
        "${args_no_hyphens}",
    ]  # fmt: skip
    return cfg


def export_wandb(sweep: Sweep, path: str | Path) -> Path:
    """Write ``wandb_config(sweep)`` as YAML, with a comment saying how the command works."""
    header = _WANDB_HEADER.format(name=sweep.name, file=path, out_doc=f"results/{sweep.name}")
    body = yaml.safe_dump(jsonable(wandb_config(sweep)), sort_keys=False, width=100)
    atomic_write_text(Path(path), header + body)
    return Path(path)


# ---------------------------------------------------------------------------------------------
# Command line


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``numerics sweep`` to an argparse subparsers object."""
    p: argparse.ArgumentParser = sub.add_parser(
        "sweep", help="run every point of a sweep file (grid or random) as a recipe run"
    )
    p.add_argument("sweep", help="sweep file (YAML), e.g. sweeps/formats.yaml")
    p.add_argument("--jobs", type=int, help="parallel runs (default: the file's, else CPU cores)")
    p.add_argument("--executor", choices=EXECUTORS, help="where runs go (default: the file's)")
    p.add_argument("--address", help="Ray cluster address (executor ray)")
    p.add_argument("--resume", action="store_true", help="continue a sweep: re-run what is left")
    p.add_argument("--dry-run", action="store_true", help="list the runs; run nothing")
    p.add_argument("--export-wandb", metavar="PATH", help="write a wandb sweep config; run nothing")
    p.add_argument("--results", default="results", help="results root (default ./results)")
    p.set_defaults(func=cmd_sweep)
    return p


def _describe(spec: RunSpec) -> str:
    params = " ".join(f"{k}={json.dumps(jsonable(v))}" for k, v in spec.params.items())
    return f"  {spec.run_id}  {params}".rstrip()


def cmd_sweep(args: argparse.Namespace) -> int:
    """0: every run completed or diverged; 1: a run failed; 130: Ctrl-C. Bad input raises a
    ``UserError`` (the CLI's exit code 2)."""
    folder = Path(args.results) / "?"
    try:
        sweep = load_sweep(args.sweep)
        folder = Path(args.results) / sweep.name
        if args.export_wandb:
            print(f"wrote wandb sweep config {export_wandb(sweep, args.export_wandb)}")
            return 0
        if args.dry_run:
            ex = expand(sweep, args.results)
            merged = f" ({len(ex.duplicates)} identical configs merged)" if ex.duplicates else ""
            print(f"sweep {sweep.name}: {len(ex.runs)} runs{merged} -> {folder}")
            for spec in ex.runs[:5]:
                print(_describe(spec))
            if len(ex.runs) > 5:
                print(f"  ... and {len(ex.runs) - 5} more")
            return 0
        options = {k: v for k, v in sweep.executor.items() if k not in ("kind", "jobs")}
        kind = args.executor or sweep.executor["kind"]
        if kind != sweep.executor["kind"]:
            options = {}  # the file's options are for its own kind
        if args.address:
            if kind != "ray":
                raise UserError(f"is for executor ray, not {kind}", key="--address", value=kind)
            options["address"] = args.address
        if kind == "slurm":
            options.setdefault("folder", str(folder / ".slurm"))
        jobs = args.jobs if args.jobs is not None else sweep.executor.get("jobs")
        executor = make_executor(kind, jobs, options)
        tally = run_sweep(sweep, args.results, executor, resume=args.resume)
    except KeyboardInterrupt:
        print(
            f"\nnumerics sweep: interrupted; finished runs are kept in {folder}, the others "
            "continue from their checkpoints with --resume",
            file=sys.stderr,
        )
        return 130
    print(f"sweep {sweep.name}: {tally.line()} -> {folder}")
    return 1 if tally.failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``numerics sweep ...`` on its own (the CLI wires in ``add_parser``)."""
    parser = argparse.ArgumentParser(prog="numerics")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    from numerics.cli import run_command

    return run_command(args.command, lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
