"""The ``tiny`` folder of recipes that the sweep tests expand and run."""

from pathlib import Path

import pytest

from numerics.train import recipe as recipes
from tests.numerics.sweeps.test_spec import TINY, write


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A folder with recipes/a.yaml (hidden [16]) and recipes/b.yaml (hidden [8])."""
    write(tmp_path / "recipes" / "a.yaml", TINY)
    write(tmp_path / "recipes" / "b.yaml", recipes.merge(TINY, {"model": {"hidden": [8]}}))
    return tmp_path
