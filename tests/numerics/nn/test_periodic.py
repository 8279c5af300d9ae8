"""Periodic regularisers (``numerics.nn.periodic``).

Planted answers: weights placed exactly on, or exactly halfway between, the levels of a grid
whose step is a power of two (so ``w / delta`` is exact), where sin^2 and the hat are 0 and 1
by hand; the sign and size of the gradient from the closed forms ``(pi/delta) sin(2 pi u)`` and
``2/delta``; and SGD on the penalty alone, which must carry uniformly spread weights (mean
distance 1/4 of a step) onto the grid.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from numerics.nn.periodic import (
    AmplitudeSchedule,
    FrequencySchedule,
    Kind,
    PeriodicRegularizer,
    PeriodicSpec,
    Ramp,
    evaluate_hardening,
    parse_periodic,
)

DELTA = 0.125  # with bits=4 (qmax 7) and one weight at 7 * DELTA, the grid step is exactly this


def linear_with(values: list[float]) -> nn.Linear:
    m = nn.Linear(len(values), 1, bias=True)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([values]))
    return m


def uniform_mlp(seed: int = 0) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand(p.shape, generator=g) * 2 - 1)
    return model


# --- the penalty on planted weights ---------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sin2", "hat"])
def test_penalty_zero_on_the_grid(kind: str) -> None:
    model = linear_with([k * DELTA for k in range(-7, 8)])
    reg = PeriodicRegularizer(model, 4, kind, amplitude=3.0)
    assert reg.deltas == {"weight": DELTA}
    # sin(pi k) in float32 is not exactly 0 (pi is rounded): |sin(pi k)| <= 7 * 2**-22 here
    assert abs(float(reg.penalty(0).detach())) < 1e-9
    assert reg.distance() == 0.0


@pytest.mark.parametrize("kind", ["sin2", "hat"])
def test_penalty_at_half_steps_equals_hand_value(kind: str) -> None:
    # one weight pins delta (7 * DELTA, on the grid); three sit exactly halfway between levels
    model = linear_with([7 * DELTA, 0.5 * DELTA, -2.5 * DELTA, 3.5 * DELTA])
    reg = PeriodicRegularizer(model, 4, kind, amplitude=0.01)
    # sin^2(pi/2) = 1 and 2|0.5 - round(0.5)| = 1, three times, times lambda
    assert float(reg.penalty(0).detach()) == pytest.approx(0.03, rel=1e-6)
    assert reg.distance() == pytest.approx(3 * 0.5 / 4)


@pytest.mark.parametrize("kind", ["sin2", "hat"])
def test_gradient_points_away_from_the_nearest_level(kind: str) -> None:
    u = [7.0, 0.3, 0.7, -0.3, -2.8, 2.2]  # offsets in steps; 7 pins delta
    model = linear_with([x * DELTA for x in u])
    lam = 0.5
    reg = PeriodicRegularizer(model, 4, kind, amplitude=lam)
    reg.penalty(0).backward()
    grad = model.weight.grad
    assert grad is not None
    for i, x in enumerate(u[1:], start=1):
        toward = round(x) - x  # descent (w -= lr * grad) must move along this sign
        assert math.copysign(1, -float(grad[0, i])) == math.copysign(1, toward), (x, grad)
        if kind == "sin2":
            expected = lam * math.pi / DELTA * math.sin(2 * math.pi * x)
        else:
            expected = lam * 2 / DELTA * math.copysign(1, x - round(x))
        assert float(grad[0, i]) == pytest.approx(expected, rel=1e-4)
    assert model.bias.grad is None  # biases are not regularised


def test_sgd_on_the_penalty_alone_lands_on_the_grid() -> None:
    model = uniform_mlp()
    reg = PeriodicRegularizer(model, 4, "sin2", amplitude=1.0)
    start = reg.distance()
    assert start == pytest.approx(0.25, abs=0.02)  # uniform offsets in [-1/2, 1/2]: E|e| = 1/4
    # near a level the error contracts by 1 - lr * lam * 2 pi^2 / delta^2 ~ 0.5 per step
    # (delta ~ 1/7); a weight starting next to a half step escapes by x1.5 per step
    opt = torch.optim.SGD(model.parameters(), lr=5e-4)
    for step in range(300):
        opt.zero_grad()
        reg.penalty(step).backward()
        opt.step()
    assert reg.distance() < 1e-4
    before = [p.detach().clone() for _, p in reg.params]
    report = reg.harden_()
    assert report.max_change_steps < 1e-4
    for (_, p), b in zip(reg.params, before, strict=True):
        assert (p - b).abs().max() < 1e-4 * max(reg.deltas.values())
    assert reg.distance() == 0.0


def test_hat_with_a_decaying_step_lands_on_the_grid() -> None:
    model = uniform_mlp(1)
    reg = PeriodicRegularizer(model, 4, "hat", amplitude=1.0)
    assert reg.distance() == pytest.approx(0.25, abs=0.02)
    # the hat's gradient has constant size 2/delta, so each step moves a weight by
    # 2 lr / delta^2 ~ 0.02 steps of the grid at first; decaying lr (x0.98 per step) shrinks
    # the bounce around a level to ~1e-6 steps by the end
    opt = torch.optim.SGD(model.parameters(), lr=2e-4)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.98)
    for step in range(400):
        opt.zero_grad()
        reg.penalty(step).backward()
        opt.step()
        sched.step()
    assert reg.distance() < 1e-4


def test_frequency_schedule_refines_nested_grids() -> None:
    freq = FrequencySchedule(start_bits=2, steps_per_bit=10)
    reg = PeriodicRegularizer(
        linear_with([7 * DELTA, 4 * DELTA, 2 * DELTA]),
        4,
        "hat",
        amplitude=AmplitudeSchedule(1.0, start=5),
        frequency=freq,
    )
    # periods 4, 2, 1 steps of the 4-bit grid, counted from the start at step 5
    assert [reg.period_at(s) for s in (5, 14, 15, 25, 100)] == [4.0, 4.0, 2.0, 1.0, 1.0]
    # in units of the period: period 2 gives u = 3.5, 2, 1 (hat 1 + 0 + 0); period 4 gives
    # u = 1.75, 1, 0.5 (hat 0.5 + 0 + 1); period 1 puts every weight on the grid
    assert float(reg.penalty(15).detach()) == pytest.approx(1.0)
    assert float(reg.penalty(5).detach()) == pytest.approx(1.5)
    assert float(reg.penalty(25).detach()) == 0.0
    assert float(reg.penalty(4).detach()) == 0.0  # before the start


def test_amplitude_schedules() -> None:
    lin = AmplitudeSchedule(2.0, start=10, ramp_steps=100)
    assert [lin.at(s) for s in (0, 9, 10, 60, 110, 500)] == [0, 0, 0, 1.0, 2.0, 2.0]
    exp = AmplitudeSchedule(2.0, start=10, ramp_steps=100, ramp="exponential")
    assert exp.ramp is Ramp.EXPONENTIAL
    vals = [exp.at(s) for s in range(10, 111)]
    assert vals[0] == 0.0 and vals[-1] == pytest.approx(2.0)
    assert all(b > a for a, b in itertools.pairwise(vals))
    assert exp.at(60) < lin.at(60)
    assert AmplitudeSchedule(0.5).at(0) == 0.5


def test_grid_frozen_at_start_and_regridded_on_schedule() -> None:
    model = linear_with([7 * DELTA, DELTA])
    frozen = PeriodicRegularizer(model, 4, amplitude=AmplitudeSchedule(1.0, start=3))
    regrid = PeriodicRegularizer(
        model, 4, amplitude=AmplitudeSchedule(1.0, start=3), regrid_every=5
    )
    with torch.no_grad():
        model.weight.mul_(2)  # before the start: the grid is taken from these weights
    frozen.penalty(3)
    regrid.penalty(3)
    assert frozen.deltas["weight"] == regrid.deltas["weight"] == 2 * DELTA
    with torch.no_grad():
        model.weight.mul_(2)
    frozen.penalty(8)
    regrid.penalty(7)
    assert regrid.deltas["weight"] == 2 * DELTA  # not yet due
    regrid.penalty(8)
    assert frozen.deltas["weight"] == 2 * DELTA
    assert regrid.deltas["weight"] == 4 * DELTA


# --- hardening ------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_harden_leaves_at_most_2_pow_bits_values(bits: int) -> None:
    model = uniform_mlp(2)
    reg = PeriodicRegularizer(model, bits)
    deltas = reg.deltas
    with torch.no_grad():
        model[0].weight[0, 0] = 5.0  # past the frozen range: clamped to the top level
    report = reg.harden_()
    qmax = 2 ** (bits - 1) - 1
    for (name, p), entry in zip(reg.params, report.entries, strict=True):
        values = torch.unique(p)
        assert entry.levels == values.numel() <= 2**bits - 1
        k = values / deltas[name]
        assert torch.equal(k, torch.round(k)) and k.abs().max() <= qmax
    assert float(model[0].weight[0, 0].detach()) == pytest.approx(qmax * deltas["0.weight"])
    # biases are untouched: still the uniform draws
    assert torch.unique(model[0].bias).numel() == 64


def test_evaluate_hardening_reports_both_numbers() -> None:
    model = linear_with([7 * DELTA, 0.25 * DELTA, -1.75 * DELTA])
    reg = PeriodicRegularizer(model, 4)
    result = evaluate_hardening(reg, lambda m: float(m.weight.sum()))
    assert result.before == pytest.approx(5.5 * DELTA)
    assert result.after == pytest.approx(5 * DELTA)  # 0.25 -> 0, -1.75 -> -2
    assert result.report.max_change_steps == pytest.approx(0.25)


def test_default_selection_and_include_patterns() -> None:
    model = nn.Sequential(nn.Embedding(10, 8), nn.Conv1d(8, 8, 3), nn.LayerNorm(8), nn.Linear(8, 4))
    assert PeriodicRegularizer(model, 8).names == ["0.weight", "1.weight", "3.weight"]
    assert PeriodicRegularizer(model, 8, include="3.*").names == ["3.weight", "3.bias"]
    assert PeriodicRegularizer(model, 8, include=["0.*", "2.weight"]).names == [
        "0.weight",
        "2.weight",
    ]
    tied = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    tied[1].weight = tied[0].weight
    assert PeriodicRegularizer(tied, 8).names == ["0.weight"]


# --- names and arguments --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("periodic_sin2_b4", PeriodicSpec(Kind.SIN2, 4)),
        ("periodic_hat_b8", PeriodicSpec(Kind.HAT, 8)),
        ("periodic_hat_b2", PeriodicSpec(Kind.HAT, 2)),
        ("periodic_sin2_b16", PeriodicSpec(Kind.SIN2, 16)),
        (" Periodic-SIN2-b3 ", PeriodicSpec(Kind.SIN2, 3)),
        ("periodic_sin2_b1", None),
        ("periodic_sin2_b17", None),
        ("periodic_sin2_b04", None),
        ("periodic_cos_b4", None),
        ("periodic_sin2", None),
        ("periodic_sin2_b4_x", None),
        ("int8", None),
        ("", None),
    ],
)
def test_parse_periodic(name: str, expected: PeriodicSpec | None) -> None:
    assert parse_periodic(name) == expected
    if expected is not None:
        assert parse_periodic(expected.name) == expected


def test_from_spec() -> None:
    reg = PeriodicRegularizer.from_spec(uniform_mlp(), "periodic_hat_b3", amplitude=0.1)
    assert (reg.kind, reg.bits, reg.amplitude.lambda_max) == (Kind.HAT, 3, 0.1)
    with pytest.raises(ValueError, match="spec="):
        PeriodicRegularizer.from_spec(uniform_mlp(), "int8")


@pytest.mark.parametrize(
    ("make", "arg"),
    [
        (lambda m: PeriodicRegularizer(m, 1), "bits="),
        (lambda m: PeriodicRegularizer(m, 17), "bits="),
        (lambda m: PeriodicRegularizer(m, 4.0), "bits="),  # type: ignore[arg-type]
        (lambda m: PeriodicRegularizer(m, 4, "cos"), "kind="),
        (lambda m: PeriodicRegularizer(m, 4, amplitude=-1.0), "amplitude="),
        (lambda m: PeriodicRegularizer(m, 4, amplitude="big"), "amplitude="),  # type: ignore[arg-type]
        (lambda m: PeriodicRegularizer(m, 4, include="nothing*"), "include="),
        (lambda m: PeriodicRegularizer(m, 4, regrid_every=-1), "regrid_every="),
        (
            lambda m: PeriodicRegularizer(m, 4, frequency=FrequencySchedule(start_bits=6)),
            "start_bits=",
        ),
        (lambda m: PeriodicRegularizer(nn.LayerNorm(4), 4), "model"),
        (lambda m: AmplitudeSchedule(float("nan")), "lambda_max="),
        (lambda m: AmplitudeSchedule(1.0, start=-1), "start="),
        (lambda m: AmplitudeSchedule(1.0, ramp_steps=-1), "ramp_steps="),
        (lambda m: AmplitudeSchedule(1.0, ramp="cubic"), "ramp="),  # type: ignore[arg-type]
        (lambda m: AmplitudeSchedule(1.0, rate=0.0), "rate="),
        (lambda m: FrequencySchedule(start_bits=1), "start_bits="),
        (lambda m: FrequencySchedule(steps_per_bit=0), "steps_per_bit="),
        (lambda m: PeriodicSpec(Kind.HAT, 20), "bits="),
    ],
)
def test_bad_arguments_name_the_argument(make: object, arg: str) -> None:
    with pytest.raises(ValueError, match=arg):
        make(uniform_mlp())  # type: ignore[operator]
