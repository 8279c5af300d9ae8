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

Each cast also reports the route it took (``numerics.route.Route``: which kernel ran it); a
flush counts them as ``numerics/{layer}/{role}/casts/{route}``.

Besides the per-flush numbers, the collector keeps running totals per role over the whole run
(``totals()``: the same fractions and SQNR over every active step and layer; ``routes()``: the
casts per route), which the trainer writes to summary.json as ``telemetry`` and checkpoints
with ``state_dict``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import torch

from numerics.formats import FixedFormat, FloatFormat
from numerics.route import Route


@dataclass
class _Acc:
    count: int = 0
    overflow: int = 0
    saturated: int = 0
    underflow: int = 0
    signal: float = 0.0
    noise: float = 0.0
    tracks_saturation: bool = True

    def add(self, other: _Acc) -> None:
        self.count += other.count
        self.overflow += other.overflow
        self.saturated += other.saturated
        self.underflow += other.underflow
        self.signal += other.signal
        self.noise += other.noise
        self.tracks_saturation &= other.tracks_saturation

    def stats(self) -> dict[str, float]:
        """Fractions of the finite values cast, and the SQNR (inf for an exact cast)."""
        n = max(self.count, 1)
        out = {"overflow": self.overflow / n, "underflow": self.underflow / n}
        if self.tracks_saturation:
            out["saturated"] = self.saturated / n
        if self.noise > 0:
            out["sqnr_db"] = 10 * math.log10(self.signal / self.noise) if self.signal else 0.0
        else:
            out["sqnr_db"] = math.inf
        return out


class Telemetry:
    """Collects cast statistics on every ``every``-th step (see the module docstring)."""

    def __init__(self, every: int = 100) -> None:
        if every < 1:
            raise ValueError(f"Telemetry: every={every}; a positive number of steps is required")
        self.every = every
        self.active = False
        self._acc: dict[tuple[str, str], _Acc] = {}
        self._totals: dict[str, _Acc] = {}  # per role, over the whole run
        self._routes: dict[tuple[str, str], Counter[str]] = {}  # casts per route, this flush
        self._route_totals: dict[str, Counter[str]] = {}  # per role, over the whole run

    def begin_step(self, step: int) -> None:
        self.active = step % self.every == 0

    @torch.no_grad()
    def record(
        self,
        layer: str,
        role: str,
        x: torch.Tensor,
        q: torch.Tensor,
        fmt: object,
        route: Route | None = None,
    ) -> None:
        """One cast of ``x`` to ``q`` in ``fmt``, and the route it took where known."""
        if not self.active:
            return
        if route is not None:
            self._routes.setdefault((layer, role), Counter())[route.value] += 1
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
        ``numerics/{layer}/{role}/casts/{route}``: how many casts took each route.
        """
        out: dict[str, float] = {}
        for (layer, role), a in sorted(self._acc.items()):
            out |= {f"numerics/{layer}/{role}/{k}": v for k, v in a.stats().items()}
            self._totals.setdefault(role, _Acc()).add(a)
        for (layer, role), routes in sorted(self._routes.items()):
            out |= {f"numerics/{layer}/{role}/casts/{r}": float(n) for r, n in routes.items()}
            self._route_totals.setdefault(role, Counter()).update(routes)
        self._acc.clear()
        self._routes.clear()
        return out

    def totals(self) -> dict[str, dict[str, float]]:
        """role -> its statistics over every flushed step and layer of the run."""
        return {role: a.stats() for role, a in sorted(self._totals.items())}

    def routes(self) -> dict[str, dict[str, int]]:
        """role -> route name -> casts that took it, over every flushed step of the run."""
        return {role: dict(sorted(c.items())) for role, c in sorted(self._route_totals.items())}

    def state_dict(self) -> dict[str, Any]:
        return {
            "totals": {role: asdict(a) for role, a in self._totals.items()},
            "routes": self.routes(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._totals = {role: _Acc(**a) for role, a in state["totals"].items()}
        # checkpoints from before routes were counted have none
        self._route_totals = {role: Counter(c) for role, c in state.get("routes", {}).items()}
