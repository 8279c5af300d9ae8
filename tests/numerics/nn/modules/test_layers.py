"""Quantized layers against hand-composed casts and torch's own autograd.

The oracle for each product is written out from the table in ``numerics.nn.modules.functional``:
``numerics.quantize`` on the named operand along the named axis, then a plain torch matmul /
conv (or torch autograd through it). The fp32 policy is held bit-identical to plain PyTorch.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from numerics import quantize
from numerics.nn.modules import Matmul, QLinear, quantize_model


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.view(torch.int32), b.view(torch.int32))


MX = {
    "format": "fp32",
    "weights": "mxfp8_e4m3",
    "activations": "mxfp6_e2m3",
    "errors": "mxfp8_e5m2",
    "grads": "bf16",
}


def test_mx_linear_forward_and_backward_are_the_six_casts():
    torch.manual_seed(0)
    lin = nn.Linear(70, 40)  # 70: a trailing partial block of the reduction
    x = torch.randn(3, 5, 70) * torch.logspace(-3, 3, 70)
    gy = torch.randn(3, 5, 40) * 1e-3
    ref_w, ref_b = lin.weight.detach().clone(), lin.bias.detach().clone()
    assert isinstance(quantize_model(lin, MX), QLinear)  # a bare layer: its replacement
    model = nn.Sequential(nn.Linear(70, 40))
    model[0].weight.data.copy_(ref_w)
    model[0].bias.data.copy_(ref_b)
    quantize_model(model, MX)  # ...its children are
    assert isinstance(model[0], QLinear)
    xr = x.clone().requires_grad_()
    y = model(xr)
    y.backward(gy)

    q = quantize
    want_y = F.linear(q(x, "mxfp6_e2m3", axis=-1), q(ref_w, "mxfp8_e4m3", axis=-1), ref_b)
    assert _bits_equal(y.detach(), want_y)
    want_gx = q(gy, "mxfp8_e5m2", axis=-1) @ q(ref_w, "mxfp8_e4m3", axis=0)
    assert _bits_equal(xr.grad, want_gx)
    gy2, x2 = gy.reshape(-1, 40), x.reshape(-1, 70)
    want_gw = q(q(gy2, "mxfp8_e5m2", axis=0).t() @ q(x2, "mxfp6_e2m3", axis=0), "bf16")
    assert _bits_equal(model[0].weight.grad, want_gw)
    assert _bits_equal(model[0].bias.grad, q(gy2.sum(0), "bf16"))
    # the blocking axis matters: the forward-axis cast of x would give another weight grad
    other = q(q(gy2, "mxfp8_e5m2", axis=0).t() @ q(x2, "mxfp6_e2m3", axis=-1), "bf16")
    assert not torch.equal(other, want_gw)


def test_errors_are_quantized_in_backward():
    """Only errors in a format: the input gradient is autograd's, fed the cast error."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(16, 8, bias=False))
    w = model[0].weight.detach().clone()
    quantize_model(model, {"errors": "fp8_e5m2"})
    x = torch.randn(4, 16, requires_grad=True)
    gy = torch.randn(4, 8) * 3.3
    model(x).backward(gy)
    ge = quantize(gy, "fp8_e5m2")
    assert not torch.equal(ge, gy)
    xo = x.detach().clone().requires_grad_()
    wo = w.clone().requires_grad_()
    F.linear(xo, wo).backward(ge)
    assert _bits_equal(x.grad, xo.grad)
    assert _bits_equal(model[0].weight.grad, wo.grad)


@pytest.mark.parametrize("fmt", ["bf16", "fp8_e4m3"])
def test_element_format_conv2d_matches_autograd_on_cast_operands(fmt):
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 6, 3, padding=1, stride=2)
    model = nn.Sequential(conv)
    ref = copy.deepcopy(conv)
    quantize_model(model, {"format": fmt, "grads": "fp32"})
    x = torch.randn(2, 3, 9, 9, requires_grad=True)
    gy = torch.randn(2, 6, 5, 5)
    y = model(x)
    y.backward(gy)
    xq = quantize(x.detach(), fmt).requires_grad_()
    wq = quantize(ref.weight.detach(), fmt).requires_grad_()
    bo = ref.bias.detach().clone().requires_grad_()
    yo = F.conv2d(xq, wq, bo, stride=2, padding=1)
    assert _bits_equal(y.detach(), yo.detach())
    yo.backward(quantize(gy, fmt))
    assert torch.allclose(x.grad, xq.grad, rtol=1e-6, atol=1e-7)
    assert torch.allclose(conv.weight.grad, wq.grad, rtol=1e-6, atol=1e-7)
    assert torch.allclose(conv.bias.grad, gy.sum((0, 2, 3)), rtol=1e-6)


