"""Parameter vulnerability: bit flips in a trained model's parameters (2405.01741).

A fault flips one bit of one parameter element's stored float32 encoding, chosen uniformly
within a component (a named group of parameters) at a given bit position, or at a position drawn
uniformly over the 32 bits. Each fault is evaluated on a fixed set of evaluation examples
against the fault-free decisions: the top-1 class (image), the argmax next byte at every
position (language), the click decision at probability 0.5 (recsys). A trial is one (fault,
decision) pair (for language every position of a window is a decision), and a component's PVF
is the fraction of its trials whose decision changed.

The Wilson 95% interval is over the trials. The trials of one fault share it, so they are not
independent, and the interval is narrower than the sampling error over faults: read it with
the count of faults beside it (``faults``).

A trial restores the flipped element in place (no model copies), and one forward pass over
the evaluation examples serves every example of a fault. The same seed gives the same faults
and the same table.

``pvf_table`` works on any model and decision function (the tests plant models whose answer is
known); ``pvf`` runs it on a trained run directory and writes a run-like folder: summary.json
(``pvf/<component>`` metrics, so ``numerics compare`` can table runs) and pvf.json (every
component x bit cell: faults, trials, changed, pvf and its interval).

Not yet: flips of a quantized format's own code bits (element codes, shared scales) and of the
int8/int4 embedding tables; the heat map and bar chart. Components default to the model's
natural groups: its top-level modules (DLRM's embeddings, bottom and top MLPs; the ResNet's
stem, stages and classifier), or ``NATURAL`` where those hide them (the GPT's embeddings,
attention, MLP and norms).
"""

from __future__ import annotations

import fnmatch
import json
import math
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from numerics.errors import MissingInputError, UserError
from numerics.files import atomic_write_json
from numerics.train import recipe as recipes
from numerics.train.rundir import RunDir
from numerics.train.summary import RunSummary
from numerics.train.trainer import data_and_model, header, read_checkpoint

Decide = Callable[[nn.Module], Tensor]  # the model's decisions on the fixed examples
BITS = 32  # float32 parameters
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Cell:
    """One component x bit position: ``changed`` of ``trials`` (fault, example) pairs."""

    component: str
    bit: int | None  # None: positions drawn uniformly
    faults: int
    trials: int
    changed: int

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


def _flip_(p: Tensor, index: int, bit: int) -> None:
    """XOR bit ``bit`` of float32 element ``index`` of ``p`` in place (twice restores it)."""
    flat = p.data.view(-1).view(torch.int32)
    mask = -(2**31) if bit == 31 else 1 << bit
    flat[index] ^= mask


def pvf_table(
    model: nn.Module,
    decide: Decide,
    groups: dict[str, list[str]],
    faults: int,
    bits: Sequence[int | None] = (None,),
    seed: int = 0,
) -> list[Cell]:
    """``faults`` single-bit faults per component and bit position (None: a position drawn
    uniformly per fault), each evaluated by ``decide`` against the fault-free decisions."""
    params = dict(model.named_parameters())
    for name, members in groups.items():
        for n in members:
            if params[n].dtype != torch.float32:
                raise UserError(f"parameter {n} is {params[n].dtype}; flips act on float32",
                                key="--component", value=name)  # fmt: skip
    for b in bits:
        if b is not None and not 0 <= b < BITS:
            raise UserError(f"bit {b} is outside float32", key="--bit", value=b,
                            allowed=f"0..{BITS - 1}")  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    with torch.no_grad():
        clean = decide(model)
        cells = []
        for comp, members in groups.items():
            sizes = torch.tensor([params[n].numel() for n in members])
            cum = torch.cumsum(sizes, 0)
            total = int(cum[-1])
            for b in bits:
                changed = 0
                for _ in range(faults):
                    flat = int(torch.randint(total, (1,), generator=gen))
                    bit = int(torch.randint(BITS, (1,), generator=gen)) if b is None else b
                    which = int(torch.searchsorted(cum, flat, right=True))
                    index = flat - (int(cum[which - 1]) if which else 0)
                    p = params[members[which]]
                    _flip_(p, index, bit)
                    try:
                        changed += int((decide(model) != clean).sum())
                    finally:
                        _flip_(p, index, bit)
                cells.append(Cell(comp, b, faults, faults * clean.numel(), changed))
    return cells


