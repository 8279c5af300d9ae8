"""Loss scaling recovers gradients that underflow fp16 errors; dynamic scaling backs off on
overflow and grows after clean steps."""

import torch
from torch import nn

from numerics.nn.loss_scale import LossScaler
from numerics.nn.modules import quantize_model
from numerics.nn.optim import QuantizedOptimizer
from numerics.nn.policy import LossScale


def _setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 1, bias=False))
    ref = nn.Linear(8, 1, bias=False)
    ref.weight.data.copy_(model[0].weight.data)
    quantize_model(model, {"errors": "fp16", "grads": "fp16"})
    x = torch.randn(4, 8)
    return model, ref, x


def _loss(out):
    return out.sum() * 1e-9  # the error dL/dy = 1e-9: below fp16's smallest subnormal, 6e-8


def test_without_scaling_fp16_errors_underflow_to_zero_gradients():
    model, _, x = _setup()
    _loss(model(x)).backward()
    assert torch.count_nonzero(model[0].weight.grad) == 0


def test_dynamic_scaling_backs_off_from_overflow_then_recovers_the_gradients():
    model, ref, x = _setup()
    _loss(ref(x)).backward()
    scaler = LossScaler(LossScale(kind="dynamic", init=2.0**60, growth_interval=3))
    opt = QuantizedOptimizer(model.parameters(), "sgd", model=model, lr=0.0)
    steps = []
    for _ in range(30):
        opt.zero_grad()
        scaler.scale(_loss(model(x))).backward()
        grads = model[0].weight.grad.clone()  # scaled
        stepped = scaler.step(opt)
        steps.append(stepped)
        if stepped:
            break
    # 1e-9 * 2**60 ~ 1.2e9 > fp16 max (65504): inf until the scale has halved enough
    assert not any(steps[:-1]) and steps[-1]
    assert scaler.skipped == len(steps) - 1 > 10
    unscaled = model[0].weight.grad
    assert torch.count_nonzero(unscaled) == unscaled.numel()
    # fp16 errors and grads carry 11 significant bits: relative error <= 2**-10 each
    assert torch.allclose(unscaled, ref.weight.grad, rtol=2**-9, atol=0)
    assert torch.equal(grads * (1 / scaler.scale_value), unscaled)


def test_dynamic_scale_grows_after_clean_steps_and_static_never_changes():
    s = LossScaler(LossScale(kind="dynamic", init=8.0, growth=2.0, growth_interval=3))
    for finite in [True, True, True, True, False, True]:
        s.update(finite)
    assert s.scale_value == 8.0  # x2 after 3 clean steps, x0.5 on the overflow
    assert s.skipped == 1
    st = LossScaler(LossScale(kind="static", init=128.0))
    st.update(False)
    st.update(True)
    assert st.scale_value == 128.0 and st.skipped == 1
    none = LossScaler()
    loss = torch.tensor(3.0)
    assert none.scale(loss) is loss
