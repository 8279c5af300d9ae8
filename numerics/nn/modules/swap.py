"""``quantize_model``: swap a model's layers for quantized ones, in place, by name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from numerics.nn.modules.caster import Caster
from numerics.nn.modules.layers import SWAPS, Quantized
from numerics.nn.policy import Policy, coerce
from numerics.nn.telemetry import Telemetry


def quantize_model(
    model: nn.Module,
    policy: Policy | Mapping[str, Any] | str,
    *,
    telemetry: Telemetry | None = None,
    include: Callable[[str, nn.Module], bool] | None = None,
) -> nn.Module:
    """Convert ``model`` in place: each Linear, Conv1d/2d, Embedding, EmbeddingBag and
    ``Matmul`` (exact types) becomes its quantized counterpart with the casts
    ``policy.for_layer(qualified_name)`` gives. Parameters are shared, not copied, so an
    optimizer built before still applies. ``include(name, module)`` filters the layers
    (default: all). Returns the model, which also gets ``numerics_policy`` and
    ``numerics_caster`` attributes (the caster's generator states belong in a checkpoint);
    when the root itself is a swappable layer (a bare ``nn.Linear``) the return value is its
    quantized replacement, sharing its parameters. Converting twice re-applies the new policy.
    """
    pol = coerce(policy)
    caster = Caster(pol.seed, telemetry)
    swaps: list[tuple[nn.Module, str, nn.Module]] = []
    for name, module in model.named_modules():
        for child_name, child in module.named_children():
            qualified = f"{name}.{child_name}" if name else child_name
            if include is not None and not include(qualified, child):
                continue
            if isinstance(child, Quantized):
                child.numerics, child.caster = pol.for_layer(qualified), caster
                continue
            cls = SWAPS.get(type(child))
            if cls is None:
                continue
            new = cls.convert(child, pol.for_layer(qualified), caster, qualified)  # type: ignore[attr-defined]
            swaps.append((module, child_name, new))
    for parent, child_name, new in swaps:
        setattr(parent, child_name, new)
    root_cls = SWAPS.get(type(model))
    if root_cls is not None and (include is None or include("", model)):
        model = root_cls.convert(model, pol.for_layer(""), caster, "")  # type: ignore[attr-defined]
    elif isinstance(model, Quantized):
        model.numerics, model.caster = pol.for_layer(""), caster
    model.numerics_policy = pol  # type: ignore[assignment]
    model.numerics_caster = caster  # type: ignore[assignment]
    return model
