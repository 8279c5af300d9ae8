"""Low-precision optimizers: equal to torch's under fp32, and the planted low-precision cases."""

import copy

import pytest
import torch
from torch import nn

from numerics import quantize
from numerics.nn.modules import quantize_model
from numerics.nn.optim import QuantizedOptimizer


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 2))


def _train(model, opt, steps=5):
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 6, generator=g)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()


@pytest.mark.parametrize(
    ("kind", "torch_cls", "kw"),
    [
        ("sgd", torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-2}),
        ("sgd", torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
        ("adam", torch.optim.Adam, {"lr": 1e-2, "weight_decay": 1e-2}),
        ("adamw", torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 1e-1}),
    ],
)
def test_fp32_policy_equals_torch_optimizers_bit_for_bit(kind, torch_cls, kw):
    ref = _model()
    mine = copy.deepcopy(ref)
    quantize_model(mine, "fp32")
    _train(ref, torch_cls(ref.parameters(), foreach=False, **kw))
    _train(mine, QuantizedOptimizer(mine.parameters(), kind, model=mine, **kw))
    for a, b in zip(ref.parameters(), mine.parameters(), strict=True):
        assert torch.equal(a, b)


def test_quantized_state_holds_format_values():
    model = _model()
    # (Adam's second moment, ~grad**2, underflows fp8 entirely: bf16 is the realistic case.)
    quantize_model(model, {"optimizer_state": "bf16"})
    opt = QuantizedOptimizer(model.parameters(), "adam", model=model, lr=1e-2)
    _train(model, opt, steps=3)
    for p in model.parameters():
        for key in ("exp_avg", "exp_avg_sq"):
            s = opt.state[p][key]
            assert torch.equal(s, quantize(s, "bf16"))
            assert s.abs().sum() > 0
    model = _model()
    quantize_model(model, {"optimizer_state": "fp8_e5m2"})
    opt = QuantizedOptimizer(model.parameters(), "sgd", model=model, lr=1e-2, momentum=0.9)
    _train(model, opt, steps=3)
    for p in model.parameters():
        buf = opt.state[p]["momentum_buffer"]
        assert torch.equal(buf, quantize(buf, "fp8_e5m2")) and buf.abs().sum() > 0


def _bf16_sgd(update_rounding, update_method="round", steps=1, lr=1e-4, n=256):
    """bf16 weights of 1.0 and gradients of 1: an update below half the bf16 step under 1.0
    (2**-8 = 0.0039) is lost by nearest-even rounding. The optimizer after ``steps`` steps."""
    model = nn.Sequential(nn.Linear(n, 1, bias=False))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    policy = {"format": "bf16", "master_weights": False, "update_rounding": update_rounding,
              "update_method": update_method}  # fmt: skip
    quantize_model(model, policy)
    opt = QuantizedOptimizer(model.parameters(), "sgd", model=model, lr=lr)
    for _ in range(steps):
        model[0].weight.grad = torch.ones_like(model[0].weight)
        opt.step()
    return opt


def _one_weight_step(update_rounding, update_method="round", steps=1, lr=1e-4, n=256):
    opt = _bf16_sgd(update_rounding, update_method, steps, lr, n)
    return opt.param_groups[0]["params"][0].detach()


def test_cancelled_update_fraction():
    # 1e-3 below 1.0 is under half a bf16 step (2**-9): nearest-even cancels every update
    rne = _bf16_sgd("nearest_even", steps=5, lr=1e-3)
    assert rne.update_stats == {"updates": 5 * 256, "cancelled": 5 * 256}
    assert rne.cancelled_fraction == 1.0
    # a step of 3e-3 is past half a step: none cancelled
    assert _bf16_sgd("nearest_even", steps=3, lr=3e-3).cancelled_fraction == 0.0
    # stochastic rounding moves each weight down with p = 1e-3 / 2**-8 = 0.256 on the first step
    n = 4096
    sr = _bf16_sgd("stochastic", lr=1e-3, n=n)
    p = 1e-3 / 2**-8
    sd = (p * (1 - p) / n) ** 0.5
    assert sr.cancelled_fraction is not None and abs(sr.cancelled_fraction - (1 - p)) < 5 * sd
    # the counts survive a checkpoint
    again = _bf16_sgd("stochastic", lr=1e-3, n=n)
    again.load_state_dict(sr.state_dict())
    assert again.update_stats == sr.update_stats
    # with master weights nothing is rounded on update: no fraction
    model = nn.Sequential(nn.Linear(4, 1))
    quantize_model(model, "bf16")
    opt = QuantizedOptimizer(model.parameters(), "sgd", model=model, lr=1e-3)
    model[0].weight.grad = torch.ones_like(model[0].weight)
    opt.step()
    assert opt.cancelled_fraction is None


def test_stochastic_updates_move_bf16_weights_that_nearest_leaves_unchanged():
    w_rne = _one_weight_step("nearest_even", steps=20, lr=1e-3)
    assert torch.equal(w_rne, torch.ones_like(w_rne))
    n = 4096
    w_sr = _one_weight_step("stochastic", steps=1, lr=1e-3, n=n)
    # One step of 1e-3 from 1.0: the result is 1.0 or its lower neighbour 1 - 2**-8, down with
    # probability p = 1e-3 / 2**-8 = 0.256 (unbiased: the expected drop is exactly 1e-3).
    assert set(w_sr.unique().tolist()) == {1.0, 1.0 - 2**-8}
    p = 1e-3 / 2**-8
    moved = int((w_sr < 1).sum())
    sd = (n * p * (1 - p)) ** 0.5  # Binomial(n, p): 5 sigma is a 1-in-3.5-million miss
    assert abs(moved - n * p) < 5 * sd


def test_kahan_updates_accumulate_what_rounding_loses():
    w = _one_weight_step("nearest_even", "kahan", steps=40)
    # 40 * 1e-4 = 0.004 > one bf16 step below 1 (2**-8 = 0.0039): the compensated sum crosses it
    assert torch.equal(w, torch.full_like(w, 1 - 2**-8))


def test_no_master_weights_need_the_model():
    model = _model()
    with pytest.raises(ValueError, match="pass model="):
        QuantizedOptimizer(
            model.parameters(), "sgd", policy={"format": "bf16", "master_weights": False}
        )
    with pytest.raises(ValueError, match="kind='lamb'; allowed: sgd, adam, adamw"):
        QuantizedOptimizer(model.parameters(), "lamb")


def test_optimizer_state_dict_round_trip_reproduces_stochastic_updates():
    def run(split):
        model = _model(3)
        quantize_model(model, "bf16_nomaster_sr")
        opt = QuantizedOptimizer(model.parameters(), "sgd", model=model, lr=1e-3, momentum=0.9)
        _train(model, opt, steps=2)
        if split:
            state = copy.deepcopy((model.state_dict(), opt.state_dict()))
            model = _model(3)
            quantize_model(model, "bf16_nomaster_sr")
            opt = QuantizedOptimizer(model.parameters(), "sgd", model=model, lr=1e-3, momentum=0.9)
            model.load_state_dict(state[0])
            opt.load_state_dict(state[1])
        _train(model, opt, steps=2)
        return [p.detach().clone() for p in model.parameters()]

    for a, b in zip(run(False), run(True), strict=True):
        assert torch.equal(a, b)
