"""Element-space rounding by float arithmetic (``numerics.kernels.grid``), against hand-worked
values on small grids, and stochastic rounding against the integer core's rule on the same
random bits."""

from __future__ import annotations

import pytest
import torch

from numerics.formats import FixedFormat, get
from numerics.kernels.core import sr_random
from numerics.kernels.grid import round_elements
from numerics.kernels.params import params_for
from numerics.rounding import Rounding

CPU = torch.device("cpu")
# integers -7 .. 7 (int4's grid), saturating, with its one zero +0
INT4 = get("int4").grid
XS = [2.5, 3.5, -2.5, -0.4, 6.6, -9.0, 0.0, -0.0, 1.25]
WANT = {  # by hand
    Rounding.NEAREST_EVEN: [2.0, 4.0, -2.0, 0.0, 7.0, -7.0, 0.0, 0.0, 1.0],
    Rounding.NEAREST_AWAY: [3.0, 4.0, -3.0, 0.0, 7.0, -7.0, 0.0, 0.0, 1.0],
    Rounding.TOWARD_ZERO: [2.0, 3.0, -2.0, 0.0, 6.0, -7.0, 0.0, 0.0, 1.0],
    Rounding.UP: [3.0, 4.0, -2.0, 0.0, 7.0, -7.0, 0.0, 0.0, 2.0],
    Rounding.DOWN: [2.0, 3.0, -3.0, -1.0, 6.0, -7.0, 0.0, 0.0, 1.0],
}


def _bits(t: torch.Tensor) -> list[int]:
    return t.view(torch.int32).tolist()


@pytest.mark.parametrize("mode", list(WANT))
def test_an_integer_grid_by_hand(mode: Rounding) -> None:
    p, q = params_for(INT4, True, None, 23, CPU)
    xs = torch.tensor(XS)
    y = round_elements(xs, xs, p, q, True, mode)
    assert _bits(y) == _bits(torch.tensor(WANT[mode])), y.tolist()  # +0 only, bit for bit


@pytest.mark.parametrize("mode", [Rounding.UP, Rounding.DOWN])
def test_an_underflowed_value_is_inexact_when_the_input_says_so(mode: Rounding) -> None:
    """xs = 0 scaled from a nonzero x: one step away from zero in the mode's direction."""
    p, q = params_for(INT4, True, None, 23, CPU)
    xs = torch.tensor([0.0, -0.0, 0.0])
    x = torch.tensor([1e-40, -1e-40, 0.0])
    y = round_elements(xs, x, p, q, True, mode).tolist()
    assert y == ([1.0, 0.0, 0.0] if mode is Rounding.UP else [0.0, -1.0, 0.0])


def test_a_float_grid_by_hand() -> None:
    """fp4_e2m1 (0, 0.5, 1, 1.5, 2, 3, 4, 6): the step doubles each binade."""
    p, q = params_for(get("fp4_e2m1"), True, None, 23, CPU)
    xs = torch.tensor([0.25, 0.75, 1.25, 2.5, 3.5, 5.0, 7.0, -2.6])
    near = round_elements(xs, xs, p, q, False, Rounding.NEAREST_EVEN).tolist()
    assert near == [0.0, 1.0, 1.0, 2.0, 4.0, 4.0, 6.0, -3.0]
    down = round_elements(xs, xs, p, q, False, Rounding.DOWN).tolist()
    assert down == [0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, -3.0]


def test_stochastic_rounding_is_the_integer_core_rule_on_the_same_bits() -> None:
    """Up exactly when the R-bit random integer is below floor(f * 2**R), f the dropped
    fraction (the integer core's rule), element by element."""
    grid = FixedFormat("q4", 8, 4)  # steps of 1/16
    keys = torch.tensor([123, 456], dtype=torch.int32)
    p, q = params_for(grid, True, keys, 4, CPU)  # 4 random bits: f * 16 is an integer here
    g = torch.Generator().manual_seed(0)
    xs = torch.randint(-900, 900, (4096,), generator=g).float() / 256  # f in sixteenths
    y = round_elements(xs, xs, p, q, True, Rounding.STOCHASTIC)
    t = xs.abs() * 16
    n, f16 = torch.floor(t), (t - torch.floor(t)) * 16
    rnd = sr_random(xs.shape, p, CPU).float()
    want = torch.copysign((n + (rnd < f16).float()) / 16, xs)
    want = torch.where(want == 0, 0.0, want)
    assert torch.equal(y, want)
    assert 0 < int((y != torch.round(xs * 16) / 16).sum()) < xs.numel()  # both neighbours
