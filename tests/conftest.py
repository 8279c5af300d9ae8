"""Test configuration shared by the whole suite.

Compiled kernels are cached under ~/.cache/numerics/inductor (the Makefile exports the same
path), outside the checkout so that fresh clones on one machine share it: only the first run on
a machine pays for compilation.
"""

import os
import signal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(_CACHE / "numerics" / "inductor"))
# Block casts below this many elements take the lean eager kernels (numerics/quantize.py):
# the models' tests then compile a handful of kernels rather than one per block layout they
# meet. The compiled kernels are tested on their own (tests/numerics/kernels).
os.environ.setdefault("NUMERICS_LEAN_MAX_NUMEL", "32768")

import pytest  # noqa: E402
import torch  # noqa: E402

# The session ends with the areas it skipped and why, and fails on a skip the machine does not
# explain (NUMERICS_ALLOW_SKIPS=1 for a lean install): see tests/skips.py.
from tests.skips import (  # noqa: E402, F401
    pytest_collectreport,
    pytest_runtest_logreport,
    pytest_sessionfinish,
    pytest_sessionstart,
    pytest_terminal_summary,
)

torch.set_num_threads(min(2, os.cpu_count() or 1))

# A suite started where SIGINT is ignored (a shell's background job, `(make test &)`) passes
# that on to every process it starts, and the executors' Ctrl-C tests then find workers that
# never see the interrupt. Restore Python's handler, so the processes the tests start get the
# default disposition, as under a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# tests/gpu holds the CUDA checks (`make gpu-check`); without a GPU they are not collected,
# rather than reported as a hundred skips.
collect_ignore = [] if torch.cuda.is_available() else ["gpu"]

SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} not present")
    return SHARED_DATA
