"""The quantized DDP hook: two gloo ranks on this CPU against answers computed here by hand.

One spawn runs every scenario (two processes, two training steps each); the children save,
per step, the gradient DDP left in ``.grad`` and the local gradient of a plain (non-DDP) copy
of the model on the same rank's data. The oracles below rebuild the all-reduce from the local
gradients with ``quantize``. The spawn costs 9-17 s here (each child imports torch and, through
DDP, torch._dynamo), so the tests that use it are marked slow; the scenarios take milliseconds.
"""

from __future__ import annotations

import copy
import multiprocessing as mp
import os
import socket
import time
import traceback
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from numerics import quantize
from numerics.nn import policy as P
from numerics.nn.comm import (
    QuantizedCommState,
    contribution_seed,
    quantized_allreduce_hook,
    register,
    result_seed,
)
from numerics.rounding import Rounding

WORLD = 2
STEPS = 2
SEED = 7
TIMEOUT_S = 180.0
SR = Rounding.STOCHASTIC

# name -> (model, what to register: None (plain DDP) or (policy/cast, kwargs), direct hook?)
SCENARIOS: dict[str, tuple[str, object, bool]] = {
    "plain": ("mlp", None, False),
    "identity": ("mlp", (P.preset("bf16"), {}), False),  # bf16 preset: fp32 communication
    "identity_hook": ("mlp", (P.Cast("fp32"), {}), True),
    "bf16": ("mlp", (P.from_dict({"format": "fp32", "communication": "bf16"}), {}), False),
    "bf16_result": ("mlp", (P.Cast("bf16"), {"quantize_result": True}), False),
    "mx_flat": ("flat", (P.Cast("mxfp8_e4m3"), {}), False),
    "sr_a": ("flat", (P.Cast("bf16", SR), {"seed": SEED}), False),
    "sr_b": ("flat", (P.Cast("bf16", SR), {"seed": SEED}), False),
    "sr_result": ("flat", (P.Cast("bf16", SR), {"seed": SEED, "quantize_result": True}), False),
}


def _model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
    # One parameter, so the bucket is exactly weight.grad.flatten(): (4, 24) -> (96,), and
    # 32-element blocks straddle the rows.
    return nn.Linear(24, 4, bias=False)


def _batch(kind: str, rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * rank + step)
    if kind == "mlp":
        return torch.randn(5, 8, generator=g), torch.randn(5, 4, generator=g)
    # Targets of very different sizes give weight-gradient rows of different sizes, so a block
    # that straddles two rows takes its scale from the larger one.
    y = torch.randn(5, 4, generator=g) * torch.tensor([1.0, 64.0, 1 / 64, 8.0])
    return torch.randn(5, 24, generator=g), y


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return (model(x) - y).pow(2).mean()


def _run_scenario(name: str, rank: int) -> dict:
    kind, spec, direct = SCENARIOS[name]
    model = _model(kind)
    plain = copy.deepcopy(model)
    ddp = DistributedDataParallel(model)
    state = None
    if spec is not None:
        target, kw = spec
        if direct:
            state = QuantizedCommState(target, **kw)
            ddp.register_comm_hook(state, quantized_allreduce_hook)
        else:
            state = register(ddp, target, **kw)
    if name == "sr_b":
        torch.manual_seed(1234 + rank)  # torch's global RNG must play no part
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    out: dict = {"registered": state is not None, "ddp": [], "local": []}
    if state is not None:
        out["state_rank"] = state.rank
    for step in range(STEPS):
        plain.load_state_dict(model.state_dict())
        plain.zero_grad()
        batch = _batch(kind, rank, step)
        _loss(plain, batch).backward()
        opt.zero_grad()
        _loss(ddp, batch).backward()
        out["local"].append({n: p.grad.clone() for n, p in plain.named_parameters()})
        out["ddp"].append({n: p.grad.clone() for n, p in model.named_parameters()})
        opt.step()
    return out


def _worker(rank: int, port: int, outdir: str) -> None:
    try:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
        torch.set_num_threads(1)
        dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
        results = {name: _run_scenario(name, rank) for name in SCENARIOS}
        dist.destroy_process_group()
        torch.save(results, Path(outdir) / f"rank{rank}.pt")
    except BaseException:
        (Path(outdir) / f"rank{rank}.err").write_text(traceback.format_exc())
        raise


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    outdir = tmp_path_factory.mktemp("comm")
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, str(outdir))) for r in range(WORLD)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + TIMEOUT_S
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    hung = [p for p in procs if p.is_alive()]
    for p in hung:
        p.kill()
        p.join()
    errors = [f.read_text() for f in sorted(outdir.glob("rank*.err"))]
    assert not errors, "a rank failed:\n" + "\n".join(errors)
    assert not hung, f"ranks still running after {TIMEOUT_S} s (a hang): killed"
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return [torch.load(outdir / f"rank{r}.pt") for r in range(WORLD)]


def _q(x: torch.Tensor, fmt: str, rounding: Rounding = Rounding.NEAREST_EVEN, gen=None):
    return quantize(x, fmt, rounding, gen)


def _assert_all_ranks_equal(runs: list[dict], name: str, expected: list[dict]) -> None:
    for rank in range(WORLD):
        got = runs[rank][name]["ddp"]
        for step in range(STEPS):
            for param, want in expected[step].items():
                assert torch.equal(got[step][param], want), (name, rank, step, param)


