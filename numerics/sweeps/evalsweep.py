"""Evaluation sweeps: trained runs times a grid of inference policies, run like training runs.

A sweep file with an ``evaluate`` section in place of ``recipe`` evaluates trained runs
(``numerics evaluate``, direct-cast inference) instead of training recipes::

    name: direct_cast_demo
    evaluate:
      runs: [demo]             # run folders, folders of them (a sweep's results), or globs
      where: {format: fp32}    # optional: only the source runs whose key has this value
      calibrate: 16            # optional: training batches that fix int8/int4 activation scales
    parameters:                # the inference policy: numerics.* and the evaluation's size
      numerics.format: {values: [fp32, bf16, mxint8, mxfp4_e2m1]}
      train.max_eval_batches: {value: 4}
    executor: {kind: local, jobs: 2, threads: 1}

Source runs. Each entry of ``runs`` is a path or a glob; a relative one is looked up under the
results root (``numerics sweep --results``, default ``results``) first, then in the working
directory, so ``demo`` names the demo sweep's runs wherever ``--results`` puts them. A match
is a run folder (it holds ``config.yaml``) or a folder of them one level down. A source is a
run that completed and kept its ``checkpoint.pt``: a run folder named on its own (no glob)
that is not one is an error; in a folder or a glob the others (diverged, failed, unfinished,
evaluation folders) are skipped and counted. ``where`` keeps the sources whose key, as
``numerics compare --where`` reads it (a dotted recipe key of the trained run, or ``format``,
its training policy's label), has the value given, or one of a list of them. ``calibrate: N``
runs each job with ``numerics evaluate --calibrate N``: the source's first N training batches
fix the scales of its per-tensor integer activation casts (a policy without such casts is
evaluated as it is; ``numerics.nn.calibration``).

Jobs. Every source run is evaluated at every point of the grid (sources in the order ``runs``
names them, a folder's in name order, then the parameters as in a training sweep, the first key
varying slowest; ``method: grid`` only). A point's overrides apply to the source's resolved
recipe as ``numerics evaluate --set`` does (``evaluate.inference_recipe``: a numerics key
starts the policy from fp32). A job's folder is ``<results>/<name>/<source folder>--<inference
label>`` (``evaluate.default_out``; a calibrated policy's label ends in ``-cal<N>``), so the
jobs of ``numerics evaluate --results`` and of a sweep are the same folders; it runs through
the sweep's executor (``run_one`` with ``RunSpec.evaluates``), in parallel, isolated (a failed
evaluation is recorded, the others go on) and resumable (``--resume`` keeps finished ones).
``numerics compare`` tables the folder: rows the source runs' recipe and training format,
columns the inference format, intervals over the training seeds.

Fault injection. With ``pvf: {faults, examples, seed, fields, bits, components}`` in the
section (``numerics pvf``'s options; bits ``any`` or positions), every job is a fault-injection
study (``numerics.train.pvf``) of its source run under its point's inference policy instead
of an evaluation, so a study over many trained runs and formats runs in parallel on any
executor and resumes; each job's folder holds pvf.json and the plots beside summary.json
(``pvf/<component>[/<field>][/bit<b>]`` metrics: ``numerics compare --metric`` tables them).
"""

from __future__ import annotations

import glob
import json
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from numerics import validate as val
from numerics.errors import UserError
from numerics.files import jsonable
from numerics.sweeps.executors.base import Evaluation, RunSpec
from numerics.train.rundir import CONFIG, RunDir

if TYPE_CHECKING:
    from numerics.sweeps.spec import Expansion, Sweep

EVALUATE_KEYS = ("runs", "where", "calibrate", "pvf")
PVF_KEYS = ("faults", "examples", "seed", "fields", "bits", "components", "flips")


@dataclass(frozen=True)
class Evaluate:
    """An evaluation sweep's ``evaluate`` section: the source runs as written (paths or
    globs), the filter on them (key -> the values it may have), the calibration batches."""

    runs: tuple[str, ...]
    where: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    calibrate: int = 0
    pvf: dict[str, Any] | None = None  # a fault-injection study instead of an evaluation


