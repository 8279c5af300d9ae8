"""The command line, every subcommand: its success path and default output folder, its exit
codes (0 done, 1 a failed run, 2 bad input, 130 Ctrl-C) and its ``--help``.

Bad input (a value that is not allowed, a file or folder that is not there) is a ``UserError``:
one line ``numerics <command>: ...`` on stderr naming the file, key or argument, exit code 2.
Anything else is a bug: ``main`` lets it propagate, so the interpreter prints its traceback
and exits with 1. The bugs here are planted by making an internal function raise ``KeyError``,
the kind of exception the old ``main`` turned into exit code 2 without a traceback; Ctrl-C is
planted the same way (``KeyboardInterrupt``), and sent for real to a training process.

The tables below are keyed by subcommand and checked against the parser's list, so a new
subcommand fails here until it has its cases.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from numerics.cli import build_parser, main
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
    "train-nproc": (["train", str(RECIPE), "--nproc", "0"], ["--nproc: must be >= 1, got 0"]),
    "pvf-missing": (["pvf", "{tmp}/nowhere"], ["{tmp}/nowhere: not a run directory"]),
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
    "evaluate": (
        ["evaluate", "{tmp}", "--format", "bf16"],
        "numerics.train.evaluate",
        "evaluate_many",
    ),
    "pvf": (["pvf", "{tmp}", "--faults", "2"], "numerics.train.pvf", "pvf"),
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


# --- every subcommand ---------------------------------------------------------------------------
def _subcommands() -> list[str]:
    import argparse

    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def test_the_tables_cover_every_subcommand() -> None:
    commands = _subcommands()
    assert commands == sorted(BUGS) == sorted(SUCCESS)
    assert {case.split("-")[0] for case in BAD_INPUT} >= set(commands) - {"formats", "bench"}


def _interrupt(*args: object, **kwargs: object) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize("case", sorted(BUGS))
def test_ctrl_c_is_exit_code_130(
    case: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import importlib

    _sweep(tmp_path)
    _write(tmp_path / "doc.md", "# doc\n")
    argv, module, name = BUGS[case]
    monkeypatch.setattr(importlib.import_module(module), name, _interrupt)
    assert main([a.format(tmp=tmp_path) for a in argv]) == 130
    err = capsys.readouterr().err
    assert f"numerics {argv[0]}: interrupted" in err, err
    assert "Traceback" not in err


# A tiny recipe (a 3-step digits MLP, about a second) and the run it makes, shared by the
# commands that read a trained run.
def _tiny(folder: Path) -> Path:
    from tests.smallrun import tiny_config

    return _write(folder / "tiny.yaml", yaml.safe_dump(tiny_config(), sort_keys=False))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from numerics.train import recipe as recipes
    from numerics.train.trainer import train

    folder = tmp_path_factory.mktemp("trained")
    train(recipes.load(_tiny(folder)), folder / "tiny-run")
    return folder / "tiny-run"


QSNR_BLOCK = (
    "<!-- numerics: qsnr --formats bf16 --dist gaussian --numel 1024 -->\n<!-- numerics: end -->\n"
)

# (argv, fragments of stdout, files the command leaves, relative to the folder it runs in:
# the default output folders). {tmp}: the test's folder, the working directory; {run}: a
# trained run; {name}: that run's folder name.
SUCCESS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "formats": (["formats", "mx*"], ["mxfp8_e4m3", "mxint8", "formats. Parsed families"], []),
    "quantize": (
        ["quantize", "-f", "bf16", "-f", "int8", "--", "3.14159", "-1"],
        ["bf16 (nearest_even)", "int8 (nearest_even)", "3.140625", "-1.0"],
        [],
    ),
    "bench": (
        ["bench", "--numel", "64", "--reps", "1", "--formats", "bf16", "--no-qtorch"],
        ["command: numerics bench", "bf16"],
        [],
    ),
    "train": (
        ["train", "{tmp}/tiny.yaml"],
        ["completed: image-mlp-digits-fp32-s0 accuracy", "-> results/runs/image-mlp-digits"],
        ["results/runs/image-mlp-digits-fp32-s0-*/summary.json"],
    ),
    "evaluate": (
        ["evaluate", "{run}", "--format", "bf16"],  # bf16 throughout: not the bf16 preset
        ["bf16-opt:bf16-comm:bf16: accuracy", "(trained in fp32) <- {run}"],
        ["results/evals/{name}--bf16-opt:bf16-comm:bf16/summary.json"],
    ),
    "pvf": (
        ["pvf", "{run}", "--faults", "2", "--examples", "16", "--bit", "30"],
        ["score = ", "-> results/pvf/{name}"],
        ["results/pvf/{name}/pvf.json"],
    ),
    "sweep": (
        ["sweep", "{tmp}/s.yaml", "--jobs", "1"],
        ["sweep s: 1/1 runs: 1 completed, 0 diverged, 0 failed -> results/s"],
        ["results/s/sweep.yaml", "results/s/image-mlp-digits-fp32-s0-*/summary.json"],
    ),
    "compare": (
        ["compare", "{tmp}/res"],
        ["fp32", "1 run"],
        ["res/report.md", "res/report.html"],
    ),
    "qsnr": (
        ["qsnr", "--formats", "bf16", "--dist", "gaussian", "--numel", "1024"],
        ["QSNR in dB, 1,024 draws", "bf16"],
        [],
    ),
    "docs": (["docs", "{tmp}/doc.md"], [], []),
}


@pytest.mark.parametrize("case", sorted(SUCCESS))
def test_success_path_and_default_output_folder(
    case: str,
    trained: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import shutil

    monkeypatch.chdir(tmp_path)  # the default folders are relative to where numerics runs
    _tiny(tmp_path)
    _write(tmp_path / "s.yaml", {"name": "s", "recipe": "tiny.yaml"})
    shutil.copytree(trained, tmp_path / "res" / trained.name)
    _write(tmp_path / "doc.md", "# doc\n\n" + QSNR_BLOCK)
    argv, fragments, files = SUCCESS[case]
    fill = {"tmp": tmp_path, "run": trained, "name": trained.name}
    assert main([a.format(**fill) for a in argv]) == 0
    out, err = capsys.readouterr()
    for fragment in fragments:
        assert fragment.format(**fill) in out, (fragment, out, err)
    for pattern in files:
        assert sorted(tmp_path.glob(pattern.format(**fill))), (pattern, out, err)
    if case == "docs":  # the block was filled in, in place
        doc = (tmp_path / "doc.md").read_text()
        assert "| bf16 |" in doc and doc.endswith("<!-- numerics: end -->\n"), doc


# --- exit code 1: a run failed, or there was nothing to do --------------------------------------
def test_a_failed_run_is_exit_code_1_with_its_traceback(tmp_path: Path) -> None:
    # hidden [0] passes the recipe check (a list[int)) but the model constructor rejects it
    recipe = _tiny(tmp_path)
    out = tmp_path / "run"
    failed = _numerics("train", str(recipe), "--set", "model.hidden=[0]", "--out", str(out))
    assert failed.returncode == 1, failed.stderr
    assert f"numerics train: the run failed (recorded in {out / 'summary.json'})" in failed.stderr
    assert "Traceback (most recent call last):" in failed.stderr
    assert yaml.safe_load((out / "summary.json").read_text())["status"] == "failed"


def test_other_exit_codes_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _tiny(tmp_path)
    # a sweep with a failed run: the others are kept, the sweep says so
    _write(tmp_path / "s.yaml", {"name": "s", "recipe": "tiny.yaml",
                                 "parameters": {"model.hidden": {"values": [[0]]}}})  # fmt: skip
    assert main(["sweep", "s.yaml", "--jobs", "1"]) == 1
    assert len(list((tmp_path / "results" / "s").glob("*/summary.json"))) == 1
    # compare with no runs to compare
    (tmp_path / "empty").mkdir()
    assert main(["compare", "empty"]) == 1
    # docs --check on a doc whose generated block is out of date; it is left alone
    _write(tmp_path / "doc.md", QSNR_BLOCK)
    assert main(["docs", "doc.md", "--check"]) == 1
    assert (tmp_path / "doc.md").read_text() == QSNR_BLOCK


# --- Ctrl-C for real ----------------------------------------------------------------------------
def test_sigint_stops_a_training_process_with_exit_code_130(tmp_path: Path) -> None:
    import signal
    import time

    recipe = _tiny(tmp_path)
    out = tmp_path / "run"
    script = "import sys\nfrom numerics.cli import main\nsys.exit(main(sys.argv[1:]))"
    argv = ["train", str(recipe), "--set", "train.steps=1000000", "--out", str(out)]
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *argv],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not (out / "metrics.jsonl").exists():  # training has begun
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "numerics train: interrupted; continue the run with: numerics train" in err
    assert f"--resume --out {out}" in err and "Traceback" not in err


# --- train: run again, resume -------------------------------------------------------------------
def test_train_runs_a_runs_config_again_into_a_fresh_default_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(_tiny(tmp_path))]) == 0
    (first,) = (tmp_path / "results" / "runs").iterdir()
    capsys.readouterr()
    base = Path("results") / "runs" / first.name
    for n in (2, 3):
        assert main(["train", str(base / "config.yaml")]) == 0
        out, err = capsys.readouterr()
        again = base.with_name(f"{first.name}-{n}")
        assert out.rstrip().endswith(f"-> {again}"), out
        assert f"numerics train: {base} holds a run; this one goes to {again}" in err
        # the same recipe: the same run, bit for bit
        assert (again / "config.yaml").read_text() == (base / "config.yaml").read_text()
        a, b = (json_of(p / "summary.json") for p in (base, again))
        assert a["metrics"] == b["metrics"]
    assert sorted(p.name for p in base.parent.iterdir()) == [
        first.name, f"{first.name}-2", f"{first.name}-3"
    ]  # fmt: skip


def json_of(path: Path) -> dict[str, object]:
    import json

    return dict(json.loads(path.read_text()))


def test_train_resume_continues_the_run_whose_config_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from numerics.train import recipe as recipes
    from numerics.train.trainer import train

    def stop_after_step_1(step: int) -> None:
        if step == 1:
            raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    rec = recipes.load(_tiny(tmp_path), ["train.checkpoint_every=1"])
    run = tmp_path / "elsewhere" / "cut"
    with pytest.raises(KeyboardInterrupt):
        train(rec, run, hooks=[stop_after_step_1])
    assert not (run / "summary.json").exists()
    assert main(["train", str(run / "config.yaml"), "--resume"]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"-> {run}")
    assert json_of(run / "summary.json")["steps"] == 3
    assert not (tmp_path / "results").exists()  # no other folder was made
    # without --resume, the same file starts a new run in the default folder
    assert main(["train", str(run / "config.yaml")]) == 0
    (again,) = (tmp_path / "results" / "runs").iterdir()
    assert json_of(again / "summary.json")["metrics"] == json_of(run / "summary.json")["metrics"]


# --- --help -------------------------------------------------------------------------------------
def _parser_of(command: str) -> argparse.ArgumentParser:
    if command == "bench":  # parses its own arguments
        from numerics.bench import build_parser as bench_parser

        return bench_parser()
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]  # type: ignore[no-any-return]


def _help(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"] if command else ["--help"])
    assert exc.value.code == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out


@pytest.mark.parametrize("command", _subcommands())
def test_help_exits_0_and_explains_every_argument(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _help(command, capsys)
    assert text.startswith(f"usage: numerics {command}")
    for action in _parser_of(command)._actions:
        names = action.option_strings or [action.metavar or action.dest]
        assert action.help, (command, names)  # every argument says what it is for
        assert all(str(n) in text for n in names), (command, names)


def test_top_level_help_names_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help("", capsys)
    assert all(f"numerics {c} " in text for c in _subcommands()), text
    for code in ("0 done", "1 a run failed", "2 bad input", "130 interrupted"):
        assert code in text


# Words in help texts that look like paths but name no file of the repo.
NOT_REPO_FILES = {
    # files of a run or results folder, named as what a command reads or writes
    "config.yaml", "summary.json", "checkpoint.pt", "pvf.json", "report.md", "report.html",
    "FILE.md",  # a placeholder
    "scale/bias/micro",  # --field's choices
}  # fmt: skip
PATH = re.compile(r"[\w.*<>-]*(?:/[\w.*<>-]+)+|[\w-]+\.(?:yaml|yml|md|json|jsonl|py|pt|png|html)")


def test_every_path_a_help_text_names_exists(capsys: pytest.CaptureFixture[str]) -> None:
    texts = {c: _help(c, capsys) for c in ["", *_subcommands()]}
    named = {(c, m.group(0).rstrip(".")) for c, t in texts.items() for m in PATH.finditer(t)}
    assert ("sweep", "sweeps/demo.yaml") in named  # the regex finds them
    missing = [
        (command or "numerics", path)
        for command, path in sorted(named)
        if not path.startswith(("results/", "./results"))  # output folders
        and "<" not in path
        and path not in NOT_REPO_FILES
        and not (ROOT / path).exists()
    ]
    assert missing == []
