"""Provenance records: the code fingerprint follows the package's bytes (and nothing else),
the git state matches git's own answer, and records differ on the keys that change numbers."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from numerics import provenance as prov


def _package(root: Path) -> Path:
    pkg = root / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    (pkg / "notes.md").write_text("docs\n")
    return pkg


def test_the_fingerprint_is_the_hash_of_the_sources_and_only_of_them(tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    want = hashlib.sha256(b"a.py\0x = 1\n\0sub/b.py\0y = 2\n\0").hexdigest()[:12]
    fp = prov.code_fingerprint.__wrapped__  # uncached
    assert fp(pkg) == want
    (pkg / "notes.md").write_text("other docs\n")
    assert fp(pkg) == want  # not code
    (pkg / "sub" / "b.py").write_text("y = 3\n")
    assert fp(pkg) != want


def test_git_state_matches_git(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "f.py").write_text("1\n")
    subprocess.run([*git, "add", "f.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    state = prov.git_state.__wrapped__
    assert state(repo) == {"commit": head.strip(), "dirty": False}
    (repo / "f.py").write_text("2\n")
    assert state(repo) == {"commit": head.strip(), "dirty": True}
    assert state(tmp_path) is None or state(tmp_path)["commit"] != head.strip()


def test_the_record_and_its_differences() -> None:
    r = prov.provenance("cpu")
    assert r["code"] == prov.code_fingerprint() and len(r["code"]) == 12
    assert r["device"] == "cpu" and r["threads"] >= 1 and r["cpu"]
    if Path("/proc/cpuinfo").exists():
        names = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]  # fmt: skip
        if names:
            assert r["cpu"] == names[0].split(":", 1)[1].strip()
    assert prov.differences(r, dict(r)) == []
    assert prov.differences(r, {**r, "cpu": "other", "threads": 99}) == ["cpu", "threads"]
    assert prov.differences(None, r) == ["code"]


@pytest.mark.parametrize("key", ["code", "torch"])
def test_a_record_from_other_code_differs(key: str) -> None:
    r = prov.provenance()
    assert key in prov.differences(r, {**r, key: "x"})
