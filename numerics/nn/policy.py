"""The numerics policy: which format and rounding each tensor role of each layer uses.

A training step touches seven kinds of tensors ("roles"); a policy names a format and a
rounding for each:

===================  ==================================================================
role                 what is quantized
===================  ==================================================================
weights              the forward copy of a layer's weight (matmul / conv operand)
activations          the input operand of a matmul / conv (and both operands of the
                     attention matmuls)
errors               the gradient w.r.t. a layer's output, in backward, before it
                     enters the two backward matmuls
grads                the weight gradient a layer produces, before the optimizer
optimizer_state      momentum and Adam moments, after every update
master_weights       ``true``: an fp32 copy is updated and the weights role casts it in
                     forward; ``false``: the weights themselves live in the weights format
                     and every update is rounded (``update_rounding``, or Kahan)
communication        gradient buckets before the data-parallel all-reduce
===================  ==================================================================

``format`` is the default for every role; a role key overrides it with a format name or a
``{format, rounding, saturate}`` mapping; ``overrides`` re-assign roles for layers whose
qualified module name matches a glob pattern (first match wins). Block formats block along the
reduction dimension of the product they feed, which the modules work out per cast (see
``numerics.nn.modules``). ``periodic: {kind, bits, lambda_max, start_fraction, ramp_fraction}``
adds the periodic regularizer (``numerics.nn.periodic``, 1811.09862): training in the policy's
formats (fp32 in the paper) with a penalty that pulls the weights onto a ``bits``-bit grid,
and the weights rounded to it at the end. A policy is inert data, built from a dict (a
recipe's ``numerics`` section) or a named preset, and validated on construction with
``numerics.validate``: an unknown key, format or rounding raises ``PolicyError`` (or the
caller's error class, e.g. ``RecipeError``) naming the key and what is allowed.

``Policy.label()`` names a policy in run folders and tables: the format (with its rounding
unless nearest-even, and the periodic regularizer's tag), then each role whose cast differs
from it (``w``, ``a``, ``e``, ``g``, ``opt``, ``comm``: ``bf16-opt:fp32``), the update rule
without master weights (``nomaster``, ``nomaster-sr``, ``nomaster-kahan``), loss scaling
(``ls-dynamic``) and overrides (``2ovr.<digest of what they assign>``), so two policies that
differ in a role, a rounding or the update rule never share a label (loss-scale factors and
the regularizer's schedule are left out: ``numerics compare`` tells such runs apart by their
configs). A preset's name labels that preset only (``bf16``: fp32 optimizer state and
all-reduce), so the plain format of the same name adds what sets it apart
(``bf16-opt:bf16-comm:bf16``). A hand-written ``name`` is the label as written, except the
name of a preset or a format that the policy is not, which is ignored; giving different
policies different names is then the writer's job.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from numerics import formats
from numerics import validate as val
from numerics.errors import ConfigError
from numerics.formats import FixedFormat, FloatFormat, Format, IntFormat
from numerics.formats.registry import UnknownFormatError
from numerics.nn.periodic import MAX_BITS, MIN_BITS, Kind, PeriodicSpec, parse_periodic
from numerics.quantize import plan
from numerics.rounding import Rounding
from numerics.rounding import names as rounding_names
from numerics.rounding import parse as parse_rounding

#: Roles a layer's casts use (weights, activations, errors, grads) and the optimizer's.
LAYER_ROLES = ("weights", "activations", "errors", "grads")
ROLES = (*LAYER_ROLES, "optimizer_state", "communication")
UPDATE_METHODS = ("round", "kahan")


class PolicyError(ConfigError):
    """A numerics policy that cannot be built: names the key, the value and what is allowed."""


@dataclass(frozen=True)
class Cast:
    """One role's numerics: a registered format name, a rounding mode, saturation.

    ``saturate=None`` keeps the format's own overflow rule (see ``numerics.quantize``).
    """

    format: str = "fp32"
    rounding: Rounding = Rounding.NEAREST_EVEN
    saturate: bool | None = None

    # cached: a quantized layer asks on every forward pass (the fields are frozen)
    @functools.cached_property
    def fmt(self) -> Format:
        return formats.get(self.format)

    @functools.cached_property
    def is_identity(self) -> bool:
        fmt = self.fmt
        return isinstance(fmt, FloatFormat) and fmt.is_identity and not self.saturate

    @property
    def axis_dependent(self) -> bool:
        """Whether the result depends on the axis (block and per-channel integer formats)."""
        fmt = self.fmt
        if isinstance(fmt, FloatFormat | FixedFormat):
            return False
        if isinstance(fmt, IntFormat):
            return fmt.per_channel
        return True

    def label(self) -> str:
        """``fp8_e5m2-sr-sat``: the format, the rounding unless nearest-even, ``sat`` for
        saturate=True (False is accepted only where it is the format's own rule: no tag)."""
        return self.format + _rounding_tag(self.rounding) + ("-sat" if self.saturate else "")


def _rounding_tag(rounding: Rounding) -> str:
    if rounding is Rounding.NEAREST_EVEN:
        return ""
    return "-sr" if rounding is Rounding.STOCHASTIC else f"-{rounding.value}"


@dataclass(frozen=True)
class LayerNumerics:
    """The four casts one layer makes: weights, activations, errors, weight gradients."""

    weights: Cast = field(default_factory=Cast)
    activations: Cast = field(default_factory=Cast)
    errors: Cast = field(default_factory=Cast)
    grads: Cast = field(default_factory=Cast)

    @functools.cached_property
    def is_identity(self) -> bool:
        return all(getattr(self, r).is_identity for r in LAYER_ROLES)


@dataclass(frozen=True)
class LossScale:
    """Loss scaling: ``none``, ``static`` (a fixed factor) or ``dynamic``.

    Dynamic: start at ``init``; a step whose gradients hold inf/NaN is skipped and the scale
    multiplied by ``backoff``; after ``growth_interval`` clean steps in a row it is multiplied
    by ``growth`` (the scheme of Micikevicius et al., arXiv 1710.03740).
    """

    kind: str = "none"
    init: float = 2.0**16
    growth: float = 2.0
    backoff: float = 0.5
    growth_interval: int = 2000

    KINDS = ("none", "static", "dynamic")


@dataclass(frozen=True)
class Override:
    """Roles re-assigned for the layers whose qualified name matches one of ``match``."""

    match: tuple[str, ...]
    layer: LayerNumerics

    def matches(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pat) for pat in self.match)


