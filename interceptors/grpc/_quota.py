"""Quotas for sync and aio servers: each client may make so many calls per period; the excess is refused at once,
Trailers-Only, with RESOURCE_EXHAUSTED and when to come back, in ``grpc-retry-pushback-ms`` and a
``google.rpc.RetryInfo``: this library's clients, grpc's own retries and grpc-js's wait that long, then retry.

Who a client is, is the server's to decide (see :mod:`._clients`): by default its authenticated identity or its
address, never what it claims in metadata unless the server asks.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import grpc

from ..engine import _options as options
from ..engine._buckets import KeyedBuckets
from ..engine._clock import Clock
from ..engine._events import QuotaExceeded
from ._admission import Admitting, AioAdmitting, End, Refusal, nothing_to_end
from ._clients import ClientKey, by_identity, client_of
from ._core import CallMetrics
from ._pushback import PUSHBACK_MS, STATUS_DETAILS, retry_info_details

__all__ = ["DEFAULT_MAX_CLIENTS", "AioQuota", "Quota"]

DEFAULT_MAX_CLIENTS = 10_000


class _Quota:
    def __init__(
        self,
        calls: int,
        /,
        *,
        period: options.Duration = 1.0,
        burst: int | None = None,
        key: ClientKey = by_identity,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        code: grpc.StatusCode = grpc.StatusCode.RESOURCE_EXHAUSTED,
        on_exceeded: options.Listener[QuotaExceeded] | None = None,
        metrics: CallMetrics | None = None,
        dry_run: bool = False,
        clock: Clock | None = None,
    ) -> None:
        if metrics is not None and not callable(getattr(metrics, "watch", None)):
            raise ValueError(f"metrics must be an interceptors.otel.Metrics, got {metrics!r}")
        self.calls: int = options.count(calls, "calls", maximum=options.MAX_CALLS)
        self.period: float = options.window(period, "period")
        self.burst: int = self.calls if burst is None else options.count(burst, "burst", maximum=options.MAX_CALLS)
        self._client = client_of(key, "key", type(self).__name__)
        self.max_clients: int = options.count(max_clients, "max_clients", maximum=10_000_000)
        if code not in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
            raise ValueError(f"code must be RESOURCE_EXHAUSTED or UNAVAILABLE, got {code!r}")
        self.code: grpc.StatusCode = code
        self.dry_run: bool = options.flag(dry_run, "dry_run")
        """Whether it decides and reports but lets every call through (see ``dry_run``)."""
        self.on_exceeded: options.Listener[QuotaExceeded] | None = options.listener(on_exceeded, "on_exceeded")
        self._buckets = KeyedBuckets(self.period / self.calls, self.burst, self.max_clients, options.clock(clock))
        self._observers: tuple[Callable[[Any], object], ...] = ()
        self._lock = threading.Lock()
        self.refused: int = 0
        """Calls refused so far."""
        if metrics is not None:
            metrics.watch([self])

    @property
    def clients(self) -> int:
        """Clients whose quota is kept at the moment (those that used some of it lately)."""
        return len(self._buckets)

    def _admission(self, context: Any, method: str) -> End | Refusal:
        client, wait = self._buckets.take(self._client(context))
        if not wait:
            return nothing_to_end
        with self._lock:
            self.refused += 1
        if self.on_exceeded is not None or self._observers:
            event = QuotaExceeded(str(client), wait, type(self).__name__, method, self.dry_run)
            options.emit(self.on_exceeded, event, self._observers)
        if self.dry_run:
            return nothing_to_end
        milliseconds = max(math.ceil(wait * 1000), 1)
        details = f"quota exceeded: {self.calls} calls per {self.period:g}s; retry in {milliseconds} ms"
        status = retry_info_details(self.code.value[0], details, milliseconds / 1000)
        return Refusal(self.code, details, ((PUSHBACK_MS, str(milliseconds)), (STATUS_DETAILS, status)))


class Quota(_Quota, Admitting):
    """Each client of a sync server may make ``calls`` calls per ``period`` seconds, ``burst`` of them at once;
    the excess is refused at once with ``code`` and when the client's next call would be admitted, as
    ``grpc-retry-pushback-ms`` and a ``google.rpc.RetryInfo`` (see the module's doc). A token bucket per client:
    a quiet client saves up to ``burst`` calls. Health checks and reflection are never refused.

    Memory is bounded: a client's bucket is kept only until it is full again, and at most ``max_clients`` are
    kept; past that, the calls of clients not kept share one quota until some bucket fills again.

    :param calls: calls per period per client, positional (1..100 000).
    :param period: seconds (default 1; at least 1 ms).
    :param burst: calls a client may make at once, after a quiet while (default ``calls``).
    :param key: who the client of a call is, from its ``grpc.ServicerContext`` (default :func:`by_identity`: the
        authenticated identity, else the caller's address; :func:`by_peer`, :func:`by_metadata`, or your own
        function). Calls whose key cannot be told (the function raised, logged once, or gave no str) share one
        quota.
    :param max_clients: clients kept at most (default 10 000).
    :param code: RESOURCE_EXHAUSTED (default) or UNAVAILABLE.
    :param on_exceeded: hears a :class:`~interceptors.events.QuotaExceeded` for each call refused.
    :param metrics: an :class:`interceptors.otel.Metrics` to count the refused calls in (default None).
    :param dry_run: decide and report, but refuse nothing (default False): a call it would refuse is counted in
        ``refused`` and reported (``dry_run=True``), and is served, taking none of the quota.
    :param clock: the clock of the buckets (default the system clock).
    """


class AioQuota(_Quota, AioAdmitting):
    """:class:`Quota` for ``grpc.aio`` servers, with the same parameters."""
