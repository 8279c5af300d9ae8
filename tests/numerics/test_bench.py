"""``numerics bench`` on a tiny tensor: the shape of its output, never its speed.

Timings on a shared machine are noise; speed targets are read off the benchmark itself.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from numerics import bench
from numerics.kernels import native
from numerics.route import Route

TINY = ["--numel", "4096", "--reps", "2", "--no-qtorch", "--threads", "1"]


def test_json_structure(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*TINY, "--formats", "fp8_e4m3", "mxfp4_e2m1", "--json"]
    assert bench.main(argv) == 0
    doc = json.loads(capsys.readouterr().out)

    assert doc["command"] == "numerics bench " + " ".join(argv)
    assert doc["numel"] == 4096 and doc["reps"] == 2
    assert doc["bytes_per_call"] == 2 * 4 * 4096
    assert doc["backend"] == "compiled"
    assert doc["qtorch"]["used"] is False
    machine = doc["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and machine["threads"] == 1
    assert machine["torch"]

    rows = doc["results"]
    # Every format with every default rounding mode, in order.
    assert [(r["format"], r["rounding"]) for r in rows] == [
        ("fp8_e4m3", "nearest_even"),
        ("fp8_e4m3", "stochastic"),
        ("mxfp4_e2m1", "nearest_even"),
        ("mxfp4_e2m1", "stochastic"),
    ]
    for r in rows:
        for key in ("seconds", "gbps", "clone_seconds", "clone_gbps", "x_clone"):
            assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, key
        assert len(r["times"]["quantize"]) == 2 and len(r["times"]["clone"]) == 2
        assert all(t > 0 for t in r["times"]["quantize"] + r["times"]["clone"])
        # No qtorch column without qtorch, and no compiler fallback on these kernels.
        assert r["qtorch_gbps"] is None and r["x_qtorch"] is None
        assert r["warnings"] == []
    # the route each row took: the C++ kernels take these casts where a compiler exists
    want = Route.CPP if native.library() is not None else Route.INDUCTOR
    assert [r["kernel"] for r in rows] == [want.label] * 4
    assert [r["route"] for r in rows] == [want.value] * 4


def test_text_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main([*TINY, "--formats", "fp16", "--rounding", "nearest_even"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("command: numerics bench --numel 4096")
    assert lines[1].startswith("machine: ") and "torch " in lines[1] and "device cpu" in lines[1]
    assert "qtorch not timed: disabled (--no-qtorch)" in out
    header = next(i for i, line in enumerate(lines) if line.startswith("format"))
    assert lines[header].split() == [
        "format", "rounding", "kernel", "GB/s", "clone", "GB/s", "x", "clone", "qtorch", "GB/s",
        "x", "qtorch",
    ]  # fmt: skip
    cells = lines[header + 1].split()
    assert cells[:3] == ["fp16", "nearest_even", "Inductor"]  # torch's cast, compiled
    assert all(float(c) > 0 for c in cells[3:6]) and cells[6:] == ["-", "-"]


@pytest.mark.parametrize(
    "argv",
    [["--formats", "fp7"], ["--rounding", "sideways"], ["--numel", "0"], ["--reps", "0"]],
)
def test_bad_arguments_fail_before_timing(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bench.main([*TINY, *argv])
    assert exc.value.code == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_device_cuda_without_a_gpu_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bench.main([*TINY, "--device", "cuda"])
    assert (
        exc.value.code == 2
        and "--device cuda: torch sees no CUDA device" in capsys.readouterr().err
    )
