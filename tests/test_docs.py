"""The docs' Python examples run: every ```python block of a file under docs/, in order, in one
namespace (a file is one script; a section may use what an earlier one defined).

A block that must not run starts with the line ``# docs-test: skip (<why>)``, and the reason is
required. The examples keep their sizes small, so a file runs in seconds.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
SKIP = re.compile(r"#\s*docs-test:\s*skip\b\s*(.*)")
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, code) of each ```python block of a Markdown text."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


EXAMPLES = [p for p in DOCS if python_blocks(p.read_text())]


def skip_reason(code: str) -> str | None:
    """The reason a block's skip marker gives, or None for a block that runs; a marker
    without a reason fails."""
    first = code.lstrip().split("\n", 1)[0]
    m = SKIP.match(first)
    if m is None:
        return None
    reason = m.group(1).strip(" ()—-:")
    assert reason, f"a '# docs-test: skip' marker must say why: {first!r}"
    return reason


def test_the_block_extraction() -> None:
    text = (
        "x\n```python\na = 1\n```\n```\nnot python\n```\n"
        "```python\n# docs-test: skip (slow)\nb\n```\n"
    )
    blocks = python_blocks(text)
    assert blocks == [(3, "a = 1\n"), (9, "# docs-test: skip (slow)\nb\n")]
    assert skip_reason(blocks[0][1]) is None and skip_reason(blocks[1][1]) == "slow"
    with pytest.raises(AssertionError, match="must say why"):
        skip_reason("# docs-test: skip\nb\n")


def test_docs_hold_examples() -> None:
    # the file this test was written for; a new file with python blocks joins by itself
    assert "training.md" in {p.name for p in EXAMPLES}


@pytest.mark.parametrize("doc", EXAMPLES, ids=lambda p: p.name)
def test_python_blocks_run_in_order(
    doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # anything an example writes lands here
    namespace: dict[str, object] = {"__name__": f"docs_{doc.stem}"}
    torch.manual_seed(0)
    ran = 0
    for line, code in python_blocks(doc.read_text()):
        if skip_reason(code) is not None:
            continue
        # line numbers in a traceback point into the .md file
        source = "\n" * (line - 1) + code
        exec(compile(source, str(doc.relative_to(ROOT)), "exec"), namespace)
        ran += 1
    assert ran > 0


def test_the_kernel_thresholds_the_docs_print_are_the_codes() -> None:
    # the README shows what `print(settings.current())` prints with no variable set
    from numerics.kernels.settings import Settings

    shown = {
        (p.name, m.group(0))
        for p in [ROOT / "README.md", *DOCS]
        for m in re.finditer(r"Settings\(compile=[^)]*\)", p.read_text())
    }
    assert shown, "the README no longer shows the thresholds"
    assert {s for _, s in shown} == {repr(Settings.from_env({}))}, shown
