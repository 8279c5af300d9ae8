"""Quantized gradient communication: a DDP hook that rounds gradient buckets before the all-reduce.

Data-parallel training averages every gradient across ranks with an all-reduce. Sending the
gradients in a narrow format cuts the traffic (Dettmers, "8-Bit Approximations for Parallelism
in Deep Learning", arXiv 1511.04561; torch's ``fp16_compress_hook``); this module emulates the
numerics of doing so, for any registered format, so a policy's ``communication`` role can be
studied on any backend. It is an emulation: the values on the wire are the format's values,
but they travel as fp32, so no bandwidth is saved.

What is quantized. DDP hands the hook one *bucket* at a time: the flat fp32 gradients of a
group of parameters, shape ``(n,)``. Each rank

1. rounds its own bucket to the format (its contribution, before the sum): element formats
   value by value; block formats (MX, BFP, ...) block along the flat buffer, so a block can
   straddle two parameters and the blocking follows DDP's bucket layout (parameters in
   roughly reverse order, re-bucketed by gradient-ready order after the first step);
2. all-reduces (SUM) the rounded buckets; the sum itself is carried out in fp32, as a
   reduction into a wider accumulator would be;
3. divides the sum by the world size (in fp32, in the future's ``.then`` callback). Unlike
   torch's hooks, which divide *before* the all-reduce to keep fp16 from overflowing, we
   divide after: the sum is fp32, and each rank sends exactly its rounded gradient;
4. with ``quantize_result=True``, also rounds the average to the format, as a ring all-reduce
   that stores its partial sums in the format would (we round once, at the end, not after
   every hop).

So for two ranks the gradient every rank ends with is ``(q(g0) + q(g1)) / 2``, or
``q((q(g0) + q(g1)) / 2)`` with ``quantize_result``.

Randomness. Stochastic rounding of the contributions draws from a ``torch.Generator`` per rank,
seeded from ``(seed, rank)`` so that ranks draw different bits (their rounding errors are
independent and partly cancel in the sum) and a rerun with the same seed draws the same ones.
The rounding of the result must agree on every rank, or the replicas would drift apart, so it
draws from one generator seeded from ``seed`` alone. Its draws are taken in the hook body, in
bucket order, not in the ``.then`` callback, which may run on a communication thread in any
order.

Backends. torch's ``bf16_compress_hook`` refuses CPU/gloo (DDP raises ``TypeError`` at
registration unless CUDA 11+ with NCCL 2.10+, or XPU with XCCL); this hook sends fp32 and
works on gloo and nccl alike.

Not handled: compiled DDP (``torch.compile`` with compiled autograd) and loss scaling. Element
formats without a scale (fp8, fp16) underflow small gradients and overflow large ones by the
format's own rule (``Cast.saturate``); a loss scale applied upstream scales the buckets too.
"""

# No ``from __future__ import annotations``: DDP checks the hook's annotations at registration
# against the real ``dist.GradBucket`` and ``Future[Tensor]`` objects, not strings.
import hashlib
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from numerics.nn.policy import Cast, Policy
from numerics.quantize import quantize
from numerics.rounding import Rounding

__all__ = [
    "QuantizedCommState",
    "contribution_seed",
    "quantized_allreduce_hook",
    "register",
    "result_seed",
]


