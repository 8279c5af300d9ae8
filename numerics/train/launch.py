"""Data-parallel training on one machine: ``numerics train RECIPE --nproc N``.

N worker processes (``torch.multiprocessing``, spawn) join a process group on a free loopback
port: gloo on CPU, nccl on GPU (rank r uses cuda:r). Each builds the same data and model from
the recipe's seed, takes its slice of every global batch, and DDP averages the gradients, so a
run with ``train.batch_size = B`` sees batches of B whatever N is: large-batch experiments run
as they would on N workers. CPU threads are divided among the workers. Rank 0 writes the run
directory; the summary comes back from it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from numerics.errors import UserError
from numerics.train import recipe as recipes
from numerics.train.rundir import RunDir
from numerics.train.summary import RunSummary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(
    rank: int,
    world: int,
    port: int,
    config: dict[str, Any],
    source: str | None,
    out: str,
    kwargs: dict[str, Any],
) -> None:
    from numerics.train.trainer import train

    cuda = kwargs.get("device") in (None, "cuda") and torch.cuda.is_available()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    try:
        device = f"cuda:{rank}" if cuda else "cpu"
        if cuda:
            torch.cuda.set_device(rank)
        rec = recipes.from_dict(config, source=source)
        train(rec, out, rank=rank, world=world, **{**kwargs, "device": device})
    finally:
        dist.destroy_process_group()


def train_parallel(
    recipe: recipes.Recipe, out: str | Path, nproc: int, **kwargs: Any
) -> RunSummary:
    """Run ``numerics.train.trainer.train`` in ``nproc`` processes; returns rank 0's summary.
    A worker count the machine cannot run is a ``UserError`` (the CLI's exit code 2)."""
    if nproc < 1:
        raise UserError(f"must be >= 1, got {nproc}", key="--nproc", value=nproc)
    cuda = torch.cuda.is_available() and kwargs.get("device") in (None, "cuda")
    if cuda and nproc > torch.cuda.device_count():
        raise UserError(
            f"{nproc} workers, but only {torch.cuda.device_count()} GPUs are visible",
            key="--nproc", value=nproc,
        )  # fmt: skip
    args = (nproc, free_port(), recipe.to_dict(), recipe.source, str(out), kwargs)
    mp.spawn(_worker, args=args, nprocs=nproc, join=True)
    summary = RunDir(out).read_summary()
    if summary is None:
        raise RuntimeError(f"{out}: the workers ended without a summary.json")
    return summary
