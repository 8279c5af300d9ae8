"""RunSummary: the typed run record; summary.json round trips, old and unknown keys survive."""

from __future__ import annotations

import json

import pytest

from numerics.train.summary import SCHEMA_VERSION, STATUSES, RunSummary, SummaryError


def test_round_trip_keeps_fields_order_and_unknown_keys() -> None:
    on_disk = {
        "status": "completed",
        "task": "image",
        "format": "bf16",
        "seed": 2,
        "metrics": {"accuracy": 0.75},
        "steps": 12,
        "hardening": {"bits": 3},
        "added_by_a_newer_version": [1, 2],
        "schema_version": SCHEMA_VERSION,
    }
    s = RunSummary.from_dict(json.loads(json.dumps(on_disk)))
    assert (s.status, s.task, s.format, s.seed, s.steps) == ("completed", "image", "bf16", 2, 12)
    assert s.metrics == {"accuracy": 0.75} and s.hardening == {"bits": 3}
    assert s.extra == {"added_by_a_newer_version": [1, 2]}
    assert s.finished
    back = s.to_dict()
    fields = {k: v for k, v in back.items() if v is not None}
    assert fields == {**on_disk, "data_info": {}}  # the fields set, and extra written back
    assert back["reason"] is None and "extra" not in back  # every field is written
    # known fields in declaration order, the unknown key after them
    keys = list(back)
    assert keys.index("status") < keys.index("metrics") < keys.index("hardening")
    assert keys.index("hardening") < keys.index("added_by_a_newer_version")


def test_a_file_without_a_version_is_version_0() -> None:
    assert RunSummary.from_dict({"status": "diverged"}).schema_version == 0
    assert RunSummary(status="diverged").schema_version == SCHEMA_VERSION


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"status": "done"}, "allowed: completed, diverged, failed"),
        ({"metrics": {}}, "has a status; allowed: completed"),
        ({"status": "completed", "metrics": [0.5]}, "'metrics'.*allowed: an object"),
    ],
)
def test_malformed_summaries_are_refused(bad: dict[str, object], match: str) -> None:
    with pytest.raises(SummaryError, match=match):
        RunSummary.from_dict(bad)


def test_failed_record_carries_the_error_line_and_what_ran() -> None:
    try:
        raise KeyError("planted")
    except KeyError as exc:
        s = RunSummary.failed(exc, "Traceback ...", task="image", seed=3)
    assert (s.status, s.error, s.traceback) == ("failed", "KeyError: 'planted'", "Traceback ...")
    assert (s.task, s.seed, s.finished) == ("image", 3, False)
    d = RunSummary.failed("OSError: gone", run_id="r1").to_dict()
    assert d["error"] == "OSError: gone" and d["run_id"] == "r1" and d["traceback"] is None
    assert set(STATUSES) == {"completed", "diverged", "failed"}
