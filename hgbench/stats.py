"""Summary statistics with pytest-benchmark's names and quartiles, so every record (runs, benches) reads like its JSON.

The one home of these figures: the run record's per-epoch minutes and the bench record's per-step times both come
from `describe`.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence


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
