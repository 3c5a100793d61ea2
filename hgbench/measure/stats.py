"""Summary statistics with pytest-benchmark's names and quartiles, so every record (runs, benches) reads like its JSON.

The one home of these figures: the run record's per-epoch minutes and the bench record's per-step times both come
from `describe`. The bootstrap's resampling (`bootstrap_weights`, percentile intervals, paired p-values) lives here
too, so a record's PCKh interval (hgbench.eval.metrics) and `hgbench compare`'s paired test resample the same way.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import numpy as np


def quartiles(data: Sequence[float]) -> tuple[float, float]:
    """Q1 and Q3 exactly as pytest-benchmark computes them (Wikipedia methods 3 and 2), so records compare."""
    d = sorted(float(v) for v in data)
    n = len(d)
    if n == 1:
        return d[0], d[0]
    if n % 2:
        k, q = n // 4, n % 4
        if q == 1:
            return 0.25 * d[k - 1] + 0.75 * d[k], 0.75 * d[3 * k] + 0.25 * d[3 * k + 1]
        return 0.75 * d[k] + 0.25 * d[k + 1], 0.25 * d[3 * k + 1] + 0.75 * d[3 * k + 2]
    return statistics.median(d[: n // 2]), statistics.median(d[n // 2 :])


def describe(values: Sequence[float]) -> dict:
    """min, max, mean, stddev (sample), median, iqr, rounds and the raw data; all None for an empty sequence."""
    data = [float(v) for v in values]
    if not data:
        return {
            "min": None,
            "max": None,
            "mean": None,
            "stddev": None,
            "median": None,
            "iqr": None,
            "rounds": 0,
            "data": [],
        }
    q1, q3 = quartiles(data)
    return {
        "min": min(data),
        "max": max(data),
        "mean": statistics.fmean(data),
        "stddev": statistics.stdev(data) if len(data) > 1 else 0.0,
        "median": statistics.median(data),
        "iqr": q3 - q1,
        "rounds": len(data),
        "data": data,
    }


# ------------------------------------------------------------------------------------------------------ bootstrap
BOOTSTRAP_RESAMPLES = 1000  # resamples of every bootstrap hgbench reports
BOOTSTRAP_SEED = 0  # fixed, so a record's interval is reproducible from its per-person data
BOOTSTRAP_LEVEL = 0.95


def bootstrap_weights(n: int, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """How often each of `n` items is drawn in each resample (with replacement, `n` draws per resample).

    A statistic that is a function of per-item sums is then ``weights @ values`` for all resamples at once; reusing
    the same weights on two paired samples (the same people scored by two runs) gives the paired bootstrap.

    Returns:
        [resamples, n] int64 counts, each row summing to `n`; [resamples, 0] when `n` is 0.
    """
    rng = np.random.default_rng(seed)
    if n == 0:
        return np.zeros((resamples, 0), dtype=np.int64)
    draws = rng.integers(0, n, size=(resamples, n)) + n * np.arange(resamples)[:, None]  # row r's draws, offset
    return np.bincount(draws.ravel(), minlength=resamples * n).reshape(resamples, n)


def percentile_interval(values: np.ndarray, level: float = BOOTSTRAP_LEVEL) -> tuple[float, float] | None:
    """The percentile bootstrap interval of the finite resampled `values`; None when none is finite."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return None
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(v, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_p_value(diffs: np.ndarray) -> float | None:
    """Two-sided bootstrap p-value that the true difference is 0, by inverting `percentile_interval`: the smallest
    ``1 - level`` whose percentile interval (same interpolation) still covers 0, floored at 1 / resamples.

    So the p-value, the interval and the verdict always agree: p < 1 - level exactly when the interval at that level
    leaves out 0 (a p of 0.052 beside an interval that excludes 0 cannot happen).
    """
    d = np.sort(np.asarray(diffs, dtype=np.float64))
    d = d[np.isfinite(d)]
    n = d.size
    if not n:
        return None
    if n == 1:  # no spread to test
        return 1.0
    lo, hi = int(np.searchsorted(d, 0.0, "left")), int(np.searchsorted(d, 0.0, "right"))
    # The interpolated order-statistic positions x where the sorted values are <= 0 (x <= below) and >= 0
    # (x >= above): the interval [value at q (n-1), value at (1-q) (n-1)] covers 0 iff q (n-1) <= below and
    # (1-q) (n-1) >= above.
    if lo < hi:  # some resamples differ by exactly 0
        below, above = hi - 1.0, float(lo)
    elif lo == 0:  # every resample above 0
        below, above = -math.inf, 0.0
    elif lo == n:  # every resample below 0
        below, above = n - 1.0, math.inf
    else:  # 0 falls between two sorted resamples: where the linear interpolation crosses it
        x = lo - 1 + (0.0 - d[lo - 1]) / (d[lo] - d[lo - 1])
        below = above = x
    p = 2.0 * min(below / (n - 1), 1.0 - above / (n - 1))
    return float(min(1.0, max(p, 1.0 / n)))
