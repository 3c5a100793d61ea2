"""Summary statistics with pytest-benchmark's names, so records read like its JSON."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
    a = np.asarray(data)
    q1, q3 = np.percentile(a, [25, 75])
    return {
        "min": float(a.min()),
        "max": float(a.max()),
        "mean": float(a.mean()),
        "stddev": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "median": float(np.median(a)),
        "iqr": float(q3 - q1),
        "rounds": int(a.size),
        "data": data,
    }