@dataclass(frozen=True)
class Policy:
    """A validated numerics policy (see the module docstring). Build with ``from_dict``."""

    format: str = "fp32"
    rounding: Rounding = Rounding.NEAREST_EVEN
    weights: Cast = field(default_factory=Cast)
    activations: Cast = field(default_factory=Cast)
    errors: Cast = field(default_factory=Cast)
    grads: Cast = field(default_factory=Cast)
    optimizer_state: Cast = field(default_factory=Cast)
    communication: Cast = field(default_factory=Cast)
    master_weights: bool = True
    update_rounding: Rounding = Rounding.NEAREST_EVEN
    update_method: str = "round"
    loss_scale: LossScale = field(default_factory=LossScale)
    overrides: tuple[Override, ...] = ()
    seed: int = 0
    name: str | None = None  # the label, when written by hand or set by a preset (``label``)
    periodic: PeriodicSpec | None = None  # the periodic regularizer (1811.09862), if any

    @property
    def default_layer(self) -> LayerNumerics:
        return LayerNumerics(self.weights, self.activations, self.errors, self.grads)

    def for_layer(self, qualified_name: str) -> LayerNumerics:
        """The casts of the layer called ``qualified_name`` (first matching override wins)."""
        for ov in self.overrides:
            if ov.matches(qualified_name):
                return ov.layer
        return self.default_layer

    @property
    def is_identity(self) -> bool:
        return (
            self.periodic is None
            and self.default_layer.is_identity
            and all(ov.layer.is_identity for ov in self.overrides)
            and self.optimizer_state.is_identity
            and self.communication.is_identity
            and self.loss_scale.kind == "none"
        )

    def label(self) -> str:
        """A short tag for run names and tables, unique to the policy: ``mxfp8_e4m3``,
        ``bf16-opt:fp32``, ``bf16-nomaster-sr`` (how it is built: the module docstring)."""
        if self.name is not None and _fits(self.name, self):
            return self.name
        base = self.format
        if self.periodic is not None:  # fp32 training + regularizer: the regularizer's tag
            base = self.periodic.name if base == "fp32" else f"{base}-{self.periodic.name}"
        base += _rounding_tag(self.rounding)
        c = Cast(self.format, self.rounding)  # every role in the format: nothing to list
        uniform = Policy(self.format, self.rounding, c, c, c, c, c, c, periodic=self.periodic)
        label = "-".join([base, *_differences(self, uniform)])
        named = _stands_for(label) if label in PRESETS else None
        if named is not None:  # a plain format named like a preset (bf16): what differs
            return "-".join([label, *_differences(self, named)])
        return label

    def to_dict(self) -> dict[str, Any]:
        """A plain dict that ``from_dict`` turns back into this policy (for config.yaml)."""

        def cast(c: Cast) -> dict[str, Any]:
            return {"format": c.format, "rounding": c.rounding.value, "saturate": c.saturate}

        d: dict[str, Any] = {"format": self.format, "rounding": self.rounding.value}
        for role in ROLES:
            d[role] = cast(getattr(self, role))
        d["master_weights"] = self.master_weights
        d["update_rounding"] = self.update_rounding.value
        d["update_method"] = self.update_method
        d["loss_scale"] = dataclasses.asdict(self.loss_scale)
        d["overrides"] = [
            {"match": list(ov.match), **{r: cast(getattr(ov.layer, r)) for r in LAYER_ROLES}}
            for ov in self.overrides
        ]
        d["seed"] = self.seed
        if self.name:
            d["name"] = self.name
        if self.periodic is not None:
            d["periodic"] = {
                f.name: getattr(self.periodic, f.name) for f in dataclasses.fields(self.periodic)
            }
            d["periodic"]["kind"] = self.periodic.kind.value
        return d


