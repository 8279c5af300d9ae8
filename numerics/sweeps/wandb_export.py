"""A sweep as a wandb sweep configuration (``numerics sweep --export-wandb``)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml

from numerics.files import atomic_write_text, jsonable
from numerics.sweeps.spec import Sweep, SweepError
from numerics.train import recipe as recipes

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
    from numerics.train import tasks

    if sweep.evaluate is not None:
        raise SweepError(
            "--export-wandb exports a training sweep; run an evaluation sweep with numerics sweep",
            file=sweep.path,
            key="evaluate",
        )
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
