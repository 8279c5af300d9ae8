"""Fault-injection speed: single-bit trials per second of ``numerics pvf`` on the demo DLRM.

    OMP_NUM_THREADS=1 python benchmarks/bench_pvf.py [--faults 1000] [--examples 512]

Trains ``recipes/demo/synthetic_dlrm_small.yaml`` (fp32, seed 0) into a temporary folder, then
times ``pvf_table`` over its components (the fault-free pass included) and prints faults per
second and (fault, example) trials per second (median of 3 repetitions).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from numerics.train import recipe as recipes
from numerics.train.pvf import components, decider, pvf_table
from numerics.train.rundir import RunDir
from numerics.train.trainer import data_and_model, read_checkpoint, train

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "demo" / "synthetic_dlrm_small.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faults", type=int, default=1000, help="faults per component")
    ap.add_argument("--examples", type=int, default=512)
    args = ap.parse_args()
    recipe = recipes.load(RECIPE)
    with tempfile.TemporaryDirectory() as tmp:
        train(recipe, Path(tmp) / "run", progress=False)
        data, model = data_and_model(recipe)
        ck = read_checkpoint(RunDir(Path(tmp) / "run").checkpoint, torch.device("cpu"))
        model.load_state_dict(ck["model"])
    groups = components(model)
    batch = data.test.batch(torch.arange(args.examples))
    decide = decider(recipe.task, batch)
    times = []
    for rep in range(3):
        t0 = time.perf_counter()
        pvf_table(model, decide, groups, args.faults, seed=rep)
        times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    n = args.faults * len(groups)
    print(
        f"{n} faults over {len(groups)} components ({', '.join(groups)}), {args.examples} "
        f"examples each, {torch.get_num_threads()} thread(s): {s:.2f} s; {n / s:.0f} faults/s, "
        f"{n * args.examples / s:,.0f} trials/s"
    )


if __name__ == "__main__":
    main()
