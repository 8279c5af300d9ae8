"""tools/install_torch.py: the order of torch sources and the fall-through, pip faked."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("install_torch", ROOT / "tools" / "install_torch.py")
assert _spec is not None and _spec.loader is not None
install_torch = importlib.util.module_from_spec(_spec)
sys.modules["install_torch"] = install_torch
_spec.loader.exec_module(install_torch)


class FakePip:
    """Answers each pip command in turn: 0 installs, anything else fails with `error`."""

    def __init__(self, *codes: int, error: str = "ERROR: No matching distribution found") -> None:
        self.codes = list(codes)
        self.error = error
        self.commands: list[list[str]] = []

    def __call__(self, command: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.commands.append(list(command))
        code = self.codes.pop(0)
        stderr = "" if code == 0 else f"WARNING: something\n{self.error}\n"
        return subprocess.CompletedProcess(command, code, "", stderr)


def sources(system: str = "Linux", machine: str = "x86_64") -> list:
    return install_torch.default_sources("2.13.0", system, machine)


def test_order_on_linux_x86_64_asks_for_the_cpu_build_before_pypi() -> None:
    got = [(s.name, s.requirement, s.pip_args) for s in sources()]
    assert got == [
        ("configured", "torch==2.13.0+cpu", ()),
        ("cpu-index", "torch==2.13.0+cpu", ("--index-url", "https://download.pytorch.org/whl/cpu")),
        ("pypi", "torch==2.13.0", ()),
    ]
    assert "CUDA" in sources()[2].label


@pytest.mark.parametrize(("system", "machine"), [("Darwin", "arm64"), ("Linux", "aarch64")])
def test_where_the_cpu_build_has_no_suffix(system: str, machine: str) -> None:
    # macOS and Linux aarch64 wheels carry no +cpu, on PyPI as on the CPU index
    got = sources(system, machine)
    assert [s.requirement for s in got] == ["torch==2.13.0"] * 3
    assert "CUDA" not in got[2].label


def test_the_first_source_that_works_is_used_and_no_other_is_tried() -> None:
    pip, said = FakePip(0), []
    used = install_torch.install(sources(), "py", pip, said.append)
    assert used.name == "configured"
    assert pip.commands == [["py", "-m", "pip", "install", "-q", "torch==2.13.0+cpu"]]
    assert said == []


def test_a_failed_source_falls_through_to_the_next_saying_why() -> None:
    pip, said = FakePip(1, 0), []
    used = install_torch.install(sources(), "py", pip, said.append)
    assert used.name == "cpu-index"
    assert pip.commands[1][-3:] == [
        "--index-url",
        "https://download.pytorch.org/whl/cpu",
        "torch==2.13.0+cpu",
    ]
    assert said == [
        "torch: not from the configured index: ERROR: No matching distribution found; "
        "trying the PyTorch CPU index"
    ]


def test_pypi_is_the_last_resort_and_none_when_all_fail() -> None:
    pip, said = FakePip(1, 1, 0), []
    assert install_torch.install(sources(), "py", pip, said.append).name == "pypi"
    assert pip.commands[2][-1] == "torch==2.13.0"
    assert said[1].endswith("trying PyPI (a CUDA build of several GB; it runs on the CPU too)")

    pip, said = FakePip(1, 1, 1), []
    assert install_torch.install(sources(), "py", pip, said.append) is None
    assert len(said) == 3 and not said[2].endswith("trying")


def test_sources_env_picks_and_orders_and_rejects_unknown_names() -> None:
    got = install_torch.choose(sources(), "pypi, cpu-index")
    assert [s.name for s in got] == ["pypi", "cpu-index"]
    assert install_torch.choose(sources(), None) == sources()
    with pytest.raises(SystemExit, match="unknown source 'local'; allowed: configured"):
        install_torch.choose(sources(), "local")


def test_pip_error_is_the_last_error_line() -> None:
    stderr = "WARNING: x\nERROR: Could not find a version\nERROR: No matching distribution\n"
    assert install_torch.pip_error(stderr) == "ERROR: No matching distribution"
    assert install_torch.pip_error("killed\n") == "killed"
    assert install_torch.pip_error("") == "no output"
    offline = (
        "WARNING: Retrying (Retry(total=0)) after connection broken by 'NewConnectionError('<x>: "
        "Failed to establish a new connection: [Errno -2] Name or service not known')': /whl\n"
        "ERROR: No matching distribution found for torch==2.13.0+cpu\n"
    )
    assert install_torch.pip_error(offline) == (
        "ERROR: No matching distribution found for torch==2.13.0+cpu (the index did not answer: "
        "Failed to establish a new connection: [Errno -2] Name or service not known)"
    )


def test_dry_run_prints_the_commands_in_order(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(install_torch.SOURCES_ENV, "cpu-index,pypi")
    monkeypatch.setattr(install_torch.platform, "system", lambda: "Linux")
    monkeypatch.setattr(install_torch.platform, "machine", lambda: "x86_64")
    assert install_torch.main(["2.13.0", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["cpu-index", "pypi"]
    assert lines[0].endswith("--index-url https://download.pytorch.org/whl/cpu torch==2.13.0+cpu")


def test_a_spec_installs_exactly_that(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["2.13.0", "--spec", "torch==2.13.0", "--pip-args", "--index-url X", "--dry-run"]
    assert install_torch.main(args) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("spec: ") and line.endswith("--index-url X torch==2.13.0")


def test_makefile_and_environment_yml_pin_the_same_torch_and_extras() -> None:
    makefile = (ROOT / "Makefile").read_text()
    version = re.search(r"^TORCH_VERSION \?= (\S+)$", makefile, re.M)
    extras = re.search(r"^EXTRAS \?= (\S+)$", makefile, re.M)
    assert version and extras
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    (pip,) = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert f"torch=={version[1]}" in pip
    assert f"-e .[{extras[1]}]" in pip
    assert f"--extra-index-url {install_torch.CPU_INDEX}" in pip
