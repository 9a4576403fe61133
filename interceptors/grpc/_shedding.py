"""Load shedding for sync and aio servers: at most so many calls at once, the excess refused at once with pushback.

A server that queues work it cannot start in time makes every caller wait and then fail; one that refuses the
excess at once, Trailers-Only, with ``grpc-retry-pushback-ms``, lets callers back off (this library's retries
honour the pushback and count the refusal as overload) while the calls it accepted keep their latency. A call
whose remaining deadline is shorter than ``min_remaining`` is refused too: nobody would wait for its answer.
Health checks (``grpc.health.v1.Health``) and server reflection are never refused.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from ..engine import _options as options
from ..engine._adaptive_limiter import AdaptiveLimiter, LimiterPermit
from ..engine._delays import DRAWS
from ..engine._events import Shed
from ..engine._places import Places, wait_allowed
from ..engine._priority import RANKS, Priorities, Priority
from ._admission import Admitting, AioAdmitting, End, Refusal, nothing_to_end
from ._claims import claimed
from ._clients import ClientKey, client_of
from ._core import CallMetrics
from ._incoming import time_left
from ._load_reporting import ServerLoad
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
    _aio = False

    def __init__(
        self,
        limit: int | AdaptiveLimiter | None = None,
        *,
        code: grpc.StatusCode = RESOURCE_EXHAUSTED,
        pushback: options.Duration | None = None,
        min_remaining: options.Duration = 0.0,
        max_wait: options.Duration = 0.0,
        max_queued: int | None = None,
        on_shed: options.Listener[Shed] | None = None,
        metrics: CallMetrics | None = None,
        priorities: Priorities | None = None,
        tenant: ClientKey | None = None,
        dry_run: bool = False,
        load: ServerLoad | None = None,
        max_cpu_utilization: float | None = None,
        max_lag: options.Duration | None = None,
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
            count = options.MAX_CALLS if limit is None else options.count(limit, "limit", maximum=options.MAX_CALLS)
            queued = None if max_queued is None else options.count(max_queued, "max_queued", minimum=0)
            self._places = Places(count, max_waiting=queued, ranks=1 if ranks is None else RANKS)
        self.priorities: Priorities | None = ranks
        """How calls' priorities decide who is refused first (None: they do not)."""
        if tenant is not None and ranks is None:
            raise ValueError("tenant: give priorities too (usage moves a call within its level's share)")
        self._tenant = None if tenant is None else client_of(tenant, "tenant", type(self).__name__)
        self._tenants: dict[str, int] = {}  # calls in flight by tenant (only those with some)
        if code not in (RESOURCE_EXHAUSTED, UNAVAILABLE):
            raise ValueError(f"code must be RESOURCE_EXHAUSTED or UNAVAILABLE, got {code!r}")
        self.code: grpc.StatusCode = code
        self.pushback: float | None = None if pushback is None else options.seconds(pushback, "pushback")
        self.min_remaining: float = options.seconds(min_remaining, "min_remaining")
        self.max_wait: float = options.seconds(max_wait, "max_wait")
        self.dry_run: bool = options.flag(dry_run, "dry_run")
        """Whether it decides and reports but lets every call through (see ``dry_run``)."""
        self._latency = INITIAL_PUSHBACK
        self._lock = threading.Lock()
        self.refused: int = 0
        """Calls refused so far (overload, too little time left, lag, CPU)."""
        self.on_shed: options.Listener[Shed] | None = options.listener(on_shed, "on_shed")
        if load is not None and not isinstance(load, ServerLoad):
            raise ValueError(f"load must be a ServerLoad, got {options.shown(load)}")
        self.load: ServerLoad = ServerLoad() if load is None else load
        """The server's load, whose signals the resource bounds read (and whose reports tell the calls in flight)."""
        if limit is not None:
            self.load._places = self._places
        self.max_cpu_utilization: float | None = (
            None if max_cpu_utilization is None else options.ratio(max_cpu_utilization, "max_cpu_utilization")
        )
        self.max_lag: float | None = options.optional_seconds(max_lag, "max_lag", positive=True)
        if limit is None and self.max_lag is None and self.max_cpu_utilization is None:
            raise ValueError("give a limit, max_lag or max_cpu_utilization: with none, nothing would be refused")
        if self.max_lag is not None and not self._aio and self.load._pool is None:
            raise ValueError(
                "max_lag: a sync server's lag is its worker pool's queue time; give load=ServerLoad(pool=)"
            )
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
        self,
        time_remaining: float | None,
        priority: Priority | None = None,
        retry: bool = False,
        tenant: str | None = None,
    ) -> End | Refusal:
        """Admit a call with ``time_remaining`` seconds left, of ``priority``, a retry or a hedge when ``retry``,
        for ``tenant`` (these matter with ``priorities`` only), waiting in this thread up to ``max_wait``: how to end
        it, or why it is refused."""
        refusal = self._too_late(time_remaining)
        if refusal is not None:
            return refusal
        rank, share = self._standing(priority, retry, tenant)
        strained = self._strained(share)
        if strained is not None:
            return strained
        taken = self._places.take(self._wait(share, time_remaining), rank, share)
        return self._entered(tenant) if taken else self._overloaded()

    async def aadmit(
        self,
        time_remaining: float | None,
        priority: Priority | None = None,
        retry: bool = False,
        tenant: str | None = None,
    ) -> End | Refusal:
        """:meth:`admit`, waiting in this task."""
        refusal = self._too_late(time_remaining)
        if refusal is not None:
            return refusal
        rank, share = self._standing(priority, retry, tenant)
        strained = self._strained(share)
        if strained is not None:
            return strained
        taken = await self._places.atake(self._wait(share, time_remaining), rank, share)
        return self._entered(tenant) if taken else self._overloaded()

    def _strained(self, share: float) -> End | Refusal | None:
        """A refusal if a resource is over its bound times the call's ``share`` (its level's, with priorities)."""
        if self.max_lag is not None:
            lag = self.load.lateness(self._aio)
            if lag is not None and lag > self.max_lag * share:
                where = "the event loop" if self._aio else "the worker pool"
                return self._overloaded("lag", f"{where} runs {lag * 1000:.0f} ms late (bound {self.max_lag:g}s)")
        if self.max_cpu_utilization is not None:
            cpu = self.load.cpu_utilization()
            if cpu is not None and cpu > self.max_cpu_utilization * share:
                return self._overloaded("cpu", f"CPU utilization {cpu:.2f} (bound {self.max_cpu_utilization:g})")
        return None

    def _wait(self, share: float, time_remaining: float | None) -> float:
        """How long a call of ``share`` may wait for a place (none in dry run)."""
        return 0.0 if self.dry_run else wait_allowed(self.max_wait * share, time_remaining)

    def _too_late(self, time_remaining: float | None) -> End | Refusal | None:
        if time_remaining is None or time_remaining >= self.min_remaining:
            return None
        self._count_refusal("deadline")
        if self.dry_run:
            return nothing_to_end
        return Refusal(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"refused: {max(time_remaining, 0) * 1000:.0f} ms left, the server needs {self.min_remaining:g}s",
            (),
        )

    def _standing(self, priority: Priority | None, retry: bool, tenant: str | None) -> tuple[int, float]:
        ranks = self.priorities
        return (0, 1.0) if ranks is None else ranks.place(priority, retry, self._usage(tenant))

    def _entered(self, tenant: str | None) -> End:
        """How to end a call that took a place."""
        limiter = self._limiter
        give_back = self._give_place if limiter is None else LimiterPermit(limiter).ended
        started = time.monotonic()
        if tenant is not None:
            self._count_tenant(tenant, 1)

        def end(failure: BaseException | None) -> None:
            if tenant is not None:  # before its place: a tenant never holds more calls than are in flight
                self._count_tenant(tenant, -1)
            give_back(failure)
            self._measured(time.monotonic() - started)

        return end

    def _give_place(self, failure: BaseException | None) -> None:
        self._places.give()

    def _usage(self, tenant: str | None) -> float:
        """The fraction of the calls in flight that ``tenant``'s are."""
        if tenant is None:
            return 0.0
        held, in_flight = self._tenants.get(tenant, 0), self._places.in_flight
        return min(held / in_flight, 1.0) if held and in_flight else 0.0

    def _count_tenant(self, tenant: str, change: int) -> None:
        with self._lock:
            held = self._tenants.get(tenant, 0) + change
            if held > 0:
                self._tenants[tenant] = held
            else:
                self._tenants.pop(tenant, None)

    def _admission(self, context: Any, method: str) -> End | Refusal:
        """Admit the call ``context`` answers (see :meth:`admit`)."""
        return self.admit(*self._call(context))

    async def _aadmission(self, context: Any, method: str) -> End | Refusal:
        return await self.aadmit(*self._call(context))

    def _call(self, context: Any) -> tuple[float | None, Priority | None, bool, str | None]:
        """What admission reads of the call ``context`` answers: its time left, priority, retry and tenant."""
        time_remaining = time_left(context.time_remaining())
        if self.priorities is None:
            return time_remaining, None, False, None
        tenant = None if self._tenant is None else self._tenant(context)
        return (time_remaining, *claimed(context, self.priorities), tenant)

    def _count_refusal(self, reason: str) -> None:
        with self._lock:
            self.refused += 1
        if self.on_shed is not None or self._observers:
            places = self._places
            event = Shed(reason, places.in_flight, places.limit, type(self).__name__, dry_run=self.dry_run)
            options.emit(self.on_shed, event, self._observers)

    def _overloaded(self, reason: str = "overload", why: str | None = None) -> End | Refusal:
        """A refusal for ``reason`` ("overload": no place; "lag", "cpu": a resource over its bound, ``why``)."""
        if self._limiter is not None and why is None:
            self._limiter._rejected(None, self.dry_run or None)  # its event
        self._count_refusal(reason)
        if self.dry_run:
            return nothing_to_end
        delay = self.pushback
        if delay is None:
            delay = self._latency * DRAWS.uniform(1 - SPREAD, 1 + SPREAD)
        milliseconds = max(math.ceil(delay * 1000), 1)
        places = self._places
        if why is None:
            why = f"{places.in_flight} calls in progress (limit {places.limit})"
        details = f"overloaded: {why}; retry in {milliseconds} ms"
        return Refusal(self.code, details, ((PUSHBACK_MS, str(milliseconds)),))

    def _measured(self, latency: float) -> None:
        with self._lock:
            self._latency += (latency - self._latency) * LATENCY_WEIGHT


