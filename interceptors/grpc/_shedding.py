"""Load shedding for sync and aio servers: at most so many calls at once, the excess refused at once with pushback.

A server that queues work it cannot start in time makes every caller wait and then fail; one that refuses the
excess at once, Trailers-Only, with ``grpc-retry-pushback-ms``, lets callers back off (this library's retries
honour the pushback and count the refusal as overload) while the calls it accepted keep their latency. A call
whose remaining deadline is shorter than ``min_remaining`` is refused too: nobody would wait for its answer.
Health checks (``grpc.health.v1.Health``) and server reflection are never refused.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from ..engine import _options as options
from ..engine._adaptive_limiter import AdaptiveLimiter
from ..engine._events import Shed
from ..engine._places import Places
from ..engine._priority import Priorities, Priority
from ._admission import Admitting, AioAdmitting, End, Refusal
from ._claims import claimed
from ._core import CallMetrics
from ._incoming import time_left
from ._pushback import PUSHBACK_MS

__all__ = ["AioLoadShedding", "LoadShedding"]

RESOURCE_EXHAUSTED, UNAVAILABLE = grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE
INITIAL_PUSHBACK = 0.1
"""Seconds of pushback before any call has ended to measure (when no fixed pushback is given)."""
LATENCY_WEIGHT = 0.2
"""Weight of each ended call in the average latency the default pushback is."""
SPREAD = 0.2
"""The default pushback varies by up to this fraction either way, so that refused callers do not return at once."""


class _Shedding:
    def __init__(
        self,
        limit: int | AdaptiveLimiter,
        *,
        code: grpc.StatusCode = RESOURCE_EXHAUSTED,
        pushback: options.Duration | None = None,
        min_remaining: options.Duration = 0.0,
        on_shed: options.Listener[Shed] | None = None,
        metrics: CallMetrics | None = None,
        priorities: Priorities | None = None,
    ) -> None:
        if metrics is not None and not callable(getattr(metrics, "watch", None)):
            raise ValueError(f"metrics must be an interceptors.otel.Metrics, got {metrics!r}")
        ranks = options.priorities(priorities)
        if isinstance(limit, AdaptiveLimiter):
            if ranks is not None and ranks is not limit.priorities:
                raise ValueError("priorities: give them to the AdaptiveLimiter, whose limit they share out")
            self._limiter: AdaptiveLimiter | None = limit
            self._places = limit._places
            ranks = limit.priorities
        else:
            self._limiter = None
            count = options.count(limit, "limit", maximum=options.MAX_CALLS)
            self._places = Places(count, caps=None if ranks is None else ranks.caps)
        self.priorities: Priorities | None = ranks
        """How calls' priorities decide who is refused first (None: they do not)."""
        if code not in (RESOURCE_EXHAUSTED, UNAVAILABLE):
            raise ValueError(f"code must be RESOURCE_EXHAUSTED or UNAVAILABLE, got {code!r}")
        self.code: grpc.StatusCode = code
        self.pushback: float | None = None if pushback is None else options.seconds(pushback, "pushback")
        self.min_remaining: float = options.seconds(min_remaining, "min_remaining")
        self._latency = INITIAL_PUSHBACK
        self._lock = threading.Lock()
        self.refused: int = 0
        """Calls refused so far (overload and too little time left)."""
        self.on_shed: options.Listener[Shed] | None = options.listener(on_shed, "on_shed")
        self._observers: tuple[Callable[[Any], object], ...] = ()
        if metrics is not None:
            metrics.watch([self])

    @property
    def limit(self) -> int:
        return self._places.limit

    @property
    def in_flight(self) -> int:
        return self._places.in_flight

    def admit(
        self, time_remaining: float | None, priority: Priority | None = None, retry: bool = False
    ) -> End | Refusal:
        """Admit a call with ``time_remaining`` seconds left, of ``priority``, a retry or a hedge when ``retry``
        (both matter with ``priorities`` only): how to end it, or why it is refused."""
        if time_remaining is not None and time_remaining < self.min_remaining:
            self._count_refusal("deadline")
            return Refusal(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"refused: {max(time_remaining, 0) * 1000:.0f} ms left, the server needs {self.min_remaining:g}s",
                (),
            )
        limiter = self._limiter
        if limiter is not None:
            try:
                permit = limiter.acquire_permit(priority, retry=retry)
            except Exception:
                return self._overloaded()
            started = time.monotonic()

            def end_permit(failure: BaseException | None) -> None:
                if isinstance(failure, Exception) or failure is None:
                    permit.record(failure)
                else:
                    permit.drop()
                self._measured(time.monotonic() - started)

            return end_permit
        ranks = self.priorities
        if not self._places.take(0.0, 0 if ranks is None else ranks.rank(priority, retry)):
            return self._overloaded()
        started = time.monotonic()

        def end(failure: BaseException | None) -> None:
            self._places.give()
            self._measured(time.monotonic() - started)

        return end

    def _admission(self, context: Any, method: str) -> End | Refusal:
        """Admit the call ``context`` answers (see :meth:`admit`)."""
        time_remaining = time_left(context.time_remaining())
        if self.priorities is None:
            return self.admit(time_remaining)
        return self.admit(time_remaining, *claimed(context, self.priorities))

    def _count_refusal(self, reason: str) -> None:
        with self._lock:
            self.refused += 1
        if self.on_shed is not None or self._observers:
            places = self._places
            event = Shed(reason, places.in_flight, places.limit, type(self).__name__)
            options.emit(self.on_shed, event, self._observers)

    def _overloaded(self) -> Refusal:
        self._count_refusal("overload")
        delay = self.pushback
        if delay is None:
            delay = self._latency * random.uniform(1 - SPREAD, 1 + SPREAD)
        milliseconds = max(math.ceil(delay * 1000), 1)
        places = self._places
        details = f"overloaded: {places.in_flight} calls in progress (limit {places.limit}); retry in {milliseconds} ms"
        return Refusal(self.code, details, ((PUSHBACK_MS, str(milliseconds)),))

    def _measured(self, latency: float) -> None:
        with self._lock:
            self._latency += (latency - self._latency) * LATENCY_WEIGHT


