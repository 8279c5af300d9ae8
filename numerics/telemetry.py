"""Numerics telemetry: what each cast did to the values, per layer and role, every N steps.

For each (layer, role) the collector accumulates, over the casts made during an active step:
the fraction of finite values that overflowed (became inf or NaN), saturated (lay beyond the
format's maximum and were clamped to it; element formats only: a block format's clamp depends
on the block's scale and is not counted), underflowed (nonzero values that became zero), and
the signal-to-quantization-noise ratio ``10 log10(sum x^2 / sum (x - q)^2)`` in dB over finite
values. Only every ``every``-th step is active, so the cost elsewhere is one flag test per cast.

    tel = Telemetry(every=50)
    quantize_model(model, policy, telemetry=tel)
    for step in ...:
        tel.begin_step(step)
        ... forward, backward ...
        logger.log(tel.flush(), step)   # {} on inactive steps
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from numerics.formats import FixedFormat, FloatFormat


@dataclass
class _Acc:
    count: int = 0
    overflow: int = 0
    saturated: int = 0
    underflow: int = 0
    signal: float = 0.0
    noise: float = 0.0
    tracks_saturation: bool = True


class Telemetry:
    """Collects cast statistics on every ``every``-th step (see the module docstring)."""

    def __init__(self, every: int = 100) -> None:
        if every < 1:
            raise ValueError(f"Telemetry: every={every}; a positive number of steps is required")
        self.every = every
        self.active = False
        self._acc: dict[tuple[str, str], _Acc] = {}

    def begin_step(self, step: int) -> None:
        self.active = step % self.every == 0

    @torch.no_grad()
    def record(self, layer: str, role: str, x: torch.Tensor, q: torch.Tensor, fmt: object) -> None:
        if not self.active:
            return
        acc = self._acc.setdefault((layer, role), _Acc())
        x = x.detach().float()
        q = q.detach().float()
        finite = torch.isfinite(x)
        qfinite = torch.isfinite(q)
        acc.count += int(finite.sum())
        acc.overflow += int((finite & ~qfinite).sum())
        acc.underflow += int((finite & (x != 0) & (q == 0)).sum())
        if isinstance(fmt, FloatFormat | FixedFormat):
            acc.saturated += int((finite & qfinite & (x.abs() > fmt.max)).sum())
        else:
            acc.tracks_saturation = False
        both = finite & qfinite
        xs = torch.where(both, x, 0.0)
        acc.signal += float((xs * xs).sum(dtype=torch.float64))
        d = torch.where(both, x - q, 0.0)
        acc.noise += float((d * d).sum(dtype=torch.float64))

    def flush(self) -> dict[str, float]:
        """The statistics gathered since the last flush, as flat metric names, and reset.

        Names: ``numerics/{layer}/{role}/{overflow|saturated|underflow|sqnr_db}``; fractions
        are of the finite values cast; an exact cast (no noise) reports sqnr_db = inf.
        """
        out: dict[str, float] = {}
        for (layer, role), a in sorted(self._acc.items()):
            key = f"numerics/{layer}/{role}"
            n = max(a.count, 1)
            out[f"{key}/overflow"] = a.overflow / n
            out[f"{key}/underflow"] = a.underflow / n
            if a.tracks_saturation:
                out[f"{key}/saturated"] = a.saturated / n
            if a.noise > 0:
                out[f"{key}/sqnr_db"] = 10 * math.log10(a.signal / a.noise) if a.signal else 0.0
            else:
                out[f"{key}/sqnr_db"] = math.inf
        self._acc.clear()
        return out
