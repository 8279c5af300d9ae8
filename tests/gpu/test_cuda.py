"""The CUDA paths, checked against the CPU: run by ``make gpu-check`` on a machine with a GPU.

Without CUDA every test here is skipped (the GPU paths are then untested; the README says so).
The CPU results are the oracle: the CPU paths are themselves tested against torch's casts,
ml_dtypes and the float64 reference. Stochastic rounding draws its bits from (seed, position)
only, so with an int seed the CUDA kernels must give the CPU's bits exactly.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from numerics import quantize
from numerics.nn import policy as P
from numerics.nn.comm import register
from numerics.train import recipe as recipes
from numerics.train.trainer import train

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device: run make gpu-check on a GPU machine"
)

FORMATS = [
    "bf16", "fp16", "fp8_e4m3", "fp8_e5m2", "fp6_e2m3", "fp6_e3m2", "fp4_e2m1", "int8",
    "mxfp8_e4m3", "mxfp6_e2m3", "mxfp4_e2m1", "mxint8", "mx9", "mx6", "mx4", "bfp8_b16",
]  # fmt: skip


def _input(shape: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g) * torch.logspace(-12, 6, shape[-1])
    flat = x.view(-1)
    flat[:6] = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e-40])
    return x


@pytest.mark.parametrize("backend", ["auto", "eager", "compiled"])
@pytest.mark.parametrize("rounding", ["nearest_even", "toward_zero", "stochastic"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_cuda_matches_cpu_bit_for_bit(fmt: str, rounding: str, backend: str) -> None:
    x = _input((37, 1000))  # rows of 1000: blocks of 32 leave a partial block; axis 0 too
    for axis in (-1, 0):
        cpu = quantize(x, fmt, rounding, 1234, axis=axis, backend=backend)  # type: ignore[arg-type]
        gpu = quantize(x.cuda(), fmt, rounding, 1234, axis=axis, backend=backend)  # type: ignore[arg-type]
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=0, equal_nan=True)


def test_a_recipe_trains_on_cuda() -> None:
    d = {
        "task": "image",
        "model": {"name": "mlp", "hidden": [32]},
        "data": {"name": "digits"},
        "train": {"steps": 20, "batch_size": 32, "lr": 0.05, "optimizer": "sgd"},
        "numerics": {"format": "bf16", "rounding": "stochastic", "master_weights": False,
                     "update_rounding": "stochastic"},
        "logging": {"progress": False},
    }  # fmt: skip
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        s = train(recipes.from_dict(d), out, device="cuda")
    assert s.status == "completed" and s.device.startswith("cuda")
    assert s.metrics["accuracy"] > 0.5


def test_the_quantized_allreduce_hook_runs_over_nccl() -> None:
    """One rank over nccl (a lent machine has one GPU): the hook's average of one rank is its
    own gradient rounded to bf16, the same cast the CPU makes."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = nn.Linear(64, 8).cuda()
        local = nn.Linear(64, 8).cuda()
        local.load_state_dict(model.state_dict())
        ddp = DistributedDataParallel(model, device_ids=[0])
        register(ddp, P.Cast("bf16"))
        x = torch.randn(16, 64, device="cuda")
        ddp(x).square().sum().backward()
        local(x).square().sum().backward()
        for p, q in zip(model.parameters(), local.parameters(), strict=True):
            assert p.grad is not None and q.grad is not None
            want = quantize(q.grad.cpu(), "bf16")
            torch.testing.assert_close(p.grad.cpu(), want, rtol=0, atol=0)
    finally:
        dist.destroy_process_group()
