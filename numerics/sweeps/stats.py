"""Uncertainty over seeds: Student t intervals of a mean and of a difference of two means.

A comparison cell holds one metric per seed. What a reader needs from it is not the sample
standard deviation but how far the true mean (over all seeds one could run) can be from the
mean shown, and whether two cells differ by more than seed noise explains:

- ``mean_interval(values, level)``: the mean and its two-sided Student t confidence interval,
  ``mean ± t_{(1+level)/2, n-1} · s / sqrt(n)`` (``s`` the sample standard deviation, ddof=1).
  One value has no interval.
- ``paired_difference(a, b, level)``: the difference of means when both cells ran the same
  seeds: the t interval of the per-seed differences ``a_i - b_i`` (n-1 degrees of freedom).
  Pairing removes what the two runs of a seed share (initial weights, batch order), so it is
  tighter than an unpaired interval whenever the seeds' results are correlated.
- ``welch_difference(a, b, level)``: the difference of means of two independent samples with
  unequal variances (Welch 1947): ``s_d = sqrt(s_a²/n_a + s_b²/n_b)`` and the
  Welch-Satterthwaite degrees of freedom.
- ``difference(a, b, level)``: paired where the two cells have the same seeds (each once), Welch
  otherwise; ``Difference.significant`` is True when the interval excludes 0.

The intervals are per comparison: a row of eight formats makes seven comparisons to a
baseline, and at the 95% level about one in twenty differences that are really zero is
expected to show as significant. Nothing here corrects for that; the docs say so.

A sample whose values are all equal (a metric that saturates, bit-identical runs) has a zero
standard deviation: its interval is the point itself, and a difference with zero spread is
significant exactly when it is not zero. Paired differences that differ only by the rounding of
the subtraction (a few ulps of the values) count as one shift.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

DEFAULT_LEVEL = 0.95


class Pairing(str, Enum):
    """How a difference of two cells was computed."""

    PAIRED = "paired"
    WELCH = "welch"


def check_level(level: float) -> float:
    """``level`` if it is a confidence level strictly between 0 and 1, else a ValueError."""
    if not isinstance(level, int | float) or not 0.0 < float(level) < 1.0:
        raise ValueError(f"confidence level {level!r}: must be a number strictly between 0 and 1")
    return float(level)


def t_quantile(level: float, df: float) -> float:
    """The two-sided Student t critical value: ``t`` with ``P(|T| <= t) = level`` for ``df``
    degrees of freedom (12.706 for level 0.95 and df 1; 1.960 as df grows)."""
    from scipy.stats import t  # scipy comes with scikit-learn; imported where it is used

    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    return float(t.ppf(0.5 + check_level(level) / 2.0, df))


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values and its confidence interval's half-width (None for n=1)."""

    mean: float
    n: int
    half: float | None
    level: float

    @property
    def low(self) -> float | None:
        return None if self.half is None else self.mean - self.half

    @property
    def high(self) -> float | None:
        return None if self.half is None else self.mean + self.half


def mean_interval(values: Sequence[float], level: float = DEFAULT_LEVEL) -> Interval:
    """The mean of ``values`` and its Student t interval at ``level``."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_interval: no values")
    mean = statistics.fmean(values)
    if n == 1:
        return Interval(mean, 1, None, level)
    se = statistics.stdev(values) / math.sqrt(n)
    return Interval(mean, n, t_quantile(level, n - 1) * se, level)


@dataclass(frozen=True)
class Difference:
    """``mean(a) - mean(b)`` with its interval's half-width (None when either side has one
    value: no test), the degrees of freedom and how it was paired."""

    delta: float
    half: float | None
    df: float | None
    pairing: Pairing
    level: float

    @property
    def significant(self) -> bool | None:
        """True when the interval excludes 0, False when it holds it, None when untested."""
        if self.half is None:
            return None
        return abs(self.delta) > self.half

    @property
    def low(self) -> float | None:
        return None if self.half is None else self.delta - self.half

    @property
    def high(self) -> float | None:
        return None if self.half is None else self.delta + self.half


def paired_difference(
    a: Sequence[float], b: Sequence[float], level: float = DEFAULT_LEVEL
) -> Difference:
    """``mean(a) - mean(b)`` for values paired by position (the same seed at the same index)."""
    if len(a) != len(b) or not a:
        raise ValueError(
            f"paired_difference: needs two equally long samples, got {len(a)}, {len(b)}"
        )
    d = [x - y for x, y in zip(a, b, strict=True)]
    scale = max(abs(v) for v in (*a, *b))
    if max(d) - min(d) <= 8 * sys.float_info.epsilon * scale:  # one shift, up to rounding
        d = [statistics.fmean(d)] * len(d)
    iv = mean_interval(d, level)
    df = None if iv.half is None else float(len(d) - 1)
    return Difference(iv.mean, iv.half, df, Pairing.PAIRED, level)


def welch_difference(
    a: Sequence[float], b: Sequence[float], level: float = DEFAULT_LEVEL
) -> Difference:
    """``mean(a) - mean(b)`` for independent samples (Welch's unequal-variance interval)."""
    if not a or not b:
        raise ValueError("welch_difference: both samples need a value")
    delta = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return Difference(delta, None, None, Pairing.WELCH, level)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0.0:  # both samples constant: no spread to scale by
        return Difference(delta, 0.0, float(len(a) + len(b) - 2), Pairing.WELCH, level)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return Difference(delta, t_quantile(level, df) * se, df, Pairing.WELCH, level)


def difference(
    a: Mapping[Hashable, float] | Sequence[tuple[Hashable, float]],
    b: Mapping[Hashable, float] | Sequence[tuple[Hashable, float]],
    level: float = DEFAULT_LEVEL,
) -> Difference:
    """``mean(a) - mean(b)`` of two cells given as (seed, value) pairs: paired by seed when both
    hold the same seeds, each once, and two or more of them; Welch otherwise."""
    pa = list(a.items()) if isinstance(a, Mapping) else list(a)
    pb = list(b.items()) if isinstance(b, Mapping) else list(b)
    sa, sb = dict(pa), dict(pb)
    same_seeds = len(sa) == len(pa) and len(sb) == len(pb) and sa.keys() == sb.keys()
    if same_seeds and len(sa) >= 2:
        seeds = list(sa)
        return paired_difference([sa[s] for s in seeds], [sb[s] for s in seeds], level)
    return welch_difference([v for _, v in pa], [v for _, v in pb], level)
