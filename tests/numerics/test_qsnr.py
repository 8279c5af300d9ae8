"""QSNR: torch's own casts and the float64 reference as oracles, the textbook 20 log10(M) dB of
a uniform quantizer on a uniform source, the planted distributions' moments."""

from __future__ import annotations

import math

import pytest
import torch

from numerics import qsnr
from numerics.cli import main
from numerics.quantize import quantize

N = 1 << 16


@pytest.mark.parametrize(
    ("fmt", "dtype"),
    [("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp8_e4m3", torch.float8_e4m3fn),
     ("fp8_e5m2", torch.float8_e5m2)],
)  # fmt: skip
def test_element_formats_match_torchs_casts(fmt: str, dtype: torch.dtype) -> None:
    x = qsnr.sample("gaussian", N, seed=1)
    want = qsnr.qsnr_db(x, x.to(dtype).float())
    assert qsnr.format_qsnr(fmt, x) == want


def test_uniform_quantizer_on_uniform_source_is_20_log10_levels() -> None:
    x = qsnr.sample("uniform", N, seed=2)
    # int8: a symmetric grid of 255 levels, step max|x| / 127 over (-1, 1): M = 254 steps
    assert qsnr.format_qsnr("int8", x) == pytest.approx(20 * math.log10(254), abs=0.1)
    assert qsnr.format_qsnr("int4", x) == pytest.approx(20 * math.log10(14), abs=0.1)


def test_block_formats_match_the_float64_reference() -> None:
    x = qsnr.sample("student_t3", 4096, seed=3)
    for fmt in ("mx6", "mxfp4_e2m1", "bfp8_b16"):
        ref = quantize(x, fmt, axis=-1, saturate=True, backend="reference")
        assert qsnr.format_qsnr(fmt, x) == pytest.approx(qsnr.qsnr_db(x, ref), abs=1e-9)


def test_the_ladders_and_heavy_tails() -> None:
    t = qsnr.table(["mx9", "mx6", "mx4", "mxint8", "mxfp8_e4m3", "mxfp4_e2m1", "int8"],
                   ["gaussian", "student_t3"], numel=N)  # fmt: skip
    g = {f: v["gaussian"] for f, v in t.items()}
    assert g["mx9"] > g["mx6"] > g["mx4"]
    assert g["mxint8"] > g["mxfp8_e4m3"] > g["mxfp4_e2m1"]
    # heavy tails cost a per-tensor scale far more than a per-block one
    int8_loss = t["int8"]["gaussian"] - t["int8"]["student_t3"]
    mx_loss = t["mxint8"]["gaussian"] - t["mxint8"]["student_t3"]
    assert int8_loss > 10 and mx_loss < 5


def test_planted_distributions() -> None:
    n = 1 << 18
    var = {d: float(qsnr.sample(d, n).double().var()) for d in qsnr.DISTRIBUTIONS}
    assert var["gaussian"] == pytest.approx(1.0, rel=0.02)
    assert var["laplace"] == pytest.approx(2.0, rel=0.03)
    assert var["uniform"] == pytest.approx(1 / 3, rel=0.02)
    assert 2.0 < var["student_t3"] < 6.0  # 3 in theory; infinite fourth moment
    assert qsnr.sample("gaussian", 1000).shape == (1, 1024)
    assert torch.equal(qsnr.sample("laplace", 100, seed=5), qsnr.sample("laplace", 100, seed=5))
    with pytest.raises(ValueError, match="allowed: gaussian"):
        qsnr.sample("cauchy", 10)
    assert qsnr.qsnr_db(torch.ones(4), torch.ones(4)) == math.inf


def test_cli(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["qsnr", "--formats", "mx6", "int8", "--dist", "uniform", "--numel", "4096"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("int8"))
    assert row.split()[1] == "8" and float(row.split()[2]) == pytest.approx(48.1, abs=0.3)
    assert main([*argv, "--markdown"]) == 0
    assert "| mx6 | 6 |" in capsys.readouterr().out
    assert main(["qsnr", "--formats", "mxfp5"]) == 2
    assert "mxfp5" in capsys.readouterr().err
