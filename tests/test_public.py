"""The public face: each name in ``numerics.__all__`` is importable from ``numerics`` and is the
object its home module defines."""

import importlib
import importlib.metadata
import subprocess
import sys

import pytest

import numerics

HOMES = {
    "quantize": "numerics.quantize",
    "quantize_model": "numerics.nn.modules.swap",
    "Policy": "numerics.nn.policy",
    "formats": None,
    "encode": "numerics.encoding",
    "decode": "numerics.encoding",
    "Rounding": "numerics.rounding",
    "__version__": None,
}


def test_all_is_the_documented_face() -> None:
    assert sorted(numerics.__all__) == sorted(HOMES)
    for name in HOMES:
        assert f"``{name}" in (numerics.__doc__ or "") or name == "__version__"


@pytest.mark.parametrize("name", sorted(HOMES))
def test_a_public_name_is_its_home_modules_object(name: str) -> None:
    ns: dict[str, object] = {}
    exec(f"from numerics import {name} as got", ns)
    home = HOMES[name]
    if name == "formats":
        assert ns["got"] is importlib.import_module("numerics.formats")
    elif name == "__version__":
        assert ns["got"] == importlib.metadata.version("numerics")
    else:
        assert home is not None
        assert ns["got"] is getattr(importlib.import_module(home), name)
    assert name in dir(numerics)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        numerics.nope  # noqa: B018


def test_import_numerics_leaves_the_training_library_unloaded() -> None:
    code = (
        "import sys, numerics; print(sorted(m for m in sys.modules if m.startswith('numerics.nn')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
