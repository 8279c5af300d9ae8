"""Periodic regularisers that pull weights onto a uniform grid before they are rounded to it.

Naumov, Diril, Park, Ray, Jablonski and Tulloch, "On periodic functions as regularizers for
quantization of neural networks", arXiv:1811.09862. Instead of rounding during training
(straight-through estimators), add to the loss a periodic function of each weight whose zeros
are the quantization levels. Gradient descent then drags every weight toward its nearest level,
and once they sit there, rounding (``harden_``) changes almost nothing, so accuracy survives.
The paper uses sin^2 (continuous) and a "hat" (triangular) function, and adjusts the
amplitude and the frequency of the function during training.

What this module does, per regularised tensor ``W`` with ``b`` bits:

- Grid: symmetric, ``k * delta`` for integer ``k`` in ``[-qmax, qmax]``, ``qmax = 2**(b-1) - 1``,
  ``delta = max|W| / qmax`` (1 for an all-zero tensor): the project's ``intN`` grid
  (``numerics.formats.IntFormat``), so ``2**b - 1`` levels, zero among them. ``delta`` is
  frozen when the regulariser starts (the first ``penalty`` call at or after
  ``AmplitudeSchedule.start``); with ``regrid_every = n > 0`` it is recomputed from the current
  weights every ``n`` steps after that.
- Penalty, with ``u = w / delta_t``: ``sin2`` is ``sin^2(pi u)`` (0 on the grid, 1 halfway,
  gradient ``(pi / delta_t) sin(2 pi u)``); ``hat`` is ``2 |u - round(u)|`` (the distance to
  the nearest grid point in steps, scaled to peak at 1 halfway like sin2; gradient
  ``+-2 / delta_t``). ``penalty(step) = lambda(step) * sum over tensors and elements``.
- Amplitude schedule: ``lambda`` is 0 before ``start``, then ramps (linear, or exponential with
  ``lambda_max * expm1(rate u) / expm1(rate)``, ``u`` the ramp fraction) to ``lambda_max`` over
  ``ramp_steps`` steps.
- Frequency schedule: the grid starts coarse and is refined. At ``start_bits`` the period is
  ``delta_t = delta * 2**(b - start_bits)``, halved (frequency doubled) every ``steps_per_bit``
  steps until it is ``delta``. The coarse grids are nested in the fine one, so a weight that
  has reached a coarse level is already at a fine level and feels no pull when the grid
  refines.

Where we differ from, or go beyond, the paper: only its abstract was available to us while
writing this, so the grid (symmetric ``max|W| / qmax``, the project's ``intN`` convention,
rather than any asymmetric min/max grid), the hat's normalisation, the shapes of the ramps and
the nested halving of the period are our choices. The penalty is a plain sum, as in the paper,
so ``lambda_max`` must be chosen with the parameter count in mind. Weights that drift outside
``[-qmax delta, qmax delta]`` are still pulled toward the nearest multiple of ``delta`` (the
periodic function does not know the range); ``distance`` and ``harden_`` use the clamped
grid.
"""

from __future__ import annotations

import enum
import fnmatch
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from numerics.enums import parse_enum

MIN_BITS, MAX_BITS = 2, 16


class Kind(enum.Enum):
    SIN2 = "sin2"
    HAT = "hat"


class Ramp(enum.Enum):
    LINEAR = "linear"
    EXPONENTIAL = "exponential"


def _check_bits(bits: object, arg: str = "bits") -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"{arg}={bits!r}; allowed integers {MIN_BITS}..{MAX_BITS}")
    return bits


@dataclass(frozen=True)
class PeriodicSpec:
    """The regulariser a policy asks for (a recipe's ``numerics.periodic``): the function, the
    bits, and the amplitude schedule as fractions of the run, so that one spec fits any length:
    ``lambda`` ramps linearly from 0 at ``start_fraction`` of the steps to ``lambda_max`` over
    ``ramp_fraction`` of them; the weights are hard-rounded to the grid after the last step."""

    kind: Kind
    bits: int
    lambda_max: float = 1e-4
    start_fraction: float = 0.5
    ramp_fraction: float = 0.25

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", parse_enum(Kind, self.kind, "kind"))
        _check_bits(self.bits)

    @property
    def name(self) -> str:
        """``periodic_<kind>_b<bits>``: the tag of run labels and tables."""
        return f"periodic_{self.kind.value}_b{self.bits}"


