"""Quotas for sync and aio servers: each client may make so many calls per period; the excess is refused at once,
Trailers-Only, with RESOURCE_EXHAUSTED and when to come back, in ``grpc-retry-pushback-ms`` and a
``google.rpc.RetryInfo``: this library's clients, grpc's own retries and grpc-js's wait that long, then retry.

Who a client is, is the server's to decide: by default the identity the channel authenticated (a TLS client
certificate) or else the caller's address, never what the caller claims in metadata; a tenant from metadata
(:func:`by_metadata`) is an explicit choice, for callers the server trusts to say who they are.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Hashable
from typing import Any

import grpc

from ..engine import _options as options
from ..engine._buckets import KeyedBuckets
from ..engine._clock import Clock
from ..engine._events import QuotaExceeded
from ._admission import Admitting, AioAdmitting, End, Refusal, nothing_to_end
from ._core import CallMetrics
from ._pushback import PUSHBACK_MS, STATUS_DETAILS, retry_info_details

__all__ = ["DEFAULT_MAX_CLIENTS", "AioQuota", "ClientKey", "Quota", "by_identity", "by_metadata", "by_peer"]

DEFAULT_MAX_CLIENTS = 10_000
UNKNOWN = "<unknown>"
"""The key of the calls whose client could not be told (the key function raised, or gave no str): they share one
quota."""

ClientKey = Callable[[Any], "str | None"]
"""Who the client of a call is, from its ``grpc.ServicerContext`` (None: it cannot be told)."""

_log = logging.getLogger("interceptors")


def by_peer(context: Any) -> str | None:
    """The caller's address without its port (``ipv4:10.0.0.7``, ``ipv6:[::1]``, ``unix:/run/app.sock``): every
    connection from one host counts as one client."""
    peer = context.peer()
    if not isinstance(peer, str) or not peer:
        return None
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rpartition(":")[0]
    return peer


def by_identity(context: Any) -> str | None:
    """The identity the channel authenticated (the first of ``context.peer_identities()``: a TLS client
    certificate's name), else the caller's address (:func:`by_peer`). The default."""
    identities = context.peer_identities()
    if identities:
        first = identities[0]
        return "identity:" + (first.decode(errors="replace") if isinstance(first, bytes) else str(first))
    return by_peer(context)


def by_metadata(key: str, *, otherwise: ClientKey | None = by_identity) -> ClientKey:
    """The value of the call's metadata ``key`` (a tenant id, say), else what ``otherwise`` says (default
    :func:`by_identity`). A caller can claim any value: use it for callers trusted to say who they are."""
    if not isinstance(key, str) or not key or key != key.lower() or key.endswith("-bin"):
        raise ValueError(f"key must be a lower-case text metadata key, got {key!r}")
    named = key

    def from_metadata(context: Any) -> str | None:
        for name, value in context.invocation_metadata() or ():
            if name == named and isinstance(value, str):
                return f"{named}:{value}"
        return None if otherwise is None else otherwise(context)

    return from_metadata


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
        clock: Clock | None = None,
    ) -> None:
        if metrics is not None and not callable(getattr(metrics, "watch", None)):
            raise ValueError(f"metrics must be an interceptors.otel.Metrics, got {metrics!r}")
        self.calls: int = options.count(calls, "calls", maximum=options.MAX_CALLS)
        self.period: float = options.window(period, "period")
        self.burst: int = self.calls if burst is None else options.count(burst, "burst", maximum=options.MAX_CALLS)
        self.key: ClientKey = options.function(key, "key", "the call's grpc.ServicerContext")
        self.max_clients: int = options.count(max_clients, "max_clients", maximum=10_000_000)
        if code not in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
            raise ValueError(f"code must be RESOURCE_EXHAUSTED or UNAVAILABLE, got {code!r}")
        self.code: grpc.StatusCode = code
        self.on_exceeded: options.Listener[QuotaExceeded] | None = options.listener(on_exceeded, "on_exceeded")
        self._buckets = KeyedBuckets(self.period / self.calls, self.burst, self.max_clients, options.clock(clock))
        self._observers: tuple[Callable[[Any], object], ...] = ()
        self._lock = threading.Lock()
        self._warned = False
        self.refused: int = 0
        """Calls refused so far."""
        if metrics is not None:
            metrics.watch([self])

    @property
    def clients(self) -> int:
        """Clients whose quota is kept at the moment (those that used some of it lately)."""
        return len(self._buckets)

    def _client(self, context: Any) -> Hashable:
        try:
            client = self.key(context)
        except Exception as error:
            client = None
            if not self._warned:
                self._warned = True
                _log.warning("the quota's key function failed (such calls share one quota, %r): %r", UNKNOWN, error)
        return client if isinstance(client, str) else UNKNOWN

    def _admission(self, context: Any, method: str) -> End | Refusal:
        client, wait = self._buckets.take(self._client(context))
        if not wait:
            return nothing_to_end
        with self._lock:
            self.refused += 1
        if self.on_exceeded is not None or self._observers:
            event = QuotaExceeded(str(client), wait, type(self).__name__, method)
            options.emit(self.on_exceeded, event, self._observers)
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
    :param clock: the clock of the buckets (default the system clock).
    """


class AioQuota(_Quota, AioAdmitting):
    """:class:`Quota` for ``grpc.aio`` servers, with the same parameters."""
