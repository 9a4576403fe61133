"""Sliding windows of call outcomes for the circuit breaker: the last N calls, or the last T seconds."""

from __future__ import annotations

import math

from .events import CircuitMetrics

_SUCCESS, _FAILURE, _SLOW = 1, 2, 4


class _Counts:
    __slots__ = ("executions", "failures", "slow_calls")

    def __init__(self) -> None:
        self.executions = self.failures = self.slow_calls = 0

    def metrics(self) -> CircuitMetrics:
        return CircuitMetrics(self.executions, self.failures, self.executions - self.failures, self.slow_calls)


class CountWindow(_Counts):
    """Outcomes of the last ``size`` calls."""

    __slots__ = ("_next", "_ring")

    def __init__(self, size: int) -> None:
        super().__init__()
        self._ring = [0] * size
        self._next = 0

    def record(self, now: float, failed: bool, slow: bool) -> None:
        outcome = (_FAILURE if failed else _SUCCESS) | (_SLOW if slow else 0)
        ring, i = self._ring, self._next
        old = ring[i]
        if old:
            self._count(old, -1)
        ring[i] = outcome
        self._next = (i + 1) % len(ring)
        self._count(outcome, 1)

    def _count(self, outcome: int, step: int) -> None:
        self.executions += step
        if outcome & _FAILURE:
            self.failures += step
        if outcome & _SLOW:
            self.slow_calls += step

    def roll(self, now: float) -> None:
        """Count windows do not age."""


class TimeWindow(_Counts):
    """Outcomes of the calls in the last ``period`` seconds, kept in ``buckets`` slices that expire in turn."""

    __slots__ = ("_buckets", "_head", "_span")

    def __init__(self, period: float, now: float, buckets: int = 10) -> None:
        super().__init__()
        self._span = period / buckets
        self._buckets = [[0, 0, 0] for _ in range(buckets)]  # executions, failures, slow calls
        self._head = math.floor(now / self._span)

    def roll(self, now: float) -> None:
        """Expire the slices that fell out of the period by ``now``."""
        head = math.floor(now / self._span)
        buckets = self._buckets
        for index in range(self._head + 1, min(head, self._head + len(buckets)) + 1):
            bucket = buckets[index % len(buckets)]
            self.executions -= bucket[0]
            self.failures -= bucket[1]
            self.slow_calls -= bucket[2]
            bucket[0] = bucket[1] = bucket[2] = 0
        self._head = max(head, self._head)

    def record(self, now: float, failed: bool, slow: bool) -> None:
        self.roll(now)
        bucket = self._buckets[self._head % len(self._buckets)]
        bucket[0] += 1
        self.executions += 1
        if failed:
            bucket[1] += 1
            self.failures += 1
        if slow:
            bucket[2] += 1
            self.slow_calls += 1


Window = CountWindow | TimeWindow
