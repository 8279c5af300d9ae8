"""``numerics.quantize.plan``: the validated cast that ``quantize`` and the training modules run."""

import pytest
import torch

import numerics
from numerics import formats
from numerics.formats import FloatFormat
from numerics.modules.caster import Caster
from numerics.policy import Cast
from numerics.quantize import plan
from numerics.rounding import Rounding


def test_a_plan_gives_what_quantize_gives_against_torch_casts():
    x = torch.randn(300, 40) * 100
    assert torch.equal(plan("bf16")(x), x.to(torch.bfloat16).float())
    assert torch.equal(plan("fp16", "nearest_even")(x, -1), x.to(torch.float16).float())
    y = plan("mxfp8_e4m3")(x, 0)
    assert torch.equal(y, numerics.quantize(x, "mxfp8_e4m3", axis=0, backend="reference"))


def test_plan_validates_once_with_quantizes_messages():
    with pytest.raises(KeyError, match="mxfp8_e4m3"):
        plan("mxfp8_e4m")
    with pytest.raises(ValueError, match="backend='fast'; allowed: auto"):
        plan("bf16", backend="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"sr_bits=0; allowed 1\.\.24"):
        plan("bf16", "stochastic", sr_bits=0)
    with pytest.raises(ValueError, match="fp4_e2m1 has neither inf nor NaN"):
        plan("fp4_e2m1", saturate=False)


def test_plan_facts():
    p = plan("bf16", "sr")
    assert p.mode is Rounding.STOCHASTIC and p.fmt.name == "bf16" and not p.identity
    assert plan("fp32").identity and not plan("fp32", saturate=True).identity


def test_a_re_registered_name_gets_a_new_plan():
    name = "test_plan_user_e4m2"
    formats.register(FloatFormat(name, 4, 2))
    first = plan(name)(torch.tensor([1.1]))
    formats.register(FloatFormat(name, 4, 5), overwrite=True)
    second = plan(name)(torch.tensor([1.1]))
    assert first.item() == 1.0  # 1.1 on a 2-bit mantissa grid: step 0.25
    assert second.item() == 1.09375  # 5 bits: step 1/32, 1.1 -> 35/32


def test_caster_runs_the_plan_and_returns_identity_casts_untouched():
    caster = Caster(seed=0)
    x = torch.randn(64, 32)
    assert caster(x, Cast("fp32"), -1, "weights", "fc") is x
    y = caster(x, Cast("mxint8"), 0, "weights", "fc")
    assert torch.equal(y, numerics.quantize(x, "mxint8", axis=0, backend="reference"))
    sr = Cast("bf16", Rounding.STOCHASTIC)
    a = caster(x, sr, -1, "grads", "fc")
    b = caster(x, sr, -1, "grads", "fc")
    assert not torch.equal(a, b)  # the role's generator advances between calls
    fresh = Caster(seed=0)
    assert torch.equal(fresh(x, sr, -1, "grads", "fc"), a)  # and is seeded by the policy
