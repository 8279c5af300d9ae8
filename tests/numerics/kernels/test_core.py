"""The float-arithmetic rounding core against independent casts, over whole binades.

``round_magnitude`` relies on Veltkamp's splitting rounding to nearest with ties to even;
these tests check that claim on every float32 value of a normal binade of the target grid
(2**23 values: every tie, every value next to a tie) and of its subnormal range.
"""

import ml_dtypes
import numpy as np
import pytest
import torch

import numerics
from numerics.kernels.core import Q_C, Q_LO, Q_SPLIT, round_magnitude
from numerics.kernels.params import float_params

CASTS = {
    "bf16": ml_dtypes.bfloat16,
    "fp16": np.float16,
    "fp8_e5m2": ml_dtypes.float8_e5m2,
    "fp8_e4m3": ml_dtypes.float8_e4m3fn,
    "fp6_e2m3": ml_dtypes.float6_e2m3fn,
    "fp4_e2m1": ml_dtypes.float4_e2m1fn,
}


def _binade(lo: float) -> torch.Tensor:
    """Every float32 value in [lo, 2 * lo)."""
    start = int(np.float32(lo).view(np.int32))
    return torch.arange(start, start + 2**23, dtype=torch.int32).view(torch.float32)


@pytest.mark.parametrize("name", sorted(CASTS))
@pytest.mark.parametrize("where", ["normal", "subnormal"])
def test_round_magnitude_matches_the_cast_on_a_whole_binade(name, where):
    fmt = numerics.formats.get(name)
    q = float_params(fmt, False, torch.device("cpu"))
    # "normal": the binade at 2**emin (ties there are the grid's densest normal ones);
    # "subnormal": the float32 binade just below 2**emin, where the step is fixed.
    lo = 2.0**fmt.emin if where == "normal" else 2.0 ** (fmt.emin - 1)
    v = _binade(lo)
    got = round_magnitude(v, q[Q_SPLIT], q[Q_LO], q[Q_C])
    want = torch.from_numpy(v.numpy().astype(CASTS[name]).astype(np.float32))
    assert torch.equal(got, want)
