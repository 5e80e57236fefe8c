"""The intervals against their definitions: Wilson's formula by hand, the bootstrap's
order statistics, its coverage on data with a known median, and inf handling."""

import math

import numpy as np
import pytest

from optbench import stats


def _wilson_by_hand(k, n, z=1.959963984540054):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k,n", [(0, 3), (1, 3), (2, 3), (3, 3), (0, 5), (4, 5), (17, 40)])
def test_wilson_matches_the_formula(k, n):
    lo, hi = stats.wilson(k, n)
    want = _wilson_by_hand(k, n)
    assert lo == pytest.approx(max(want[0], 0.0), abs=1e-12)
    assert hi == pytest.approx(min(want[1], 1.0), abs=1e-12)
    assert 0 <= lo <= k / n <= hi <= 1


def test_wilson_of_nothing_is_nan():
    assert all(math.isnan(x) for x in stats.wilson(0, 0))


def test_lower_median_takes_the_smaller_middle_value():
    assert stats.lower_median([4, 1, 3, 2]) == 2
    assert stats.lower_median([1, math.inf, 2]) == 2
    assert stats.lower_median([1, math.inf]) == 1
    assert math.isnan(stats.lower_median([]))


def test_median_interval_of_equal_values_is_that_value():
    assert stats.median_interval([0.3, 0.3, 0.3, 0.3]) == (0.3, 0.3)
    assert stats.median_interval([7.0]) == (7.0, 7.0)
    assert all(math.isnan(x) for x in stats.median_interval([math.nan, math.nan]))


def test_median_interval_keeps_inf_as_inf_and_is_deterministic():
    lo, hi = stats.median_interval([100.0, 200.0, math.inf])
    assert lo == 100.0 and hi == math.inf
    assert stats.median_interval([1.0, 5.0, 2.0, 9.0]) == stats.median_interval([1.0, 5.0, 2.0, 9.0])


def test_median_interval_lies_among_the_data():
    values = [3.0, 1.0, 4.0, 1.5, 9.0]
    lo, hi = stats.median_interval(values)
    assert lo in values and hi in values and lo <= stats.lower_median(values) <= hi


def test_bootstrap_interval_covers_a_known_median_about_as_often_as_promised():
    """Normal samples of 25 with median 0: the 95 % interval should hold 0 in roughly 95 %
    of 300 fixed-seed trials (the percentile bootstrap of a median is close to its nominal
    level at this size; the band allows for its known slight miscalibration)."""
    rng = np.random.default_rng(1)
    hits = sum(lo <= 0.0 <= hi for lo, hi in (
        stats.median_interval(rng.standard_normal(25), resamples=500, seed=s) for s in range(300)))
    assert 0.88 <= hits / 300 <= 0.995


def test_separated_means_no_overlap():
    assert stats.separated((0.1, 0.3), (0.4, 0.6))
    assert not stats.separated((0.1, 0.5), (0.4, 0.6))
    assert not stats.separated((0.1, math.nan), (0.4, 0.6))
