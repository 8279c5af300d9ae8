"""Quantizer throughput beside torch.clone and qtorch: ``python benchmarks/bench_quantize.py``.

The same as ``numerics bench`` (see ``numerics.bench`` for what is measured); ``--help`` lists
the options. Compiled kernels are cached under ``.cache/inductor`` of this checkout, as the
Makefile and the tests do, so only the first run compiles.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Before torch is imported, so Inductor sees it.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(ROOT / ".cache" / "inductor"))

from numerics.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