# ---------------------------------------------------------------------------------------------
# Labels

_SHORT = {
    "weights": "w",
    "activations": "a",
    "errors": "e",
    "grads": "g",
    "optimizer_state": "opt",
    "communication": "comm",
}


def _update_tag(p: Policy) -> str:
    """The update rule in effect: none with master weights (fp32 updates), else how the
    weights are rounded (Kahan summation ignores update_rounding)."""
    if p.master_weights:
        return ""
    return "nomaster" + (
        "-kahan" if p.update_method == "kahan" else _rounding_tag(p.update_rounding)
    )


def _overrides_tag(p: Policy) -> str:
    """``2ovr.<8 hex>``: how many overrides, and a digest of what they assign (two different
    sets of overrides never share a tag)."""
    if not p.overrides:
        return ""
    blob = json.dumps(p.to_dict()["overrides"], sort_keys=True)
    return f"{len(p.overrides)}ovr.{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


def _differences(p: Policy, ref: Policy) -> list[str]:
    """The label parts where ``p`` differs from ``ref`` (their formats, roundings and periodic
    regularizers aside): each role's cast, the update rule, loss scaling, overrides."""
    parts = [
        f"{_SHORT[r]}:{getattr(p, r).label()}"
        for r in ROLES
        if getattr(p, r).label() != getattr(ref, r).label()
    ]
    for tag, unset in (
        (_update_tag, "master"),
        (lambda q: f"ls-{q.loss_scale.kind}" if q.loss_scale.kind != "none" else "", "ls-none"),
        (_overrides_tag, "0ovr"),
    ):
        if tag(p) != tag(ref):
            parts.append(tag(p) or unset)
    return parts


@functools.cache
def _stands_for(word: str) -> Policy | None:
    """The policy a preset's name (first) or a format's name stands for as a label."""
    if word in PRESETS:
        return preset(word)
    try:
        return from_dict({"format": word})
    except (ConfigError, ValueError):
        return None


