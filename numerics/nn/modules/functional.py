"""Quantized linear, convolution and matmul as autograd functions: six casts per product.

A product ``y = x @ w.T`` has three matmuls, each with its own reduction dimension, and a
block format must block each operand along the reduction dimension of the matmul it feeds
(as MX hardware does). For ``nn.Linear`` (x: (..., in), w: (out, in)):

==================  ============================  ===============================
matmul              operand casts                 block axis
==================  ============================  ===============================
y  = x @ w.T        activations(x), weights(w)    in_features, in_features
dx = dy @ w         errors(dy), weights(w)        out_features, out_features
dw = dy.T @ x       errors(dy), activations(x)    batch, batch
==================  ============================  ===============================

then ``dw`` is cast to the ``grads`` format. Element formats give the same values on every
axis, so each operand is cast once and reused (one stored copy, as hardware would keep);
block formats cast from the saved high-precision tensor once per axis. Convolutions follow the
same pattern with channels as the reduction axis (the weight gradient's reduction runs over
batch and space; its operands are blocked along the batch axis). Bias gradients are the sum
of the unquantized errors, cast to the grads format. Accumulation is fp32 throughout.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import FunctionCtx
from torch.nn import grad as nn_grad

from numerics.nn.modules.caster import Caster
from numerics.nn.policy import Cast, LayerNumerics


def _keep(c: Cast, raw: torch.Tensor, cast: torch.Tensor) -> torch.Tensor:
    """What to save for backward: the raw tensor when backward re-casts along another axis."""
    return raw if c.axis_dependent else cast


def _recast(
    caster: Caster, c: Cast, saved: torch.Tensor, axis: int, role: str, name: str
) -> torch.Tensor:
    """The saved operand cast for a backward matmul (already cast unless axis-dependent)."""
    return caster(saved, c, axis, role, name) if c.axis_dependent else saved


class QLinearFn(torch.autograd.Function):
    weight_axis = -1  # the forward weights cast blocks along in_features

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: torch.Tensor,
        w: torch.Tensor,
        b: torch.Tensor | None,
        layer: LayerNumerics,
        caster: Caster,
        name: str,
    ) -> torch.Tensor:
        xq = caster(x, layer.activations, -1, "activations", name)
        wq = caster(w, layer.weights, QLinearFn.weight_axis, "weights", name)
        ctx.save_for_backward(_keep(layer.activations, x, xq), _keep(layer.weights, w, wq))
        ctx.meta = (layer, caster, name, b is not None)  # type: ignore[attr-defined]
        return F.linear(xq, wq, b)

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w = ctx.saved_tensors
        layer, caster, name, has_b = ctx.meta
        gx = gw = gb = None
        gy2 = gy.reshape(-1, gy.shape[-1])  # (N, out)
        e_last = caster(gy, layer.errors, -1, "errors", name)
        if ctx.needs_input_grad[0]:
            wq = _recast(caster, layer.weights, w, 0, "weights", name)
            gx = e_last @ wq  # (..., in)
        if ctx.needs_input_grad[1]:
            e_batch = (
                caster(gy2, layer.errors, 0, "errors", name)
                if layer.errors.axis_dependent
                else e_last.reshape(gy2.shape)
            )
            x2 = x.reshape(-1, x.shape[-1])
            xq = _recast(caster, layer.activations, x2, 0, "activations", name)
            gw = caster(e_batch.t() @ xq, layer.grads, -1, "grads", name)
        if has_b and ctx.needs_input_grad[2]:
            gb = caster(gy2.sum(0), layer.grads, -1, "grads", name)
        return gx, gw, gb, None, None, None


_CONV = {
    1: (F.conv1d, nn_grad.conv1d_input, nn_grad.conv1d_weight),
    2: (F.conv2d, nn_grad.conv2d_input, nn_grad.conv2d_weight),
}


class QConvFn(torch.autograd.Function):
    """Conv1d / Conv2d with zero padding (the module pads other modes beforehand)."""

    weight_axis = 1  # the forward weights cast blocks along the input channels

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: torch.Tensor,
        w: torch.Tensor,
        b: torch.Tensor | None,
        layer: LayerNumerics,
        caster: Caster,
        name: str,
        conv: tuple[int, Any, Any, Any, int],  # (dims, stride, padding, dilation, groups)
    ) -> torch.Tensor:
        dims, stride, padding, dilation, groups = conv
        xq = caster(x, layer.activations, 1, "activations", name)
        wq = caster(w, layer.weights, QConvFn.weight_axis, "weights", name)
        ctx.save_for_backward(_keep(layer.activations, x, xq), _keep(layer.weights, w, wq))
        ctx.meta = (layer, caster, name, b is not None, conv)  # type: ignore[attr-defined]
        return _CONV[dims][0](xq, wq, b, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w = ctx.saved_tensors
        layer, caster, name, has_b, (dims, stride, padding, dilation, groups) = ctx.meta
        _, conv_input, conv_weight = _CONV[dims]
        gx = gw = gb = None
        e_chan = caster(gy, layer.errors, 1, "errors", name)
        if ctx.needs_input_grad[0]:
            wq = _recast(caster, layer.weights, w, 0, "weights", name)
            gx = conv_input(x.shape, wq, e_chan, stride, padding, dilation, groups)
        if ctx.needs_input_grad[1]:
            e_batch = (
                caster(gy, layer.errors, 0, "errors", name)
                if layer.errors.axis_dependent
                else e_chan
            )
            xq = _recast(caster, layer.activations, x, 0, "activations", name)
            gw = conv_weight(xq, w.shape, e_batch, stride, padding, dilation, groups)
            gw = caster(gw, layer.grads, 1, "grads", name)
        if has_b and ctx.needs_input_grad[2]:
            sum_dims = [0, *range(2, gy.dim())]
            gb = caster(gy.sum(sum_dims), layer.grads, -1, "grads", name)
        return gx, gw, gb, None, None, None, None


class QMatmulFn(torch.autograd.Function):
    """``a @ b`` of two activations (a: (..., M, K), b: (..., K, N), same batch dims)."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        a: torch.Tensor,
        b: torch.Tensor,
        layer: LayerNumerics,
        caster: Caster,
        name: str,
    ) -> torch.Tensor:
        act = layer.activations
        aq = caster(a, act, -1, "activations", name)
        bq = caster(b, act, -2, "activations", name)
        ctx.save_for_backward(_keep(act, a, aq), _keep(act, b, bq))
        ctx.meta = (layer, caster, name)  # type: ignore[attr-defined]
        return aq @ bq

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        a, b = ctx.saved_tensors
        layer, caster, name = ctx.meta
        act, err = layer.activations, layer.errors
        ga = gb = None
        if ctx.needs_input_grad[0]:  # ga = gy @ b^T: reduction over N
            e = caster(gy, err, -1, "errors", name)
            ga = e @ _recast(caster, act, b, -1, "activations", name).transpose(-1, -2)
        if ctx.needs_input_grad[1]:  # gb = a^T @ gy: reduction over M
            e = caster(gy, err, -2, "errors", name)
            gb = _recast(caster, act, a, -2, "activations", name).transpose(-1, -2) @ e
        return ga, gb, None, None, None


class CastFn(torch.autograd.Function):
    """Straight-through cast: ``fwd`` on the value, ``bwd`` on its gradient (same axis)."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: torch.Tensor,
        fwd: tuple[Cast, str] | None,
        bwd: tuple[Cast, str] | None,
        axis: int,
        caster: Caster,
        name: str,
    ) -> torch.Tensor:
        ctx.meta = (bwd, axis, caster, name)  # type: ignore[attr-defined]
        if fwd is None:
            return x.view_as(x)
        out = caster(x, fwd[0], axis, fwd[1], name)
        return out.view_as(out) if out is x else out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        bwd, axis, caster, name = ctx.meta
        if bwd is not None:
            g = caster(g, bwd[0], axis, bwd[1], name)
        return g, None, None, None, None, None
