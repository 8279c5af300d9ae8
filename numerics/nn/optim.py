"""Low-precision optimizers: SGD (momentum), Adam and AdamW with a policy's numerics.

What the policy controls here:

- ``optimizer_state``: momentum / Adam moments are rounded to this format after every update
  (they are held as float32 tensors whose values are representable in the format).
- ``master_weights: true``: the parameters are the fp32 master copy and are updated in fp32;
  the modules cast them to the weights format in forward (see ``numerics.nn.modules``).
- ``master_weights: false``: every weight of a quantized layer lives in its weights format,
  and each update is rounded back into it: ``w <- Q(w + delta)`` with ``update_rounding``
  (nearest_even loses updates smaller than half a step; stochastic keeps them in
  expectation, Zamirai et al., arXiv 2010.06192), or with ``update_method: kahan``
  (Kahan-compensated summation: a compensation buffer, itself in the weights format, carries
  the part of each update that rounding lost into the next step). Biases of those layers
  follow their weights when the weights format is element-wise; other parameters (norms,
  biases next to block-format weights) stay fp32.

Without master weights the optimizer counts, over the elements of the weights that live in a
format, how many had a nonzero update (``new != w``) and how many of those the rounding
cancelled (the stored weight did not change): ``update_stats`` and ``cancelled_fraction``,
the quantity Zamirai et al. show grows as training goes on and the updates shrink.

The arithmetic follows torch's single-tensor implementations operation by operation, so under
the fp32 policy ``QuantizedOptimizer`` gives the same bits as ``torch.optim.SGD`` /
``Adam`` / ``AdamW`` (``foreach=False``); tests hold it to that. Random bits come from one
generator per purpose (state rounding, weight update), seeded from the policy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from numerics.nn.modules.caster import Caster
from numerics.nn.modules.layers import Quantized
from numerics.nn.policy import Cast, Policy, coerce
from numerics.quantize import quantize
from numerics.rounding import Rounding

KINDS = ("sgd", "adam", "adamw")


def weight_casts(model: nn.Module) -> dict[nn.Parameter, tuple[Cast, int]]:
    """Each quantized layer's weight (and, for element formats, bias) -> (weights cast, axis)."""
    out: dict[nn.Parameter, tuple[Cast, int]] = {}
    for module in model.modules():
        if not isinstance(module, Quantized):
            continue
        cast = module.numerics.weights
        if cast.is_identity:
            continue
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter):
            axis = 1 if weight.dim() > 2 else -1  # conv: input channels; linear/emb: last
            out[weight] = (cast, axis)
        bias = getattr(module, "bias", None)
        if isinstance(bias, nn.Parameter) and not cast.axis_dependent:
            out[bias] = (cast, -1)
    return out