def _pvf_section(raw: Any, ctx: val.Context) -> dict[str, Any]:
    """``evaluate.pvf``, checked: what ``numerics pvf`` takes, as ``numerics.train.pvf.Study``
    fields (bits ``any`` or an integer >= 0)."""
    from numerics.flips import FIELDS

    at = ("evaluate", "pvf")
    d = ctx.mapping(raw if raw is not None else {}, PVF_KEYS, at)
    out: dict[str, Any] = {}
    for key, default in (("faults", 1000), ("examples", 512)):
        out[key] = ctx.convert(d.get(key, default), val.integer(1), (*at, key))
    out["seed"] = ctx.convert(d.get("seed", 0), val.integer(0), (*at, "seed"))
    out["flips"] = ctx.convert(d.get("flips", 1), val.integer(1), (*at, "flips"))

    def strings(key: str, allowed: tuple[str, ...] | None, default: list[str]) -> list[str]:
        v = d.get(key, default)
        v = [v] if isinstance(v, str) else v
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise ctx.err((*at, key), "must be a list of names", value=v)
        bad = [x for x in v if allowed is not None and x not in allowed]
        if bad:
            raise ctx.err((*at, key), f"unknown {bad[0]!r}; allowed: {', '.join(allowed or ())}",
                          value=bad[0])  # fmt: skip
        return list(v)

    out["fields"] = strings("fields", FIELDS, ["element"])
    out["components"] = strings("components", None, [])
    bits = d.get("bits", ["any"])
    bits = bits if isinstance(bits, list) else [bits]
    for b in bits:
        if b != "any" and (isinstance(b, bool) or not isinstance(b, int) or b < 0):
            raise ctx.err((*at, "bits"), "each bit is an integer >= 0 or any", value=b)
    out["bits"] = [None if b == "any" else b for b in bits]
    return out


def parse(raw: Any, ctx: val.Context) -> Evaluate:
    """The ``evaluate`` section, checked (its runs are found later, by ``sources``)."""
    d = ctx.mapping(raw, EVALUATE_KEYS, ("evaluate",))
    runs = d.get("runs")
    if isinstance(runs, str):
        runs = [runs]
    if not isinstance(runs, list) or not runs:
        raise ctx.err(
            ("evaluate", "runs"),
            "required: a run folder, a folder of runs or a glob, or a list of them",
            value=runs,
        )
    for r in runs:
        if not isinstance(r, str) or not r.strip():
            raise ctx.err(("evaluate", "runs"), "each entry must be a path or a glob", value=r)
    where = d.get("where") or {}
    if not isinstance(where, Mapping):
        raise ctx.err(
            ("evaluate", "where"), "must be a mapping of key -> value, e.g. {format: fp32}",
            value=where,
        )  # fmt: skip
    conds = []
    for k, v in where.items():
        values = tuple(v) if isinstance(v, list) else (v,)
        if not isinstance(k, str) or not k or not values:
            raise ctx.err(("evaluate", "where", str(k)), "needs a key and a value", value=v)
        conds.append((k, values))
    calibrate = ctx.convert(d.get("calibrate", 0), val.integer(0), ("evaluate", "calibrate"))
    pvf = _pvf_section(d["pvf"], ctx) if "pvf" in d else None
    if pvf is not None and calibrate:
        raise ctx.err(("evaluate", "calibrate"), "a fault-injection study (pvf) is not calibrated",
                      value=calibrate)  # fmt: skip
    return Evaluate(tuple(runs), tuple(conds), calibrate, pvf)


def check_parameter(key: str, ctx: val.Context) -> None:
    """A swept key an evaluation may set (``evaluate.ALLOWED``), else the error naming it."""
    from numerics.train.evaluate import ALLOWED, allowed_key

    if not allowed_key(key):
        raise ctx.err(
            ("parameters", key),
            "an evaluation sweep changes only the inference side of a trained run; allowed: "
            f"{', '.join(ALLOWED)} (and the keys under numerics)",
            value=key,
            allowed=", ".join(ALLOWED),
        )


@dataclass(frozen=True)
class Sources:
    """The source runs found (in order), and the runs left out, counted by reason."""

    runs: list[Path]
    skipped: Counter[str]

    def note(self) -> str:
        """``skipped 63 source runs: 60 not matching where, 3 failed`` or ``""``."""
        if not self.skipped:
            return ""
        n = sum(self.skipped.values())
        parts = ", ".join(f"{k} {why}" for why, k in self.skipped.most_common())
        return f"skipped {n} source run{'s' if n > 1 else ''}: {parts}"


def _matches(entry: str, results: Path) -> list[Path]:
    """The folders ``entry`` names: under ``results`` first, then the working directory."""
    for base in [Path()] if os.path.isabs(entry) else [results, Path()]:
        found = sorted(Path(p) for p in glob.glob(str(base / entry)) if Path(p).is_dir())
        if found:
            return found
    return []


