"""Telemetry: overflow, saturation, underflow fractions and SQNR against hand counts."""

import math

import torch
from torch import nn

from numerics import formats, quantize
from numerics.nn.modules import quantize_model
from numerics.nn.telemetry import Telemetry


def test_telemetry_counts_overflow_underflow_and_sqnr():
    tel = Telemetry(every=2)
    model = nn.Sequential(nn.Linear(4, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 1e-9, 1000.0, 0.5]]))
    quantize_model(model, {"weights": "fp8_e4m3", "activations": "fp8_e4m3"}, telemetry=tel)
    tel.begin_step(1)
    model(torch.ones(1, 4))
    assert tel.flush() == {}
    tel.begin_step(2)
    model(torch.ones(1, 4))
    stats = tel.flush()
    # weights: 1000 > 448 overflows to NaN (e4m3 has no inf); 1e-9 underflows; 1, 0.5 exact
    assert stats["numerics/0/weights/overflow"] == 0.25
    assert stats["numerics/0/weights/underflow"] == 0.25
    assert stats["numerics/0/weights/saturated"] == 0.0
    assert stats["numerics/0/activations/sqnr_db"] == float("inf")
    noisy = Telemetry(every=1)
    noisy.begin_step(0)
    x = torch.tensor([1.0, 1.0625])  # e4m3 step at 1 is 0.125: 1.0625 is a tie -> 1.0
    noisy.record("l", "r", x, quantize(x, "fp8_e4m3"), formats.get("fp8_e4m3"))
    want = 10 * math.log10((1 + 1.0625**2) / 0.0625**2)
    assert abs(noisy.flush()["numerics/l/r/sqnr_db"] - want) < 1e-9


def test_saturation_is_counted_for_saturating_formats():
    tel = Telemetry(every=1)
    tel.begin_step(0)
    x = torch.tensor([7.0, -100.0, 1.0, 0.0])  # fp4_e2m1 max 6: two values clamp to +-6
    tel.record("l", "w", x, quantize(x, "fp4_e2m1"), formats.get("fp4_e2m1"))
    stats = tel.flush()
    assert stats["numerics/l/w/saturated"] == 0.5
    assert stats["numerics/l/w/overflow"] == 0.0


def test_totals_pool_every_flush_by_role_and_survive_a_checkpoint():
    tel = Telemetry(every=1)
    f = formats.get("fp16")
    tel.begin_step(0)
    x = torch.tensor([1.0, 1e-9, 2.0, 0.0])  # 1e-9 is below fp16's smallest subnormal
    tel.record("a", "errors", x, quantize(x, "fp16"), f)
    tel.record("b", "errors", torch.tensor([3.0, 4.0]), torch.tensor([3.0, 4.0]), f)
    tel.flush()
    tel.begin_step(1)
    y = torch.tensor([1e-10, 1e-10])
    tel.record("a", "errors", y, quantize(y, "fp16"), f)
    tel.record("a", "weights", torch.ones(5), torch.ones(5), f)
    tel.flush()
    totals = tel.totals()
    assert set(totals) == {"errors", "weights"}
    assert totals["errors"]["underflow"] == 3 / 8  # 1e-9, 1e-10, 1e-10 of 8 values
    assert totals["weights"] == {"overflow": 0.0, "underflow": 0.0, "saturated": 0.0,
                                 "sqnr_db": float("inf")}  # fmt: skip
    again = Telemetry(every=1)
    again.load_state_dict(tel.state_dict())
    assert again.totals() == totals


def test_each_cast_reports_its_route():
    """The caster passes each cast's route (``numerics.route``): counted per flush and per
    role over the run, and kept by a checkpoint."""
    tel = Telemetry(every=1)
    model = nn.Sequential(nn.Linear(64, 8, bias=False))
    quantize_model(model, {"weights": "bf16", "activations": "bf16"}, telemetry=tel)
    for step in range(2):
        tel.begin_step(step)
        model(torch.ones(2, 64))
        stats = tel.flush()
        # small bf16 casts: torch's own cast (numerics.route's TORCH_CAST)
        assert stats["numerics/0/weights/casts/torch_cast"] == 1.0
        assert stats["numerics/0/activations/casts/torch_cast"] == 1.0
    assert tel.routes() == {"activations": {"torch_cast": 2}, "weights": {"torch_cast": 2}}
    again = Telemetry(every=1)
    again.load_state_dict(tel.state_dict())
    assert again.routes() == tel.routes()
    again.load_state_dict({"totals": {}})  # a checkpoint from before routes were counted
    assert again.routes() == {}
