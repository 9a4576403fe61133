"""OpenTelemetry metrics for the resilient calls: gRPC's own vocabulary (gRFC A66) for attempts and calls, and the
policies' metrics under ``resilience.``.

Needs ``opentelemetry-api`` (``pip install 'grpc-resilience-interceptors[otel]'``). Give a :class:`Metrics` to the
helpers or interceptors (``metrics=``); it records into ``meter_provider`` (default: the global one).

- ``grpc.client.attempt.started`` ({attempt}; grpc.method, grpc.target) and ``grpc.client.attempt.duration``
  (s; + grpc.status): every attempt the policies send, each one grpc call (a retry, a hedge, a resumed stream).
  grpcio-observability records the same two from grpc's core, with the compressed message sizes Python cannot see;
  with it registered, pass ``attempt_metrics=False``.
- ``grpc.client.call.duration`` (s; grpc.method, grpc.target, grpc.status): the call as its caller sees it, across
  retries, hedges and waits; a fallback's answer counts as OK (grpcio-observability records no logical call).
- ``resilience.client.retries`` ({retry}; grpc.method, resilience.policy, resilience.reason: the status retried, OK
  for an answer a result predicate judged a failure),
  ``resilience.client.hedges`` ({hedge}; resilience.reason: "delay", or the non-fatal status that brought it
  forward), ``resilience.client.cache`` ({call}; resilience.result: hit, stale or miss),
  ``resilience.client.rejections`` ({call}; resilience.rejection: breaker, bulkhead, rate_limiter, throttle,
  limiter, budget), ``resilience.client.fallbacks`` ({call}; grpc.status: the status replaced),
  ``resilience.breaker.transitions`` ({transition}; resilience.policy, resilience.state.old, resilience.state.new),
  ``resilience.server.sheds`` ({call}; resilience.policy: the shedding or quota interceptor, resilience.reason:
  overload, deadline, lag, cpu or quota); rejections, sheds and transitions of a policy in dry run (which let the
  call go) carry ``resilience.dry_run`` true. And observable gauges ``resilience.breaker.state`` (0 closed, 1
  half-open, 2 open, 3 forced open, 4 disabled), ``resilience.budget.tokens`` (token-bucket budgets),
  ``resilience.limiter.limit`` (adaptive limiters), ``resilience.fleet.local`` (fleet policies: 1 while one
  decides locally, its store silent). These come from the policies' events, which a Metrics hears for every
  policy of the process from its creation until :meth:`Metrics.close`.

Histograms carry A66's bucket boundaries as advice; ``grpc.target`` is the target with grpc's default scheme
(:func:`canonical_target`). A call keeps its durations in an array until a reader collects, and the SDK records
them then, in the reader's thread (its ``record`` costs ~10 µs a value); up to :data:`WAITING_LIMIT` wait, past
that, and inside spans that record (for exemplars), a call records them itself.
"""

from __future__ import annotations

import threading
import time
import weakref
from array import array
from collections.abc import Iterable
from typing import Any, TypeVar

try:
    from opentelemetry import metrics as otel
    from opentelemetry import trace
except ImportError as error:  # pragma: no cover - the extra is missing
    raise ImportError(
        "interceptors.otel needs opentelemetry-api: pip install 'grpc-resilience-interceptors[otel]'"
    ) from error

from .engine import _options as options
from .engine._adaptive_limiter import AdaptiveLimiter
from .engine._budget import RetryBudget
from .engine._circuit_breaker import CircuitBreaker
from .engine._events import (
    BudgetExceeded,
    BulkheadFull,
    CacheHit,
    CacheMiss,
    CircuitRejected,
    CircuitState,
    CircuitStateChanged,
    FallbackExecuted,
    HedgeStarted,
    LimitExceeded,
    QuotaExceeded,
    RateLimited,
    RetryScheduled,
    RetryStarted,
    Shed,
    Throttled,
)
from .engine._execution import Execution
from .engine._keyed import Keyed
from .engine._policy import AsyncLink, Executor, Link, Policy
from .fleet._breaker import FleetCircuitBreaker
from .fleet._budget import FleetRetryBudget
from .fleet._rate_limiter import GlobalRateLimiter
from .grpc._observer import AioObserver, CallObserver, SyncObserver
from .grpc._status import status_code

