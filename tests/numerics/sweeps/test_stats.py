"""Confidence intervals over seeds: t quantiles against printed tables, intervals against
hand-computed values and scipy's own t tests, and their coverage against planted truths."""

from __future__ import annotations

import math
import random

import pytest
from scipy import stats as sps

from numerics.sweeps.stats import (
    Pairing,
    check_level,
    difference,
    mean_interval,
    paired_difference,
    t_quantile,
    welch_difference,
)


@pytest.mark.parametrize(
    ("level", "df", "expected"),
    # two-sided critical values as printed in any t table
    [(0.95, 1, 12.706), (0.95, 2, 4.303), (0.95, 4, 2.776), (0.95, 9, 2.262),
     (0.95, 30, 2.042), (0.90, 5, 2.015), (0.99, 10, 3.169)],
)  # fmt: skip
def test_t_quantile_matches_printed_tables(level: float, df: int, expected: float) -> None:
    assert t_quantile(level, df) == pytest.approx(expected, abs=5e-4)


def test_t_quantile_tends_to_the_normal() -> None:
    assert t_quantile(0.95, 1e7) == pytest.approx(1.95996, abs=1e-4)


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, "0.95", float("nan")])
def test_bad_levels_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        check_level(bad)  # type: ignore[arg-type]


def test_mean_interval_by_hand() -> None:
    # 0.90, 0.92, 0.94: mean 0.92, s = 0.02, se = 0.02 / sqrt(3), t(0.975, 2) = 4.3027
    iv = mean_interval([0.90, 0.92, 0.94])
    assert iv.mean == pytest.approx(0.92) and iv.n == 3
    assert iv.half == pytest.approx(4.302653 * 0.02 / math.sqrt(3), rel=1e-6)
    assert iv.low == pytest.approx(0.92 - iv.half) and iv.high == pytest.approx(0.92 + iv.half)
    one = mean_interval([0.5])
    assert (one.mean, one.half, one.low) == (0.5, None, None)
    assert mean_interval([0.7, 0.7, 0.7]).half == 0.0
    with pytest.raises(ValueError, match="no values"):
        mean_interval([])


def test_paired_difference_agrees_with_scipys_paired_t_test() -> None:
    a = [0.912, 0.931, 0.905, 0.944, 0.921]
    b = [0.901, 0.925, 0.899, 0.930, 0.915]
    d = paired_difference(a, b)
    res = sps.ttest_rel(a, b)
    lo, hi = res.confidence_interval(0.95)
    assert d.pairing is Pairing.PAIRED and d.df == 4
    assert (d.low, d.high) == (pytest.approx(lo), pytest.approx(hi))
    assert d.significant == bool(res.pvalue < 0.05)
    with pytest.raises(ValueError, match="equally long"):
        paired_difference([1.0], [1.0, 2.0])


def test_welch_difference_agrees_with_scipys_welch_test() -> None:
    a = [0.80, 0.84, 0.79, 0.83]
    b = [0.90, 0.91, 0.905]
    d = welch_difference(a, b)
    res = sps.ttest_ind(a, b, equal_var=False)
    lo, hi = res.confidence_interval(0.95)
    assert d.pairing is Pairing.WELCH
    assert d.df == pytest.approx(res.df)
    assert (d.low, d.high) == (pytest.approx(lo), pytest.approx(hi))
    assert d.significant is True and res.pvalue < 0.05
    untested = welch_difference([0.8], b)
    assert untested.half is None and untested.significant is None
    assert untested.delta == pytest.approx(0.8 - 0.905)


def test_constant_samples() -> None:
    assert welch_difference([0.5, 0.5], [0.7, 0.7]).significant is True
    assert welch_difference([0.5, 0.5], [0.5, 0.5]).significant is False
    same = paired_difference([0.9, 0.95], [0.9, 0.95])  # bit-identical runs
    assert (same.delta, same.half, same.significant) == (0.0, 0.0, False)
    shifted = paired_difference([0.91, 0.96], [0.90, 0.95])
    assert shifted.half == pytest.approx(0.0, abs=1e-12)


