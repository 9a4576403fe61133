"""What a server knows of its own load without asking the application, each sampled rather than measured per call:
how late its work starts (an event loop's lag, a worker pool's queue time), the CPU its process uses, its memory,
and how many calls per second it ends. Each takes a clock, and its source can be replaced (tests give fakes).
"""

from __future__ import annotations

import functools
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable

from ._clock import Clock

__all__ = ["CpuUsage", "Lateness", "Rate", "cpu_count", "memory_utilization"]

Later = Callable[[float, Callable[[], object]], object]
"""Runs a function so many seconds from now where the server runs its work (``loop.call_later``; for a worker
pool, a timer that hands it to ``executor.submit``)."""

PROBES = 10
"""Probes per interval: the lateness is the largest of the last this many."""


class Lateness:
    """How late work starts where the server runs it: a no-op probe is set, through ``later``, to run every
    ``interval / PROBES`` seconds, and how much later than due it runs is measured. The lateness is the largest
    of the last :data:`PROBES` measures (the last ``interval``), or, while a probe is overdue, how overdue it is if
    that is more: a loop that stalls every few calls is late, not on time between stalls, and a stall longer than
    the interval is measured whole when it ends.

    The probes run while the lateness is asked (by calls, reports): when nobody asked in the interval before a
    probe was due, they stop and the measures are forgotten; the next ask starts them again. :meth:`stop` ends a
    chain whose loop or pool is gone: a probe of a stopped chain that runs after all does nothing.
    """

    __slots__ = ("_asked", "_chain", "_clock", "_due", "_every", "_interval", "_later", "_lock", "_measures")

    def __init__(self, clock: Clock, interval: float) -> None:
        self._clock, self._interval, self._every = clock, interval, interval / PROBES
        self._lock = threading.Lock()
        self._measures: deque[float] = deque(maxlen=PROBES)
        self._due: float | None = None  # when the probe set to run is due (None: none is)
        self._asked = -math.inf
        self._later: Later | None = None
        self._chain = 0  # which chain of probes runs: one from before a stop is not it

    def seconds(self, later: Later | None) -> float:
        """The lateness now, starting the probes through ``later`` if they are stopped (None: do not)."""
        now = self._clock.now()
        self._asked = now
        due = self._due
        late = max(self._measures, default=0.0)
        if due is None:
            if later is not None:
                self._start(later, now)
            return late
        return max(late, now - due)

    def _start(self, later: Later, now: float) -> None:
        with self._lock:
            if self._due is not None:
                return
            self._chain += 1
            self._due, self._later = now + self._every, later
            chain = self._chain
        self._set(later, chain)

    def _set(self, later: Later, chain: int) -> None:
        try:
            later(self._every, functools.partial(self._ran, chain))
        except Exception:  # a closed loop or a shut-down pool runs nothing: no probe is due
            self.stop()

    def _ran(self, chain: int) -> None:
        with self._lock:
            due, later = self._due, self._later
            if chain != self._chain or due is None or later is None:
                return  # a probe of a stopped chain
            now = self._clock.now()
            self._measures.append(max(now - due, 0.0))
            if due - self._asked > self._interval:  # nobody asked in the interval before it was due
                self._due = None
                self._measures.clear()
                return
            self._due = now + self._every
        self._set(later, chain)

    def stop(self) -> None:
        """Stop the probes (until asked again) and forget the measures."""
        with self._lock:
            self._chain += 1
            self._due = None
            self._measures.clear()


def cpu_count() -> int:
    """The CPUs this process may run on: those it has affinity with, no more than its cgroup's CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        count = os.cpu_count() or 1
    try:  # its cgroup's quota (v2: "max 100000" or "200000 100000")
        allowed, period = _cgroup("cpu.max").split()[:2]
        if allowed != "max":
            count = min(count, max(math.ceil(int(allowed) / int(period)), 1))
    except (OSError, ValueError):
        pass
    return count


def _cgroup(name: str) -> str:
    """The file ``name`` of this process's cgroup (v2), else of the root cgroup; raises OSError if neither."""
    try:
        with open("/proc/self/cgroup") as cgroups:
            path = next((line.split(":", 2)[2].strip() for line in cgroups if line.startswith("0::")), "/")
    except (OSError, IndexError):
        path = "/"
    for directory in (f"/sys/fs/cgroup{path.rstrip('/')}", "/sys/fs/cgroup"):
        try:
            with open(f"{directory}/{name}") as file:
                return file.read().strip()
        except OSError:
            continue
    raise OSError(f"no cgroup file {name}")


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
        self._counts: list[float] = [0] * kinds
        self.rates: tuple[float, ...] = (0.0,) * kinds
        """The last sample's rates, by kind of event."""

    def count(self, amounts: tuple[float, ...]) -> None:
        """``amounts[kind]`` more of each kind (events, or seconds busy: their rate is the average number at work)."""
        with self._lock:
            counts = self._counts
            for kind, amount in enumerate(amounts):
                counts[kind] += amount

    def sample(self) -> tuple[float, ...]:
        """The rates, sampled again if the last sample is ``interval`` old."""
        now = self._clock.now()
        if now - self._when >= self._interval:
            with self._lock:
                elapsed = now - self._when
                if elapsed >= self._interval:  # not sampled meanwhile by another thread
                    counts, self._counts, self._when = self._counts, [0.0] * len(self._counts), now
                    self.rates = tuple(count / elapsed for count in counts)
        return self.rates


def memory_utilization() -> float | None:
    """The share of the memory it may use that the process holds (Linux: its resident set over its cgroup's
    ``memory.max`` (v2), or over the machine's memory); None where that cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            resident = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        limit = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    try:
        text = _cgroup("memory.max")
        if text.isdigit():
            limit = min(limit, int(text))
    except OSError:
        pass
    return min(resident / limit, 1.0) if limit > 0 else None
