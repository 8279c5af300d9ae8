"""How much of a large cast is the first touch of its fresh output, beside the work itself.

    python benchmarks/bench_allocation.py [--numel 16777216] [--formats mx6 bfp8_b16 int8]

`numerics bench` compares each cast with ``torch.clone``, and both allocate a fresh output.
Above glibc's largest mmap threshold (32 MB) every such output is new memory from the kernel,
paid for by page faults on first touch, and at 16M float32 elements that is most of what
clone costs on some hosts. This prints, per row, the median of interleaved runs:

- clone: a fresh output (what ``numerics bench`` times);
- copy into a preallocated output: the same bytes with no page faults;
- fill of a fresh output: the page faults and one write, with no read;
- for each format, quantize (fresh output, as the bench) beside the same cast on a quarter
  of the tensor, times four (an output below the threshold, whose memory the allocator
  reuses: the kernel's own time, with the caveat that a quarter stays in a larger cache).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import numerics


def medians(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median milliseconds per call, the calls interleaved so that drift hits all alike."""
    for fn in fns.values():
        for _ in range(2):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - start) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--numel", type=int, default=1 << 24)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--formats", nargs="*", default=["mxfp8_e4m3", "bfp8_b16", "mx6", "int8"])
    args = parser.parse_args()
    x = torch.randn(args.numel)
    part = x[: args.numel // 4].clone()
    pre = torch.empty_like(x)
    fns: dict[str, Callable[[], object]] = {
        "clone": lambda: x.clone(),
        "copy into a preallocated output": lambda: pre.copy_(x),
        "fill of a fresh output": lambda: torch.empty_like(x).fill_(1.0),
    }
    for name in args.formats:
        fns[f"{name} (fresh output)"] = lambda n=name: numerics.quantize(x, n)
        fns[f"{name} (a quarter, x4)"] = lambda n=name: numerics.quantize(part, n)
    ms = medians(fns, args.reps)
    for k in fns:
        if k.endswith("x4)"):
            ms[k] *= 4
    mb = 4 * args.numel / 2**20
    print(
        f"{args.numel:,} float32 elements ({mb:.0f} MB), {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; median of {args.reps} interleaved runs"
    )
    for k, v in ms.items():
        print(f"  {k:34s} {v:7.1f} ms   {v / ms['clone']:5.2f} x clone's time")


if __name__ == "__main__":
    main()
