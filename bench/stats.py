"""Small statistics shared by the benchmarks."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any


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


BARE = "bare channel"  # the name of the baseline (bench.approaches.BARE.name)


def paired(batches: int, bare: Callable[[], float], others: dict[str, Callable[[], float]]) -> dict[str, Any]:
    """Each contender timed in a batch right next to a batch of the bare channel, alternating which goes first."""
    ratios: dict[str, list[float]] = {name: [] for name in others}
    times: dict[str, list[float]] = {name: [] for name in [BARE, *others]}
    for i in range(batches):
        for name, run in others.items():
            if i % 2:
                base, ours = bare(), run()
            else:
                ours, base = run(), bare()
            ratios[name].append(ours / base)
            times[name].append(ours)
            times[BARE].append(base)
    result = {name: {"us_per_call": quartiles(values)} for name, values in times.items()}
    for name, values in ratios.items():
        result[name]["ratio"] = quartiles(values)
    return result
