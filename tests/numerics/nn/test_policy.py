"""The numerics policy: validation messages, defaults, overrides, labels, presets."""

import dataclasses

import pytest

from numerics.nn import policy as P
from numerics.rounding import Rounding


def test_format_is_the_default_for_every_role():
    pol = P.from_dict({"format": "bf16"})
    for role in P.ROLES:
        assert getattr(pol, role) == P.Cast("bf16", Rounding.NEAREST_EVEN)
    assert P.from_dict({"format": "fp8_e4m3"}).label() == "fp8_e4m3"
    # "bf16" is the preset's label (fp32 optimizer state and all-reduce): this one says so
    assert pol.label() == "bf16-opt:bf16-comm:bf16"


def test_role_keys_override_the_default_with_a_name_or_a_mapping():
    pol = P.from_dict(
        {
            "format": "mxfp8_e4m3",
            "errors": {"format": "mxfp8_e5m2", "rounding": "stochastic"},
            "optimizer_state": "bf16",
        }
    )
    assert pol.weights.format == "mxfp8_e4m3"
    assert pol.errors == P.Cast("mxfp8_e5m2", Rounding.STOCHASTIC)
    assert pol.optimizer_state.format == "bf16"
    assert pol.label() == "mxfp8_e4m3-e:mxfp8_e5m2-sr-opt:bf16"


def test_label_names_master_weights_and_update_rounding():
    pol = P.from_dict({"format": "bf16", "master_weights": False, "update_rounding": "stochastic"})
    assert pol.label() == "bf16-nomaster-sr"
    assert P.preset("bf16_nomaster_sr").label() == "bf16_nomaster_sr"
    assert P.from_dict({"preset": "bf16_nomaster_sr", "seed": 3}).label() == "bf16-nomaster-sr"


def test_a_preset_name_labels_that_preset_only():
    """The bf16 preset keeps fp32 Adam state; numerics.format=bf16 keeps it in bf16: two
    labels. A hand-written name that is a preset's or a format's is ignored where the
    policy is not that one; any other name is the label as written."""
    preset, plain = P.preset("bf16"), P.from_dict({"format": "bf16"})
    assert (preset.optimizer_state.format, plain.optimizer_state.format) == ("fp32", "bf16")
    assert (preset.label(), plain.label()) == ("bf16", "bf16-opt:bf16-comm:bf16")
    assert P.from_dict({"preset": "bf16", "name": "bf16"}).label() == "bf16"
    assert P.from_dict({"preset": "bf16", "seed": 7}).label() == "bf16-opt:fp32-comm:fp32"
    # spelled out, the preset is the preset
    spelled = {"format": "bf16", "optimizer_state": "fp32", "communication": "fp32"}
    assert P.from_dict({**spelled, "name": "bf16"}).label() == "bf16"
    assert P.from_dict({"format": "bf16", "name": "bf16"}).label() == plain.label()
    assert P.from_dict({"format": "fp32", "name": "fp32"}).label() == "fp32"
    assert P.from_dict({"format": "fp16", "name": "bf16_nomaster_sr"}).label() == "fp16"
    mx = {"format": "mxint8", "optimizer_state": "fp32"}
    assert P.from_dict({**mx, "name": "mxint8"}).label() == "mxint8-opt:fp32"
    assert P.from_dict({**mx, "name": "my-mx"}).label() == "my-mx"
    # the update rule in effect: with master weights the update is fp32 whatever it says
    fp32_sr = P.from_dict({"format": "fp32", "update_rounding": "stochastic"})
    assert fp32_sr.label() == "fp32"