P = TypeVar("P", bound=Policy)

__all__ = [
    "LATENCY_BUCKETS",
    "METHODS_NAMED",
    "TARGETS_NAMED",
    "WAITING_LIMIT",
    "AioServerMetrics",
    "Metrics",
    "ServerMetrics",
    "canonical_target",
]

LATENCY_BUCKETS: tuple[float, ...] = (
    0, 0.00001, 0.00005, 0.0001, 0.0003, 0.0006, 0.0008, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008, 0.01,
    0.013, 0.016, 0.02, 0.025, 0.03, 0.04, 0.05, 0.065, 0.08, 0.1, 0.13, 0.16, 0.2, 0.25, 0.3, 0.4, 0.5, 0.65, 0.8,
    1, 2, 5, 10, 20, 50, 100,
)  # fmt: skip
"""gRFC A66's latency buckets, seconds."""

_STATES = {
    CircuitState.CLOSED: 0,
    CircuitState.HALF_OPEN: 1,
    CircuitState.OPEN: 2,
    CircuitState.FORCED_OPEN: 3,
    CircuitState.DISABLED: 4,
}
_REJECTIONS: dict[type, str] = {
    CircuitRejected: "breaker",
    BulkheadFull: "bulkhead",
    RateLimited: "rate_limiter",
    Throttled: "throttle",
    LimitExceeded: "limiter",
    BudgetExceeded: "budget",
}