def _local(runs: list[dict], name: str, step: int, rank: int) -> dict[str, torch.Tensor]:
    return runs[rank][name]["local"][step]


@pytest.mark.slow
def test_bf16_grads_are_the_average_of_each_ranks_rounded_gradient(runs):
    expected = []
    for step in range(STEPS):
        g0, g1 = (_local(runs, "bf16", step, r) for r in range(WORLD))
        expected.append({n: (_q(g0[n], "bf16") + _q(g1[n], "bf16")) / 2 for n in g0})
    _assert_all_ranks_equal(runs, "bf16", expected)
    # The planted answer discriminates: the plain fp32 average is a different gradient.
    g0, g1 = (_local(runs, "bf16", 0, r) for r in range(WORLD))
    assert not torch.equal(
        runs[0]["bf16"]["ddp"][0]["0.weight"], (g0["0.weight"] + g1["0.weight"]) / 2
    )
    assert all(runs[r]["bf16"]["state_rank"] == r for r in range(WORLD))


@pytest.mark.slow
def test_identity_cast_registers_nothing_and_equals_plain_ddp(runs):
    assert not any(runs[r]["identity"]["registered"] for r in range(WORLD))
    for name in ("identity", "identity_hook"):
        for rank in range(WORLD):
            for step in range(STEPS):
                want, got = runs[rank]["plain"]["ddp"][step], runs[rank][name]["ddp"][step]
                for param in want:
                    assert torch.equal(got[param], want[param]), (name, rank, step, param)


@pytest.mark.slow
def test_quantize_result_rounds_the_average_to_the_format(runs):
    expected = []
    for step in range(STEPS):
        g0, g1 = (_local(runs, "bf16_result", step, r) for r in range(WORLD))
        avg = {n: (_q(g0[n], "bf16") + _q(g1[n], "bf16")) / 2 for n in g0}
        expected.append({n: _q(a, "bf16") for n, a in avg.items()})
        # without the final rounding some averages fall between bf16 values
        assert any(not torch.equal(_q(a, "bf16"), a) for a in avg.values())
    _assert_all_ranks_equal(runs, "bf16_result", expected)
    for grads in runs[0]["bf16_result"]["ddp"]:
        for g in grads.values():
            assert torch.equal(g.bfloat16().float(), g)


@pytest.mark.slow
def test_block_formats_block_along_the_flat_bucket(runs):
    expected = []
    for step in range(STEPS):
        g0, g1 = (_local(runs, "mx_flat", step, r)["weight"] for r in range(WORLD))
        flat = (_q(g0.flatten(), "mxfp8_e4m3") + _q(g1.flatten(), "mxfp8_e4m3")) / 2
        expected.append({"weight": flat.view_as(g0)})
        by_rows = (_q(g0, "mxfp8_e4m3") + _q(g1, "mxfp8_e4m3")) / 2  # blocks along dim 1
        assert not torch.equal(by_rows, expected[-1]["weight"])
    _assert_all_ranks_equal(runs, "mx_flat", expected)


@pytest.mark.slow
def test_stochastic_rounding_draws_per_rank_seeded_bits_reproducibly(runs):
    gens = [torch.Generator().manual_seed(contribution_seed(SEED, r)) for r in range(WORLD)]
    expected = []
    for step in range(STEPS):
        g0, g1 = (_local(runs, "sr_a", step, r)["weight"] for r in range(WORLD))
        q0, q1 = (_q(g, "bf16", SR, gen) for g, gen in zip((g0, g1), gens, strict=True))
        expected.append({"weight": (q0 + q1) / 2})
        nearest = (_q(g0, "bf16") + _q(g1, "bf16")) / 2
        assert not torch.equal(nearest, expected[-1]["weight"])
    _assert_all_ranks_equal(runs, "sr_a", expected)
    # A second run with the same seed (and a disturbed global RNG) draws the same bits.
    for rank in range(WORLD):
        for a, b in zip(runs[rank]["sr_a"]["ddp"], runs[rank]["sr_b"]["ddp"], strict=True):
            assert torch.equal(a["weight"], b["weight"])


@pytest.mark.slow
def test_stochastic_result_rounding_agrees_across_ranks(runs):
    r0, r1 = (runs[r]["sr_result"]["ddp"] for r in range(WORLD))
    for step in range(STEPS):
        a, b = r0[step]["weight"], r1[step]["weight"]
        assert torch.equal(a, b)  # replicas must not drift apart
        assert torch.equal(a.bfloat16().float(), a)


def test_seeds_differ_per_rank_and_result_stream_is_shared():
    seeds = {contribution_seed(SEED, r) for r in range(4)} | {result_seed(SEED)}
    assert len(seeds) == 5
    assert contribution_seed(SEED, 0) != contribution_seed(SEED + 1, 0)
    assert all(0 <= s < 2**63 for s in seeds)
    # The same on every machine, process and Python build (no hash(), whose str hashing is
    # salted per process): the values recorded when the streams were defined. A change here
    # changes the bits of every stochastically rounded all-reduce a seed gives.
    assert contribution_seed(7, 0) == 2204997989662931536
    assert contribution_seed(7, 1) == 396691359698366245
    assert result_seed(7) == 4335412984491964735


def test_state_needs_an_initialised_process_group():
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="init_process_group"):
        QuantizedCommState(P.Cast("bf16"))
