"""Fault-injection speed: single-bit trials per second of ``numerics pvf`` on the demo DLRM.

    OMP_NUM_THREADS=1 python benchmarks/bench_pvf.py [--faults 1000] [--examples 512]
                                                     [--weights mxfp4_e2m1 --field scale]

Trains ``recipes/demo/synthetic_dlrm_small.yaml`` (fp32, seed 0) into a temporary folder, then
times ``pvf_table`` over its components (the fault-free pass included) and prints faults per
second and (fault, example) trials per second (median of 3 repetitions). ``--weights F``
evaluates the model with its layers' weights stored in F (every other cast fp32) and flips
F's codes (``--field``: element or scale) instead of float32 bits.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from numerics.nn.modules import quantize_model
from numerics.train import recipe as recipes
from numerics.train.pvf import components, decider, pvf_table, stored_parameters
from numerics.train.rundir import RunDir
from numerics.train.trainer import data_and_model, read_checkpoint, train

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "demo" / "synthetic_dlrm_small.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faults", type=int, default=1000, help="faults per component")
    ap.add_argument("--examples", type=int, default=512)
    ap.add_argument("--weights", default="fp32", help="the format the weights are stored in")
    ap.add_argument("--field", default="element", choices=["element", "scale"])
    args = ap.parse_args()
    recipe = recipes.load(RECIPE)
    with tempfile.TemporaryDirectory() as tmp:
        train(recipe, Path(tmp) / "run", progress=False)
        data, model = data_and_model(recipe)
        ck = read_checkpoint(RunDir(Path(tmp) / "run").checkpoint, torch.device("cpu"))
        model.load_state_dict(ck["model"])
    model = quantize_model(model, {"format": "fp32", "weights": args.weights})
    stored = stored_parameters(model)
    groups = components(model)
    if args.field != "element":  # the components that store the field
        groups = {c: m for c, m in groups.items() if any(args.field in stored[n].fields for n in m)}
    batch = data.test.batch(torch.arange(args.examples))
    decide = decider(recipe.task, batch)
    times = []
    for rep in range(3):
        t0 = time.perf_counter()
        pvf_table(model, decide, groups, args.faults, seed=rep, fields=[args.field], stored=stored)
        times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    n = args.faults * len(groups)
    print(
        f"weights {args.weights}, field {args.field}: "
        f"{n} faults over {len(groups)} components ({', '.join(groups)}), {args.examples} "
        f"examples each, {torch.get_num_threads()} thread(s): {s:.2f} s; {n / s:.0f} faults/s, "
        f"{n * args.examples / s:,.0f} trials/s"
    )


if __name__ == "__main__":
    main()