class Metrics:
    """Where the resilient calls' metrics go (see the module's doc).

    :param meter_provider: an OpenTelemetry MeterProvider (default: the global one).
    :param attempt_metrics: record ``grpc.client.attempt.*`` (default True; False where grpcio-observability does).
    """

    def __init__(self, meter_provider: Any = None, *, attempt_metrics: bool = True) -> None:
        provider = meter_provider if meter_provider is not None else otel.get_meter_provider()
        meter = provider.get_meter("grpc-resilience-interceptors")
        self.attempt_metrics: bool = options.flag(attempt_metrics, "attempt_metrics")
        self._idle = isinstance(provider, otel.NoOpMeterProvider)  # nothing to time for
        self._pending = _Pending()
        self._started: dict[tuple[str, str], _Counted] = {}  # by method and target: channels share them
        self._methods: set[str] = set()  # the methods named in grpc.method (see METHODS_NAMED)
        self._targets: set[str] = set()  # the targets named in grpc.target (see TARGETS_NAMED)
        self._lock = threading.Lock()
        meter.create_observable_counter(
            "grpc.client.attempt.started", [self._pending.hand_over, self._attempts_started], unit="{attempt}"
        )
        self._attempt_duration = meter.create_histogram(
            "grpc.client.attempt.duration", unit="s", explicit_bucket_boundaries_advisory=LATENCY_BUCKETS
        )
        self._call_duration = meter.create_histogram(
            "grpc.client.call.duration", unit="s", explicit_bucket_boundaries_advisory=LATENCY_BUCKETS
        )
        self._retries = meter.create_counter("resilience.client.retries", unit="{retry}")
        self._hedges = meter.create_counter("resilience.client.hedges", unit="{hedge}")
        self._rejections = meter.create_counter("resilience.client.rejections", unit="{call}")
        self._fallbacks = meter.create_counter("resilience.client.fallbacks", unit="{call}")
        self._transitions = meter.create_counter("resilience.breaker.transitions", unit="{transition}")
        self._sheds = meter.create_counter("resilience.server.sheds", unit="{call}")
        self._cache = meter.create_counter("resilience.client.cache", unit="{call}")
        self._breakers: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()
        self._budgets: weakref.WeakSet[RetryBudget] = weakref.WeakSet()
        self._limiters: weakref.WeakSet[AdaptiveLimiter] = weakref.WeakSet()
        self._keyed: weakref.WeakSet[Keyed] = weakref.WeakSet()  # their keys' breakers and limiters are gauged too
        meter.create_observable_gauge("resilience.breaker.state", [self._breaker_states], unit="{state}")
        meter.create_observable_gauge("resilience.budget.tokens", [self._budget_tokens], unit="{token}")
        meter.create_observable_gauge("resilience.limiter.limit", [self._limits], unit="{call}")
        self._fleet: weakref.WeakSet[Any] = weakref.WeakSet()  # fleet policies: their mode
        meter.create_observable_gauge("resilience.fleet.local", [self._fleet_modes], unit="{policy}")
        self._heard_from: weakref.WeakSet[Any] = weakref.WeakSet()  # what it observes (see watch)

    def close(self) -> None:
        """Stop hearing the events of what it watches."""
        for source in list(self._heard_from):
            options.unobserve(source, self._heard)
        self._heard_from.clear()

    def watch(self, policies: Iterable[Any]) -> None:
        """Count the events of these policies (their budgets', a shedding interceptor's, a :class:`Keyed` one's
        keys'), and report the state of their breakers, budgets and limiters in the gauges (a Keyed one's too).
        The channels and interceptors given this Metrics (``metrics=``) watch their policies: it counts theirs, and
        no one else's."""
        for policy in policies:
            self._hear(policy)
            if isinstance(policy, CircuitBreaker):
                self._breakers.add(policy)
            elif isinstance(policy, AdaptiveLimiter):
                self._limiters.add(policy)
            elif isinstance(policy, Keyed):
                self._keyed.add(policy)
            if isinstance(policy, (GlobalRateLimiter, FleetCircuitBreaker)):
                self._fleet.add(policy)
            budget = getattr(policy, "budget", None)
            if isinstance(budget, RetryBudget):
                self._hear(budget)
                self._budgets.add(budget)
                if isinstance(budget, FleetRetryBudget):
                    self._fleet.add(budget)

    def _hear(self, source: object) -> None:
        if source not in self._heard_from:
            self._heard_from.add(source)
            options.observe(source, self._heard)

    def instrument(self, executor: Executor, method: str, target: str) -> Executor:
        """``executor`` with the call's and each attempt's timing around its policies."""
        if self._idle:
            return executor
        self.watch(executor.policies)
        named = target if target == "other" else self._named(canonical_target(target), self._targets, TARGETS_NAMED)
        base = {"grpc.method": self._method(method), "grpc.target": named}
        chain: list[Policy] = [_Timer(self._call_duration, self._pending, base), *executor.policies]
        if self.attempt_metrics:
            started = self._started.setdefault((base["grpc.method"], base["grpc.target"]), _Counted(base))
            chain.append(_Timer(self._attempt_duration, self._pending, base, started))
        return Executor(*chain)

    def _method(self, method: str) -> str:
        """``grpc.method`` for ``method``: its name, for the first :data:`METHODS_NAMED` methods; then "other"."""
        return self._named(method.lstrip("/"), self._methods, METHODS_NAMED)

    def _named(self, name: str, named: set[str], most: int) -> str:
        """``name``, if it is one of the first ``most`` of its kind seen (kept in ``named``); else "other"."""
        if name in named:
            return name
        with self._lock:
            if len(named) >= most:
                return "other"
            named.add(name)
        return name

    def _heard(self, event: Any) -> None:
        method = self._method(event.method) if event.method else ""
        span = trace.get_current_span()
        if span.is_recording():
            _span_event(span, event, method)
        if isinstance(event, RetryStarted):
            reason = _code(event.failure)
            self._retries.add(
                1, {"grpc.method": method, "resilience.policy": event.policy, "resilience.reason": reason}
            )
        elif isinstance(event, HedgeStarted):
            reason = "delay" if event.failure is None else _code(event.failure)
            self._hedges.add(1, {"grpc.method": method, "resilience.policy": event.policy, "resilience.reason": reason})
        elif isinstance(event, FallbackExecuted):
            attributes = {"grpc.method": method, "resilience.policy": event.policy, "grpc.status": _code(event.failure)}
            self._fallbacks.add(1, attributes)
        elif isinstance(event, (CacheHit, CacheMiss)):
            outcome = "miss" if isinstance(event, CacheMiss) else "stale" if event.stale else "hit"
            self._cache.add(1, {"grpc.method": method, "resilience.policy": event.policy, "resilience.result": outcome})
        elif isinstance(event, Shed):
            self._sheds.add(1, _dry({"resilience.policy": event.policy, "resilience.reason": event.reason}, event))
        elif isinstance(event, QuotaExceeded):  # not by client: they are too many to name
            self._sheds.add(1, _dry({"resilience.policy": event.policy, "resilience.reason": "quota"}, event))
        elif isinstance(event, CircuitStateChanged):
            attributes = {
                "resilience.policy": event.policy,
                "resilience.state.old": event.old.value,
                "resilience.state.new": event.new.value,
            }
            self._transitions.add(1, _dry(attributes, event))
        else:
            rejection = _REJECTIONS.get(type(event))
            if rejection is not None:
                attributes = {
                    "grpc.method": method,
                    "resilience.policy": event.policy,
                    "resilience.rejection": rejection,
                }
                self._rejections.add(1, _dry(attributes, event))

    def _attempts_started(self, _: Any) -> Iterable[otel.Observation]:
        return [otel.Observation(s.count, s.attributes) for s in list(self._started.values()) if s.count]

    def _keys(self, kind: type[P]) -> list[P]:
        """The policies of ``kind`` the keyed policies it watches keep at the moment."""
        return [p for keyed in list(self._keyed) for p in keyed.kept if isinstance(p, kind)]

    def _breaker_states(self, _: Any) -> Iterable[otel.Observation]:
        breakers = [*self._breakers, *self._keys(CircuitBreaker)]
        return [otel.Observation(_STATES[b.state], {"resilience.policy": b.name}) for b in breakers]

    def _budget_tokens(self, _: Any) -> Iterable[otel.Observation]:
        return [
            otel.Observation(tokens, {"resilience.policy": "RetryBudget"})
            for tokens in (b.tokens for b in list(self._budgets))
            if tokens is not None
        ]

    def _fleet_modes(self, _: Any) -> Iterable[otel.Observation]:
        """1 for a fleet policy deciding locally (its store does not answer), 0 while it decides with the fleet."""
        return [
            otel.Observation(int(p.mode == "local"), {"resilience.policy": p.name, "resilience.key": p.key})
            for p in list(self._fleet)
        ]

    def _limits(self, _: Any) -> Iterable[otel.Observation]:
        limiters = [*self._limiters, *self._keys(AdaptiveLimiter)]
        return [otel.Observation(limiter.limit, {"resilience.policy": limiter.name}) for limiter in limiters]


