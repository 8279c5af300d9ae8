"""Loss scaling for formats with a narrow range (Micikevicius et al., arXiv 1710.03740).

Errors cast to fp16 (or fp8) in backward underflow to zero when they are small; multiplying
the loss by ``S`` scales every error and gradient by S, the casts see values in range, and
the optimizer divides the fp32 gradients by S before the update (exact for a power-of-two S).

- static: a fixed S; a step whose gradients hold inf or NaN is skipped.
- dynamic: start at ``init``; on inf/NaN gradients skip the step and multiply S by
  ``backoff``; after ``growth_interval`` clean steps in a row multiply S by ``growth``.

    scaler = LossScaler(policy.loss_scale)
    scaler.scale(loss).backward()
    stepped = scaler.step(optimizer)   # unscale, check, step or skip, update S
"""

from __future__ import annotations

from typing import Any

import torch

from numerics.nn.policy import LossScale


class LossScaler:
    def __init__(self, config: LossScale | None = None) -> None:
        self.config = config or LossScale()
        self.enabled = self.config.kind != "none"
        self.scale_value = float(self.config.init) if self.enabled else 1.0
        self.clean_steps = 0
        self.skipped = 0

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale_value if self.enabled else loss

    @torch.no_grad()
    def unscale_(self, optimizer: torch.optim.Optimizer) -> bool:
        """Divide every gradient by S in place; True when all of them are finite."""
        finite = True
        inv = 1.0 / self.scale_value
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if self.enabled:
                    p.grad.mul_(inv)
                if finite and not bool(torch.isfinite(p.grad).all()):
                    finite = False
        return finite

    def step(self, optimizer: torch.optim.Optimizer, *args: Any) -> bool:
        """Unscale, then step unless a gradient is inf/NaN; update S. Returns whether it stepped."""
        finite = self.unscale_(optimizer)
        if finite:
            optimizer.step(*args)
        self.update(finite)
        return finite

    def update(self, finite: bool) -> None:
        if not finite:
            self.skipped += 1
            self.clean_steps = 0
            if self.config.kind == "dynamic":
                self.scale_value = max(self.scale_value * self.config.backoff, 2.0**-24)
            return
        self.clean_steps += 1
        if self.config.kind == "dynamic" and self.clean_steps >= self.config.growth_interval:
            self.scale_value = min(self.scale_value * self.config.growth, 2.0**64)
            self.clean_steps = 0

    def state_dict(self) -> dict[str, float | int]:
        return {"scale": self.scale_value, "clean_steps": self.clean_steps, "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale_value = float(state["scale"])
        self.clean_steps = int(state["clean_steps"])
        self.skipped = int(state["skipped"])
