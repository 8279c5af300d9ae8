"""The command line's two kinds of failure, for every subcommand.

Bad input (a value that is not allowed, a file or folder that is not there) is a ``UserError``:
one line ``numerics <command>: ...`` on stderr naming the file, key or argument, exit code 2.
Anything else is a bug: ``main`` lets it propagate, so the interpreter prints its traceback
and exits with 1. The bugs here are planted by making an internal function raise ``KeyError``,
the kind of exception the old ``main`` turned into exit code 2 without a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from numerics.cli import main
from numerics.errors import MissingInputError, UserError

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "image" / "digits_resnet.yaml"


def _bug(*args: object, **kwargs: object) -> None:
    raise KeyError("planted bug")


def _write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def _bad_recipe(tmp: Path) -> Path:
    d = yaml.safe_load(RECIPE.read_text())
    d["train"]["lrr"] = 0.1
    return _write(tmp / "bad.yaml", d)


def _sweep(tmp: Path, **keys: object) -> Path:
    return _write(tmp / "s.yaml", {"name": "s", "recipe": str(RECIPE), **keys})


# (argv, the fragments stderr's one line holds) per subcommand; {tmp} is the test's folder
BAD_INPUT: dict[str, tuple[list[str], list[str]]] = {
    "quantize-format": (["quantize", "-f", "bf17", "1.0"], ["unknown format 'bf17'", "bf16"]),
    "quantize-values": (["quantize", "--", "one"], ["VALUES: must be numbers"]),
    "train-missing": (["train", "{tmp}/nope.yaml"], ["recipe file not found: {tmp}/nope.yaml"]),
    "train-key": (["train", "{tmp}/bad.yaml"], ["{tmp}/bad.yaml: train.lrr: unknown key", "lr?"]),
    "train-set": (
        ["train", str(RECIPE), "--set", "numerics.format=periodic_sin2_b3"],
        ["numerics.format: 'periodic_sin2_b3' is no longer a format", "numerics.periodic"],
    ),
    "train-out": (["train", str(RECIPE), "--out", "{tmp}/done"], ["{tmp}/done: already holds"]),
    "sweep-missing": (["sweep", "{tmp}/nope.yaml"], ["sweep file not found: {tmp}/nope.yaml"]),
    "sweep-key": (["sweep", "{tmp}/s.yaml", "--dry-run"], ["{tmp}/s.yaml: metod: unknown key"]),
    "sweep-jobs": (
        ["sweep", "{tmp}/ok.yaml", "--jobs", "0", "--results", "{tmp}/res"],
        ["LocalExecutor: jobs=0; allowed: a positive integer"],
    ),
    "compare-missing": (["compare", "{tmp}/nowhere"], ["results directory {tmp}/nowhere"]),
    "compare-ci": (["compare", "{tmp}", "--ci", "95"], ["--ci: confidence level 95.0"]),
    "compare-where": (["compare", "{tmp}", "--where", "lr"], ["--where 'lr': expected KEY=VAL"]),
    "qsnr-format": (["qsnr", "--formats", "bf17"], ["unknown format 'bf17'"]),
    "qsnr-numel": (["qsnr", "--numel", "0"], ["--numel: must be positive, got 0"]),
    "qsnr-rounding": (["qsnr", "--rounding", "sideways"], ["unknown rounding mode 'sideways'"]),
    "docs-missing": (["docs", "{tmp}/nope.md"], ["{tmp}/nope.md: no such file"]),
    "evaluate-missing": (["evaluate", "{tmp}/nowhere"], ["{tmp}/nowhere: no such run directory"]),
    "evaluate-set": (
        ["evaluate", "{tmp}", "--set", "train.lr=1"],
        ["--set: 'train.lr=1': an evaluation changes only the inference side"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_one_line_and_exit_code_2(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _bad_recipe(tmp_path)
    _sweep(tmp_path, metod="grid")
    _write(tmp_path / "ok.yaml", {"recipe": str(RECIPE)})
    (tmp_path / "done").mkdir()
    _write(tmp_path / "done" / "summary.json", '{"status": "completed"}')
    argv, fragments = BAD_INPUT[case]
    command = argv[0]
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"numerics {command}: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment.format(tmp=tmp_path) in err, (fragment, err)
    assert out == ""


@pytest.mark.parametrize(
    "argv", [["formats", "--bogus"], ["bench", "--formats", "bf17"], ["train"], ["nonsense"]]
)
def test_argument_errors_stay_argparse_exit_code_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


# (argv, the module and function to break) per subcommand
BUGS: dict[str, tuple[list[str], str, str]] = {
    "formats": (["formats", "bf16"], "numerics.cli", "_facts"),
    "quantize": (["quantize", "-f", "bf16", "1.0"], "numerics.quantize", "quantize"),
    "train": (["train", str(RECIPE), "--out", "{tmp}/run"], "numerics.train.trainer", "train"),
    "sweep": (["sweep", "{tmp}/s.yaml", "--dry-run"], "numerics.sweeps.cli", "expand"),
    "compare": (["compare", "{tmp}"], "numerics.sweeps.compare", "aggregate"),
    "qsnr": (["qsnr", "--formats", "bf16", "--numel", "1024"], "numerics.qsnr", "table"),
    "docs": (["docs", "{tmp}/doc.md"], "numerics.sweeps.docgen", "regenerate"),
    "bench": (
        ["bench", "--numel", "64", "--reps", "1", "--formats", "bf16", "--no-qtorch"],
        "numerics.bench",
        "run",
    ),
}


@pytest.mark.parametrize("case", sorted(BUGS))
def test_a_bug_propagates_for_its_traceback(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    _sweep(tmp_path)
    _write(tmp_path / "doc.md", "# doc\n")
    argv, module, name = BUGS[case]
    monkeypatch.setattr(importlib.import_module(module), name, _bug)
    with pytest.raises(KeyError, match="planted bug"):
        main([a.format(tmp=tmp_path) for a in argv])


def test_debug_shows_the_traceback_of_bad_input_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(MissingInputError, match="nowhere"):
        main(["--debug", "compare", str(tmp_path / "nowhere")])
    with pytest.raises(UserError, match="unknown format 'bf17'"):
        main(["--debug", "quantize", "-f", "bf17", "1"])
    monkeypatch.setenv("NUMERICS_DEBUG", "1")
    with pytest.raises(MissingInputError, match="recipe file not found"):
        main(["train", str(tmp_path / "nope.yaml")])
    monkeypatch.setenv("NUMERICS_DEBUG", "0")
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2


def _numerics(*argv: str, code: str = "") -> subprocess.CompletedProcess[str]:
    """``numerics ARGV`` in a fresh interpreter, after running ``code`` (to plant a bug)."""
    script = f"import sys\n{code}\nfrom numerics.cli import main\nsys.exit(main(sys.argv[1:]))"
    env = {k: v for k, v in os.environ.items() if k != "NUMERICS_DEBUG"}
    return subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, env=env, timeout=300
    )


def test_exit_codes_and_stderr_of_the_real_process(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    user = _numerics("sweep", missing)
    assert user.returncode == 2
    assert user.stderr == f"numerics sweep: sweep file not found: {missing}\n"
    plant = (
        "import numerics.qsnr as q\n"
        "def table(*a, **k): raise KeyError('planted bug')\n"
        "q.table = table"
    )
    bug = _numerics("qsnr", "--formats", "bf16", "--numel", "1024", code=plant)
    assert bug.returncode == 1
    assert bug.stderr.startswith("Traceback (most recent call last):"), bug.stderr
    assert "KeyError: 'planted bug'" in bug.stderr
    debug = _numerics("--debug", "sweep", missing)
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert "MissingInputError: sweep file not found" in debug.stderr