METHODS_NAMED = 1000
"""Methods a :class:`Metrics` names in ``grpc.method``, the first it sees; any other is "other", as gRFC A66 records
the methods a client did not register (a Python client registers every method its stubs name, so this cap stands
for that rule), so that what a Metrics keeps does not grow with method names."""

TARGETS_NAMED = 100
"""Targets a :class:`Metrics` names in ``grpc.target``, the first it sees; any other is "other" (A66 lets a
target filter do so), so that what it keeps does not grow with the targets a process dials."""

WAITING_LIMIT = 1 << 18
"""Histogram values that wait for a collection at most, per Metrics or server (8 bytes each)."""

_SCHEMES = frozenset({"dns", "ipv4", "ipv6", "unix", "unix-abstract", "vsock", "xds", "google-c2p"})


def canonical_target(target: str) -> str:
    """A66's ``grpc.target``: the target with gRPC's default scheme when it names none grpc knows
    (``localhost:50051`` → ``dns:///localhost:50051``), as grpc itself reads it."""
    scheme, colon, _ = target.partition(":")
    return target if colon and scheme.lower() in _SCHEMES else f"dns:///{target}"


def _dry(attributes: dict[str, Any], event: Any) -> dict[str, Any]:
    """``attributes``, with ``resilience.dry_run`` true for a decision made in dry run (one that let the call go)."""
    if getattr(event, "dry_run", False):
        attributes["resilience.dry_run"] = True
    return attributes


def _code(failure: BaseException | None) -> str:
    if failure is None:
        return "OK"
    if not isinstance(failure, Exception):
        return "CANCELLED"
    code = status_code(failure)
    return code.name if code is not None else "UNKNOWN"