def _fits(name: str, p: Policy) -> bool:
    """Whether a hand-written ``name`` may label ``p``: any name but that of a preset or a
    format, which labels only the policy it stands for."""
    ref = _stands_for(name)
    return ref is None or (
        (p.format, p.rounding, p.periodic) == (ref.format, ref.rounding, ref.periodic)
        and not _differences(p, ref)
    )


# ---------------------------------------------------------------------------------------------
# Building and validating (with the shared layer, ``numerics.validate``)

Path = val.KeyPath


def _format_name(value: object, ctx: val.Context, at: Path) -> str:
    if not isinstance(value, str):
        raise ctx.err(at, f"a format name (string) is required, got {value!r}", value=value)
    if is_periodic_name(value):
        raise periodic_moved(ctx, at, value)
    try:
        return formats.get(value).name
    except UnknownFormatError as exc:
        raise ctx.err(at, str(exc), value=value, allowed="a format of `numerics formats`") from None


def _rounding(value: object, ctx: val.Context, at: Path) -> Rounding:
    try:
        return parse_rounding(value)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        allowed = ", ".join(rounding_names())
        raise ctx.err(
            at, f"unknown rounding {value!r}; allowed: {allowed}", value=value, allowed=allowed
        ) from None


def _cast(value: object, default: Cast, ctx: val.Context, at: Path) -> Cast:
    if value is None:
        return default
    if isinstance(value, str):
        return Cast(_format_name(value, ctx, at), default.rounding)
    if not isinstance(value, Mapping):
        raise ctx.err(
            at,
            "a format name or a mapping with keys format, rounding, saturate is required, "
            f"got {value!r}",
            value=value,
        )
    ctx.check_keys(value, ("format", "rounding", "saturate"), at)
    fmt = _format_name(value["format"], ctx, (*at, "format")) if "format" in value else None
    rounding = (
        _rounding(value["rounding"], ctx, (*at, "rounding"))
        if "rounding" in value
        else default.rounding
    )
    saturate = value.get("saturate", default.saturate)
    if saturate is not None:
        ctx.convert(saturate, val.boolean, (*at, "saturate"))
    return Cast(fmt or default.format, rounding, saturate)


def _check_cast(c: Cast, rounding: Rounding, ctx: val.Context, at: Path) -> None:
    """Refuse a cast ``quantize`` would refuse (a row-wise format with stochastic rounding,
    saturate=False where the format always saturates) when the policy is built, not at the
    first step."""
    try:
        plan(c.format, rounding, c.saturate)
    except ValueError as exc:
        raise ctx.err(at, str(exc).removeprefix("quantize: "), value=c.format) from None


_LOSS_SCALE: dict[str, val.Conv] = {
    "kind": val.one_of(LossScale.KINDS),
    "init": val.number(0.0, lo_open=True),
    "growth": val.number(1.0),
    "backoff": val.number(0.0, 1.0, lo_open=True, hi_open=True),
    "growth_interval": val.integer(1),
}


def _loss_scale(value: object, ctx: val.Context, at: Path) -> LossScale:
    if value is None or value == "none":
        return LossScale()
    if value == "dynamic":
        return LossScale(kind="dynamic")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not value > 0:
            raise ctx.err(at, f"a static loss scale must be > 0, got {value!r}", value=value)
        return LossScale(kind="static", init=float(value))
    if isinstance(value, Mapping):
        ctx.section(value, _LOSS_SCALE, at)  # checked; the values are kept as written
        return LossScale(**dict(value))
    allowed = (
        "none, dynamic, a number (static scale) or a mapping with keys "
        f"{', '.join(f.name for f in dataclasses.fields(LossScale))}"
    )
    raise ctx.err(at, f"{value!r}; allowed: {allowed}", value=value, allowed=allowed)


_PERIODIC: dict[str, val.Conv] = {
    "kind": val.choice(Kind),
    "bits": val.integer(MIN_BITS, MAX_BITS),
    "lambda_max": val.number(0.0),
    "start_fraction": val.number(0.0, 1.0),
    "ramp_fraction": val.number(0.0, 1.0),
}
_LEGACY_PERIODIC = re.compile(r"periodic[_-]")


def is_periodic_name(value: str) -> bool:
    """Whether ``value`` is spelled like the old ``periodic_<kind>_b<bits>`` pseudo-format."""
    return bool(_LEGACY_PERIODIC.match(value.strip().lower()))


