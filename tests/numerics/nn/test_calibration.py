"""Calibration (``numerics.nn.calibration``): a fixed amax is the dynamic cast's arithmetic with
its scale given; a planted one-layer model whose calibrated scale is known by hand; only
per-tensor integer activation casts are calibrated."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from numerics import formats
from numerics.formats import IntFormat
from numerics.nn import calibration
from numerics.nn.modules import quantize_model
from numerics.quantize import quantize


@pytest.mark.parametrize("name", ["int8", "int4"])
@pytest.mark.parametrize("shape", [(7,), (64, 33), (300, 257)])
def test_a_fixed_amax_equal_to_the_tensors_own_is_the_dynamic_cast(
    name: str, shape: tuple[int, ...]
) -> None:
    fmt = formats.get(name)
    assert isinstance(fmt, IntFormat)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 3
    fixed = calibration.static_int(x, fmt, x.abs().amax())
    assert torch.equal(fixed, quantize(x, name))  # bit for bit, on every route
    zeros = torch.zeros(5)
    assert torch.equal(calibration.static_int(zeros, fmt, torch.tensor(0.0)), zeros)


def one_layer(policy: dict[str, str]) -> nn.Module:
    """``y = x`` (a 2x2 identity Linear), quantized under ``policy``."""
    lin = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(2))
    return quantize_model(nn.Sequential(lin), policy).eval()


def test_planted_layer_calibrated_scale_known_by_hand() -> None:
    model = one_layer({"format": "fp32", "activations": "int8"})
    cal = calibration.attach(model)
    assert cal is not None and cal.observing
    with torch.no_grad():
        b1, b2 = torch.tensor([[0.5, -2.0]]), torch.tensor([[3.0, 1.0]])
        assert torch.equal(model(b1), b1) and torch.equal(model(b2), b2)  # fp32 while observing
        cal.fix(2)
        assert cal.batches == 2 and cal.amax == {("0", -1): torch.tensor(3.0)}
        y = model(torch.tensor([[1.0, 5.0], [-0.01, -3.5]]))
    # by hand: scale = 3 / 127; 1.0 -> round(42.33) = 42; 5.0 and -3.5 saturate at +-127;
    # -0.01 -> round(-0.42) = 0
    s = np.float32(3.0) / np.float32(127.0)
    expected = np.array([[42 * s, 127 * s], [0.0, -127 * s]], dtype=np.float32)
    assert np.array_equal(y.numpy(), expected)
    # the dynamic cast of the same batch scales by its own amax, 5 / 127: 1.0 -> 25 steps
    dynamic = one_layer({"format": "fp32", "activations": "int8"})
    with torch.no_grad():
        d = dynamic(torch.tensor([[1.0, 5.0]]))
    assert float(d[0, 0]) == float(np.float32(25) * (np.float32(5.0) / np.float32(127.0)))


@pytest.mark.parametrize(
    ("policy", "sites"),
    [
        ({"format": "int8"}, 1),  # activations calibrated; the weights stay dynamic
        ({"format": "int4"}, 1),
        ({"format": "fp32", "weights": "int8"}, 0),  # no activation cast to calibrate
        ({"format": "int8_pc"}, 0),  # per-example activation scales: cannot be fixed
        ({"format": "mxint8"}, 0),  # block scales
        ({"format": "bf16"}, 0),
    ],
)
def test_only_per_tensor_integer_activations_are_calibrated(
    policy: dict[str, str], sites: int
) -> None:
    model = one_layer(policy)
    cal = calibration.attach(model)
    assert (cal is not None) == (sites > 0)
    if cal is not None:
        with torch.no_grad():
            model(torch.randn(4, 2))
        assert len(cal.amax) == sites