class LoadShedding(_Shedding, Admitting):
    """Bounds the calls a sync server works on at once to ``limit``, refusing the excess at once, Trailers-Only,
    with ``code`` and ``grpc-retry-pushback-ms`` (see the module's doc).

    A sync server decides when a worker thread picks the call up: give it more workers than the limit.

    :param limit: the most calls at once: a number, or an :class:`~interceptors.AdaptiveLimiter` whose limit
        follows the handlers' latency (its other options apply; a limiter serves one server).
    :param code: RESOURCE_EXHAUSTED (default) or UNAVAILABLE.
    :param pushback: seconds refused callers are asked to wait (default None: the average time recent calls
        took, varied by up to 20 % either way; 0.1 s before any call has ended).
    :param min_remaining: calls with less time left than this are refused DEADLINE_EXCEEDED, with no pushback
        (default 0: none).
    :param on_shed: called with a :class:`~interceptors.events.Shed` for each call refused (default None).
    :param metrics: an :class:`interceptors.otel.Metrics` to count the refused calls in (default None).
    :param priorities: refuse the less important calls first (see :class:`~interceptors.Priorities`): the top of the
        limit is kept for the more important calls, and retries and hedges (``grpc-previous-rpc-attempts``) rank
        below first attempts; a caller's claimed priority counts no higher than ``max_claimed`` allows (default
        None: every call alike; with an AdaptiveLimiter, give them to the limiter).
    """


class AioLoadShedding(_Shedding, AioAdmitting):
    """:class:`LoadShedding` for ``grpc.aio`` servers, with the same parameters."""