def test_mx_conv2d_blocks_along_channels():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(40, 4, 1, bias=False))
    w = model[0].weight.detach().clone()
    quantize_model(model, {"activations": "mxfp4_e2m1", "weights": "mxfp4_e2m1"})
    x = torch.randn(2, 40, 3, 3) * torch.logspace(-2, 2, 40)[None, :, None, None]
    y = model(x)
    want = F.conv2d(quantize(x, "mxfp4_e2m1", axis=1), quantize(w, "mxfp4_e2m1", axis=1))
    assert _bits_equal(y.detach(), want)


def test_matmul_module_casts_both_operands_along_the_reduction():
    torch.manual_seed(4)

    class Att(nn.Module):
        def __init__(self):
            super().__init__()
            self.qk = Matmul()

        def forward(self, a, b):
            return self.qk(a, b)

    m = Att()
    quantize_model(m, {"activations": "mxfp8_e4m3", "errors": "mxfp8_e5m2"})
    a = torch.randn(2, 3, 5, 40, requires_grad=True)
    b = torch.randn(2, 3, 40, 7, requires_grad=True)
    gy = torch.randn(2, 3, 5, 7)
    y = m(a, b)
    y.backward(gy)
    q = quantize
    assert _bits_equal(
        y.detach(), q(a.detach(), "mxfp8_e4m3", axis=-1) @ q(b.detach(), "mxfp8_e4m3", axis=-2)
    )
    want_ga = q(gy, "mxfp8_e5m2", axis=-1) @ q(b.detach(), "mxfp8_e4m3", axis=-1).transpose(-1, -2)
    assert _bits_equal(a.grad, want_ga)
    want_gb = q(a.detach(), "mxfp8_e4m3", axis=-2).transpose(-1, -2) @ q(gy, "mxfp8_e5m2", axis=-2)
    assert _bits_equal(b.grad, want_gb)


def test_embedding_and_bag_cast_table_errors_and_grads():
    torch.manual_seed(5)
    model = nn.ModuleDict({"emb": nn.Embedding(20, 8), "bag": nn.EmbeddingBag(20, 8, mode="sum")})
    w_emb = model["emb"].weight.detach().clone()
    w_bag = model["bag"].weight.detach().clone()
    quantize_model(model, {"weights": "int8_pc", "errors": "fp8_e5m2", "grads": "bf16"})
    ids = torch.tensor([[1, 3, 3], [7, 1, 0]])
    out = model["emb"](ids)
    table = quantize(w_emb, "int8_pc", axis=-1)
    assert _bits_equal(out.detach(), table[ids])
    gy = torch.randn(2, 3, 8)
    out.backward(gy)
    ge = quantize(gy, "fp8_e5m2").reshape(-1, 8)
    want = torch.zeros(20, 8).index_add_(0, ids.reshape(-1), ge)
    assert _bits_equal(model["emb"].weight.grad, quantize(want, "bf16"))

    bag_ids, offsets = torch.tensor([2, 4, 4, 9]), torch.tensor([0, 3])
    out = model["bag"](bag_ids, offsets)
    tb = quantize(w_bag, "int8_pc", axis=-1)
    assert torch.allclose(out.detach(), torch.stack([tb[[2, 4, 4]].sum(0), tb[9]]), atol=1e-6)


def test_fp32_policy_is_bit_identical_to_plain_pytorch():
    torch.manual_seed(6)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(30, 12)
            self.bag = nn.EmbeddingBag(30, 12)
            self.conv = nn.Conv1d(12, 12, 3, padding=1)
            self.att = Matmul()
            self.fc = nn.Linear(12, 5)

        def forward(self, ids):
            h = self.emb(ids) + self.bag(ids)[:, None, :]  # (B, T, 12)
            h = self.conv(h.transpose(1, 2)).transpose(1, 2)
            h = torch.softmax(self.att(h, h.transpose(1, 2)), -1) @ h
            return self.fc(h).sum()

    plain = Net()
    quant = copy.deepcopy(plain)
    quantize_model(quant, "fp32")
    assert type(quant.fc).__name__ == "QLinear"
    ids = torch.randint(0, 30, (4, 6))
    plain(ids).backward()
    quant(ids).backward()
    for (n, p), q in zip(plain.named_parameters(), quant.parameters(), strict=True):
        assert _bits_equal(p.grad, q.grad), n
