"""RateLimiter: at most so many calls per period, evenly spaced (smooth) or all at once (bursty)."""

from __future__ import annotations

import math
import threading
from typing import Any

from . import _options as options
from ._clock import Clock
from ._errors import RateLimitedError
from ._events import RateLimited
from ._execution import Execution
from ._places import wait_allowed
from ._policy import AsyncLink, Link, Policy
from ._priority import Priorities

__all__ = ["RateLimiter"]


class RateLimiter(Policy):
    """At most ``max_calls`` calls per ``period`` seconds.

    **Smooth** (the default): one permit every ``period / max_calls`` seconds, so calls are spread evenly.
    **Bursty** (``bursty=True``): ``max_calls`` permits at the start of each period (periods start at multiples of
    ``period`` on the clock), so that many may go at once.

    A call waits for its permit up to ``max_wait`` seconds, and never past its deadline; a call whose permit would
    come later is rejected with :class:`RateLimitedError` (``remaining``: when it would have come) and takes no
    permit. Outside a chain: :meth:`try_acquire`, :meth:`acquire`, :meth:`aacquire` and :meth:`reserve`.

    :param max_calls: permits per period, positional (1..100 000).
    :param period: the period, seconds (default 1; at least 1 ms).
    :param bursty: all of a period's permits at its start rather than evenly spaced (default False).
    :param max_wait: seconds a call may wait for its permit (default 0: rejected unless one is free).
    :param priorities: refuse the less important calls first (see :class:`~interceptors.Priorities`): a call of
        share ``s`` of the limit waits at most ``s * max_wait``, and, bursty, takes no more than ``s * max_calls``
        (its whole part, at least one) of a period's permits (it is refused once they are used), leaving the rest
        to more important calls. A smooth limiter that lets no call wait (``max_wait=0``) keeps nothing back: each
        permit goes to whoever asks first (default None: every call alike).
    :param dry_run: decide and report, but let every call through (default False): a call the limiter would reject
        is reported (``dry_run=True``) and goes, taking no permit; one that would wait goes at once, its permit taken.
    :param on_limited: hears :class:`RateLimited` when a call is rejected.
    :param name: the policy's name in its events (default: its class's name, "RateLimiter").
    :param clock: the clock of the permits and of the waits (default the system clock).
    """

    __slots__ = (
        "_lock",
        "_next",
        "_used",
        "bursty",
        "clock",
        "dry_run",
        "max_calls",
        "max_wait",
        "on_limited",
        "period",
        "priorities",
    )
    serves_deferred = True  # a permit is taken when the call starts; how it ends is nothing to it
    clock: Clock
    max_calls: int
    period: float
    bursty: bool
    max_wait: float
    dry_run: bool
    priorities: Priorities | None
    on_limited: options.Listener[RateLimited] | None
    _lock: threading.Lock
    _next: float  # smooth: when the next permit is free; bursty: the start of the latest period with permits taken
    _used: int  # bursty: permits taken in that period

    def __init__(
        self,
        max_calls: int,
        /,
        *,
        period: options.Duration = 1.0,
        bursty: bool = False,
        max_wait: options.Duration = 0.0,
        priorities: Priorities | None = None,
        dry_run: bool = False,
        on_limited: options.Listener[RateLimited] | None = None,
        clock: Clock | None = None,
        name: str | None = None,
    ) -> None:
        self._init(
            name=options.policy_name(name, self),
            max_calls=options.count(max_calls, "max_calls", maximum=options.MAX_CALLS),
            period=options.window(period, "period"),
            bursty=options.flag(bursty, "bursty"),
            max_wait=options.seconds(max_wait, "max_wait"),
            priorities=options.priorities(priorities),
            dry_run=options.flag(dry_run, "dry_run"),
            on_limited=options.listener(on_limited, "on_limited"),
            clock=options.clock(clock),
            _lock=threading.Lock(),
            _next=-math.inf,
            _used=0,
        )

    def _reserve(self, permits: int, limit: float | None, share: float = 1.0) -> tuple[float, bool]:
        """Take ``permits`` permits if the last of them comes within ``limit`` seconds (None: whenever it comes),
        for a call of ``share`` (see ``priorities``). Returns how long until it comes, and whether they were taken."""
        count = options.count(permits, "permits", maximum=options.MAX_CALLS)
        with self._lock:
            now = self.clock.now()
            if self.bursty:
                start = max(self._next, math.floor(now / self.period) * self.period)
                used = (self._used if start == self._next else 0) + count
                if share < 1.0 and used > max(1, math.floor(self.max_calls * share + 1e-9)):
                    # its part of the period it would fall in is used; none is reserved for it further on, which
                    # would close that period to the calls its rest is kept for
                    return start + self.period - now, False
                periods = (used - 1) // self.max_calls  # further periods the last permit falls into
                ready, left = start + periods * self.period, used - periods * self.max_calls
            else:
                interval = self.period / self.max_calls
                ready = max(now, self._next) + (count - 1) * interval
                left = 0
            wait = max(ready - now, 0.0)
            if limit is not None and wait > limit:
                return wait, False
            if self.bursty:
                object.__setattr__(self, "_next", ready)
                object.__setattr__(self, "_used", left)
            else:
                object.__setattr__(self, "_next", ready + self.period / self.max_calls)
        return wait, True

    def inherit(self, old: Policy) -> None:
        """Keep the permits ``old`` gave out lately (the same kind, smooth or bursty): a reload opens no burst. They are
        copied: the retries of calls still in flight through ``old`` draw on its own."""
        if isinstance(old, RateLimiter) and old.bursty == self.bursty:
            with old._lock:
                object.__setattr__(self, "_next", old._next)
                object.__setattr__(self, "_used", min(old._used, self.max_calls))

    def try_acquire(self, permits: int = 1) -> bool:
        """Take ``permits`` permits if they are free now."""
        return self._reserve(permits, 0.0)[1]

    def reserve(self, permits: int = 1) -> float:
        """Take ``permits`` permits whenever they come; returns the seconds to wait before using them."""
        return self._reserve(permits, None)[0]

    def acquire(self, permits: int = 1, *, max_wait: options.Duration | None = None) -> bool:
        """Take ``permits`` permits, waiting (in this thread) up to ``max_wait`` seconds (None: as long as it
        takes); returns whether they were taken."""
        limit = None if max_wait is None else options.seconds(max_wait, "max_wait")
        wait, taken = self._reserve(permits, limit)
        if taken and wait:
            self.clock.sleep(wait)
        return taken

    async def aacquire(self, permits: int = 1, *, max_wait: options.Duration | None = None) -> bool:
        """:meth:`acquire`, waiting in this task."""
        limit = None if max_wait is None else options.seconds(max_wait, "max_wait")
        wait, taken = self._reserve(permits, limit)
        if taken and wait:
            await self.clock.asleep(wait)
        return taken

    def _admit(self, execution: Execution) -> float:
        """The wait before the call may go; raises RateLimitedError if its permit comes too late (in dry run: no
        wait, and a call it would reject is reported and goes)."""
        ranks = self.priorities
        share = 1.0 if ranks is None else ranks.place_of(execution)[1]
        wait, taken = self._reserve(1, wait_allowed(self.max_wait * share, execution.remaining), share)
        if not taken:
            if self.on_limited is not None or self._observers:
                event = RateLimited(wait, self.name, execution.semantics.method, self.dry_run)
                options.emit(self.on_limited, event, self._observers)
            if not self.dry_run:
                raise RateLimitedError(f"rate limited: the next permit comes in {wait:.3g}s", remaining=wait)
        return 0.0 if self.dry_run else wait

    def wrap(self, inner: Link) -> Link:
        sleep = self.clock.sleep

        def run(execution: Execution) -> Any:
            wait = self._admit(execution)
            if wait:
                sleep(wait)
            return inner(execution)

        return run

    def wrap_async(self, inner: AsyncLink) -> AsyncLink:
        sleep = self.clock.asleep

        async def run(execution: Execution) -> Any:
            wait = self._admit(execution)
            if wait:
                await sleep(wait)
            return await inner(execution)

        return run