def _periodic(value: object, ctx: val.Context, at: Path) -> PeriodicSpec | None:
    if value is None:
        return None
    fields = ctx.section(value, _PERIODIC, at)
    for key, what in (
        ("kind", "sin2 or hat"),
        ("bits", f"the grid's bits, {MIN_BITS}..{MAX_BITS}"),
    ):
        if key not in fields:
            raise ctx.err((*at, key), f"required ({what})")
    return PeriodicSpec(**fields)


def periodic_moved(ctx: val.Context, at: Path, name: str) -> ConfigError:
    """The error for a ``periodic_<kind>_b<bits>`` format name: what to write instead."""
    spec = parse_periodic(name)
    kind, bits = (spec.kind.value, str(spec.bits)) if spec else ("sin2|hat", "BITS")
    return ctx.err(
        at,
        f"{name!r} is no longer a format: the periodic regularizer is part of the policy; write "
        f"numerics: {{format: fp32, periodic: {{kind: {kind}, bits: {bits}}}}} (on the command "
        f"line --set numerics.periodic.kind={kind} --set numerics.periodic.bits={bits}); its "
        "schedule (lambda_max, start_fraction, ramp_fraction) goes in numerics.periodic too",
        value=name,
        allowed="numerics.periodic: {kind, bits, lambda_max, start_fraction, ramp_fraction}",
    )


POLICY_KEYS = (
    "preset",
    "format",
    "rounding",
    *ROLES,
    "master_weights",
    "update_rounding",
    "update_method",
    "loss_scale",
    "overrides",
    "seed",
    "name",
    "periodic",
)


def from_dict(
    d: Mapping[str, Any] | None, ctx: val.Context | None = None, at: Path = ("numerics",)
) -> Policy:
    """Build and validate a policy from a recipe's ``numerics`` section.

    ``preset: NAME`` starts from a named preset (see ``PRESETS``); the other keys override it.
    ``ctx`` names the file the section came from (a recipe's context; none for a bare dict,
    whose errors are ``PolicyError``) and ``at`` the section's key path.
    """
    ctx = ctx or val.Context(None, error=PolicyError)
    d = dict(ctx.mapping(d, POLICY_KEYS, at))

    def key(name: str) -> Path:
        return (*at, name)

    if "preset" in d:
        name = d.pop("preset")
        if not isinstance(name, str) or name not in PRESETS:
            allowed = ", ".join(PRESETS)
            raise ctx.err(
                key("preset"),
                f"unknown preset {name!r}; allowed: {allowed}",
                value=name,
                allowed=allowed,
            )
        base = dict(PRESETS[name])
        base.update(d)
        base.setdefault("name", None if len(d) else name)
        d = base
    fmt = _format_name(d.get("format", "fp32"), ctx, key("format"))
    rounding = _rounding(d.get("rounding", "nearest_even"), ctx, key("rounding"))
    default = Cast(fmt, rounding)
    casts = {role: _cast(d.get(role), default, ctx, key(role)) for role in ROLES}
    for role, c in casts.items():
        _check_cast(c, c.rounding, ctx, key(role) if role in d else key("format"))
    master = ctx.convert(d.get("master_weights", True), val.boolean, key("master_weights"))
    update_rounding = _rounding(
        d.get("update_rounding", "nearest_even"), ctx, key("update_rounding")
    )
    if not master:  # the optimizer rounds the weights with update_rounding
        _check_cast(casts["weights"], update_rounding, ctx, key("update_rounding"))
    method = ctx.convert(
        d.get("update_method", "round"), val.one_of(UPDATE_METHODS), key("update_method")
    )
    overrides = []
    raw = d.get("overrides") or []
    if not isinstance(raw, list):
        raise ctx.err(key("overrides"), "a list of mappings is required", value=raw)
    for i, ov in enumerate(raw):
        w = (*key("overrides"), i)
        if not isinstance(ov, Mapping) or "match" not in ov:
            raise ctx.err(
                w, "a mapping with a 'match' glob (or list of globs) is required", value=ov
            )
        ctx.check_keys(ov, ("match", "format", "rounding", *LAYER_ROLES), w)
        match = ov["match"]
        pats = (
            (match,) if isinstance(match, str) else tuple(match) if isinstance(match, list) else ()
        )
        if not pats or not all(isinstance(p, str) for p in pats):
            raise ctx.err((*w, "match"), "a glob string or a list of them is required", value=match)
        ov_fmt = _format_name(ov["format"], ctx, (*w, "format")) if "format" in ov else None
        ov_round = _rounding(ov["rounding"], ctx, (*w, "rounding")) if "rounding" in ov else None
        layer = {}
        for role in LAYER_ROLES:
            base_cast = casts[role]
            if ov_fmt is not None or ov_round is not None:
                base_cast = Cast(ov_fmt or base_cast.format, ov_round or base_cast.rounding)
            layer[role] = _cast(ov.get(role), base_cast, ctx, (*w, role))
            _check_cast(layer[role], layer[role].rounding, ctx, (*w, role))
        overrides.append(Override(pats, LayerNumerics(**layer)))
    return Policy(
        format=fmt,
        rounding=rounding,
        master_weights=master,
        update_rounding=update_rounding,
        update_method=method,
        loss_scale=_loss_scale(d.get("loss_scale"), ctx, key("loss_scale")),
        overrides=tuple(overrides),
        seed=ctx.convert(d.get("seed", 0), val.integer(), key("seed")),
        name=ctx.convert(d.get("name"), val.optional(val.string), key("name")),
        periodic=_periodic(d.get("periodic"), ctx, key("periodic")),
        **casts,
    )