_NAME = re.compile(r"periodic_(sin2|hat)_b([1-9][0-9]*)")


def parse_periodic(name: str) -> PeriodicSpec | None:
    """``periodic_<sin2|hat>_b<bits>`` (bits 2..16) as a ``PeriodicSpec``; anything else None.

    Names are normalised as format names are (case, surrounding space, ``-`` for ``_``).
    """
    if not isinstance(name, str):
        return None
    m = _NAME.fullmatch(name.strip().lower().replace("-", "_"))
    if m is None or not MIN_BITS <= int(m.group(2)) <= MAX_BITS:
        return None
    return PeriodicSpec(Kind(m.group(1)), int(m.group(2)))


@dataclass(frozen=True)
class AmplitudeSchedule:
    """``lambda(step)``: 0 before ``start``, then a ramp to ``lambda_max`` over ``ramp_steps``.

    ``ramp_steps = 0`` switches straight to ``lambda_max`` at ``start``. ``rate`` shapes the
    exponential ramp (larger: flatter at first, steeper at the end).
    """

    lambda_max: float
    start: int = 0
    ramp_steps: int = 0
    ramp: Ramp = Ramp.LINEAR
    rate: float = 5.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "ramp", parse_enum(Ramp, self.ramp, "ramp"))
        if not (math.isfinite(self.lambda_max) and self.lambda_max >= 0):
            raise ValueError(f"lambda_max={self.lambda_max!r}; must be finite and >= 0")
        if self.start < 0:
            raise ValueError(f"start={self.start}; must be >= 0")
        if self.ramp_steps < 0:
            raise ValueError(f"ramp_steps={self.ramp_steps}; must be >= 0")
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"rate={self.rate!r}; must be finite and > 0")

    def at(self, step: int) -> float:
        if step < self.start:
            return 0.0
        if self.ramp_steps == 0:
            return self.lambda_max
        u = min(1.0, (step - self.start) / self.ramp_steps)
        if self.ramp is Ramp.LINEAR:
            return self.lambda_max * u
        return self.lambda_max * math.expm1(self.rate * u) / math.expm1(self.rate)