class _Counted:
    """A count kept in place and reported by an observable counter when a reader collects (an SDK counter's
    ``add`` costs ~7 µs: it cleans and hashes the attributes each time)."""

    __slots__ = ("_lock", "attributes", "count")

    def __init__(self, attributes: dict[str, str]) -> None:
        self.attributes, self.count, self._lock = attributes, 0, threading.Lock()

    def add(self) -> None:
        with self._lock:
            self.count += 1


class _Bin:
    """Values of one histogram and attribute set waiting for the next collection."""

    __slots__ = ("attributes", "histogram", "values")

    def __init__(self, histogram: Any, attributes: dict[str, str]) -> None:
        self.histogram, self.attributes, self.values = histogram, attributes, array("d")


class _Pending:
    """Histogram values waiting for the next collection: keeping one costs an append to an array (8 bytes), where
    the SDK's ``record`` costs ~10 µs (it cleans and hashes the attributes of each value). Every collection hands
    them over first (a MeterProvider runs the observable callbacks, where :meth:`hand_over` is, before it reads a
    histogram), so each reader sees each value in the interval it was measured in. At most ``limit`` wait (no
    reader, or none collecting yet); past that, and for values measured inside a span that records (the SDK may
    take the span as an exemplar), a value is recorded at once."""

    __slots__ = ("_bins", "_limit", "_lock", "_waiting")

    def __init__(self, limit: int = WAITING_LIMIT) -> None:
        self._bins: dict[tuple[int, frozenset[tuple[str, str]]], _Bin] = {}
        self._lock = threading.Lock()
        self._limit, self._waiting = limit, 0

    def bin(self, histogram: Any, attributes: dict[str, str]) -> _Bin:
        """Where values of ``histogram`` with ``attributes`` wait (one place for each, whoever asks)."""
        with self._lock:
            key = (id(histogram), frozenset(attributes.items()))
            return self._bins.setdefault(key, _Bin(histogram, attributes))

    def record(self, kept: _Bin, value: float, span: Any) -> None:
        if not span.is_recording():
            with self._lock:
                if self._waiting < self._limit:
                    self._waiting += 1
                    kept.values.append(value)
                    return
        kept.histogram.record(value, kept.attributes)

    def hand_over(self, _: Any = None) -> Iterable[otel.Observation]:
        """Record every waiting value (an observable callback that observes nothing itself)."""
        with self._lock:
            taken = [(kept, kept.values) for kept in self._bins.values() if kept.values]
            for kept, _values in taken:
                kept.values = array("d")
            self._waiting = 0
        for kept, values in taken:
            for value in values:
                kept.histogram.record(value, kept.attributes)
        return ()


class _Timer(Policy):
    """Times what it wraps into ``histogram`` with grpc.status, through ``pending``: outermost, the call;
    innermost, each attempt (``started`` counts them; in a span that records, each is also a span event). A stream
    (``execution.settle``) is timed to its end."""

    __slots__ = ("_attributes", "_bins", "_histogram", "_pending", "_started")
    serves_deferred = True
    _attributes: dict[str, str]
    _bins: dict[str, _Bin]
    _histogram: Any
    _pending: _Pending
    _started: _Counted | None

    def __init__(
        self, histogram: Any, pending: _Pending, attributes: dict[str, str], started: _Counted | None = None
    ) -> None:
        self._init(
            name="Metrics", _histogram=histogram, _pending=pending, _attributes=attributes, _started=started, _bins={}
        )

    def _bin(self, code: str) -> _Bin:
        bins: dict[str, _Bin] = self._bins
        kept = bins.get(code)
        if kept is None:
            kept = bins[code] = self._pending.bin(self._histogram, {**self._attributes, "grpc.status": code})
        return kept

    def _ended(self, began: float, outcome: BaseException | None, attempt: int, span: Any) -> None:
        code = _code(outcome)
        self._pending.record(self._bin(code), time.perf_counter() - began, span)
        if self._started is not None and span.is_recording():
            span.add_event("grpc.attempt", {**self._attributes, "grpc.attempt": attempt, "grpc.status": code})

    def _began(self) -> tuple[Any, float]:
        if self._started is not None:
            self._started.add()
        return trace.get_current_span(), time.perf_counter()

    def _returned(self, execution: Execution, began: float, span: Any) -> None:
        attempt = execution.attempts
        if execution.settle is not None:  # a stream or a deferred attempt: it ends later
            execution.settle.append(lambda outcome: self._ended(began, outcome, attempt, span))
        else:
            self._ended(began, None, attempt, span)

    def wrap(self, inner: Link) -> Link:
        def run(execution: Execution) -> Any:
            span, began = self._began()
            try:
                result = inner(execution)
            except BaseException as failure:
                self._ended(began, failure, execution.attempts, span)
                raise
            self._returned(execution, began, span)
            return result

        return run

    def wrap_async(self, inner: AsyncLink) -> AsyncLink:
        async def run(execution: Execution) -> Any:
            span, began = self._began()
            try:
                result = await inner(execution)
            except BaseException as failure:
                self._ended(began, failure, execution.attempts, span)
                raise
            self._returned(execution, began, span)
            return result

        return run