def _why_not(run: Path) -> str | None:
    """Why the run folder ``run`` cannot be a source (None: it can)."""
    rd = RunDir(run)
    if not rd.checkpoint.is_file():
        return "without checkpoint.pt"
    summary = rd.read_summary()
    if summary is None:
        return "unfinished"
    return None if summary.status == "completed" else str(summary.status)


def sources(ev: Evaluate, results: str | Path, sweep_path: str) -> Sources:
    """The source runs of ``ev``: found, checked and filtered (see the module docstring)."""
    from numerics.sweeps.compare import load_run, value_label

    def error(key: str, detail: str, value: Any) -> UserError:
        from numerics.sweeps.spec import SweepError

        return SweepError(detail, file=sweep_path, key=f"evaluate.{key}", value=value)

    found: list[Path] = []
    skipped: Counter[str] = Counter()
    for entry in ev.runs:
        matches = _matches(entry, Path(results))
        if not matches:
            raise error(
                "runs",
                f"{entry!r} matches no folder (looked under the results root {results}, then in "
                f"the working directory {os.getcwd()})",
                entry,
            )
        for m in matches:
            if (m / CONFIG).is_file():
                why = _why_not(m)
                if why is not None and not glob.has_magic(entry):
                    raise error(
                        "runs",
                        f"{m} is a run folder that cannot be evaluated ({why}; a source run "
                        "completed and kept its checkpoint.pt)",
                        entry,
                    )
                runs = [m]
            else:
                runs = sorted(d for d in m.iterdir() if (d / CONFIG).is_file())
                if not runs:
                    raise error("runs", f"{m} is neither a run folder nor a folder of them", entry)
            for r in runs:
                why = _why_not(r)
                if why is not None:
                    skipped[why] += 1
                elif r not in found:
                    found.append(r)
    kept = []
    for r in found:
        run = load_run(r)
        if run is not None and all(
            value_label(run.get(k)) in {value_label(v) for v in vs} for k, vs in ev.where
        ):
            kept.append(r)
        else:
            skipped["not matching where"] += 1
    out = Sources(kept, skipped)
    if not kept:
        key = "where" if found else "runs"
        raise error(key, f"no source run to evaluate ({out.note() or 'none found'})", None)
    return out


def expand(sweep: Sweep, results: str | Path) -> Expansion:
    """The jobs of evaluation sweep ``sweep`` (one with ``evaluate``): every source run at
    every grid point, one ``RunSpec`` each."""
    from numerics.sweeps.spec import Expansion, SweepError, points, recipe_error
    from numerics.train.evaluate import default_out, inference_label, inference_recipe

    ev = sweep.evaluate
    assert ev is not None
    found = sources(ev, results, sweep.path)
    folder = Path(results).resolve() / sweep.name
    grid = [params for _, params in points(sweep)]
    runs: dict[str, RunSpec] = {}
    duplicates: list[dict[str, Any]] = []
    for src in found.runs:
        config_file = src / CONFIG
        for i, params in enumerate(grid):
            try:
                rec = inference_recipe(config_file, list(params.items()))
            except UserError as exc:
                raise recipe_error(sweep, i, (str(src), params), exc) from None
            out = default_out(src, inference_label(rec, ev.calibrate), folder)
            config, job = rec.to_dict(), Evaluation(str(src), ev.calibrate, ev.pvf)
            if out.name in runs:
                other = runs[out.name]
                if other.config != config or other.evaluates != job:
                    before = other.evaluates.run if other.evaluates is not None else "?"
                    raise SweepError(
                        f"two jobs would share the folder {out.name} ({before} with "
                        f"{other.params} and {src} with {params}): a job's folder is named by "
                        "the source folder and the inference policy's label; give the policies "
                        "distinct names (numerics.name) or the sources distinct folder names",
                        file=sweep.path,
                        key="parameters",
                    )
                duplicates.append({"source_run": str(src), "params": params, "same_as": out.name})
                continue
            runs[out.name] = RunSpec(
                out.name, str(out), config, str(config_file), params, sweep.name, job
            )
    specs = list(runs.values())
    swept = []
    for p in sweep.parameters:
        seen = {json.dumps(jsonable(s.params.get(p.key)), sort_keys=True) for s in specs}
        if len(seen) > 1:
            swept.append(p.key)
    return Expansion(specs, duplicates, swept, [found.note()] if found.note() else [])
