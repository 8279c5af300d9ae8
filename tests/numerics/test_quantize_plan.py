"""``numerics.quantize.plan``: the validated cast that ``quantize`` and the training modules run."""

import pytest
import torch

import numerics
from numerics import formats
from numerics.formats import FloatFormat
from numerics.nn.modules.caster import Caster
from numerics.nn.policy import Cast
from numerics.quantize import plan
from numerics.rounding import Rounding


def test_a_plan_gives_what_quantize_gives_against_torch_casts():
    x = torch.randn(300, 40) * 100
    assert torch.equal(plan("bf16")(x), x.to(torch.bfloat16).float())
    assert torch.equal(plan("fp16", "nearest_even")(x, -1), x.to(torch.float16).float())
    y = plan("mxfp8_e4m3")(x, 0)
    assert torch.equal(y, numerics.quantize(x, "mxfp8_e4m3", axis=0, backend="reference"))


def test_plan_validates_once_with_quantizes_messages():
    with pytest.raises(KeyError, match="mxfp8_e4m3"):
        plan("mxfp8_e4m")
    with pytest.raises(ValueError, match="backend='fast'; allowed: auto"):
        plan("bf16", backend="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"sr_bits=0; allowed 1\.\.24"):
        plan("bf16", "stochastic", sr_bits=0)
    with pytest.raises(ValueError, match="fp4_e2m1 has neither inf nor NaN"):
        plan("fp4_e2m1", saturate=False)


def test_plan_facts():
    p = plan("bf16", "sr")
    assert p.mode is Rounding.STOCHASTIC and p.fmt.name == "bf16" and not p.identity
    assert plan("fp32").identity and not plan("fp32", saturate=True).identity


def test_a_re_registered_name_gets_a_new_plan():
    name = "test_plan_user_e4m2"
    formats.register(FloatFormat(name, 4, 2))
    first = plan(name)(torch.tensor([1.1]))
    formats.register(FloatFormat(name, 4, 5), overwrite=True)
    second = plan(name)(torch.tensor([1.1]))
    assert first.item() == 1.0  # 1.1 on a 2-bit mantissa grid: step 0.25
    assert second.item() == 1.09375  # 5 bits: step 1/32, 1.1 -> 35/32


def test_caster_runs_the_plan_and_returns_identity_casts_untouched():
    caster = Caster(seed=0)
    x = torch.randn(64, 32)
    assert caster(x, Cast("fp32"), -1, "weights", "fc") is x
    y = caster(x, Cast("mxint8"), 0, "weights", "fc")
    assert torch.equal(y, numerics.quantize(x, "mxint8", axis=0, backend="reference"))
    sr = Cast("bf16", Rounding.STOCHASTIC)
    a = caster(x, sr, -1, "grads", "fc")
    b = caster(x, sr, -1, "grads", "fc")
    assert not torch.equal(a, b)  # the role's generator advances between calls
    fresh = Caster(seed=0)
    assert torch.equal(fresh(x, sr, -1, "grads", "fc"), a)  # and is seeded by the policy


def test_small_native_casts_keep_the_formats_overflow_rules():
    """The plan's direct route to torch's cast (small tensors) against ml_dtypes, whose e4m3fn
    cast overflows to NaN as the format does, and torch's own saturating cast."""
    import ml_dtypes
    import numpy as np

    x = torch.tensor([500.0, -470.0, 440.0, 1e-9, -0.0, float("nan")])
    want = torch.from_numpy(x.numpy().astype(ml_dtypes.float8_e4m3fn).astype(np.float32))
    got = plan("fp8_e4m3")(x)
    assert torch.equal(got.isnan(), want.isnan()) and torch.equal(
        got[~got.isnan()].view(torch.int32), want[~want.isnan()].view(torch.int32)
    )
    assert got.isnan().tolist() == [True, True, False, False, False, True]
    sat = plan("fp8_e4m3", saturate=True)(x[:5])
    assert torch.equal(sat, x[:5].to(torch.float8_e4m3fn).float())  # torch's cast saturates
    scalar = torch.tensor(1.00390625)  # 1 + 2**-8: a tie between bf16 neighbours 1 and 1 + 2**-7
    y = plan("bf16")(scalar)
    assert y.shape == () and y.item() == 1.0 == scalar.to(torch.bfloat16).item()
    half = torch.tensor([70000.0, 1.5], dtype=torch.bfloat16)
    assert torch.equal(plan("fp16")(half), half.float().to(torch.float16).to(torch.bfloat16))


def test_the_native_cast_detaches_and_never_returns_its_input():
    w = torch.tensor([1.00390625, -3.0, 70000.0], requires_grad=True)  # a tie, exact, overflow
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        y = plan(name)(w)
        assert not y.requires_grad and y.grad_fn is None
        assert torch.equal(y, w.detach().to(dtype).float())
        y.zero_()  # a new tensor: writing to it leaves the parameter alone
        assert w[1].item() == -3.0
    sat = plan("fp16", saturate=True)(w)
    assert sat.tolist() == [1.00390625, -3.0, 65504.0]  # 1 + 2**-8 is exact in fp16


def _tensors_in(obj: object, seen: set[int], depth: int = 0) -> list[torch.Tensor]:
    """Tensors a callable reaches through its closures (and lists/tuples in them)."""
    if id(obj) in seen or depth > 10:
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [obj]
    found: list[torch.Tensor] = []
    items = list(obj) if isinstance(obj, list | tuple) else []
    for cell in getattr(obj, "__closure__", None) or ():
        try:
            items.append(cell.cell_contents)
        except ValueError:
            continue
    for item in items:
        found += _tensors_in(item, seen, depth + 1)
    return found


@pytest.mark.parametrize("backend", ["compiled", "eager"])
@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("mxfp8_e4m3", "nearest_even"),
        ("mxint8", "toward_zero"),
        ("mx6", "up"),
        ("fp6_e2m3", "down"),
    ],
)
def test_prepared_casts_serve_new_values_and_keep_no_inputs(backend, name, mode):
    """A plan keeps each shape's cast prepared (layout, kernel, parameters): a later call with
    other values of that shape must give their own result (the float64 reference), and the
    prepared cast must not hold on to the tensors it was prepared with."""
    p = plan(name, mode, backend=backend)
    g = torch.Generator().manual_seed(1)
    for axis in (0, -1):
        for _ in range(3):
            x = torch.randn(96, 48, generator=g) * torch.rand(1, generator=g) * 100
            ref = numerics.quantize(x, name, mode, axis=axis, backend="reference")
            assert torch.equal(p(x, axis), ref), (axis, name, mode)
    # plans are shared (cached per format), so other tests may have prepared other shapes
    casts = {k[1]: c for k, c in p.prepared.items() if k[0] == (96, 48)}
    assert sorted(casts) == [0, 1] and all(c.route is p.route(x, a) for a, c in casts.items())
    assert all(t.numel() < 96 * 48 for c in casts.values() for t in _tensors_in(c.run, set()))
