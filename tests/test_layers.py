"""The package's layers, checked on the source: a module imports only from its own layer or a
lower one.

    0 core      numerics.formats, kernels, backends, quantize, rounding, encoding, reference, ...
    1 nn        numerics.nn: policy, modules, optim, loss scaling, comm, ...
    2 zoo       numerics.data, numerics.models, numerics.ngram, numerics.zoo
    3 train     numerics.train: recipes, tasks, the trainer, run directories, ...
    4 sweeps    numerics.sweeps: sweep files, the engine, executors, compare, ...
    5 cli       numerics.cli

Every import counts, those inside functions included: a lazy import still ties the layers.
The package's ``__init__`` (the public face) may re-export from any layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "numerics"

LAYERS = ["core", "nn", "zoo", "train", "sweeps", "cli"]
# the first component under ``numerics`` -> its layer; anything else is core
PLACES = {
    "nn": "nn",
    "data": "zoo",
    "models": "zoo",
    "ngram": "zoo",
    "zoo": "zoo",
    "train": "train",
    "sweeps": "sweeps",
    "cli": "cli",
}


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name; None outside the package and for ``numerics``
    itself (the public face)."""
    parts = module.split(".")
    if parts[0] != "numerics" or len(parts) == 1:
        return None
    return PLACES.get(parts[1], "core")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, module) of every import in ``source``, relative ones resolved against
    ``module``; ``from numerics import x`` counts as ``numerics.x``."""
    package = module if is_package else module.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base == "numerics":
                out += [(node.lineno, f"numerics.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, base))
    return out


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """Each import of ``source`` (the text of ``module``) that reaches a higher layer."""
    own = layer_of(module)
    if own is None:
        return []
    found = []
    for line, target in imported(source, module, is_package):
        theirs = layer_of(target)
        if theirs is not None and LAYERS.index(theirs) > LAYERS.index(own):
            found.append(f"{module}:{line} ({own}) imports {target} ({theirs})")
    return found


def test_every_layer_is_named() -> None:
    assert set(PLACES.values()) | {"core"} == set(LAYERS)
    tops = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert set(PLACES) <= tops, "a layer names a package or module that no longer exists"


def test_no_module_imports_from_a_higher_layer() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += violations(path.read_text(), module_name(path), path.name == "__init__.py")
    assert not found, "imports that cross the layers upwards:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("module", "source", "crosses"),
    [
        ("numerics.quantize", "def f():\n    from numerics.nn.policy import Policy\n", True),
        ("numerics.nn.policy", "import numerics.train.recipe\n", True),
        ("numerics.models.gpt", "from numerics import sweeps\n", True),
        ("numerics.train.rundir", "from ..sweeps import spec\n", True),
        ("numerics.nn.modules", "from ...train.tasks import get\n", True),
        ("numerics.sweeps.spec", "from numerics.cli import main\n", True),
        ("numerics.train.trainer", "from numerics.nn import optim\nimport torch\n", False),
        ("numerics.cli", "from numerics.sweeps.cli import add_parser\n", False),
        ("numerics", "from numerics.nn.policy import Policy\n", False),
    ],
)
def test_the_checker_reports_a_planted_crossing(module: str, source: str, crosses: bool) -> None:
    is_package = module in ("numerics", "numerics.nn.modules")
    assert bool(violations(source, module, is_package)) is crosses
