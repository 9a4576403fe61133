"""Sliding windows of call outcomes for the circuit breaker: the last N calls, or the last T seconds."""

from __future__ import annotations

import math
from typing import Protocol

from ._clock import Clock
from ._events import CircuitMetrics

# A recorded outcome: bit 0 set (a call), bit 1 failed, bit 2 slow.
_CALL, _FAILED, _SLOW = 1, 2, 4


class _Counts:
    __slots__ = ("executions", "failures", "slow_calls")
    executions: int
    failures: int
    slow_calls: int

    def __init__(self) -> None:
        self.executions = self.failures = self.slow_calls = 0

    def metrics(self) -> CircuitMetrics:
        return CircuitMetrics(self.executions, self.failures, self.executions - self.failures, self.slow_calls)


class CountWindow(_Counts):
    """Outcomes of the last ``size`` calls, in a ring."""

    __slots__ = ("_next", "_ring")

    def __init__(self, size: int) -> None:
        super().__init__()
        self._ring = [0] * size
        self._next = 0

    def record(self, failed: bool, slow: bool) -> None:
        outcome = _CALL | (_FAILED if failed else 0) | (_SLOW if slow else 0)
        ring, i = self._ring, self._next
        old, ring[i] = ring[i], outcome
        self._next = i + 1 if i + 1 < len(ring) else 0
        self.executions += old == 0
        self.failures += (outcome >> 1 & 1) - (old >> 1 & 1)
        self.slow_calls += (outcome >> 2) - (old >> 2)

    def roll(self) -> None:
        """Count windows do not age."""


class TimeWindow(_Counts):
    """Outcomes of the calls in the last ``period`` seconds, in ``buckets`` slices that expire in turn."""

    __slots__ = ("_buckets", "_clock", "_head", "_span")

    def __init__(self, period: float, clock: Clock, buckets: int = 10) -> None:
        super().__init__()
        self._clock = clock
        self._span = period / buckets
        self._buckets = [[0, 0, 0] for _ in range(buckets)]  # executions, failures, slow calls
        self._head = math.floor(clock.now() / self._span)

    def roll(self) -> None:
        """Expire the slices that fell out of the period by now."""
        head = math.floor(self._clock.now() / self._span)
        buckets = self._buckets
        for index in range(self._head + 1, min(head, self._head + len(buckets)) + 1):
            bucket = buckets[index % len(buckets)]
            self.executions -= bucket[0]
            self.failures -= bucket[1]
            self.slow_calls -= bucket[2]
            bucket[0] = bucket[1] = bucket[2] = 0
        self._head = max(head, self._head)

    def record(self, failed: bool, slow: bool) -> None:
        self.roll()
        bucket = self._buckets[self._head % len(self._buckets)]
        bucket[0] += 1
        bucket[1] += failed
        bucket[2] += slow
        self.executions += 1
        self.failures += failed
        self.slow_calls += slow


class Window(Protocol):
    """A breaker's window of closed-state outcomes (:class:`CountWindow` or :class:`TimeWindow`)."""

    executions: int
    failures: int
    slow_calls: int

    def record(self, failed: bool, slow: bool) -> None:
        """Count one call's outcome."""

    def roll(self) -> None:
        """Let outcomes that fell out of the window go."""

    def metrics(self) -> CircuitMetrics:
        """The counts now."""
