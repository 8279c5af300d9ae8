"""Where a run came from: the code, the libraries, the machine.

``provenance(device)`` is the record each run keeps in its summary:

- ``code``: a fingerprint of the code that computes results, the SHA-256 of every ``.py``
  file of the ``numerics`` package (path and bytes, in path order), first 12 hex digits. Two
  runs with one fingerprint ran the same code, whatever happened to docs, tests or recipes;
  an edit anywhere in the package gives a new one, committed or not. It is what ``--resume``
  compares to call a run stale.
- ``git``: the commit of the checkout the package was imported from and whether its tree had
  changes (``dirty``); null when the package is not in a git checkout (an installed wheel),
  where ``version`` (the package's) tells the release instead.
- ``torch``, ``python``: versions.
- ``cpu``: the CPU model (``/proc/cpuinfo``'s model name on Linux, ``sysctl`` on macOS, else
  ``platform.processor()``), ``threads``: torch's intra-op thread count, ``device``: where the
  tensors ran. Float sums round differently across CPU models and thread counts, so runs are
  bit-identical only when these agree.

The code fingerprint and the git lookup are computed once per process.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PACKAGE = Path(__file__).resolve().parent


@functools.cache
def code_fingerprint(package: Path = PACKAGE) -> str:
    """SHA-256 (12 hex digits) over the package's ``.py`` files, paths and bytes."""
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        h.update(path.relative_to(package).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


@functools.cache
def git_state(where: Path = PACKAGE) -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the checkout holding ``where``; None outside one
    (or without git)."""
    try:
        top = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10
        )
        if top.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": top.stdout.strip(), "dirty": bool(status.stdout.strip())}


@functools.cache
def cpu_model() -> str:
    """The CPU's model name, as the operating system reports it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def _version() -> str | None:
    try:
        return metadata.version("numerics")
    except metadata.PackageNotFoundError:
        return None


def provenance(device: str | torch.device = "cpu") -> dict[str, Any]:
    """The record described in the module docstring."""
    dev = torch.device(device)
    name = cpu_model() if dev.type == "cpu" else torch.cuda.get_device_name(dev)
    return {
        "code": code_fingerprint(),
        "git": git_state(),
        "version": _version(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "device": str(dev) if dev.type == "cpu" else f"{dev} ({name})",
        "threads": torch.get_num_threads(),
    }


def differences(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str]:
    """The keys on which two records disagree in a way that can change a run's numbers:
    the code, torch, the CPU model, the thread count, the device. A run without a record
    (made before records were kept) differs in ``code``."""
    if not a or not b:
        return ["code"]
    keys = ("code", "torch", "cpu", "threads", "device")
    return [k for k in keys if a.get(k) != b.get(k)]