class QuantizedOptimizer(torch.optim.Optimizer):
    """SGD / Adam / AdamW with quantized state and optionally no master weights.

    Args:
        params: parameters or parameter groups, as for any torch optimizer.
        kind: "sgd", "adam" or "adamw".
        policy: a ``Policy`` (or what ``numerics.nn.policy.coerce`` accepts); default: the
            policy ``quantize_model`` attached to ``model``, else fp32.
        model: the quantized model, to find each weight's format when master_weights is off.
        lr, momentum, dampening, nesterov, weight_decay, betas, eps: as torch's optimizers.
    """

    def __init__(
        self,
        params: Iterable[Any],
        kind: str = "sgd",
        *,
        policy: Policy | Any = None,
        model: nn.Module | None = None,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"QuantizedOptimizer: kind={kind!r}; allowed: {', '.join(KINDS)}")
        if not lr >= 0:
            raise ValueError(f"QuantizedOptimizer: lr={lr}; must be >= 0")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("QuantizedOptimizer: nesterov needs momentum > 0 and dampening 0")
        if policy is None and model is not None:
            policy = getattr(model, "numerics_policy", None)
        self.policy = coerce(policy)
        self.kind = kind
        self.casts = weight_casts(model) if model is not None else {}
        if not self.policy.master_weights and model is None:
            raise ValueError(
                "QuantizedOptimizer: master_weights is false, so the optimizer must know each "
                "weight's format: pass model= (the model quantize_model converted)"
            )
        self.caster = Caster(self.policy.seed + 1)
        # (updates, cancelled) counts, kept on the weights' device: no host sync per step
        self._counts: torch.Tensor | None = None
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            weight_decay=weight_decay,
            betas=betas,
            eps=eps,
        )
        super().__init__(params, defaults)

    # -- helpers ------------------------------------------------------------------------------

    def _state_cast(self, t: torch.Tensor) -> torch.Tensor:
        return self.caster(t, self.policy.optimizer_state, -1, "optimizer_state", "optimizer")

    def _apply(self, p: torch.Tensor, new: torch.Tensor, state: dict[str, Any]) -> None:
        """Store ``new`` (the fp32 result of the update) into p, rounding when p lives in a
        format without master weights."""
        spec = None if self.policy.master_weights else self.casts.get(p)  # type: ignore[call-overload]
        if spec is None:
            p.copy_(new)
            return
        cast, axis = spec
        if self.policy.update_method == "kahan":
            delta = new - p
            comp = state.setdefault("kahan", torch.zeros_like(p))
            y = delta - comp
            t = quantize(p + y, cast.format, Rounding.NEAREST_EVEN, None, axis, cast.saturate)
            comp.copy_(quantize((t - p) - y, cast.format, Rounding.NEAREST_EVEN, None, axis, True))
        else:
            rounding = self.policy.update_rounding
            stochastic = rounding is Rounding.STOCHASTIC
            gen = self.caster.generators["weights"] if stochastic else None
            t = quantize(new, cast.format, rounding, gen, axis, cast.saturate)
        moved = new != p
        counts = torch.stack([moved.sum(), (moved & (t == p)).sum()])
        self._counts = counts if self._counts is None else self._counts + counts
        p.copy_(t)

    @property
    def update_stats(self) -> dict[str, int]:
        """Nonzero updates to weights kept in a format, and how many rounding cancelled."""
        updates, cancelled = (0, 0) if self._counts is None else self._counts.tolist()
        return {"updates": int(updates), "cancelled": int(cancelled)}

    @property
    def cancelled_fraction(self) -> float | None:
        """Of the nonzero updates to weights kept in a format, the fraction rounding cancelled
        (None with master weights, or before any update)."""
        stats = self.update_stats
        n = stats["updates"]
        return stats["cancelled"] / n if n else None

    # -- the step -----------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError("QuantizedOptimizer: sparse gradients are not supported")
                if self.kind == "sgd":
                    self._sgd(p, group)
                else:
                    self._adam(p, group)
        return loss

    def _sgd(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        state = self.state[p]
        grad = p.grad
        assert grad is not None
        lr, wd, momentum = group["lr"], group["weight_decay"], group["momentum"]
        if wd != 0:
            grad = grad.add(p, alpha=wd)
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = self._state_cast(grad.detach().clone())
                state["momentum_buffer"] = buf
            else:
                buf.mul_(momentum).add_(grad, alpha=1 - group["dampening"])
                buf.copy_(self._state_cast(buf))
            grad = grad.add(buf, alpha=momentum) if group["nesterov"] else buf
        self._apply(p, p.add(grad, alpha=-lr), state)

    def _adam(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        state = self.state[p]
        grad = p.grad
        assert grad is not None
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        state["step"] += 1
        step = float(state["step"].item())
        base = p
        if wd != 0:
            if self.kind == "adamw":
                base = p.mul(1 - lr * wd)
            else:
                grad = grad.add(p, alpha=wd)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        exp_avg.copy_(self._state_cast(exp_avg))
        exp_avg_sq.copy_(self._state_cast(exp_avg_sq))
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(eps)
        new = base.addcdiv(exp_avg, denom, value=-step_size)
        self._apply(p, new, state)

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["numerics_generators"] = self.caster.state_dict()
        sd["numerics_update_stats"] = self.update_stats
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        gens = state_dict.pop("numerics_generators", None)
        stats = state_dict.pop("numerics_update_stats", None)
        if stats is not None:
            self._counts = torch.tensor([int(stats["updates"]), int(stats["cancelled"])])
        super().load_state_dict(state_dict)
        if gens is not None:
            self.caster.load_state_dict(gens)