@dataclass(frozen=True)
class FrequencySchedule:
    """Coarse-to-fine grids: ``start_bits`` first, one more bit every ``steps_per_bit`` steps.

    ``start_bits = None`` uses the target grid from the start. Steps count from the
    regulariser's start (``AmplitudeSchedule.start``).
    """

    start_bits: int | None = None
    steps_per_bit: int = 1000

    def __post_init__(self) -> None:
        if self.start_bits is not None:
            _check_bits(self.start_bits, "start_bits")
        if self.steps_per_bit < 1:
            raise ValueError(f"steps_per_bit={self.steps_per_bit}; must be >= 1")

    def bits_at(self, steps_since_start: int, bits: int) -> int:
        if self.start_bits is None:
            return bits
        return min(bits, self.start_bits + max(0, steps_since_start) // self.steps_per_bit)


@dataclass(frozen=True)
class HardenEntry:
    name: str
    delta: float
    levels: int  # distinct values in the hardened tensor (at most 2**bits - 1)
    max_change: float  # max |w_after - w_before|
    max_change_steps: float  # the same in units of delta


@dataclass(frozen=True)
class HardenReport:
    bits: int
    entries: tuple[HardenEntry, ...]

    @property
    def max_change(self) -> float:
        return max((e.max_change for e in self.entries), default=0.0)

    @property
    def max_change_steps(self) -> float:
        return max((e.max_change_steps for e in self.entries), default=0.0)


@dataclass(frozen=True)
class HardenEvaluation:
    before: float
    after: float
    report: HardenReport = field(repr=False)


_DEFAULT_MODULES = (nn.Linear, nn.modules.conv._ConvNd, nn.Embedding, nn.EmbeddingBag)


def _select(
    model: nn.Module, include: str | Sequence[str] | None
) -> list[tuple[str, nn.Parameter]]:
    seen: set[int] = set()
    out: list[tuple[str, nn.Parameter]] = []
    if include is None:
        for mname, mod in model.named_modules():
            w = getattr(mod, "weight", None)
            if not (isinstance(mod, _DEFAULT_MODULES) and isinstance(w, nn.Parameter)):
                continue
            if id(w) not in seen:
                seen.add(id(w))
                out.append((f"{mname}.weight" if mname else "weight", w))
        if not out:
            raise ValueError(
                "model: no Linear/Conv/Embedding weights to regularise; pass include=patterns"
            )
        return out
    patterns = [include] if isinstance(include, str) else list(include)
    if not patterns or not all(isinstance(p, str) for p in patterns):
        raise ValueError(f"include={include!r}; give glob patterns over parameter names")
    for pname, p in model.named_parameters():
        if any(fnmatch.fnmatchcase(pname, pat) for pat in patterns) and id(p) not in seen:
            seen.add(id(p))
            out.append((pname, p))
    if not out:
        raise ValueError(f"include={include!r} matches no parameter of the model")
    return out


def _delta(w: torch.Tensor, qmax: int) -> float:
    amax = float(w.detach().abs().max()) if w.numel() else 0.0
    if not math.isfinite(amax):
        raise ValueError("model: a regularised weight holds inf or NaN; cannot place a grid")
    return amax / qmax if amax > 0 else 1.0


class PeriodicRegularizer:
    """Adds ``lambda * sum f(w / delta)`` to the loss so weights settle on a ``bits``-bit grid.

    Args:
        model: the model whose weights are regularised (held by reference).
        bits: target grid, ``2**bits - 1`` symmetric levels per tensor (2..16).
        kind: ``"sin2"`` or ``"hat"``.
        amplitude: an ``AmplitudeSchedule``, or a float for a constant ``lambda`` from step 0.
        frequency: a ``FrequencySchedule`` (None: the target grid throughout).
        include: glob pattern(s) over parameter names (``"blocks.*.weight"``); None selects
            the weights of Linear, Conv, Embedding and EmbeddingBag modules (no biases, no
            norms).
        regrid_every: 0 keeps each tensor's ``delta`` from the start; ``n > 0`` recomputes it
            from the current weights every ``n`` steps.

    Use: ``loss = task_loss + reg.penalty(step)`` every step; after training, ``reg.harden_()``.
    """

    def __init__(
        self,
        model: nn.Module,
        bits: int,
        kind: str | Kind = Kind.SIN2,
        amplitude: AmplitudeSchedule | float = 1e-4,
        frequency: FrequencySchedule | None = None,
        include: str | Sequence[str] | None = None,
        regrid_every: int = 0,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, not {type(model).__name__}")
        self.bits = _check_bits(bits)
        self.model = model
        self.kind = parse_enum(Kind, kind, "kind")
        if isinstance(amplitude, AmplitudeSchedule):
            self.amplitude = amplitude
        elif isinstance(amplitude, int | float) and not isinstance(amplitude, bool):
            try:
                self.amplitude = AmplitudeSchedule(float(amplitude))
            except ValueError:
                raise ValueError(f"amplitude={amplitude!r}; must be finite and >= 0") from None
        else:
            raise ValueError(f"amplitude={amplitude!r}; give a float or an AmplitudeSchedule")
        self.frequency = frequency if frequency is not None else FrequencySchedule()
        if not isinstance(self.frequency, FrequencySchedule):
            raise ValueError(f"frequency={frequency!r}; give a FrequencySchedule or None")
        start_bits = self.frequency.start_bits
        if start_bits is not None and start_bits > self.bits:
            raise ValueError(f"frequency.start_bits={start_bits} exceeds bits={self.bits}")
        if isinstance(regrid_every, bool) or not isinstance(regrid_every, int) or regrid_every < 0:
            raise ValueError(f"regrid_every={regrid_every!r}; must be an int >= 0")
        self.regrid_every = regrid_every
        self.params = _select(model, include)
        self.qmax = 2 ** (self.bits - 1) - 1
        self._deltas: list[float] | None = None
        self._grid_step = 0

    @classmethod
    def from_spec(
        cls, model: nn.Module, spec: PeriodicSpec | str, **kwargs: object
    ) -> PeriodicRegularizer:
        """Build from a ``PeriodicSpec`` or its name (``"periodic_hat_b8"``)."""
        parsed = parse_periodic(spec) if isinstance(spec, str) else spec
        if not isinstance(parsed, PeriodicSpec):
            raise ValueError(f"spec={spec!r} is not a periodic_<sin2|hat>_b<bits> name")
        return cls(model, parsed.bits, parsed.kind, **kwargs)  # type: ignore[arg-type]

    # --- the grid -------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.params]

    @property
    def deltas(self) -> dict[str, float]:
        """Each tensor's grid step (freezing the grid now if it was not yet)."""
        return dict(zip(self.names, self.freeze_grid(), strict=True))

    def state_dict(self) -> dict[str, Any]:
        """The grid: each parameter's step (None until frozen) and the step it was set at."""
        return {"deltas": self._deltas, "grid_step": self._grid_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        deltas = state["deltas"]
        self._deltas = None if deltas is None else [float(d) for d in deltas]
        self._grid_step = int(state["grid_step"])

    def freeze_grid(self, step: int | None = None) -> list[float]:
        """Fix ``delta = max|W| / qmax`` per tensor from the current weights (once)."""
        if self._deltas is None:
            self._deltas = [_delta(p, self.qmax) for _, p in self.params]
            self._grid_step = self.amplitude.start if step is None else step
        return self._deltas

    def _regrid_if_due(self, step: int) -> list[float]:
        deltas = self.freeze_grid(step)
        if self.regrid_every and step - self._grid_step >= self.regrid_every:
            self._deltas = deltas = [_delta(p, self.qmax) for _, p in self.params]
            self._grid_step = step
        return deltas

    def period_at(self, step: int) -> float:
        """The factor ``delta_t / delta`` of the frequency schedule at ``step`` (a power of 2)."""
        since = step - self.amplitude.start
        return float(2 ** (self.bits - self.frequency.bits_at(since, self.bits)))

    # --- training -------------------------------------------------------------------------------
    def penalty(self, step: int) -> torch.Tensor:
        """``lambda(step) * sum f(w / delta_t)``: a differentiable scalar to add to the loss."""
        device = self.params[0][1].device
        if step < self.amplitude.start:
            return torch.zeros((), device=device)
        lam = self.amplitude.at(step)
        factor = self.period_at(step)
        total = torch.zeros((), device=device)
        for (_, p), delta in zip(self.params, self._regrid_if_due(step), strict=True):
            u = p.float() / (delta * factor)
            if self.kind is Kind.SIN2:
                f = torch.sin(math.pi * u).square()
            else:
                # round() has zero gradient, so d/du (u - round(u)) = 1 away from the ties
                f = 2.0 * (u - torch.round(u)).abs()
            total = total + f.sum().to(device)
        return lam * total

    def _nearest(self, p: torch.Tensor, delta: float) -> torch.Tensor:
        return torch.round(p.detach().float() / delta).clamp(-self.qmax, self.qmax) * delta

    def distance(self) -> float:
        """Mean ``|w - nearest level| / delta`` over all regularised elements (target grid).

        About 0.25 for weights spread evenly between levels, 0 when every weight is on one.
        """
        total, count = 0.0, 0
        with torch.no_grad():
            for (_, p), delta in zip(self.params, self.freeze_grid(), strict=True):
                err = (p.detach().float() - self._nearest(p, delta)).abs() / delta
                total += float(err.sum())
                count += p.numel()
        return total / max(count, 1)

    def harden_(self) -> HardenReport:
        """Round every regularised weight, in place, to its nearest level (clamped)."""
        entries = []
        with torch.no_grad():
            for (name, p), delta in zip(self.params, self.freeze_grid(), strict=True):
                q = self._nearest(p, delta)
                change = float((q - p.float()).abs().max()) if p.numel() else 0.0
                p.copy_(q.to(p.dtype))
                levels = int(torch.unique(p).numel())
                entries.append(HardenEntry(name, delta, levels, change, change / delta))
        return HardenReport(self.bits, tuple(entries))


def evaluate_hardening(
    regularizer: PeriodicRegularizer, evaluate: Callable[[nn.Module], float]
) -> HardenEvaluation:
    """``evaluate(model)`` before and after ``regularizer.harden_()``, which changes the model.

    ``evaluate`` returns one number (accuracy, loss, ...); it runs under ``torch.no_grad``.
    Both numbers are returned with the hardening report.
    """
    model = regularizer.model
    with torch.no_grad():
        before = float(evaluate(model))
    report = regularizer.harden_()
    with torch.no_grad():
        after = float(evaluate(model))
    return HardenEvaluation(before, after, report)