class _Records(CallObserver):
    """gRFC A66's server metrics: ``grpc.server.call.started`` ({call}; grpc.method) and
    ``grpc.server.call.duration`` (s; grpc.method, grpc.status: what the client saw), kept like the client's."""

    def __init__(self, meter_provider: Any = None) -> None:
        provider = meter_provider if meter_provider is not None else otel.get_meter_provider()
        meter = provider.get_meter("grpc-resilience-interceptors")
        self._pending = _Pending()
        self._started: dict[str, _Counted] = {}
        self._lock = threading.Lock()
        meter.create_observable_counter(
            "grpc.server.call.started", [self._pending.hand_over, self._calls_started], unit="{call}"
        )
        self._duration = meter.create_histogram(
            "grpc.server.call.duration", unit="s", explicit_bucket_boundaries_advisory=LATENCY_BUCKETS
        )
        self._bins: dict[tuple[str, Any], _Bin] = {}

    def _observed(self, handler: Any, method: str, *, aio: bool) -> Any:
        # A66: a method the server does not serve is "other" (a client cannot grow the attribute sets)
        return super()._observed(handler, method if handler is not None else "other", aio=aio)

    def _began(self, method: str) -> None:
        counted = self._started.get(method)
        if counted is None:
            with self._lock:
                counted = self._started.setdefault(method, _Counted({"grpc.method": method.lstrip("/")}))
        counted.add()

    def _ended(self, method: str, code: Any, started: float) -> None:
        kept = self._bins.get((method, code))
        if kept is None:
            attributes = {"grpc.method": method.lstrip("/"), "grpc.status": code.name}
            kept = self._bins[method, code] = self._pending.bin(self._duration, attributes)
        self._pending.record(kept, time.monotonic() - started, trace.get_current_span())

    def _calls_started(self, _: Any) -> Iterable[otel.Observation]:
        return [otel.Observation(c.count, c.attributes) for c in list(self._started.values())]


class ServerMetrics(_Records, SyncObserver):
    """Records gRFC A66's server metrics for every call of a sync server, into ``meter_provider`` (default: the
    global one). Install it first (outermost), so that it sees the calls other interceptors refuse (a shed call is
    RESOURCE_EXHAUSTED)."""


class AioServerMetrics(_Records, AioObserver):
    """:class:`ServerMetrics` for ``grpc.aio`` servers."""


def _span_event(span: Any, event: Any, method: str) -> None:
    """Retries scheduled, hedges started and fallbacks as events of the span they happen in."""
    if isinstance(event, RetryScheduled):
        attributes = {"grpc.method": method, "grpc.attempt": event.attempt, "resilience.delay": event.delay}
        span.add_event("resilience.retry", {**attributes, "grpc.status": _code(event.failure)})
    elif isinstance(event, HedgeStarted):
        span.add_event("resilience.hedge", {"grpc.method": method, "grpc.attempt": event.attempt})
    elif isinstance(event, FallbackExecuted):
        span.add_event("resilience.fallback", {"grpc.method": method, "grpc.status": _code(event.failure)})
