"""Honest test counts: the session ends with the areas it skipped and why, and fails on a skip
that the machine does not explain.

A skip is allowed when its reason matches one of ``ALLOWED``: things that depend on the
machine, not on what ``make test`` installs (a GPU, a browser, the CPU's architecture, a
loopback with more than one address, data that lives outside the repo). Every other skip (a
dev extra that ``make test`` installs missing — qtorch, Ray, submitit, wandb, playwright — or
the C++ kernels not built) leaves an area untested, and turns a green run red (exit status 1)
unless ``NUMERICS_ALLOW_SKIPS=1`` says the install is lean on purpose (``pip install -e .``).

``tests/conftest.py`` loads these hooks; ``tests/test_skips.py`` runs them on a planted suite.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

import pytest

ALLOW_ENV = "NUMERICS_ALLOW_SKIPS"

# (pattern matched at the start of a skip's reason, why the machine explains it)
ALLOWED: tuple[tuple[str, str], ...] = (
    (r"no CUDA device", "no GPU here (the CUDA checks run under `make gpu-check`)"),
    (r"checks the refusal without a GPU", "a GPU is here, so there is no refusal to check"),
    (r"no chromium executable", "no chromium here for report.html's browser test"),
    (r"not an x86 CPU", "a value recorded on x86, whose shifts this CPU does not share"),
    (r"shared data folder .* not present", "the real-data samples live outside the repo"),
    (r"could not start a Ray cluster: ", "no 127.0.0.2/3 loopback here (Linux has them)"),
)

_SKIPS: list[tuple[str, str]] = []  # (reason, test file) per skipped test or module


def allowed(reason: str) -> str | None:
    """Why the machine explains a skip with this reason, or None when nothing does."""
    for pattern, why in ALLOWED:
        if re.match(pattern, reason):
            return why
    return None


def group(skips: Iterable[tuple[str, str]]) -> dict[str, tuple[int, list[str]]]:
    """reason -> (how many skips, the files they are in), most frequent reason first."""
    counts: dict[str, int] = {}
    files: dict[str, set[str]] = {}
    for reason, where in skips:
        counts[reason] = counts.get(reason, 0) + 1
        files.setdefault(reason, set()).add(where)
    order = sorted(counts, key=lambda r: (-counts[r], r))
    return {r: (counts[r], sorted(files[r])) for r in order}


def _skips(n: int) -> str:
    return f"{n} skip{'' if n == 1 else 's'}"


def _lean() -> bool:
    return os.environ.get(ALLOW_ENV, "0") not in ("", "0")


def _reason(report: Any) -> str:
    longrepr = report.longrepr
    text = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ").strip()


def pytest_sessionstart(session: pytest.Session) -> None:
    _SKIPS.clear()


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.skipped:  # a whole module (importorskip, allow_module_level)
        _SKIPS.append((_reason(report), report.nodeid))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPS.append((_reason(report), report.nodeid.split("::")[0]))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    unexplained = [r for r, _ in _SKIPS if allowed(r) is None]
    if unexplained and not _lean() and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    if not _SKIPS:
        return
    tr = terminalreporter
    tr.section("skipped areas")
    unexplained = 0
    for reason, (n, files) in group(_SKIPS).items():
        why = allowed(reason)
        unexplained += n if why is None else 0
        first = reason.splitlines()[0] if reason else "(no reason given)"
        shown = first if len(first) <= 160 else first[:157] + "..."
        more = f" and {len(files) - 3} more" if len(files) > 3 else ""
        tr.line(f"{n:5d} skipped: {shown}")
        tr.line(f"       in {', '.join(files[:3])}{more}")
        if why is None:
            tr.line("       not explained by the machine: an area went untested", red=True)
        else:
            tr.line(f"       allowed: {why}")
    if unexplained and _lean():
        tr.line(f"{ALLOW_ENV}=1: {_skips(unexplained)} the machine does not explain, accepted")
    elif unexplained:
        tr.line(
            f"{_skips(unexplained)} the machine does not explain: this run fails. Install what "
            f"`make test` installs (pip install -e '.[dev]', a C++ compiler), or set "
            f"{ALLOW_ENV}=1 for a lean install (tests/skips.py lists the allowed skips)",
            red=True,
        )
