"""``numerics.route``: the decision table of its docstring, case by case, every route named;
plans follow it; the settings are read once and overridden without touching private state."""

import pytest
import torch

import numerics
from numerics import formats
from numerics.kernels import native, settings
from numerics.kernels.settings import Settings
from numerics.quantize import plan
from numerics.rounding import Rounding, parse
from numerics.route import Route, route

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
DEFAULT = Settings()
NO_CPP = Settings(cpp=False)
NO_COMPILE = Settings(compile=False)
NEITHER = Settings(compile=False, cpp=False)
HAS_CPP = native.library() is not None

# (format, rounding, backend, shape, axis, device, settings, route): the docstring's table
TABLE = [
    ("bf16", "nearest_even", "qtorch", (8,), -1, CPU, DEFAULT, Route.QTORCH),
    ("mx6", "stochastic", "reference", (8, 64), 0, CPU, DEFAULT, Route.REFERENCE),
    ("fp32", "nearest_even", "auto", (8,), -1, CPU, DEFAULT, Route.IDENTITY),
    ("bf16", "nearest_even", "auto", (0, 3), -1, CPU, DEFAULT, Route.IDENTITY),
    # torch's own cast: below its threshold under auto, at any size under eager or with
    # compiling off; e4m3's threshold is lower
    ("bf16", "nearest_even", "auto", (1 << 20) - 1, -1, CPU, DEFAULT, Route.TORCH_CAST),
    ("bf16", "nearest_even", "auto", 1 << 20, -1, CPU, DEFAULT, Route.INDUCTOR),
    ("bf16", "nearest_even", "auto", 1 << 20, -1, CPU, NO_COMPILE, Route.TORCH_CAST),
    ("fp16", "nearest_even", "eager", 1 << 21, -1, CPU, DEFAULT, Route.TORCH_CAST),
    ("fp16", "nearest_even", "compiled", (4,), -1, CPU, DEFAULT, Route.INDUCTOR),
    ("fp8_e4m3", "nearest_even", "auto", 8191, -1, CPU, DEFAULT, Route.TORCH_CAST),
    ("fp8_e4m3", "nearest_even", "auto", 8192, -1, CPU, DEFAULT, Route.CPP),
    ("fp8_e4m3", "nearest_even", "auto", 8192, -1, CPU, NO_CPP, Route.INDUCTOR),
    ("fp8_e4m3", "nearest_even", "auto", 8192, -1, CUDA, DEFAULT, Route.INDUCTOR),
    # element formats without a torch cast: C++ at any size, else compiled from 65536
    ("fp6_e2m3", "stochastic", "auto", (4,), -1, CPU, DEFAULT, Route.CPP),
    ("fp6_e2m3", "stochastic", "auto", 65535, -1, CPU, NO_CPP, Route.EAGER),
    ("fp6_e2m3", "stochastic", "auto", 65536, -1, CPU, NO_CPP, Route.INDUCTOR),
    ("fp6_e2m3", "stochastic", "eager", 65536, -1, CPU, DEFAULT, Route.EAGER),
    ("bf16", "stochastic", "compiled", (4,), -1, CPU, DEFAULT, Route.CPP),
    ("int8_pc", "nearest_even", "auto", (8, 8), 0, CPU, DEFAULT, Route.CPP),
    ("int8", "up", "auto", (8, 8), 0, CPU, NO_CPP, Route.EAGER),
    # blocks: the C++ kernels where they take the layout, then the lean kernels below their
    # threshold (nearest_even), then compiled from it
    ("mxfp8_e4m3", "nearest_even", "auto", (8, 64), -1, CPU, DEFAULT, Route.CPP),
    ("mxfp8_e4m3", "nearest_even", "auto", (8, 64), -1, CPU, NO_CPP, Route.LEAN),
    ("mxfp8_e4m3", "nearest_even", "auto", (64, 64), -1, CPU, NO_CPP, Route.INDUCTOR),
    ("mxfp8_e4m3", "nearest_even", "auto", (64, 64), -1, CPU, NEITHER, Route.LEAN),
    ("mxfp8_e4m3", "up", "auto", (8, 64), -1, CPU, NO_CPP, Route.EAGER),
    ("mxfp8_e4m3_b8", "nearest_even", "auto", (16, 32), -1, CPU, DEFAULT, Route.LEAN),
    ("mxfp8_e4m3_b8", "nearest_even", "auto", (64, 32), 0, CPU, DEFAULT, Route.CPP),
    ("mxfp8_e4m3_b8", "nearest_even", "compiled", (64, 32), -1, CPU, DEFAULT, Route.INDUCTOR),
    ("mx6", "stochastic", "auto", (5, 7), -1, CPU, DEFAULT, Route.CPP),
    ("mx6", "stochastic", "eager", (5, 7), -1, CPU, DEFAULT, Route.EAGER),
    ("mxfp8_e4m3", "nearest_even", "compiled", (8, 64), -1, CUDA, DEFAULT, Route.INDUCTOR),
    ("mxfp8_e4m3", "nearest_even", "auto", (8, 64), -1, CUDA, DEFAULT, Route.LEAN),
]


