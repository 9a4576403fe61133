"""What a server knows of its own load without asking the application, each sampled rather than measured per call:
how late its work starts (an event loop's lag, a worker pool's queue time), the CPU its process uses, its memory,
and how many calls per second it ends. Each takes a clock, and its source can be replaced (tests give fakes).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from ._clock import Clock

__all__ = ["CpuUsage", "Lateness", "Rate", "cpu_count", "memory_utilization"]

Schedule = Callable[[Callable[[], object]], object]
"""Hands a function to what runs the server's work (``loop.call_soon``, ``executor.submit``)."""


class Lateness:
    """How late work starts where the server runs it: every ``interval`` at most, a no-op is handed to ``schedule``,
    and the seconds it waits to run are the lateness. While one waits, its age counts if larger; a measure older
    than two intervals counts as none (0), so that a past stall does not outlive the calls it slowed.

    Probes go out only when :meth:`seconds` is asked, by calls: an idle server sends none.
    """

    __slots__ = ("_clock", "_interval", "_lock", "_measured", "_seconds", "_sent")

    def __init__(self, clock: Clock, interval: float) -> None:
        self._clock, self._interval = clock, interval
        self._lock = threading.Lock()
        self._seconds = 0.0
        self._measured = -interval * 2  # when the last probe ran
        self._sent: float | None = None  # when the probe waiting to run was sent

    def seconds(self, schedule: Schedule | None) -> float:
        """The lateness now, sending a probe through ``schedule`` if one is due (None: send none)."""
        now = self._clock.now()
        sent = self._sent
        if sent is not None:
            return max(self._seconds, now - sent)
        late = self._seconds if now - self._measured < 2 * self._interval else 0.0
        if schedule is not None and now - self._measured >= self._interval:
            with self._lock:
                if self._sent is not None:
                    return late
                self._sent = now
            try:
                schedule(self._ran)
            except Exception:  # a closed loop or a shut-down pool runs nothing: no probe waits
                self._sent = None
        return late

    def _ran(self) -> None:
        now, sent = self._clock.now(), self._sent
        if sent is not None:
            self._seconds, self._measured, self._sent = now - sent, now, None


def cpu_count() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


class CpuUsage:
    """The share of ``cpus`` CPUs the process used, over the last ``interval`` seconds at least: the CPU time
    ``cpu_seconds()`` reports (default: ``time.process_time``) grown since the last sample, over the time passed
    times ``cpus``."""

    __slots__ = ("_clock", "_cpu_seconds", "_cpus", "_interval", "_lock", "_used", "_when", "utilization")

    def __init__(
        self, clock: Clock, interval: float, cpus: int, cpu_seconds: Callable[[], float] = time.process_time
    ) -> None:
        self._clock, self._interval, self._cpus, self._cpu_seconds = clock, interval, cpus, cpu_seconds
        self._lock = threading.Lock()
        self._when, self._used = clock.now(), cpu_seconds()
        self.utilization: float = 0.0
        """The last sample's value."""

    def sample(self) -> float:
        """The utilization, sampled again if the last sample is ``interval`` old."""
        now = self._clock.now()
        if now - self._when < self._interval or not self._lock.acquire(blocking=False):
            return self.utilization
        try:
            used = self._cpu_seconds()
            self.utilization = max(used - self._used, 0.0) / ((now - self._when) * self._cpus)
            self._when, self._used = now, used
        finally:
            self._lock.release()
        return self.utilization


class Rate:
    """Events per second: those counted since the last sample, over the time since, sampled again when
    ``interval`` has passed (so it falls to 0 when no event comes)."""

    __slots__ = ("_clock", "_counts", "_interval", "_lock", "_when", "rates")

    def __init__(self, clock: Clock, interval: float, kinds: int = 2) -> None:
        self._clock, self._interval = clock, interval
        self._lock = threading.Lock()
        self._when = clock.now()
        self._counts = [0] * kinds
        self.rates: tuple[float, ...] = (0.0,) * kinds
        """The last sample's rates, by kind of event."""

    def count(self, *kinds: int) -> None:
        """One event of each of ``kinds``."""
        with self._lock:
            for kind in kinds:
                self._counts[kind] += 1

    def sample(self) -> tuple[float, ...]:
        """The rates, sampled again if the last sample is ``interval`` old."""
        now = self._clock.now()
        if now - self._when >= self._interval:
            with self._lock:
                elapsed = now - self._when
                if elapsed >= self._interval:  # not sampled meanwhile by another thread
                    counts, self._counts, self._when = self._counts, [0] * len(self._counts), now
                    self.rates = tuple(count / elapsed for count in counts)
        return self.rates


def memory_utilization() -> float | None:
    """The share of the memory it may use that the process holds (Linux: its resident set over its cgroup's
    ``memory.max``, or over the machine's memory); None where that cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            resident = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        limit = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    try:
        with open("/sys/fs/cgroup/memory.max", "rb") as cgroup:
            text = cgroup.read().strip()
        if text.isdigit():
            limit = min(limit, int(text))
    except OSError:
        pass
    return min(resident / limit, 1.0) if limit > 0 else None