def _mix(*parts: object) -> int:
    # A 63-bit seed from a tagged tuple: streams that cannot coincide with another module's
    # ``seed * k + i`` arithmetic, the same on every machine and Python build. The tag is a
    # constant, not this module's path: moving the module must not change the streams.
    digest = hashlib.blake2b(repr(("numerics.comm", *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def contribution_seed(seed: int, rank: int) -> int:
    """The seed of the generator that rounds rank ``rank``'s contribution (one per rank)."""
    return _mix("contribution", seed, rank)


def result_seed(seed: int) -> int:
    """The seed of the generator that rounds the averaged result (the same on every rank)."""
    return _mix("result", seed)


@dataclass
class QuantizedCommState:
    """The state ``quantized_allreduce_hook`` is registered with.

    Args:
        cast: the format, rounding and saturation of the communication (a policy's
            ``communication`` role).
        process_group: the group to all-reduce over; None is the default (world) group.
        seed: seeds the stochastic-rounding generators (see ``contribution_seed`` and
            ``result_seed``); the rank is this process's global rank, so every process of a
            job draws different bits for its contribution.
        quantize_result: also round the averaged gradient to the format.

    Build it after ``dist.init_process_group``: the rank is read on construction.
    """

    cast: Cast
    process_group: dist.ProcessGroup | None = None
    seed: int = 0
    quantize_result: bool = False
    rank: int = field(init=False)
    generator: torch.Generator = field(init=False, repr=False)
    result_generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not dist.is_initialized():
            raise RuntimeError(
                "QuantizedCommState: torch.distributed is not initialised; call "
                "dist.init_process_group first (the rank seeds the rounding)"
            )
        self.rank = dist.get_rank()
        self.generator = torch.Generator().manual_seed(contribution_seed(self.seed, self.rank))
        self.result_generator = torch.Generator().manual_seed(result_seed(self.seed))

    @property
    def stochastic(self) -> bool:
        return self.cast.rounding is Rounding.STOCHASTIC

    def round_flat(
        self, flat: torch.Tensor, generator: torch.Generator | int | None
    ) -> torch.Tensor:
        """``flat`` (shape ``(n,)``) rounded to the cast's format, blocks along the buffer."""
        c = self.cast
        return quantize(flat, c.fmt, c.rounding, generator, axis=-1, saturate=c.saturate)


def quantized_allreduce_hook(
    state: QuantizedCommState, bucket: dist.GradBucket
) -> torch.futures.Future[torch.Tensor]:
    """Round this rank's bucket, all-reduce (SUM) it, and average it in the future's callback.

    The DDP communication-hook contract: returns a future whose value is the averaged flat
    bucket, which DDP copies into the parameters' ``.grad``. Register with
    ``ddp.register_comm_hook(state, quantized_allreduce_hook)`` or ``register``.
    """
    group = state.process_group if state.process_group is not None else dist.group.WORLD
    world = dist.get_world_size(group)
    buffer = bucket.buffer()  # (n,) flat gradients of this bucket, the parameters' dtype
    if not state.cast.is_identity:
        # Rounded in place of the buffer, so only one extra bucket is alive at a time.
        buffer.copy_(state.round_flat(buffer, state.generator if state.stochastic else None))
    # Drawn here, in bucket order; callbacks of different buckets may run in any order.
    key: int | None = None
    if state.quantize_result and state.stochastic:
        key = int(torch.randint(0, 2**62, (1,), generator=state.result_generator).item())

    def average(fut: torch.futures.Future[list[torch.Tensor]]) -> torch.Tensor:
        total = fut.value()[0].div_(world)
        if state.quantize_result and not state.cast.is_identity:
            total.copy_(state.round_flat(total, key))
        return total

    work = dist.all_reduce(buffer, op=dist.ReduceOp.SUM, group=group, async_op=True)
    assert work is not None  # async_op=True always returns the work handle
    return work.get_future().then(average)


def register(
    model: DistributedDataParallel,
    policy_or_cast: Policy | Cast,
    seed: int | None = None,
    quantize_result: bool = False,
) -> QuantizedCommState | None:
    """Register ``quantized_allreduce_hook`` on ``model`` for a policy's communication cast.

    ``policy_or_cast`` is a ``Policy`` (its ``communication`` role is used) or a ``Cast``.
    ``seed=None`` takes the policy's seed (0 for a bare cast). The hook all-reduces over the
    model's own process group. Returns the hook's state, or None (and registers nothing, so
    DDP keeps its built-in all-reduce) when the cast is the identity. DDP accepts one hook per
    model, registered before the first backward.
    """
    if isinstance(policy_or_cast, Policy):
        cast = policy_or_cast.communication
        seed = policy_or_cast.seed if seed is None else seed
    else:
        cast = policy_or_cast
    if cast.is_identity:
        return None
    state = QuantizedCommState(
        cast,
        process_group=model.process_group,
        seed=0 if seed is None else seed,
        quantize_result=quantize_result,
    )
    model.register_comm_hook(state, quantized_allreduce_hook)
    return state
