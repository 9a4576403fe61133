"""AdaptiveLimiter: a concurrency limit that grows while the dependency answers as fast as ever, and shrinks when
its answers slow down (calls queueing up there)."""

from __future__ import annotations

import math
import threading
from typing import Any

from . import _options as options
from ._clock import Clock
from ._errors import LimitExceededError, TimeoutExceededError
from ._events import LimitChanged, LimitExceeded
from ._execution import Execution
from ._places import Places, wait_allowed
from ._policy import AsyncLink, Link, Policy
from ._priority import RANKS, Priorities, Priority

__all__ = [
    "DEFAULT_INITIAL_LIMIT",
    "DEFAULT_MAX_LIMIT",
    "DEFAULT_MIN_LIMIT",
    "DEFAULT_WINDOW",
    "AdaptiveLimiter",
    "LimiterPermit",
]

DEFAULT_MIN_LIMIT = 1
DEFAULT_MAX_LIMIT = 200
DEFAULT_INITIAL_LIMIT = 20
DEFAULT_WINDOW = 1.0
BASELINE_DRIFT = 0.05
"""How far the baseline moves toward a slower latency each window: a lasting change becomes the new normal."""
MIN_SAMPLES = 5


class AdaptiveLimiter(Policy):
    """A concurrency limit that adapts to the dependency's latency, as TCP Vegas adapts a congestion window
    (Netflix's concurrency-limits and failsafe-go's adaptive limiter work this way).

    Every ``window`` seconds (with at least 5 calls done), the average latency of the calls done in it is compared
    with a baseline, the fastest it has been (the baseline drifts up slowly when latency stays higher)::

        queued = limit * (1 - baseline / latency)        # calls the dependency is estimated to be queueing

    The limit grows by ``max(1, log10(limit))`` while ``queued`` is below ``max(1, 3 log10(limit))`` and the calls
    in flight reached half the limit (it is being used), shrinks by as much when ``queued`` is above
    ``max(2, 6 log10(limit))``, and stays within ``[min_limit, max_limit]``. Only calls that succeeded, or ran out
    of a Timeout's time, are latency samples: calls cancelled by their caller, failing fast, or rejected further
    in say nothing of the dependency's queue.

    A call that finds the limit reached waits (FIFO, threads and tasks in one line) up to ``max_wait`` seconds and
    never past its deadline; one that gets no place in that time is rejected with :class:`LimitExceededError`. By
    default the line has no bound of its own, as the bulkhead's: a caller allowed to wait waits, and is not
    rejected at once because a queue is full. ``max_queued`` bounds it; a call finding that many waiting is
    rejected at once.

    :param min_limit: the smallest limit (default 1).
    :param max_limit: the largest limit (default 200, at most 100 000).
    :param initial_limit: the limit at first (default 20).
    :param max_wait: seconds a call may wait for a place (default 0: rejected at once); with ``max_queued`` None,
        every call waits that long, or until its deadline, before it is rejected.
    :param max_queued: calls that may wait at once (default None: no bound but ``max_wait``).
    :param priorities: refuse the less important calls first (see :class:`~interceptors.Priorities`): the top of
        the limit is kept for the more important calls, a call waits at most ``max_wait`` times its share, and
        waiters are served most important first (default None: every call alike).
    :param window: seconds of calls between two updates of the limit (default 1; at least 1 ms).
    :param dry_run: decide and report, but let every call through (default False): a call that finds the limit
        reached is reported (``dry_run=True``; it would have waited, or been rejected) and runs without a place, and
        its latency is no sample.
    :param on_limit_changed: hears :class:`LimitChanged`.
    :param on_rejected: hears :class:`LimitExceeded` when a call is rejected.
    :param name: the policy's name in its events (default: its class's name, "AdaptiveLimiter").
    :param clock: the clock of latencies and waits (default the system clock).
    """

    __slots__ = (
        "_baseline",
        "_lock",
        "_peak",
        "_places",
        "_samples",
        "_total",
        "_window_start",
        "clock",
        "dry_run",
        "initial_limit",
        "max_limit",
        "max_queued",
        "max_wait",
        "min_limit",
        "on_limit_changed",
        "on_rejected",
        "priorities",
        "window",
    )
    serves_deferred = True
    clock: Clock
    min_limit: int
    max_limit: int
    initial_limit: int
    max_wait: float
    max_queued: int | None
    dry_run: bool
    priorities: Priorities | None
    window: float
    on_limit_changed: options.Listener[LimitChanged] | None
    on_rejected: options.Listener[LimitExceeded] | None
    _places: Places
    _lock: threading.Lock
    _baseline: float | None  # the window state: guarded by _lock
    _window_start: float
    _samples: int
    _total: float
    _peak: int

    def __init__(
        self,
        *,
        min_limit: int = DEFAULT_MIN_LIMIT,
        max_limit: int = DEFAULT_MAX_LIMIT,
        initial_limit: int = DEFAULT_INITIAL_LIMIT,
        max_wait: options.Duration = 0.0,
        max_queued: int | None = None,
        priorities: Priorities | None = None,
        window: options.Duration = DEFAULT_WINDOW,
        dry_run: bool = False,
        on_limit_changed: options.Listener[LimitChanged] | None = None,
        on_rejected: options.Listener[LimitExceeded] | None = None,
        clock: Clock | None = None,
        name: str | None = None,
    ) -> None:
        lowest = options.count(min_limit, "min_limit", maximum=options.MAX_CALLS)
        highest = options.count(max_limit, "max_limit", minimum=lowest, maximum=options.MAX_CALLS)
        initial = options.count(initial_limit, "initial_limit", minimum=lowest, maximum=highest)
        queued = None if max_queued is None else options.count(max_queued, "max_queued", minimum=0)
        the_clock = options.clock(clock)
        ranks = options.priorities(priorities)
        self._init(
            name=options.policy_name(name, self),
            min_limit=lowest,
            max_limit=highest,
            initial_limit=initial,
            max_wait=options.seconds(max_wait, "max_wait"),
            max_queued=queued,
            priorities=ranks,
            window=options.window(window, "window"),
            dry_run=options.flag(dry_run, "dry_run"),
            on_limit_changed=options.listener(on_limit_changed, "on_limit_changed"),
            on_rejected=options.listener(on_rejected, "on_rejected"),
            clock=the_clock,
            _places=Places(initial, max_waiting=queued, ranks=1 if ranks is None else RANKS),
            _lock=threading.Lock(),
        )
        self._reset(None, the_clock.now())

    def _reset(self, baseline: float | None, now: float) -> None:
        object.__setattr__(self, "_baseline", baseline)
        object.__setattr__(self, "_window_start", now)
        object.__setattr__(self, "_samples", 0)
        object.__setattr__(self, "_total", 0.0)
        object.__setattr__(self, "_peak", self._places.in_flight)

    @property
    def limit(self) -> int:
        return self._places.limit

    def inherit(self, old: Policy) -> None:
        """Keep ``old``'s calls in flight and waiting (with priorities on both or neither), its limit (within this
        one's bounds) and its baseline latency."""
        if isinstance(old, AdaptiveLimiter) and (old.priorities is None) == (self.priorities is None):
            places = old._places
            places.max_waiting = self.max_queued
            places.resize(min(max(places.limit, self.min_limit), self.max_limit))
            object.__setattr__(self, "_places", places)
            self._reset(old._baseline, self.clock.now())
            object.__setattr__(old, "window", math.inf)  # its calls in flight no longer move the limit they share

    @property
    def in_flight(self) -> int:
        return self._places.in_flight

    @property
    def queued(self) -> int:
        return self._places.waiting

    def acquire_permit(self, priority: Priority | str | None = None, *, retry: bool = False) -> LimiterPermit:
        """Take a place by hand, now, for a call of ``priority`` (a retry or hedge when ``retry``; both matter with
        ``priorities`` only); raises LimitExceededError. Report how the call ended on the permit."""
        ranks = self.priorities
        if not self._places.take(0.0, *((0, 1.0) if ranks is None else ranks.place(priority, retry))):
            rejection = self._rejected(None)
            if not self.dry_run:
                raise rejection
            return LimiterPermit(self, held=False)
        return LimiterPermit(self)

    def _rejected(self, method: str | None, dry_run: bool | None = None) -> LimitExceededError:
        """Report a rejection (``dry_run``: made in dry run, by default as this limiter is) and make its error."""
        places = self._places
        if self.on_rejected is not None or self._observers:
            dry = self.dry_run if dry_run is None else dry_run
            options.emit(
                self.on_rejected,
                LimitExceeded(places.limit, places.in_flight, places.waiting, self.name, method, dry),
                self._observers,
            )
        return LimitExceededError(f"concurrency limit of {places.limit} reached ({places.waiting} waiting)")

    def _sample(self, latency: float) -> None:
        """A call done in ``latency`` seconds; at the end of a window, move the limit."""
        with self._lock:
            now = self.clock.now()
            object.__setattr__(self, "_samples", self._samples + 1)
            object.__setattr__(self, "_total", self._total + latency)
            object.__setattr__(self, "_peak", max(self._peak, self._places.in_flight + 1))
            if now - self._window_start < self.window or self._samples < MIN_SAMPLES:
                return
            recent = self._total / self._samples
            baseline = self._baseline
            if baseline is None or recent < baseline:
                baseline = recent
            else:
                baseline += (recent - baseline) * BASELINE_DRIFT
            old = self._places.limit
            new = self._next_limit(old, baseline / recent if recent > 0 else 1.0)
            self._reset(baseline, now)
            if new != old:
                self._places.resize(new)
        if new != old and (self.on_limit_changed is not None or self._observers):
            options.emit(self.on_limit_changed, LimitChanged(old, new, recent, baseline, self.name), self._observers)

    def _next_limit(self, limit: int, gradient: float) -> int:
        queued = limit * (1 - gradient)
        step = max(1.0, math.log10(limit))
        if queued > max(2.0, 6 * math.log10(limit)):
            limit = math.floor(limit - step)
        elif queued < max(1.0, 3 * math.log10(limit)) and self._peak >= limit / 2:
            limit = math.ceil(limit + step)
        return min(max(limit, self.min_limit), self.max_limit)

    def _end(self, started: float, failure: BaseException | None) -> None:
        """A call admitted at ``started`` ended: give its place back, and take its latency if it says something
        (a cancelled call, ``failure`` not an Exception, says nothing)."""
        self._places.give()
        if failure is None or isinstance(failure, TimeoutExceededError):
            self._sample(self.clock.now() - started)

    def wrap(self, inner: Link) -> Link:
        places, now, end, ranks, dry_run = self._places, self.clock.now, self._end, self.priorities, self.dry_run
        max_wait = 0.0 if dry_run else self.max_wait

        def run(execution: Execution) -> Any:
            rank, share = (0, 1.0) if ranks is None else ranks.place_of(execution)
            if not places.take(wait_allowed(max_wait * share, execution.remaining), rank, share):
                rejection = self._rejected(execution.semantics.method)
                if not dry_run:
                    raise rejection
                return inner(execution)  # dry run: it goes without a place
            started = now()
            try:
                result = inner(execution)
            except Exception as failure:
                end(started, failure)
                raise
            except BaseException:
                places.give()
                raise
            if execution.settle is not None:  # a stream or a deferred attempt: its place is held until it ends
                execution.settle.append(lambda outcome: end(started, outcome))
            else:
                end(started, None)
            return result

        return run

    def wrap_async(self, inner: AsyncLink) -> AsyncLink:
        places, now, end, ranks, dry_run = self._places, self.clock.now, self._end, self.priorities, self.dry_run
        max_wait = 0.0 if dry_run else self.max_wait

        async def run(execution: Execution) -> Any:
            rank, share = (0, 1.0) if ranks is None else ranks.place_of(execution)
            if not await places.atake(wait_allowed(max_wait * share, execution.remaining), rank, share):
                rejection = self._rejected(execution.semantics.method)
                if not dry_run:
                    raise rejection
                return await inner(execution)  # dry run: it goes without a place
            started = now()
            try:
                result = await inner(execution)
            except Exception as failure:
                end(started, failure)
                raise
            except BaseException:
                places.give()
                raise
            if execution.settle is not None:  # a stream or a deferred attempt: its place is held until it ends
                execution.settle.append(lambda outcome: end(started, outcome))
            else:
                end(started, None)
            return result

        return run


class LimiterPermit:
    """A place taken by :meth:`AdaptiveLimiter.acquire_permit`; report how the call ended exactly once."""

    __slots__ = ("_done", "_limiter", "_started")

    def __init__(self, limiter: AdaptiveLimiter, *, held: bool = True) -> None:
        self._limiter, self._started, self._done = limiter, limiter.clock.now(), not held  # dry run: nothing held

    def record(self, failure: BaseException | None = None) -> None:
        """The call succeeded (``failure`` None) or failed: its latency is a sample when it says something."""
        if not self._done:
            self._done = True
            self._limiter._end(self._started, failure)

    def ended(self, failure: BaseException | None) -> None:
        """The call ended: succeeded (None), failed (an Exception: :meth:`record`), or was cancelled (any other
        BaseException: :meth:`drop`)."""
        if failure is None or isinstance(failure, Exception):
            self.record(failure)
        else:
            self.drop()

    def drop(self) -> None:
        """The call ended without a latency worth counting (cancelled, say): just give its place back."""
        if not self._done:
            self._done = True
            self._limiter._places.give()
