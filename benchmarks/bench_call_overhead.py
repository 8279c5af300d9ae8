"""Per-call cost of ``numerics.quantize`` on a small tensor, where fixed overhead dominates.

    python benchmarks/bench_call_overhead.py [--numel 64] [--calls 3000]
        [--shape 1024 1024 --axis 0 --rounding stochastic --backends compiled]

Prints microseconds per call for the compiled and eager backends (median of 5 batches).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import numerics


def per_call_us(fn: object, calls: int) -> float:
    assert callable(fn)
    for _ in range(20):  # warm-up (the first compiled call compiles)
        fn()
    batches = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        batches.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--numel", type=int, default=64)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--formats", nargs="+", default=["fp8_e4m3", "bf16", "mxfp8_e4m3"])
    parser.add_argument("--shape", type=int, nargs="+", help="a tensor shape (instead of --numel)")
    parser.add_argument("--axis", type=int, default=-1, help="the block axis (default -1)")
    parser.add_argument("--rounding", default="nearest_even")
    parser.add_argument("--backends", nargs="+", default=["compiled", "eager"])
    args = parser.parse_args()
    x = torch.randn(*(args.shape or [args.numel]))
    print(
        f"quantize on float32 {tuple(x.shape)}, axis {args.axis}, {args.rounding}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    for name in args.formats:
        for backend in args.backends:
            us = per_call_us(
                lambda n=name, b=backend: numerics.quantize(
                    x, n, args.rounding, axis=args.axis, backend=b
                ),
                args.calls,
            )
            print(f"{name:12s} {backend:9s} {us:8.1f} us/call")


if __name__ == "__main__":
    main()
