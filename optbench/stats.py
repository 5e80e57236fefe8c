"""Confidence intervals for what the report ranks by: success fractions, medians over seeds,
and performance-profile scores.

- Success fractions k/n: the Wilson score interval (Wilson 1927; scipy.stats.binomtest's
  `proportion_ci(method="wilson")`). With the 3-5 seeds of a benchmark cell group the
  normal-approximation interval would leave [0, 1]; Wilson's stays inside it and is not
  degenerate at 0/n or n/n (0/5 gives [0, 0.43]).
- Medians over seeds and scores built from them: a percentile bootstrap over seeds
  (Efron & Tibshirani 1993, ch. 13) with its own seeded generator, so the same results
  always give the same interval. Quantiles of the bootstrap distribution are order
  statistics (numpy's "inverted_cdf"), not interpolated: a steps-to-solve of inf (unsolved)
  stays inf instead of becoming NaN, which is why this does not call scipy.stats.bootstrap
  (it interpolates, and its BCa method is undefined for the tiny, tied samples seeds give).

With n seeds the bootstrap sees at most C(2n - 1, n) distinct resamples (10 for n = 3), so
its intervals are coarse and honest about it: they are as wide as the seeds' spread.
"""

from __future__ import annotations

import math

import numpy as np

LEVEL = 0.95
RESAMPLES = 2000
SEED = 20250101  # fixed: an interval is a function of the data, not of the run


def wilson(successes: int, trials: int, level: float = LEVEL) -> tuple[float, float]:
    """The Wilson score interval for successes/trials; (nan, nan) for no trials."""
    from scipy.stats import binomtest

    if trials <= 0:
        return math.nan, math.nan
    ci = binomtest(int(successes), int(trials)).proportion_ci(level, method="wilson")
    return float(ci.low), float(ci.high)


def lower_median(values, axis=-1) -> np.ndarray | float:
    """The middle value; the smaller of the two middle ones for an even count (what the
    tuning protocol and the ranking use, so that an inf never averages into a finite)."""
    v = np.sort(np.asarray(values, dtype=float), axis=axis)
    n = v.shape[axis]
    if n == 0:
        return math.nan
    return np.take(v, (n - 1) // 2, axis=axis)


def resample_indices(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples, n) indices drawn with replacement: the bootstrap's resamples of n seeds."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def percentile_interval(samples, level: float = LEVEL) -> tuple[float, float]:
    """The central `level` interval of bootstrap `samples` as order statistics."""
    s = np.asarray(samples, dtype=float)
    s = s[~np.isnan(s)]
    if s.size == 0:
        return math.nan, math.nan
    tail = (1 - level) / 2
    lo, hi = np.quantile(s, [tail, 1 - tail], method="inverted_cdf")
    return float(lo), float(hi)


def median_interval(values, level: float = LEVEL, resamples: int = RESAMPLES,
                    seed: int = SEED) -> tuple[float, float]:
    """A percentile-bootstrap interval of the lower median of `values` (one per seed);
    NaN values (a seed with no figure) are left out; (nan, nan) when none is left."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return math.nan, math.nan
    if v.size == 1:
        return float(v[0]), float(v[0])
    boot = lower_median(v[resample_indices(v.size, resamples, seed)], axis=1)
    return percentile_interval(boot, level)


def separated(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """True when two intervals do not overlap (a conservative test of a difference: two
    95 % intervals that do not overlap differ at well below the 5 % level)."""
    if any(math.isnan(x) for x in (*a, *b)):
        return False
    return a[1] < b[0] or b[1] < a[0]