def _route(name, mode, backend, shape, axis, device, s):
    fmt = formats.get(name)
    shape = (shape,) if isinstance(shape, int) else shape
    kwargs = {"backend": backend, "shape": shape, "axis": axis, "device": device, "settings": s}
    return route(fmt, parse(mode), saturate=fmt.default_saturate, **kwargs)


@pytest.mark.parametrize("case", TABLE, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{c[7].value}")
def test_the_decision_table(case):
    *args, want = case
    if want is Route.CPP and not HAS_CPP:
        pytest.skip(
            "the C++ kernels are off (NUMERICS_NATIVE=0) or did not build (no C++ compiler)"
        )
    assert _route(*args) is want


def test_every_route_is_in_the_table_and_named():
    assert {c[-1] for c in TABLE} == set(Route)
    assert len({r.value for r in Route}) == len({r.label for r in Route}) == len(Route)


@pytest.mark.parametrize("name", ["bf16", "fp8_e4m3", "fp8_e5m2"])
@pytest.mark.parametrize("backend", ["auto", "eager", "compiled"])
def test_a_plans_torch_cast_sizes_are_the_routers(name, backend):
    """A plan sends small casts straight to torch's cast (``torch_cast_below``): for every
    size around the thresholds, that is exactly where the router says TORCH_CAST."""
    p = plan(name, backend=backend)
    for n in (1, 8191, 8192, 8193, (1 << 20) - 1, 1 << 20):
        fast = 0 < n < p.torch_cast_below
        assert fast == (p.route(torch.zeros(n)) is Route.TORCH_CAST), n


@pytest.mark.parametrize(
    ("name", "mode", "axis"),
    [("mxfp8_e4m3", "nearest_even", 0), ("mx6", "stochastic", -1), ("int4_pc", "down", 1)],
)
def test_every_route_gives_the_references_values(name, mode, axis):
    """The same cast down each route the settings and backends allow: bit for bit the
    float64 reference."""
    x = torch.randn(24, 40) * 10
    ref = numerics.quantize(x, name, mode, generator=2, axis=axis, backend="reference")
    seen = set()
    for s in ({}, {"cpp": False}, {"cpp": False, "compile": False}):
        with settings.override(**s):
            for backend in ("auto", "compiled", "eager"):
                p = plan(name, mode, backend=backend)
                seen.add(p.route(x, axis))
                assert torch.equal(p(x, axis, 2), ref), (s, backend)
    assert Route.INDUCTOR in seen and seen & {Route.EAGER, Route.LEAN}
    assert (Route.CPP in seen) == HAS_CPP


def test_settings_are_read_from_the_environment():
    env = {
        "NUMERICS_COMPILE": "0",
        "NUMERICS_COMPILE_MIN_NUMEL": "10",
        "NUMERICS_NATIVE": "off",
        "NUMERICS_LEAN_MAX_NUMEL": "7",
    }
    assert Settings.from_env(env) == Settings(False, 10, False, 7)
    assert Settings.from_env({}) == Settings()
    with pytest.raises(ValueError, match="NUMERICS_LEAN_MAX_NUMEL='many'"):
        Settings.from_env({"NUMERICS_LEAN_MAX_NUMEL": "many"})


def test_an_override_makes_new_plans_and_is_undone():
    before = settings.current()
    p = plan("mxfp8_e4m3")
    x = torch.randn(8, 64)
    with settings.override(cpp=False) as s:
        assert settings.current() is s and not s.cpp
        q = plan("mxfp8_e4m3")
        assert q is not p and q.settings == s
        assert q.route(x) is Route.LEAN  # 512 elements: below lean_max_numel
        with settings.override(lean_max_numel=256):
            assert plan("mxfp8_e4m3").route(x) is Route.INDUCTOR
        assert settings.current() is s
    assert settings.current() is before and plan("mxfp8_e4m3") is p
    assert p.route(x) is (Route.CPP if HAS_CPP else Route.LEAN)


def test_plan_route_reports_the_path_taken():
    """``Plan.route`` is what the prepared cast stores and runs."""
    x = torch.randn(8, 64)
    p = plan("mx6", Rounding.STOCHASTIC)
    p(x, -1, 0)
    cast = p.prepared[((8, 64), 1, CPU)]
    assert cast.route is p.route(x, -1) is p.route(x, 1)
