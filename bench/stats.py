"""Small statistics shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Batch:
    """What a batch of calls cost, per call: ``wall`` µs, and ``cpu`` µs of this process's CPU (every thread's:
    grpc's C core works in threads of its own)."""

    wall: float
    cpu: float


def measure(calls: Callable[[], object], n: int) -> Callable[[], Batch]:
    """A run of ``calls()``, which makes ``n`` calls, measured as a :class:`Batch`."""

    def run() -> Batch:
        cpu, wall = time.process_time(), time.perf_counter()
        calls()
        return Batch((time.perf_counter() - wall) / n * 1e6, (time.process_time() - cpu) / n * 1e6)

    return run


def paired(batches: int, bare: Callable[[], Batch], others: dict[str, Callable[[], Batch]]) -> dict[str, Any]:
    """Each contender timed in a batch right next to a batch of the bare channel, alternating which goes first:
    per contender, the quartiles of its wall time per call, of its ratio to the bare batch beside it, of its CPU
    per call, and of the CPU it spent per call beyond the bare batch's (``cpu_over_bare``)."""
    ratios: dict[str, list[float]] = {name: [] for name in others}
    extra: dict[str, list[float]] = {name: [] for name in others}
    runs: dict[str, list[Batch]] = {name: [] for name in [BARE, *others]}
    for i in range(batches):
        for name, run in others.items():
            if i % 2:
                base, ours = bare(), run()
            else:
                ours, base = run(), bare()
            ratios[name].append(ours.wall / base.wall)
            extra[name].append(ours.cpu - base.cpu)
            runs[name].append(ours)
            runs[BARE].append(base)
    result: dict[str, Any] = {
        name: {
            "us_per_call": quartiles([b.wall for b in measured]),
            "cpu_us_per_call": quartiles([b.cpu for b in measured]),
        }
        for name, measured in runs.items()
    }
    for name in others:
        result[name]["ratio"] = quartiles(ratios[name])
        result[name]["cpu_over_bare"] = quartiles(extra[name])
    return result
