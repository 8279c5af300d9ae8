"""Calibration: static activation scales for per-tensor integer formats, from a few batches.

A per-tensor integer format (``int8``, ``int4``) scales each cast by its own ``amax / qmax``;
applied to activations at inference that is dynamic quantization, a scale computed from every
batch. Deployed integer inference fixes each activation's scale beforehand from calibration
data instead (static quantization, Jacob et al. 1712.05877; PyTorch's min-max observer): here
the model runs ``N`` batches with every cast passed through (in fp32), each activation cast of
a per-tensor integer format records the running maximum of ``|x|`` at its site (the layer and
the cast's axis), and from then on that cast uses the fixed ``scale = amax / qmax``:
``clamp(round(x * (1/scale)), -qmax, qmax) * scale`` in float32, the arithmetic of the dynamic
cast, so a fixed amax equal to a tensor's own gives the dynamic result bit for bit. Values
beyond the calibrated amax saturate, as they do in deployment.

What stays dynamic: weights (fixed already: their scale comes from the weights themselves),
per-channel integer formats (``int8_pc``: activation scales are per slice along the reduction
axis, one per example, token or pixel, which no calibration can fix), and every format without
a tensor scale (floats; block formats scale each block). A site the calibration batches never
reached keeps its dynamic scale.
"""

from __future__ import annotations

import torch
from torch import nn

from numerics.formats import IntFormat
from numerics.nn.policy import Cast, Policy
from numerics.quantize import quantize
from numerics.rounding import Rounding

Site = tuple[str, int]  # (the layer's qualified name, the cast's axis)


def calibrates(cast: Cast, role: str) -> bool:
    """Whether calibration fixes this cast's scale: an activation cast in a per-tensor
    integer format."""
    fmt = cast.fmt
    return role == "activations" and isinstance(fmt, IntFormat) and not fmt.per_channel


def policy_calibrates(policy: Policy) -> bool:
    """Whether any layer of ``policy`` has a cast that calibration fixes."""
    layers = [policy.default_layer, *(ov.layer for ov in policy.overrides)]
    return any(calibrates(layer.activations, "activations") for layer in layers)


def static_int(
    x: torch.Tensor,
    fmt: IntFormat,
    amax: torch.Tensor,
    rounding: Rounding = Rounding.NEAREST_EVEN,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``x`` in the per-tensor integer format ``fmt`` with the fixed ``amax`` (a float32
    scalar tensor): the dynamic cast's float32 arithmetic with its scale given."""
    scale = amax / float(fmt.qmax) if bool(amax > 0) else torch.ones((), dtype=torch.float32)
    inv = 1.0 / scale
    x32 = x.detach().float()
    v = x32 * inv if bool(torch.isfinite(inv)) else x32 / scale
    q = quantize(v, fmt.grid, rounding, generator, saturate=True)  # integers in [-qmax, qmax]
    return (q * scale).to(x.dtype)


class Calibration:
    """The calibration of one model's caster: ``observing`` while the calibration batches
    run (``Caster`` then passes every cast through and calls ``observe`` at each site that
    ``calibrates``), then ``fix()``; after that ``cast`` gives a site's static cast."""

    def __init__(self) -> None:
        self.observing = True
        self.amax: dict[Site, torch.Tensor] = {}
        self.batches = 0

    def observe(self, layer: str, axis: int, x: torch.Tensor) -> None:
        a = x.detach().abs().amax().float().cpu()
        prev = self.amax.get((layer, axis))
        self.amax[(layer, axis)] = a if prev is None else torch.maximum(prev, a)

    def fix(self, batches: int) -> None:
        """End observing: the ``batches`` run fixed the scales of ``amax``'s sites."""
        self.observing, self.batches = False, batches

    def cast(
        self,
        x: torch.Tensor,
        cast: Cast,
        layer: str,
        axis: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor | None:
        """The static cast of ``x`` at this site; None where calibration never saw it."""
        amax = self.amax.get((layer, axis))
        if amax is None:
            return None
        fmt = cast.fmt
        assert isinstance(fmt, IntFormat)
        return static_int(x, fmt, amax.to(x.device), cast.rounding, generator)


def attach(model: nn.Module) -> Calibration | None:
    """Start calibrating ``model`` (one converted by ``quantize_model``): its caster observes
    from now on. None, and nothing changed, when its policy has no cast to calibrate."""
    policy = getattr(model, "numerics_policy", None)
    caster = getattr(model, "numerics_caster", None)
    if policy is None or caster is None or not policy_calibrates(policy):
        return None
    cal = Calibration()
    caster.calibration = cal
    return cal
