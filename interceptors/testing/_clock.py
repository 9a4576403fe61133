"""FakeClock: a clock whose sleeps take no real time."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import sys
import threading
from collections.abc import Callable

__all__ = ["FakeClock"]

_log = logging.getLogger("interceptors")

_LARGEST = sys.float_info.max
"""Compared exactly: NaN, infinities and integers too large for a float are all outside."""


class FakeClock:
    """A manual clock: ``sleep`` and ``asleep`` advance time at once instead of waiting.

    Safe to share between threads and asyncio tasks. Every sleep of a policy (``sleep``, ``asleep``) is recorded in
    ``sleeps``, so tests can assert the delays a policy chose without spending them.

    It is also a ``grpc_testing.Time`` (``time``, ``call_in``, ``call_at``, ``sleep_for``, ``sleep_until``): given to
    grpcio-testing (``grpc_testing.channel(descriptors, clock)``, ``grpc_testing.server_from_dictionary``) and to the
    policies, one fake time drives both. What grpcio-testing schedules runs when time reaches it (``advance``, a
    sleep), in the thread that moved time on; what is due at once runs at once.
    """

    def __init__(self, start: float = 0.0) -> None:
        if not isinstance(start, (int, float)) or isinstance(start, bool) or not -_LARGEST <= start <= _LARGEST:
            shown = f"an integer of {start.bit_length()} bits" if isinstance(start, int) else repr(start)
            raise ValueError(f"FakeClock start must be a finite number of seconds, got {shown}")
        self._now = float(start)
        self._lock = threading.Lock()
        self._scheduled: list[tuple[float, int, _Scheduled]] = []
        self._order = itertools.count()
        self._running = threading.RLock()  # what is due runs one at a time, in time order
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (must not be negative)."""
        if seconds < 0:
            raise ValueError(f"FakeClock.advance: seconds must be >= 0, got {seconds!r}")
        with self._lock:
            self._now += seconds
        self._run_due()

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self._now += max(seconds, 0.0)
        self._run_due()

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)
        await asyncio.sleep(0)  # still a suspension point, as a real sleep is

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r})"

    # grpc_testing.Time

    def time(self) -> float:
        return self._now

    def call_in(self, behavior: Callable[[], object], delay: float) -> _Scheduled:
        return self.call_at(behavior, self._now + delay)

    def call_at(self, behavior: Callable[[], object], time: float) -> _Scheduled:
        scheduled = _Scheduled(behavior)
        with self._lock:
            heapq.heappush(self._scheduled, (time, next(self._order), scheduled))
        self._run_due()
        return scheduled

    def sleep_for(self, duration: float) -> None:
        self.advance(max(duration, 0.0))

    def sleep_until(self, time: float) -> None:
        with self._lock:
            self._now = max(self._now, time)
        self._run_due()

    def _run_due(self) -> None:
        """Run what was scheduled for now or earlier, one at a time in time order (outside the clock's lock: a
        behavior may schedule more); one that raises is logged, as grpc_testing's own fake time does."""
        with self._running:
            while True:
                with self._lock:
                    if not self._scheduled or self._scheduled[0][0] > self._now:
                        return
                    scheduled = heapq.heappop(self._scheduled)[2]
                try:
                    scheduled.run()
                except Exception:
                    _log.exception("a behavior scheduled on a FakeClock failed")


class _Scheduled:
    """What :meth:`FakeClock.call_at` scheduled: ``cancel()`` it before it runs (of a ``grpc.Future``, what
    grpc_testing asks for: ``cancel`` and ``cancelled``)."""

    __slots__ = ("_behavior", "_lock", "_state")

    def __init__(self, behavior: Callable[[], object]) -> None:
        self._behavior, self._lock, self._state = behavior, threading.Lock(), "waiting"

    def cancel(self) -> bool:
        with self._lock:
            if self._state == "waiting":
                self._state = "cancelled"
            return self._state == "cancelled"

    def cancelled(self) -> bool:
        return self._state == "cancelled"

    def run(self) -> None:
        with self._lock:
            if self._state != "waiting":
                return
            self._state = "ran"
        self._behavior()
