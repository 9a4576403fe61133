"""FakeClock: a clock whose sleeps take no real time."""

from __future__ import annotations

import asyncio
import sys
import threading

__all__ = ["FakeClock"]

_LARGEST = sys.float_info.max
"""Compared exactly: NaN, infinities and integers too large for a float are all outside."""


class FakeClock:
    """A manual clock: ``sleep`` and ``asleep`` advance time at once instead of waiting.

    Safe to share between threads and asyncio tasks. Every sleep is recorded in ``sleeps``, so tests can assert
    the delays a policy chose without spending them.
    """

    def __init__(self, start: float = 0.0) -> None:
        if not isinstance(start, (int, float)) or isinstance(start, bool) or not -_LARGEST <= start <= _LARGEST:
            shown = f"an integer of {start.bit_length()} bits" if isinstance(start, int) else repr(start)
            raise ValueError(f"FakeClock start must be a finite number of seconds, got {shown}")
        self._now = float(start)
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (must not be negative)."""
        if seconds < 0:
            raise ValueError(f"FakeClock.advance: seconds must be >= 0, got {seconds!r}")
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self._now += max(seconds, 0.0)

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)
        await asyncio.sleep(0)  # still a suspension point, as a real sleep is

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r})"
