"""Atomic file writes (``numerics.files``): the old file or the new one, never a torn one."""

import json
from pathlib import Path

import pytest

from numerics import files


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "summary.json"
    files.atomic_write_json(p, {"a": 1})
    files.atomic_write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert [f.name for f in p.parent.iterdir()] == ["summary.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    p = tmp_path / "config.yaml"
    files.atomic_write_text(p, "old: 1\n")

    def boom(f: object) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        files.atomic_write(p, boom)
    assert p.read_text() == "old: 1\n"
    assert [f.name for f in tmp_path.iterdir()] == ["config.yaml"]