class LoadShedding(_Shedding, Admitting):
    """Bounds the calls a sync server works on at once to ``limit``, refusing the excess at once, Trailers-Only,
    with ``code`` and ``grpc-retry-pushback-ms`` (see the module's doc).

    A sync server decides when a worker thread picks the call up: give it more workers than the limit.

    :param limit: the most calls at once (default None: no bound but the resources'): a number, or an
        :class:`~interceptors.AdaptiveLimiter` whose limit follows the handlers' latency (its limits, window,
        priorities, ``max_queued`` and events apply; how long a call may wait is this interceptor's ``max_wait``; a
        limiter serves one server).
    :param code: RESOURCE_EXHAUSTED (default) or UNAVAILABLE.
    :param pushback: seconds refused callers are asked to wait (default None: the average time recent calls
        took, varied by up to 20 % either way; 0.1 s before any call has ended).
    :param min_remaining: calls with less time left than this are refused DEADLINE_EXCEEDED, with no pushback
        (default 0: none).
    :param max_wait: seconds a call may wait for a place, times its share of the limit with ``priorities``, and
        never past its deadline (default 0: refused at once); those waiting are served most important first. A
        short wait lets critical calls through a moment's pressure. On a sync server, a call waits in its worker
        thread.
    :param max_queued: calls that may wait at once (default None: as many as come in ``max_wait``); a call finding
        the line full takes the place in line of a less important one, if any, and is refused otherwise. With an
        AdaptiveLimiter, its own ``max_queued`` applies.
    :param on_shed: called with a :class:`~interceptors.events.Shed` for each call refused (default None).
    :param metrics: an :class:`interceptors.otel.Metrics` to count the refused calls in (default None).
    :param priorities: refuse the less important calls first (see :class:`~interceptors.Priorities`): the top of the
        limit is kept for the more important calls, and retries and hedges (``grpc-previous-rpc-attempts``) rank
        below first attempts; a caller's claimed priority counts no higher than ``max_claimed`` allows (default
        None: every call alike; with an AdaptiveLimiter, give them to the limiter).
    :param tenant: with ``priorities``, who each call is for (a function of the ``grpc.ServicerContext``, such as
        :func:`by_identity` or :func:`by_metadata`): within a level, the tenant with the most calls in flight is
        refused first (default None: usage does not count).
    :param dry_run: decide and report, but refuse nothing (default False): a call it would refuse is counted in
        ``refused`` and reported (``dry_run=True``), and is served without a place, waiting for none.
    :param load: the :class:`ServerLoad` whose signals ``max_lag`` and ``max_cpu_utilization`` read, and whose load
        reports then tell this limit's calls in flight (default: one of its own).
    :param max_cpu_utilization: refuse calls (reason "cpu") while the process's CPU utilization, sampled each
        ``load.interval``, is over this bound times the call's share (default None: CPU not watched).
    :param max_lag: refuse calls (reason "lag") while the server's work starts more than this many seconds late,
        times the call's share: on a sync server, its worker pool's queue time (give ``load=ServerLoad(pool=)``
        with the server's executor); on an aio server, its event loop's lag (default None: not watched).

    Without ``priorities`` a call's share is 1; with them, its level's (see :class:`~interceptors.Priorities`),
    so that the less important calls are refused first as a resource fills. ``limit`` may then be None (no bound
    on the calls at once): ``LoadShedding(max_lag=0.05, load=ServerLoad(pool=pool))``.
    """


class AioLoadShedding(_Shedding, AioAdmitting):
    """:class:`LoadShedding` for ``grpc.aio`` servers, with the same parameters; ``max_lag`` bounds how late the
    server's event loop runs."""

    _aio = True