def test_labels_tell_apart_policies_that_differ_in_a_role_rounding_or_update_rule():
    """Every pair of distinct policies in a grid of roles, roundings, update rules, loss
    scaling, overrides and presets has distinct labels (saturate=False, accepted only where it
    is the format's own rule, and the update fields that master weights ignore aside)."""
    grid: list[dict[str, object]] = [{"preset": name} for name in P.PRESETS]
    for fmt in ("fp32", "bf16", "fp8_e4m3", "mxfp8_e4m3"):
        for rounding in ("nearest_even", "stochastic", "toward_zero"):
            base = {"format": fmt, "rounding": rounding}
            grid += [base, {**base, "seed": 5}]
            grid += [{**base, role: "bf16"} for role in P.ROLES]
            grid += [{**base, role: "fp32"} for role in P.ROLES]
            grid += [{**base, "errors": {"format": "fp8_e5m2", "saturate": True}}]
            grid += [{**base, "optimizer_state": {"format": fp, "rounding": "stochastic"}}
                     for fp in ("bf16", "fp32")]  # fmt: skip
            for update in ("nearest_even", "stochastic", "toward_zero"):
                grid.append({**base, "master_weights": False, "update_rounding": update})
            grid.append({**base, "master_weights": False, "update_method": "kahan"})
            grid += [{**base, "loss_scale": ls} for ls in ("dynamic", 1024.0)]
            grid += [
                {**base, "overrides": [{"match": "fc", "format": f}]} for f in ("bf16", "fp16")
            ]
            grid.append({**base, "overrides": [{"match": "head", "format": "bf16"}]})
    seen: dict[str, P.Policy] = {}
    for section in grid:
        pol = P.from_dict(section)
        same = dataclasses.replace(pol, name=None, seed=0)
        if pol.master_weights:  # ignored by the optimizer: not part of the policy in effect
            same = dataclasses.replace(same, update_rounding=Rounding.NEAREST_EVEN)
        if pol.loss_scale.kind == "static":  # the factor is not in the label (one per grid)
            same = dataclasses.replace(same, loss_scale=P.LossScale("static"))
        other = seen.setdefault(pol.label(), same)
        assert other == same or other.to_dict() == same.to_dict(), (pol.label(), section)
    assert len(seen) > 250  # the grid holds that many distinct policies


def test_overrides_match_layer_names_first_match_wins():
    pol = P.from_dict(
        {
            "format": "fp8_e4m3",
            "overrides": [
                {"match": ["conv1", "fc"], "format": "bf16"},
                {"match": "emb*", "weights": "int8"},
                {"match": "*", "format": "fp16"},
            ],
        }
    )
    assert pol.for_layer("conv1").weights.format == "bf16"
    assert pol.for_layer("fc").errors.format == "bf16"
    emb = pol.for_layer("emb.0")
    assert (emb.weights.format, emb.activations.format) == ("int8", "fp8_e4m3")
    assert pol.for_layer("layer1.0.conv1").weights.format == "fp16"


def test_round_trip_through_a_dict():
    pol = P.from_dict(
        {
            "format": "bf16",
            "errors": {"format": "fp8_e5m2", "saturate": True},
            "loss_scale": {"kind": "dynamic", "init": 1024.0, "growth_interval": 10},
            "overrides": [{"match": "head", "format": "fp32"}],
            "master_weights": False,
            "update_method": "kahan",
        }
    )
    assert P.from_dict(pol.to_dict()) == pol


@pytest.mark.parametrize(
    ("section", "needle"),
    [
        ({"formt": "bf16"}, "numerics.formt: unknown key; allowed: preset, format"),
        ({"format": "bf17"}, "numerics.format: unknown format 'bf17'"),
        ({"weights": {"format": "fp8", "rnd": 1}}, "numerics.weights.rnd: unknown key"),
        ({"rounding": "nearest_odd"}, "numerics.rounding: unknown rounding 'nearest_odd'; allo"),
        ({"master_weights": "no"}, "numerics.master_weights: must be true or false, got 'no'"),
        (
            {"update_method": "neumaier"},
            "numerics.update_method: must be one of round, kahan, got 'neumaier'",
        ),
        ({"loss_scale": "auto"}, "numerics.loss_scale: 'auto'; allowed: none, dynamic"),
        ({"loss_scale": -1}, "numerics.loss_scale: a static loss scale must be > 0"),
        ({"overrides": [{"format": "bf16"}]}, "numerics.overrides[0]: a mapping with a 'match'"),
        ({"overrides": [{"match": "x", "optimizer_state": "bf16"}]}, "overrides[0].optimizer_st"),
        ({"preset": "bf32"}, "numerics.preset: unknown preset 'bf32'; allowed: fp32, bf16"),
    ],
)
def test_bad_sections_name_the_key_and_the_allowed_values(section, needle):
    with pytest.raises(P.PolicyError) as err:
        P.from_dict(section)
    assert needle in str(err.value)


def test_unknown_format_lists_close_matches():
    with pytest.raises(P.PolicyError, match="mxfp8_e4m3"):
        P.from_dict({"weights": "mxfp8_e4m2"})


