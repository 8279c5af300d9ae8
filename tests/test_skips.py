"""tests/skips.py on a planted suite: the summary groups skips by reason, and a skip the
machine does not explain fails the session unless NUMERICS_ALLOW_SKIPS=1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.skips import ALLOW_ENV, allowed, group

ROOT = Path(__file__).resolve().parents[1]

# The reasons the suite's skips give, and whether the machine explains them.
REASONS = {
    "no CUDA device: run make gpu-check on a GPU machine": True,
    "checks the refusal without a GPU": True,
    "no chromium executable on PATH (apt-get install chromium): report.html's browser test "
    "skipped": True,
    "not an x86 CPU: the recorded value is x86's masking of an undefined shift": True,
    "shared data folder /x/shared/data not present": True,
    "could not start a Ray cluster: [Errno 99] Cannot assign requested address": True,
    "the C++ kernels are off (NUMERICS_NATIVE=0) or did not build (no C++ compiler)": False,
    "qtorch unavailable: No module named 'qtorch'": False,
    "the deviations are recorded for qtorch 0.3.0, not 0.2.0": False,
    "could not import 'ray': No module named 'ray'": False,
    "could not start a Ray node (start --head --node-ip-address=127.0.0.2): ...": False,
    "could not import 'submitit': No module named 'submitit'": False,
    "could not import 'wandb.sdk.launch.sweeps.utils': No module named 'wandb'": False,
    "playwright not installed (pip install -e '.[dev]')": False,
}


@pytest.mark.parametrize("reason", sorted(REASONS))
def test_which_skips_the_machine_explains(reason: str) -> None:
    assert (allowed(reason) is not None) is REASONS[reason]


def test_group_counts_per_reason_most_frequent_first() -> None:
    skips = [("b", "t/x.py"), ("a", "t/y.py"), ("b", "t/z.py"), ("b", "t/x.py")]
    assert group(skips) == {"b": (3, ["t/x.py", "t/z.py"]), "a": (1, ["t/y.py"])}


PLANTED = """
import pytest

def test_runs():
    pass

def test_no_gpu():
    pytest.skip("no CUDA device: planted")

@pytest.mark.parametrize("i", [0, 1])
def test_no_extra(i):
    pytest.skip("could not import 'ray': planted")

@pytest.mark.xfail(reason="an expected failure is not a skip")
def test_xfail():
    assert False
"""


def _pytest(folder: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != ALLOW_ENV} | env
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.skips", "-p", "no:cacheprovider", "-q",
         "--rootdir", str(folder), str(folder)],  # node ids relative to the planted folder
        cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_an_unexplained_skip_fails_the_session(tmp_path: Path) -> None:
    (tmp_path / "test_planted.py").write_text(PLANTED)
    strict = _pytest(tmp_path)
    assert strict.returncode == 1, strict.stdout + strict.stderr
    out = strict.stdout
    assert "1 passed, 3 skipped, 1 xfailed" in out
    summary = out[out.index("skipped areas") :]
    # grouped by reason, most frequent first, each with its files and verdict
    assert summary.index("2 skipped: could not import 'ray': planted") < summary.index(
        "1 skipped: no CUDA device: planted"
    )
    assert "not explained by the machine: an area went untested" in summary
    assert "allowed: no GPU here" in summary
    assert "2 skips the machine does not explain: this run fails" in summary
    lean = _pytest(tmp_path, **{ALLOW_ENV: "1"})
    assert lean.returncode == 0, lean.stdout
    assert f"{ALLOW_ENV}=1: 2 skips the machine does not explain, accepted" in lean.stdout


def test_explained_skips_and_a_skipped_module_pass(tmp_path: Path) -> None:
    (tmp_path / "test_ok.py").write_text(
        "import pytest\n\ndef test_gpu():\n    pytest.skip('no CUDA device: planted')\n"
    )
    (tmp_path / "test_module.py").write_text(
        "import pytest\npytest.skip('no chromium executable: planted', allow_module_level=True)\n"
    )
    run = _pytest(tmp_path)
    assert run.returncode == 0, run.stdout
    assert "1 skipped: no chromium executable: planted\n       in test_module.py" in run.stdout
    # a failure stays a failure
    (tmp_path / "test_bad.py").write_text("def test_bad():\n    assert False\n")
    assert _pytest(tmp_path).returncode == 1