def test_difference_pairs_by_seed_only_when_the_seeds_match() -> None:
    a = {"0": 0.90, "1": 0.95, "2": 0.85}
    b = {"2": 0.84, "0": 0.89, "1": 0.94}  # same seeds, another order: paired by seed
    d = difference(a, b)
    assert d.pairing is Pairing.PAIRED
    assert d.delta == pytest.approx(0.01) and d.half == pytest.approx(0.0, abs=1e-12)
    assert d.significant is True  # a constant shift is real however noisy the seeds are
    assert welch_difference(list(a.values()), list(b.values())).significant is False

    other = difference(a, {"0": 0.89, "1": 0.94, "3": 0.84})
    assert other.pairing is Pairing.WELCH
    repeated = difference([("0", 0.9), ("0", 0.8)], [("0", 0.85), ("1", 0.83)])
    assert repeated.pairing is Pairing.WELCH  # a seed twice in a cell: not a pairing


def _draws(rng: random.Random, n: int, mean: float, sd: float) -> list[float]:
    return [rng.gauss(mean, sd) for _ in range(n)]


def test_planted_same_distribution_is_not_different_and_5_se_apart_is() -> None:
    """Planted data, many times over: two columns drawn from one distribution are reported as
    different at about the 5% rate the level promises (so almost always "not different"); two
    whose means differ by 5 standard errors of the difference are reported as different."""
    rng = random.Random(1234)
    n, sd, trials = 5, 0.01, 2000
    se = sd * math.sqrt(2 / n)
    same = apart = 0
    for _ in range(trials):
        a, b = _draws(rng, n, 0.9, sd), _draws(rng, n, 0.9, sd)
        same += bool(welch_difference(a, b).significant)
        far = [x + 5 * se for x in _draws(rng, n, 0.9, sd)]
        apart += bool(difference(dict(enumerate(far)), dict(enumerate(b))).significant is False)
    assert same / trials < 0.07
    assert apart / trials < 0.05  # 5 SE apart is missed rarely (t(0.975, 4) = 2.78 < 5)


def test_coverage_of_the_intervals_over_planted_truths() -> None:
    """Over many planted samples the 95% intervals hold the true value about 95% of the
    time, and a true difference of 0 is called significant about 5% of the time."""
    rng = random.Random(7)
    trials, covered, false_pos, welch_fp, detected = 3000, 0, 0, 0, 0
    for _ in range(trials):
        a = _draws(rng, 3, 1.0, 0.2)
        iv = mean_interval(a)
        covered += iv.low is not None and iv.high is not None and iv.low <= 1.0 <= iv.high
        seed_effect = _draws(rng, 4, 0.0, 1.0)  # shared by both columns' runs of a seed
        x = [s + e for s, e in zip(seed_effect, _draws(rng, 4, 0.0, 0.1), strict=True)]
        y = [s + e for s, e in zip(seed_effect, _draws(rng, 4, 0.0, 0.1), strict=True)]
        false_pos += bool(paired_difference(x, y).significant)
        welch_fp += bool(welch_difference(_draws(rng, 3, 0, 1), _draws(rng, 5, 0, 3)).significant)
        shifted = [v + 0.5 for v in y]  # 0.5 against a per-seed noise of 0.1 * sqrt(2)
        detected += bool(paired_difference(shifted, x).significant)
    assert 0.93 < covered / trials < 0.97
    assert 0.03 < false_pos / trials < 0.07
    assert 0.03 < welch_fp / trials < 0.075  # Welch is approximate: near, not exactly, 5%
    assert detected / trials > 0.95


def test_paired_shift_up_to_rounding_is_one_shift() -> None:
    # 0.7 - 0.8 and 0.8 - 0.9 differ in their last bits; both are the shift -0.1
    assert (0.7 - 0.8) != (0.8 - 0.9)
    d = paired_difference([0.7, 0.8], [0.8, 0.9])
    assert d.half == 0.0 and d.significant
    assert paired_difference([0.7, 0.8 + 1e-9], [0.8, 0.9]).half > 0  # a real spread stays