def test_presets_build_and_the_fp32_policy_is_the_identity():
    for name in P.PRESETS:
        assert P.preset(name).label() == name
    assert P.preset("fp32").is_identity
    assert not P.preset("bf16").is_identity
    fp16 = P.preset("fp16_loss_scale")
    assert fp16.loss_scale.kind == "dynamic" and fp16.optimizer_state.format == "fp32"
    mx = P.preset("mxfp8_training")
    assert (mx.weights.format, mx.errors.format, mx.grads.format) == (
        "mxfp8_e4m3",
        "mxfp8_e5m2",
        "fp32",
    )


def test_axis_dependence():
    assert P.Cast("mxfp4_e2m1").axis_dependent
    assert P.Cast("int8_pc").axis_dependent
    assert not P.Cast("int8").axis_dependent
    assert not P.Cast("fp8_e4m3").axis_dependent
    assert P.Cast("fp32").is_identity and not P.Cast("fp32", saturate=True).is_identity


def test_a_periodic_regularizer_is_part_of_the_policy():
    pol = P.from_dict({"periodic": {"kind": "sin2", "bits": 4, "lambda_max": 1e-3}})
    assert pol.periodic is not None and (pol.periodic.kind.value, pol.periodic.bits) == ("sin2", 4)
    assert (pol.periodic.lambda_max, pol.periodic.start_fraction) == (1e-3, 0.5)  # defaults
    assert pol.weights.is_identity and pol.errors.is_identity and not pol.is_identity
    assert pol.label() == "periodic_sin2_b4"
    assert P.from_dict(pol.to_dict()) == pol
    with pytest.raises(
        P.PolicyError, match=r"numerics\.periodic\.bits: must be an integer in 2\.\.16"
    ):
        P.from_dict({"periodic": {"kind": "hat", "bits": 1}})
    with pytest.raises(P.PolicyError, match=r"numerics\.periodic\.kind: required"):
        P.from_dict({"periodic": {"bits": 3}})
    with pytest.raises(P.PolicyError, match=r"numerics\.periodic\.bits: required"):
        P.from_dict({"periodic": {"kind": "hat"}})
    with pytest.raises(P.PolicyError, match=r"numerics\.periodic\.knid: unknown key.*kind\?"):
        P.from_dict({"periodic": {"knid": "hat", "bits": 3}})


@pytest.mark.parametrize(
    ("name", "kind", "bits"),
    [("periodic_sin2_b4", "sin2", "4"), ("periodic_sin2_b1", "sin2|hat", "BITS")],
)
def test_the_old_periodic_format_says_what_to_write_instead(name, kind, bits):
    with pytest.raises(P.PolicyError) as err:
        P.from_dict({"format": name})
    msg = str(err.value)
    assert msg.startswith(f"numerics.format: {name!r} is no longer a format"), msg
    assert f"periodic: {{kind: {kind}, bits: {bits}}}" in msg, msg
    assert f"--set numerics.periodic.kind={kind} --set numerics.periodic.bits={bits}" in msg, msg


def test_rowwise_formats_are_weights_formats() -> None:
    pol = P.from_dict(
        {"weights": "int8_rowwise", "overrides": [{"match": "emb*", "weights": "int4_rowwise"}]}
    )
    assert pol.for_layer("fc").weights.format == "int8_rowwise"
    assert pol.for_layer("emb0").weights.format == "int4_rowwise"
    assert pol.for_layer("fc").weights.axis_dependent


def test_casts_quantize_would_refuse_are_refused_when_built() -> None:
    # a stochastic default reaches every role that names only a format
    with pytest.raises(P.PolicyError, match=r"numerics\.weights: int8_rowwise rounds as fbgemm"):
        P.from_dict({"rounding": "stochastic", "weights": "int8_rowwise"})
    with pytest.raises(P.PolicyError, match=r"numerics\.format: .*allowed: nearest_even"):
        P.from_dict({"format": "int2_rowwise", "rounding": "stochastic"})
    with pytest.raises(P.PolicyError, match=r"numerics\.update_rounding: int4_rowwise"):
        P.from_dict(
            {"weights": "int4_rowwise", "master_weights": False, "update_rounding": "stochastic"}
        )
    with pytest.raises(P.PolicyError, match=r"numerics\.overrides\[0\]\.weights: int8_rowwise"):
        P.from_dict({"overrides": [{"match": "*", "rounding": "up", "weights": "int8_rowwise"}]})
    with pytest.raises(P.PolicyError, match="always saturates"):
        P.from_dict({"weights": {"format": "int8", "saturate": False}})