def decider(task: str, batch: dict[str, Tensor]) -> Decide:
    """The decisions a task's output is judged by, on the fixed examples ``batch``."""
    if task in ("image", "language"):  # the top-1 class; the next byte at every position
        return lambda m: m(batch["x"]).argmax(-1)
    return lambda m: m(batch["dense"], batch["sparse"]) > 0  # click at probability 0.5


def pvf(
    run_dir: str | Path,
    out: str | Path,
    *,
    component_specs: Sequence[str] = (),
    bits: Sequence[int | None] = (None,),
    faults: int = 1000,
    examples: int = 512,
    seed: int = 0,
) -> RunSummary:
    """Fault injection on the trained run in ``run_dir``; writes ``out`` (summary.json,
    pvf.json) and returns the summary."""
    src = RunDir(run_dir)
    if not src.checkpoint.exists() or not src.config.exists():
        raise MissingInputError(
            "not a run directory with a checkpoint (config.yaml and checkpoint.pt)",
            file=str(src.path),
        )
    if faults < 1 or examples < 1:
        raise UserError("must be >= 1", key="--faults/--examples", value=(faults, examples))
    recipe = recipes.load(src.config)
    if recipe.numerics.label() != "fp32":
        raise UserError(
            f"the run trained in {recipe.numerics.label()}; flips of a format's own code "
            "bits are not built yet, so pvf takes fp32 runs",
            file=str(src.config),
            key="numerics",
        )
    data, model = data_and_model(recipe)
    model.load_state_dict(read_checkpoint(src.checkpoint, torch.device("cpu"))["model"])
    groups = components(model, component_specs, recipe.model["name"])
    n = min(examples, len(data.test))
    batch = data.test.batch(torch.arange(n))
    cells = pvf_table(model, decider(recipe.task, batch), groups, faults, bits, seed)
    rows = [{**asdict(c), "pvf": c.pvf, "interval": list(c.interval)} for c in cells]
    rd = RunDir(out)
    rd.write_config(recipe.to_dict())
    atomic_write_json(rd.path / "pvf.json", {"source_run": str(src.path), "seed": seed,
                                              "examples": n, "cells": rows})  # fmt: skip
    metrics = {f"pvf/{c.component}" + (f"/bit{c.bit}" if c.bit is not None else ""): c.pvf
               for c in cells}  # fmt: skip
    summary = RunSummary(
        status="completed",
        **header(recipe),
        metrics=metrics,
        primary_metric=None,
        parameters=sum(p.numel() for p in model.parameters()),
        device="cpu",
        torch=torch.__version__,
        python=platform.python_version(),
        extra={
            "source_run": str(src.path),
            "pvf_seed": seed,
            "pvf_examples": n,
            "pvf_faults": faults,
        },
    )
    rd.write_summary(summary)
    return summary


def markdown(cells: Sequence[Cell]) -> list[str]:
    """The table: component, bit, faults, trials, PVF and its Wilson 95% interval."""
    lines = ["| component | bit | faults | trials | PVF | 95% (Wilson, over trials) |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for c in cells:
        lo, hi = c.interval
        bit = "any" if c.bit is None else str(c.bit)
        lines.append(f"| {c.component} | {bit} | {c.faults} | {c.trials} | {c.pvf:.4f} | "
                     f"[{lo:.4f}, {hi:.4f}] |")  # fmt: skip
    return lines


def read_cells(folder: str | Path) -> tuple[dict[str, Any], list[Cell]]:
    """The pvf.json ``pvf`` wrote to ``folder``: the document and its cells."""
    doc = json.loads((Path(folder) / "pvf.json").read_text())
    keys = ("component", "bit", "faults", "trials", "changed")
    return doc, [Cell(*(r[k] for k in keys)) for r in doc["cells"]]


def cmd_pvf(args: Any) -> int:
    bits: list[int | None] = [None] if not args.bit else [int(b) for b in args.bit]
    out = args.out or str(Path("results") / "pvf" / Path(args.run).name)
    pvf(args.run, out, component_specs=args.component or [], bits=bits, faults=args.faults,
        examples=args.examples, seed=args.seed)  # fmt: skip
    print("\n".join(markdown(read_cells(out)[1])))
    print(f"-> {out}")
    return 0