#: Named schemes. Each is a ``from_dict`` section; a recipe may name one with ``preset:``.
PRESETS: dict[str, dict[str, Any]] = {
    # Plain fp32 training: every cast is the identity.
    "fp32": {"format": "fp32"},
    # Kalamkar et al., arXiv 1905.12322: bf16 for the operands of every matmul/conv, forward
    # and backward (weights, activations, errors) and for the weight gradients; fp32 master
    # weights and optimizer state, round to nearest even.
    "bf16": {"format": "bf16", "optimizer_state": "fp32", "communication": "fp32"},
    # Zamirai et al., arXiv 2010.06192: pure bf16 (weights live in bf16, bf16 optimizer
    # state) with stochastic-rounded weight updates; "bf16_kahan" uses Kahan summation.
    "bf16_nomaster_sr": {
        "format": "bf16",
        "master_weights": False,
        "update_rounding": "stochastic",
    },
    "bf16_nomaster_kahan": {"format": "bf16", "master_weights": False, "update_method": "kahan"},
    # Micikevicius et al., arXiv 1710.03740: fp16 operands and weight gradients, fp32 master
    # weights and optimizer state, dynamic loss scaling.
    "fp16_loss_scale": {
        "format": "fp16",
        "optimizer_state": "fp32",
        "communication": "fp32",
        "loss_scale": "dynamic",
    },
    # Rouhani et al., arXiv 2310.10537 (section 6, training): every matmul operand, forward
    # and backward, in an MX format (MXFP6_E3M2 there, the accuracy-neutral case; MXFP8 the
    # conservative one), fp32 master weights, optimizer state and weight gradients.
    "mxfp6_training": {
        "format": "fp32",
        "weights": "mxfp6_e3m2",
        "activations": "mxfp6_e3m2",
        "errors": "mxfp6_e3m2",
    },
    "mxfp8_training": {
        "format": "fp32",
        "weights": "mxfp8_e4m3",
        "activations": "mxfp8_e4m3",
        "errors": "mxfp8_e5m2",
    },
}


def preset(name: str) -> Policy:
    """A named preset (see ``PRESETS``)."""
    return from_dict({"preset": name})


def coerce(policy: Policy | Mapping[str, Any] | str | None) -> Policy:
    """A policy from a Policy, a dict section, a preset name or a bare format name."""
    if isinstance(policy, Policy):
        return policy
    if policy is None:
        return Policy()
    if isinstance(policy, str):
        return preset(policy) if policy in PRESETS else from_dict({"format": policy})
    return from_dict(policy)
