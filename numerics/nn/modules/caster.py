"""The object that performs a model's casts: per-role random generators and telemetry.

One ``Caster`` serves every quantized module of a model. Stochastic rounding draws its keys
from one ``torch.Generator`` per role, seeded from the policy's seed, so a run is reproducible
and a change to one role's rounding does not shift the random bits of another. A
``Calibration`` attached to it (``numerics.nn.calibration``) observes the casts while it
calibrates, then fixes the scales of the activation casts it calibrated.
"""

from __future__ import annotations

import torch

from numerics.nn.calibration import Calibration, calibrates
from numerics.nn.policy import ROLES, Cast
from numerics.nn.telemetry import Telemetry
from numerics.quantize import Plan, plan
from numerics.rounding import Rounding


class Caster:
    def __init__(self, seed: int = 0, telemetry: Telemetry | None = None) -> None:
        self.telemetry = telemetry
        self.calibration: Calibration | None = None
        self._plans: dict[Cast, Plan] = {}
        self.generators = {
            role: torch.Generator().manual_seed(seed * 1_000_003 + 7919 * (i + 1))
            for i, role in enumerate(ROLES)
        }

    def __call__(
        self, x: torch.Tensor, cast: Cast, axis: int, role: str, layer: str
    ) -> torch.Tensor:
        """``x`` cast to ``cast`` blocking along ``axis``; x itself when the cast is exact."""
        p = self._plans.get(cast)
        if p is None:  # validated once per cast; a call skips quantize's checks
            p = self._plans[cast] = plan(cast.format, cast.rounding, cast.saturate)
        cal = self.calibration
        if cal is not None and cal.observing:  # the calibration batches run in fp32
            if calibrates(cast, role):
                cal.observe(layer, axis, x)
            return x
        if p.identity:
            return x
        gen = self.generators[role] if p.mode is Rounding.STOCHASTIC else None
        if cal is not None and calibrates(cast, role):
            fixed = cal.cast(x, cast, layer, axis, gen)
            if fixed is not None:
                return fixed
        q = p(x, axis, gen)
        if self.telemetry is not None and self.telemetry.active:
            self.telemetry.record(layer, role, x, q, cast.fmt, p.route(x, axis))
        return q

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {role: g.get_state() for role, g in self.generators.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for role, s in state.items():
            self.generators[role].set_state(s)
