"""Counts over a sliding time window, in slices that expire in turn: what the budget and the throttle keep."""

from __future__ import annotations

import math

from ._clock import Clock

SLICES = 10


class Tally:
    """``width`` counts (``totals``; the first two also as ``first`` and ``second``) of the events of the last
    ``window`` seconds, on ``clock``.

    Not thread-safe: its owner holds a lock around it.
    """

    __slots__ = ("_clock", "_head", "_slices", "_span", "totals")

    def __init__(self, window: float, clock: Clock, width: int = 2) -> None:
        self._clock = clock
        self._span = window / SLICES
        self._slices = [[0] * width for _ in range(SLICES)]
        self._head = math.floor(clock.now() / self._span)
        self.totals = [0] * width

    @property
    def first(self) -> int:
        return self.totals[0]

    @property
    def second(self) -> int:
        return self.totals[1]

    def roll(self) -> list[int]:
        """Expire the slices that fell out of the window; returns the current slice."""
        head = math.floor(self._clock.now() / self._span)
        slices = self._slices
        if head > self._head:
            totals = self.totals
            for index in range(self._head + 1, min(head, self._head + SLICES) + 1):
                expired = slices[index % SLICES]
                for column, count in enumerate(expired):
                    totals[column] -= count
                    expired[column] = 0
            self._head = head
        return slices[self._head % SLICES]

    def add(self, first: int = 0, second: int = 0) -> None:
        current = self.roll()
        current[0] += first
        current[1] += second
        self.totals[0] += first
        self.totals[1] += second

    def count(self, column: int) -> None:
        """Count one event in ``column``."""
        self.roll()[column] += 1
        self.totals[column] += 1
