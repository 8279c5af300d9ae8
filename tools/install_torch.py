"""Install torch into the running Python's environment, the CPU build where one exists.

    python tools/install_torch.py 2.13.0 [--spec SPEC --pip-args ARGS] [--dry-run]

`make demo` and `make test` run this with the venv's Python before `pip install -e .`, because
an unpinned `torch` on Linux is PyPI's CUDA build (several GB) and `pip install -e .` would
pull it in. Sources, tried in order until one works:

1. the configured index: pip as the machine has it set up (pip.conf, PIP_* variables, a local
   wheel under find-links), asked for the CPU build only, so it never downloads a CUDA build;
2. the PyTorch CPU index (https://download.pytorch.org/whl/cpu);
3. PyPI's torch at the same version (on Linux x86_64 a CUDA build, which also runs on the CPU).

The CPU build is `VERSION+cpu` on Linux x86_64; on macOS and Linux aarch64 the CPU build has no
suffix (PyPI's torch there is the CPU build). Prints one line naming the torch installed and
where it came from; a source that fails is named with pip's error, then the next is tried.
NUMERICS_TORCH_SOURCES (comma-separated names: configured, cpu-index, pypi) picks and orders
the sources; `--spec` (the Makefile's TORCH_SPEC, e.g. a CUDA build) installs exactly that,
with `--pip-args` (PIP_TORCH_FLAGS), and nothing else. Standard library only: it runs before
anything is installed.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
SOURCES_ENV = "NUMERICS_TORCH_SOURCES"


@dataclass(frozen=True)
class Source:
    """One way to get torch: a name, what the messages call it, and pip's arguments."""

    name: str
    label: str
    requirement: str
    pip_args: tuple[str, ...] = ()

    def command(self, python: str) -> list[str]:
        return [python, "-m", "pip", "install", "-q", *self.pip_args, self.requirement]


def cpu_requirement(version: str, system: str, machine: str) -> str:
    """The requirement that matches only the CPU build of torch `version` on this platform."""
    if system == "Linux" and machine in ("x86_64", "AMD64"):
        return f"torch=={version}+cpu"
    return f"torch=={version}"


def default_sources(version: str, system: str, machine: str) -> list[Source]:
    cpu = cpu_requirement(version, system, machine)
    pypi_label = "PyPI"
    if cpu.endswith("+cpu"):
        pypi_label = "PyPI (a CUDA build of several GB; it runs on the CPU too)"
    return [
        Source("configured", "the configured index", cpu),
        Source("cpu-index", "the PyTorch CPU index", cpu, ("--index-url", CPU_INDEX)),
        Source("pypi", pypi_label, f"torch=={version}"),
    ]


def choose(sources: list[Source], names: str | None) -> list[Source]:
    """The sources named in `names` (comma-separated), in that order; all of them if unset."""
    if not names:
        return sources
    by_name = {s.name: s for s in sources}
    chosen = []
    for name in (n.strip() for n in names.split(",")):
        if name not in by_name:
            raise SystemExit(
                f"install_torch: {SOURCES_ENV}: unknown source {name!r}; "
                f"allowed: {', '.join(by_name)}"
            )
        chosen.append(by_name[name])
    return chosen


def installed_version() -> str | None:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


# pip reports an index it cannot reach as retries, then "no matching distribution"
_UNREACHABLE = re.compile(
    r"(Failed to establish a new connection|Could not fetch URL|ProxyError|SSLError|timed out)"
    r"[^'\"\n]*"
)


def pip_error(stderr: str) -> str:
    """pip's last ERROR line (its reason), or its last line; says so if an index did not answer."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    reason = (errors or lines or ["no output"])[-1]
    unreachable = _UNREACHABLE.search(stderr)
    if unreachable:
        reason += f" (the index did not answer: {unreachable[0].strip()})"
    return reason


Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def run_pip(command: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True)


def install(
    sources: Sequence[Source],
    python: str,
    run: Runner = run_pip,
    say: Callable[[str], None] = print,
) -> Source | None:
    """Try each source in order; return the one that installed torch, None if none did."""
    for i, source in enumerate(sources):
        result = run(source.command(python))
        if result.returncode == 0:
            return source
        following = f"; trying {sources[i + 1].label}" if i + 1 < len(sources) else ""
        say(f"torch: not from {source.label}: {pip_error(result.stderr)}{following}")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("version", help="the torch release, e.g. 2.13.0")
    parser.add_argument("--spec", default="", help="install exactly this requirement instead")
    parser.add_argument("--pip-args", default="", help="pip arguments for --spec")
    parser.add_argument("--dry-run", action="store_true", help="print the commands in order")
    args = parser.parse_args(argv)

    if args.spec:
        sources = [Source("spec", "TORCH_SPEC", args.spec, tuple(shlex.split(args.pip_args)))]
    else:
        found = installed_version()
        if found is not None and found.split("+")[0] == args.version and not args.dry_run:
            print(f"torch: {found} already installed")
            return 0
        sources = choose(
            default_sources(args.version, platform.system(), platform.machine()),
            os.environ.get(SOURCES_ENV),
        )
    if args.dry_run:
        for source in sources:
            print(f"{source.name}: {shlex.join(source.command(sys.executable))}")
        return 0

    used = install(sources, sys.executable)
    if used is None:
        print(
            f"torch: no source had torch {args.spec or args.version} for this platform "
            f"(Python {platform.python_version()}, {platform.system()} {platform.machine()}); "
            "install it yourself into this environment, or pass "
            'TORCH_SPEC="torch==..." PIP_TORCH_FLAGS="--index-url ..." to make',
            file=sys.stderr,
        )
        return 1
    print(f"torch: {installed_version()} from {used.label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
