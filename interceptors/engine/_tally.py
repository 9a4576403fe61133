"""Counts over a sliding time window, in slices that expire in turn: what the budget and the throttle keep."""

from __future__ import annotations

import math

from ._clock import Clock

SLICES = 10


class Tally:
    """Two counts (``first``, ``second``) of the events of the last ``window`` seconds, on ``clock``.

    Not thread-safe: its owner holds a lock around it.
    """

    __slots__ = ("_clock", "_head", "_slices", "_span", "first", "second")

    def __init__(self, window: float, clock: Clock) -> None:
        self._clock = clock
        self._span = window / SLICES
        self._slices = [[0, 0] for _ in range(SLICES)]
        self._head = math.floor(clock.now() / self._span)
        self.first = self.second = 0

    def roll(self) -> list[int]:
        """Expire the slices that fell out of the window; returns the current slice."""
        head = math.floor(self._clock.now() / self._span)
        slices = self._slices
        if head > self._head:
            for index in range(self._head + 1, min(head, self._head + SLICES) + 1):
                expired = slices[index % SLICES]
                self.first -= expired[0]
                self.second -= expired[1]
                expired[0] = expired[1] = 0
            self._head = head
        return slices[self._head % SLICES]

    def add(self, first: int = 0, second: int = 0) -> None:
        current = self.roll()
        current[0] += first
        current[1] += second
        self.first += first
        self.second += second
