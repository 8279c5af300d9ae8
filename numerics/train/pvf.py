"""Parameter vulnerability: bit flips in a trained model's stored parameters (2405.01741).

A fault flips one bit (or ``flips`` distinct bits, their positions drawn uniformly) of one
stored unit of a parameter's encoding (``numerics.flips``): the float32
pattern of a parameter kept in float32, or, where a quantized layer casts its weights to a
format, that format's own bits: an element code, a shared scale (an MX block's E8M0 byte, an
integer format's scale, a row-wise table's scale or bias) or a micro-exponent. The unit is
chosen uniformly within a component (a named group of parameters), the bit at a given position
or uniformly over the unit's width. Each fault is evaluated on a fixed set of evaluation
examples against the fault-free decisions: the top-1 class (image), the argmax next byte at
every position (language), the click decision at probability 0.5 (recsys). A trial is one
(fault, decision) pair (for language every position of a window is a decision), and a
component's PVF is the fraction of its trials whose decision changed. Each cell also reports
the mean absolute change of the task's score (the loss of the true class or byte; the
predicted CTR) over the trials whose score stayed finite.

The Wilson 95% interval is over the trials. The trials of one fault share it, so they are not
independent, and the interval is narrower than the sampling error over faults: read it with
the count of faults beside it (``faults``).

A trial restores the flipped bit in place (no model copies), and one forward pass over the
evaluation examples serves every example of a fault. The same seed gives the same faults and
the same table. A model evaluated in a format stores each quantized weight once
(``stored_parameters``) and stops casting it, so the forward pass reads the stored values, and
a flipped code reaches the output decoded, as hardware holding those bits would read it,
never re-quantized; ``pvf`` checks that storing changes no decision before any fault.

``pvf_table`` works on any model and decision function (the tests plant models whose answer is
known); ``pvf`` runs it on a trained run directory under its own numerics policy or an
inference policy (``--set``, as ``numerics evaluate``) and writes a run-like folder:
summary.json (``pvf/<component>[/<field>][/bit<b>]`` metrics, so ``numerics compare`` can table
runs), pvf.json (every cell: faults, trials, changed, pvf and its interval, the mean change;
what each parameter is stored in) and the plots (``write_plots``: a heat map over bit
positions, a bar chart over components).

Components default to the model's natural groups: its top-level modules (DLRM's embeddings,
bottom and top MLPs; the ResNet's stem, stages and classifier), or ``NATURAL`` where those
hide them (the GPT's embeddings, attention, MLP and norms). Not built: flips in the embedding
cache's own int8/int4 stored rows (buffers, not parameters; the row-wise formats cover
int8/int4 tables as a weights format), and spreading one study over the sweep executors.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import platform
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from numerics.encoding import encode
from numerics.errors import MissingInputError, UserError
from numerics.files import atomic_write_json
from numerics.flips import FIELDS, Field, Stored
from numerics.nn.modules import Quantized, quantize_model
from numerics.nn.policy import Cast
from numerics.provenance import provenance
from numerics.rounding import Rounding
from numerics.train import recipe as recipes
from numerics.train.evaluate import check_override, inference_recipe
from numerics.train.rundir import RunDir
from numerics.train.summary import RunSummary
from numerics.train.trainer import data_and_model, header, read_checkpoint, run_policy

#: the model's decisions on the fixed examples, or (decisions, a score per decision)
Decide = Callable[[nn.Module], Tensor | tuple[Tensor, Tensor]]
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Cell:
    """One component x field x bit position: ``changed`` of ``trials`` (fault, decision)
    pairs; ``delta``: the mean absolute change of the task's score over the trials whose
    score stayed finite (``nonfinite``: those that did not)."""

    component: str
    bit: int | None  # None: positions drawn uniformly
    faults: int
    trials: int
    changed: int
    field: str = "element"
    delta: float | None = None
    nonfinite: int = 0
    flips: int = 1  # bits flipped per fault (distinct, in one unit)

    @property
    def pvf(self) -> float:
        return self.changed / self.trials if self.trials else math.nan

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.changed, self.trials)


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``k`` successes in ``n`` trials."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


#: the natural groups of models whose top-level modules do not show them (the GPT's blocks
#: hold attention, MLP and norms together); the head is tied to the token embedding
NATURAL: dict[str, tuple[str, ...]] = {
    "gpt": (
        "embeddings=w[tp]e.*",
        "attention=h.*.attn.*",
        "mlp=h.*.mlp.*",
        "norms=*ln_*",
    ),
}


def components(
    model: nn.Module, specs: Sequence[str] = (), model_name: str | None = None
) -> dict[str, list[str]]:
    """Component name -> the parameter names in it. ``specs``: ``NAME=GLOB`` or ``GLOB`` (its
    own name) over ``named_parameters`` names; none: the model's natural groups (``NATURAL``
    for ``model_name``), else one component per top-level module that holds parameters."""
    names = [n for n, _ in model.named_parameters()]
    out: dict[str, list[str]] = {}
    if not specs and model_name in NATURAL:
        specs = NATURAL[model_name]
    if not specs:
        for n in names:
            out.setdefault(n.split(".", 1)[0], []).append(n)
        return out
    for spec in specs:
        name, _, glob = spec.rpartition("=")
        name = name or glob
        hits = [n for n in names if fnmatch.fnmatchcase(n, glob)]
        if not hits:
            raise UserError(
                f"{glob!r} matches no parameter",
                key="--component",
                value=spec,
                note=f" (parameters: {', '.join(names[:8])}{', ...' if len(names) > 8 else ''})",
            )
        out[name] = hits
    return out


def _no_stochastic_weights(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if isinstance(m, Quantized) and m.numerics.weights.rounding is Rounding.STOCHASTIC:
            raise UserError(
                f"layer {name} casts its weights with stochastic rounding, which draws anew at "
                "every forward pass: there is no one stored encoding to flip",
                key="numerics",
                note=" (evaluate it with a deterministic weights rounding: --set "
                "numerics.weights.rounding=nearest_even)",
            )


def stored_parameters(model: nn.Module, seed: int = 0) -> dict[str, Stored]:
    """Every parameter as it is stored: a quantized layer's weights in their format's codes
    (encoded once with the layer's own cast and axis; the layer's weights cast is then
    switched off, so the forward pass reads the stored values as they are, and a flipped code
    reaches the output decoded, not re-quantized), everything else as float32 bits.

    The model's outputs are unchanged by this (the cast's output is now stored instead of
    computed): ``pvf`` checks it on its examples."""
    casts: dict[int, tuple[Cast, int, list[str]]] = {}
    for mname, m in model.named_modules():
        w = getattr(m, "weight", None)
        if not isinstance(m, Quantized) or not isinstance(w, nn.Parameter):
            continue
        cast, axis = m.numerics.weights, m.weight_axis
        if cast.is_identity or axis is None:
            continue
        seen = casts.setdefault(id(w), (cast, axis, []))
        if (seen[0], seen[1]) != (cast, axis):
            raise UserError(
                f"the weight shared by {seen[2][0]} and {mname} is cast to two formats "
                f"({seen[0].label()} along axis {seen[1]}, {cast.label()} along axis {axis}): "
                "it has no one stored encoding",
                key="numerics.overrides",
            )
        seen[2].append(mname)
    out: dict[str, Stored] = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dtype != torch.float32:
                raise UserError(f"parameter {name} is {p.dtype}; pvf stores float32 models",
                                key="--component")  # fmt: skip
            found = casts.get(id(p))
            if found is None:
                out[name] = Stored(p.data)
                continue
            cast, axis, _ = found
            enc = encode(p.data, cast.format, cast.rounding, axis=axis, saturate=cast.saturate,
                         generator=seed)  # fmt: skip
            out[name] = Stored(p.data, enc)
    for m in model.modules():
        if isinstance(m, Quantized) and id(getattr(m, "weight", None)) in casts:
            m.numerics = dataclasses.replace(m.numerics, weights=Cast())
    return out


def _targets(
    component: str,
    members: Sequence[str],
    stored: dict[str, Stored],
    field: str,
    bit: int | None,
    flips: int = 1,
) -> list[tuple[Stored, Field]]:
    """The parameters of a component that hold ``field`` with a bit ``bit`` (any, for None)
    and at least ``flips`` bits."""
    out = []
    for n in members:
        f = stored[n].fields.get(field)
        if f is not None and f.units and (bit is None or bit < f.width) and flips <= f.width:
            out.append((stored[n], f))
    if not out:
        fs = [f for n in members for f in stored[n].fields.values()]
        have = sorted({f"{f.name}: {f.width} bits" for f in fs})
        raise UserError(
            f"component {component!r} stores no {field} with a bit {bit}"
            if bit is not None
            else f"component {component!r} stores no {field} of {flips} bits or more"
            if flips > 1
            else f"component {component!r} stores no {field}",
            key="--field/--bit",
            value=(field, bit),
            note=f" (stored in it: {'; '.join(have)})",
        )
    return out


def pvf_table(
    model: nn.Module,
    decide: Decide,
    groups: dict[str, list[str]],
    faults: int,
    bits: Sequence[int | None] = (None,),
    seed: int = 0,
    fields: Sequence[str] = ("element",),
    stored: dict[str, Stored] | None = None,
    flips: int = 1,
) -> list[Cell]:
    """``faults`` faults per component, field and bit position (None: a position drawn
    uniformly per fault within the chosen unit's width), each evaluated by ``decide`` against
    the fault-free outcome. A fault flips ``flips`` distinct bits of one unit (more than one:
    positions drawn uniformly, so ``bits`` must be None). ``stored``: the parameters'
    encodings (``stored_parameters``); None stores every parameter as float32 bits."""
    if flips < 1:
        raise UserError("must be >= 1", key="--flips", value=flips)
    if flips > 1 and any(b is not None for b in bits):
        raise UserError("a fault of several bits draws its positions: give no --bit",
                        key="--flips", value=flips)  # fmt: skip
    if stored is None:
        stored = {n: Stored(p.data) for n, p in model.named_parameters()}
    for name, members in groups.items():
        for n in members:
            if n not in stored:
                raise UserError(f"no stored parameter {n}", key="--component", value=name)
    for name in fields:
        if name not in FIELDS:
            raise UserError(f"unknown field {name!r} (fields: {', '.join(FIELDS)})", key="--field")
    for b in bits:
        if b is not None and b < 0:
            raise UserError(f"bit {b} is negative", key="--bit", value=b, allowed=">= 0")
    plan = [(c, f, b, _targets(c, m, stored, f, b, flips)) for c, m in groups.items()
            for f in fields for b in bits]  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    with torch.no_grad():
        clean = _outcome(decide(model))
        cells = []
        for comp, field, b, targets in plan:
            cum = torch.cumsum(torch.tensor([f.units for _, f in targets]), 0)
            total = int(cum[-1])
            changed, delta, finite = 0, 0.0, 0
            for _ in range(faults):
                flat = int(torch.randint(total, (1,), generator=gen))
                which = int(torch.searchsorted(cum, flat, right=True))
                st, fld = targets[which]
                if flips > 1:
                    at = torch.randperm(fld.width, generator=gen)[:flips].tolist()
                else:
                    at = [int(torch.randint(fld.width, (1,), generator=gen)) if b is None else b]
                unit = flat - (int(cum[which - 1]) if which else 0)
                for bit in at:
                    st.flip(field, unit, bit)
                try:
                    got = _outcome(decide(model))
                finally:
                    for bit in at:
                        st.flip(field, unit, bit)
                changed += int((got[0] != clean[0]).sum())
                if clean[1] is not None and got[1] is not None:
                    d = (got[1] - clean[1]).abs()
                    ok = torch.isfinite(d)
                    delta += float(d[ok].double().sum())  # float64: no overflow
                    finite += int(ok.sum())
            trials = faults * clean[0].numel()
            mean = delta / finite if finite else None
            lost = trials - finite if clean[1] is not None else 0
            cells.append(Cell(comp, b, faults, trials, changed, field, mean, lost, flips))
    return cells


def _outcome(r: Tensor | tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor | None]:
    return (r, None) if isinstance(r, Tensor) else r


def decider(task: str, batch: dict[str, Tensor]) -> Decide:
    """The decisions a task's output is judged by, on the fixed examples ``batch``, and the
    score whose mean absolute change a cell reports: the top-1 class and the loss of the
    true class (image), the argmax next byte and the loss of the true byte at every position
    (language), the click decision at probability 0.5 and the predicted CTR (recsys)."""
    if task in ("image", "language"):

        def decide(m: nn.Module) -> tuple[Tensor, Tensor]:
            logits = m(batch["x"]).float()
            loss = F.cross_entropy(logits.flatten(0, -2), batch["y"].flatten(), reduction="none")
            return logits.argmax(-1), loss.view(batch["y"].shape)

        return decide

    def click(m: nn.Module) -> tuple[Tensor, Tensor]:
        logit = m(batch["dense"], batch["sparse"]).float()
        return logit > 0, torch.sigmoid(logit)

    return click


#: what a cell's mean absolute change measures, per task
SCORE = {"image": "loss (nats)", "language": "loss (nats)", "recsys": "predicted CTR"}


def pvf(
    run_dir: str | Path,
    out: str | Path,
    *,
    overrides: Sequence[str] = (),
    component_specs: Sequence[str] = (),
    fields: Sequence[str] = ("element",),
    bits: Sequence[int | None] = (None,),
    faults: int = 1000,
    examples: int = 512,
    seed: int = 0,
    flips: int = 1,
) -> RunSummary:
    """Fault injection on the trained run in ``run_dir``, evaluated under its own numerics
    policy or the inference policy ``overrides`` make (``numerics evaluate``'s ``--set``);
    writes ``out`` (summary.json, pvf.json, the plots) and returns the summary."""
    src = RunDir(run_dir)
    if not src.checkpoint.exists() or not src.config.exists():
        raise MissingInputError(
            "not a run directory with a checkpoint (config.yaml and checkpoint.pt)",
            file=str(src.path),
        )
    for o in overrides:
        check_override(o)
    study = Study(tuple(component_specs), tuple(fields), tuple(bits), faults, examples, seed, flips)
    return _pvf(src, inference_recipe(src.config, overrides), out, study)


@dataclass(frozen=True)
class Study:
    """What one fault-injection study does: components (``NAME=GLOB``; none: the natural
    groups), fields, bit positions (None: uniform), faults per cell, examples, seed."""

    components: tuple[str, ...] = ()
    fields: tuple[str, ...] = ("element",)
    bits: tuple[int | None, ...] = (None,)
    faults: int = 1000
    examples: int = 512
    seed: int = 0
    flips: int = 1

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Study:
        """From a sweep file's ``evaluate.pvf`` (lists for the tuples)."""
        return cls(
            components=tuple(d.get("components", ())),
            fields=tuple(d.get("fields", ("element",))),
            bits=tuple(d.get("bits", (None,))),
            faults=int(d.get("faults", 1000)),
            examples=int(d.get("examples", 512)),
            seed=int(d.get("seed", 0)),
            flips=int(d.get("flips", 1)),
        )


def run_pvf(
    run_dir: str | Path, config: dict[str, Any], out: str | Path, study: Study
) -> RunSummary:
    """One job of a fault-injection sweep (an evaluation sweep with ``evaluate.pvf``): the
    run in ``run_dir`` under the inference recipe ``config``; a failure is recorded in ``out``
    as a ``failed`` summary naming the source run, and re-raised."""
    src = RunDir(run_dir)
    try:
        return _pvf(src, recipes.from_dict(dict(config), source=str(src.config)), out, study)
    except Exception as exc:
        RunDir(out).write_summary(RunSummary.failed(
            exc, traceback.format_exc(), extra={"source_run": str(src.path)}))  # fmt: skip
        raise


def _pvf(src: RunDir, recipe: recipes.Recipe, out: str | Path, study: Study) -> RunSummary:
    component_specs, fields, bits = study.components, study.fields, study.bits
    faults, examples, seed = study.faults, study.examples, study.seed
    wall0 = time.perf_counter()
    if faults < 1 or examples < 1:
        raise UserError("must be >= 1", key="--faults/--examples", value=(faults, examples))
    data, model = data_and_model(recipe)
    n_params = sum(p.numel() for p in model.parameters())
    model = quantize_model(model, run_policy(recipe))
    model.load_state_dict(read_checkpoint(src.checkpoint, torch.device("cpu"))["model"])
    _no_stochastic_weights(model)
    groups = components(model, component_specs, recipe.model["name"])
    n = min(examples, len(data.test))
    batch = data.test.batch(torch.arange(n))
    decide = decider(recipe.task, batch)
    model.eval()
    with torch.no_grad():
        before = decide(model)
        stored = stored_parameters(model, seed)
        after = decide(model)
    if not all(torch.equal(a, b) for a, b in zip(before, after, strict=True)):
        raise RuntimeError(
            "internal: the model with its weights stored in their format does not reproduce "
            "the model casting them (please report this)"
        )
    skipped: list[str] = []
    if not component_specs:  # the natural groups: leave out those that store no such field
        skipped = [c for c, m in groups.items()
                   if not all(any(f in stored[n].fields for n in m) for f in fields)]  # fmt: skip
        if len(skipped) == len(groups):
            raise UserError(
                f"no component stores {'/'.join(fields)} under {recipe.numerics.label()} "
                "(float32 parameters store only element bits: quantize the weights with --set "
                "numerics.weights=FORMAT)",
                key="--field",
            )
        groups = {c: m for c, m in groups.items() if c not in skipped}
    cells = pvf_table(model, decide, groups, faults, bits, seed, fields, stored, study.flips)
    rows = [{**asdict(c), "pvf": c.pvf, "interval": list(c.interval)} for c in cells]
    rd = RunDir(out)
    rd.write_config(recipe.to_dict())
    widths = {n: {f.name: f.width for f in s.fields.values()} for n, s in stored.items()}
    atomic_write_json(rd.path / "pvf.json", {
        "source_run": str(src.path), "seed": seed, "examples": n, "score": SCORE[recipe.task],
        "policy": recipe.numerics.label(), "stored": widths, "skipped": skipped, "cells": rows,
    })  # fmt: skip
    write_plots(rd.path, cells, f"{src.path.name} ({recipe.numerics.label()})")
    summary = RunSummary(
        status="completed",
        **header(recipe),
        metrics={_metric(c): c.pvf for c in cells},
        primary_metric=None,
        wall_s=round(time.perf_counter() - wall0, 3),
        parameters=n_params,
        device="cpu",
        torch=torch.__version__,
        python=platform.python_version(),
        provenance=provenance("cpu"),
        extra={
            "source_run": str(src.path),
            "trained_format": recipes.load(src.config).numerics.label(),
            "pvf_seed": seed,
            "pvf_examples": n,
            "pvf_faults": faults,
        },
    )
    rd.write_summary(summary)
    return summary


def _metric(c: Cell) -> str:
    name = f"pvf/{c.component}"
    if c.field != "element":
        name += f"/{c.field}"
    return name + (f"/bit{c.bit}" if c.bit is not None else "")


def write_plots(folder: Path, cells: Sequence[Cell], title: str) -> list[Path]:
    """``pvf_bits.png`` (a heat map, component x bit position, one per field with more than
    one position) and ``pvf_components.png`` (each component's PVF with its interval, over
    bit positions drawn uniformly, or pooled over the positions studied)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    comps = list(dict.fromkeys(c.component for c in cells))
    for field in dict.fromkeys(c.field for c in cells):
        mine = [c for c in cells if c.field == field and c.bit is not None]
        bits = sorted({c.bit for c in mine if c.bit is not None})
        at = {b: i for i, b in enumerate(bits)}
        if len(bits) < 2:
            continue
        grid = np.full((len(comps), len(bits)), np.nan)
        for c in mine:
            grid[comps.index(c.component), at[c.bit if c.bit is not None else -1]] = c.pvf
        fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(bits) + 2), 0.5 * len(comps) + 1.5))
        im = ax.imshow(grid, aspect="auto", cmap="magma_r", vmin=0, vmax=max(1e-9, np.nanmax(grid)))
        ax.set_xticks(range(len(bits)), [str(b) for b in bits], fontsize=7)
        ax.set_yticks(range(len(comps)), comps)
        ax.set_xlabel(f"bit position ({field}; 0 = least significant)")
        ax.set_title(f"PVF, {title}")
        fig.colorbar(im, ax=ax, label="PVF")
        fig.tight_layout()
        path = folder / ("pvf_bits.png" if field == "element" else f"pvf_bits_{field}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    pooled = []
    for comp in comps:
        for field in dict.fromkeys(c.field for c in cells if c.component == comp):
            mine = [c for c in cells if c.component == comp and c.field == field]
            anyb = [c for c in mine if c.bit is None]
            use = anyb or mine
            k, t = sum(c.changed for c in use), sum(c.trials for c in use)
            pooled.append((comp if field == "element" else f"{comp} {field}", k, t))
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(pooled) + 1), 3.5))
    p = np.array([k / t for _, k, t in pooled])
    ci = np.array([wilson(k, t) for _, k, t in pooled]).reshape(-1, 2)
    err = np.clip(np.stack([p - ci[:, 0], ci[:, 1] - p]), 0, None)  # rounding: never < 0
    ax.bar(np.arange(len(pooled)), p, yerr=err, capsize=3, color="#4c72b0")
    ax.set_xticks(range(len(pooled)), [name for name, _, _ in pooled], rotation=20, ha="right")
    ax.set_ylabel("PVF (Wilson 95%, over trials)")
    ax.set_title(f"PVF by component, {title}", fontsize=9)
    fig.tight_layout()
    path = folder / "pvf_components.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


def markdown(cells: Sequence[Cell]) -> list[str]:
    """The table: component, field (when any is not the element), bit, faults, trials, PVF
    and its Wilson 95% interval, the score's mean absolute change (when measured)."""
    fields = any(c.field != "element" for c in cells)
    deltas = any(c.delta is not None for c in cells)
    multi = any(c.flips > 1 for c in cells)
    head = ["component", *(["field"] if fields else []), "bit", *(["flips"] if multi else []),
            "faults", "trials", "PVF",
            "95% (Wilson, over trials)", *(["mean abs. change"] if deltas else [])]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cells:
        lo, hi = c.interval
        bit = "any" if c.bit is None else str(c.bit)
        row = [c.component, *([c.field] if fields else []), bit,
               *([str(c.flips)] if multi else []), str(c.faults), str(c.trials),
               f"{c.pvf:.4f}", f"[{lo:.4f}, {hi:.4f}]"]  # fmt: skip
        if deltas:
            d = "" if c.delta is None else f"{c.delta:.4g}"
            row.append(d + (f" ({c.nonfinite} non-finite)" if c.nonfinite else ""))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def read_cells(folder: str | Path) -> tuple[dict[str, Any], list[Cell]]:
    """The pvf.json ``pvf`` wrote to ``folder``: the document and its cells."""
    doc = json.loads((Path(folder) / "pvf.json").read_text())
    names = [f.name for f in dataclasses.fields(Cell)]
    cells = []
    for r in doc["cells"]:
        kw = {k: r[k] for k in names if k in r}
        if isinstance(kw.get("delta"), str):  # "inf" / "nan": how pvf.json writes them
            kw["delta"] = float(kw["delta"])
        cells.append(Cell(**kw))
    return doc, cells


def cmd_pvf(args: Any) -> int:
    bits: list[int | None] = [None] if not args.bit else [int(b) for b in args.bit]
    out = args.out or str(Path("results") / "pvf" / Path(args.run).name)
    pvf(args.run, out, overrides=args.set or [], component_specs=args.component or [],
        fields=args.field or ["element"], bits=bits, faults=args.faults,
        examples=args.examples, seed=args.seed, flips=args.flips)  # fmt: skip
    doc, cells = read_cells(out)
    print(f"{doc['policy']}: score = {doc['score']}")
    print("\n".join(markdown(cells)))
    print(f"-> {out}")
    return 0
