"""Small statistics shared by the benchmarks."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def quartiles(samples: Sequence[float]) -> dict[str, float]:
    """Median and the quartiles around it."""
    if len(samples) == 1:
        return {"median": samples[0], "q1": samples[0], "q3": samples[0]}
    q = statistics.quantiles(samples, n=4, method="inclusive")
    return {"median": statistics.median(samples), "q1": q[0], "q3": q[2]}


def percentile(samples: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) of ``samples``, interpolated; 0 for no samples."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    k = (len(ordered) - 1) * p / 100
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)
