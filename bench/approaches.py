"""The ways a Python gRPC user could make a unary call resilient, each set up as its closest equivalent of one
configuration (:class:`Budget`), with a sync and (where the library has one) an async client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import grpc
import pybreaker
import tenacity
from demo.v1 import service_b_pb2, service_b_pb2_grpc

try:
    import redress
    from redress.contrib.grpc import aio_unary_unary_client_interceptor, unary_unary_client_interceptor
except ImportError:  # redress needs Python 3.11
    HAVE_REDRESS = False
else:
    HAVE_REDRESS = True

import interceptors.aio
from bench.passthrough import AioPassThrough, PassThrough
from interceptors import (
    AdaptiveThrottle,
    Backoff,
    Bulkhead,
    CachePolicy,
    CircuitBreaker,
    Fallback,
    HedgePolicy,
    RateLimiter,
    ResilienceInterceptor,
    RetryBudget,
    RetryPolicy,
    Timeout,
    resilient_channel,
)
from interceptors.engine import Policy

REQUEST = service_b_pb2.HelloRequest(name="bench")
NO_RETRIES = [("grpc.enable_retries", 0)]
RETRY_THROTTLING_TOKENS, RETRY_THROTTLING_RATIO = 10, 0.1
METHOD = "/demo.v1.ServiceB/Hello"


@dataclass(frozen=True)
class Budget:
    """The resilience every approach is asked for."""

    attempts: int = 3  # in all, on UNAVAILABLE
    backoff_initial: float = 0.1  # seconds, doubling
    backoff_max: float = 1.0
    breaker_failures: int = 5  # consecutive
    breaker_delay: float = 1.0  # seconds open before a probe
    attempt_timeout: float = 1.0
    deadline: float = 3.0  # for the whole call


@dataclass
class Client:
    """One approach's way to make the call (``call()`` raises on failure), and to read its breaker."""

    call: Callable[[], Any]
    close: Callable[[], Any]
    breaker_state: Callable[[], str] | None = None


@dataclass(frozen=True)
class Approach:
    name: str
    describe: Callable[[Budget], str]
    sync: Callable[[str, Budget], Client]
    aio: Callable[[str, Budget], Awaitable[Client]] | None


def _unavailable(error: BaseException) -> bool:
    return isinstance(error, grpc.RpcError) and error.code() is grpc.StatusCode.UNAVAILABLE


def _counts_for_breaker(error: BaseException) -> bool:
    code = error.code() if isinstance(error, grpc.RpcError) else None
    return code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


# -- bare ---------------------------------------------------------------------------------------------------------


def _bare_sync(target: str, budget: Budget) -> Client:
    channel = grpc.insecure_channel(target, options=NO_RETRIES)
    hello = service_b_pb2_grpc.ServiceBStub(channel).Hello
    return Client(lambda: hello(REQUEST, timeout=budget.deadline), channel.close)


async def _bare_aio(target: str, budget: Budget) -> Client:
    channel = grpc.aio.insecure_channel(target, options=NO_RETRIES)
    hello = service_b_pb2_grpc.ServiceBStub(channel).Hello
    return Client(lambda: hello(REQUEST, timeout=budget.deadline), channel.close)


# -- grpcio's own retries ---------------------------------------------------------------------------------------------


def _service_config(budget: Budget, throttled: bool = False) -> list[tuple[str, Any]]:
    config: dict[str, Any] = {
        "methodConfig": [
            {
                "name": [{"service": "demo.v1.ServiceB"}],
                "retryPolicy": {
                    "maxAttempts": budget.attempts,
                    "initialBackoff": f"{budget.backoff_initial}s",
                    "maxBackoff": f"{budget.backoff_max}s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
    if throttled:
        config["retryThrottling"] = {"maxTokens": RETRY_THROTTLING_TOKENS, "tokenRatio": RETRY_THROTTLING_RATIO}
    return [("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(config))]


def _builtin(throttled: bool) -> tuple[Any, Any]:
    def sync(target: str, budget: Budget) -> Client:
        channel = grpc.insecure_channel(target, options=_service_config(budget, throttled))
        hello = service_b_pb2_grpc.ServiceBStub(channel).Hello
        return Client(lambda: hello(REQUEST, timeout=budget.deadline), channel.close)

    async def aio(target: str, budget: Budget) -> Client:
        channel = grpc.aio.insecure_channel(target, options=_service_config(budget, throttled))
        hello = service_b_pb2_grpc.ServiceBStub(channel).Hello
        return Client(lambda: hello(REQUEST, timeout=budget.deadline), channel.close)

    return sync, aio


# -- tenacity + pybreaker ---------------------------------------------------------------------------------------------


def _tenacity_options(budget: Budget) -> dict[str, Any]:
    return {
        "stop": tenacity.stop_after_attempt(budget.attempts) | tenacity.stop_after_delay(budget.deadline),
        "wait": tenacity.wait_exponential(multiplier=budget.backoff_initial, max=budget.backoff_max),
        "retry": tenacity.retry_if_exception(lambda e: _unavailable(e) or isinstance(e, pybreaker.CircuitBreakerError)),
        "reraise": True,
    }


def _tenacity_sync(target: str, budget: Budget) -> Client:
    channel = grpc.insecure_channel(target, options=NO_RETRIES)
    hello = service_b_pb2_grpc.ServiceBStub(channel).Hello
    breaker = pybreaker.CircuitBreaker(
        fail_max=budget.breaker_failures,
        reset_timeout=budget.breaker_delay,
        exclude=[lambda e: not _counts_for_breaker(e)],
    )
    retrying = tenacity.Retrying(**_tenacity_options(budget))
    return Client(
        lambda: retrying(breaker.call, hello, REQUEST, timeout=budget.attempt_timeout),
        channel.close,
        lambda: str(breaker.current_state),
    )


async def _tenacity_aio(target: str, budget: Budget) -> Client:
    channel = grpc.aio.insecure_channel(target, options=NO_RETRIES)
    hello = service_b_pb2_grpc.ServiceBStub(channel).Hello
    retrying = tenacity.AsyncRetrying(**_tenacity_options(budget))

    async def call() -> Any:
        async for attempt in retrying:
            with attempt:
                return await hello(REQUEST, timeout=budget.attempt_timeout)
        return None

    return Client(call, channel.close)


# -- redress ----------------------------------------------------------------------------------------------------------


def _redress_retry(budget: Budget, kind: Any) -> Any:
    return kind(
        classifier=redress.grpc_classifier,
        strategy=redress.retry_after_or(redress.equal_jitter(budget.backoff_initial, budget.backoff_max)),
        max_attempts=budget.attempts,
        deadline_s=budget.deadline,
    )


def _redress_breaker(budget: Budget) -> redress.CircuitBreaker:
    return redress.CircuitBreaker(
        failure_threshold=budget.breaker_failures, window_s=60.0, recovery_timeout_s=budget.breaker_delay
    )


def _redress_sync(target: str, budget: Budget) -> Client:
    breaker = _redress_breaker(budget)
    policy: Any = redress.Policy(retry=_redress_retry(budget, redress.Retry), circuit_breaker=breaker)
    channel = grpc.intercept_channel(
        grpc.insecure_channel(target, options=NO_RETRIES), cast(Any, unary_unary_client_interceptor(policy))
    )
    hello = service_b_pb2_grpc.ServiceBStub(channel).Hello
    return Client(lambda: hello(REQUEST, timeout=budget.attempt_timeout), channel.close, lambda: breaker.state.value)


async def _redress_aio(target: str, budget: Budget) -> Client:
    breaker = _redress_breaker(budget)
    policy: Any = redress.AsyncPolicy(retry=_redress_retry(budget, redress.AsyncRetry), circuit_breaker=breaker)
    channel = grpc.aio.insecure_channel(
        target, options=NO_RETRIES, interceptors=[cast(Any, aio_unary_unary_client_interceptor(policy))]
    )
    hello = service_b_pb2_grpc.ServiceBStub(channel).Hello
    return Client(lambda: hello(REQUEST, timeout=budget.attempt_timeout), channel.close, lambda: breaker.state.value)


# -- ours -------------------------------------------------------------------------------------------------------------


def _retry(budget: Budget) -> RetryPolicy:
    return RetryPolicy(max_attempts=budget.attempts, delay=Backoff(budget.backoff_initial, budget.backoff_max))


def _breaker(budget: Budget) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=budget.breaker_failures, delay=budget.breaker_delay)


def ours_client(chain: Callable[[Budget], tuple[Policy, ...]], target: str, budget: Budget) -> Client:
    """A sync client of ours to ``target`` with ``chain``'s policies."""
    sync, _ = _ours(chain)
    client: Client = sync(target, budget)
    return client


def describe_chain(name: str) -> str:
    return {
        "retry": "RetryPolicy(3 attempts, Backoff(0.1, 1))",
        "retry + budget": "the same with budget=RetryBudget() (20 % of calls + 10 a second)",
        "recommended": "as ours: recommended",
    }[name]


def _ours(chain: Callable[[Budget], tuple[Policy, ...]]) -> tuple[Any, Any]:
    def state(policies: tuple[Policy, ...]) -> Callable[[], str] | None:
        breaker = next((p for p in policies if isinstance(p, CircuitBreaker)), None)
        return None if breaker is None else lambda: breaker.state.value

    def sync(target: str, budget: Budget) -> Client:
        policies = chain(budget)
        channel = resilient_channel(target, *policies)
        hello = service_b_pb2_grpc.ServiceBStub(channel).Hello
        return Client(lambda: hello(REQUEST, timeout=budget.deadline), channel.close, state(policies))

    async def aio(target: str, budget: Budget) -> Client:
        policies = chain(budget)
        channel = interceptors.aio.resilient_channel(target, *policies)
        hello = service_b_pb2_grpc.ServiceBStub(channel).Hello
        return Client(lambda: hello(REQUEST, timeout=budget.deadline), channel.close, state(policies))

    return sync, aio


_ours_retry = _ours(lambda b: (_retry(b),))
_ours_resilient = _ours(lambda b: (_retry(b), _breaker(b), Timeout(b.attempt_timeout)))
_ours_composed = _ours(lambda b: (Fallback(), _retry(b), _breaker(b), Timeout(b.attempt_timeout)))
_ours_limited = _ours(
    lambda b: (
        Fallback(),
        _retry(b),
        _breaker(b),
        Bulkhead(LIMITS),
        RateLimiter(LIMITS * 1000),  # a permit every 10 µs: never waited for here, always checked
        Timeout(b.attempt_timeout),
    )
)
LIMITS = 100


def recommended(budget: Budget) -> tuple[Policy, ...]:
    """The chain the README recommends for a unary backend: retries within a budget; a breaker that opens on a
    failure rate, not a streak (a backend failing half its calls at random still answers the other half); a
    throttle for the overload in between. The caller's deadline bounds the call (a per-attempt timeout shorter
    than the backend's slow answers would only turn them into failures)."""
    retry = RetryPolicy(
        max_attempts=budget.attempts, delay=Backoff(budget.backoff_initial, budget.backoff_max), budget=RetryBudget()
    )
    breaker = CircuitBreaker(failure_rate=0.8, failure_window=20, delay=budget.breaker_delay, pushback=True)
    return retry, AdaptiveThrottle(k=3), breaker


_ours_recommended = _ours(recommended)

CHAINS: dict[str, Callable[[Budget], tuple[Policy, ...]]] = {
    "retry": lambda b: (_retry(b),),
    "retry + budget": lambda b: (
        RetryPolicy(max_attempts=b.attempts, delay=Backoff(b.backoff_initial, b.backoff_max), budget=RetryBudget()),
    ),
    "recommended": recommended,
}
"""Chains by name, for the hops of bench/relay.py."""

BARE = Approach("bare channel", lambda b: f"no policies; {b.deadline:g} s deadline", _bare_sync, _bare_aio)
BUILTIN = Approach(
    "grpc built-in retry",
    lambda b: (
        f"service config retryPolicy: {b.attempts} attempts on UNAVAILABLE, backoff {b.backoff_initial:g}.."
        f"{b.backoff_max:g} s x2 (honours grpc-retry-pushback-ms); {b.deadline:g} s deadline; no breaker"
    ),
    *_builtin(throttled=False),
)
BUILTIN_THROTTLED = Approach(
    "grpc built-in retry + retryThrottling",
    lambda b: (
        f"as above, with retryThrottling maxTokens {RETRY_THROTTLING_TOKENS}, tokenRatio {RETRY_THROTTLING_RATIO} "
        "(retries stop while at most half the tokens are left)"
    ),
    *_builtin(throttled=True),
)
TENACITY = Approach(
    "tenacity + pybreaker",
    lambda b: (
        f"tenacity: {b.attempts} attempts or {b.deadline:g} s, wait_exponential {b.backoff_initial:g}.."
        f"{b.backoff_max:g} s, on UNAVAILABLE and open breaker; pybreaker: fail_max {b.breaker_failures}, "
        f"reset_timeout {b.breaker_delay:g} s, UNAVAILABLE/DEADLINE_EXCEEDED count; {b.attempt_timeout:g} s per "
        "attempt (aio: tenacity only, pybreaker has no asyncio support)"
    ),
    _tenacity_sync,
    _tenacity_aio,
)
REDRESS = Approach(
    "redress",
    lambda b: (
        f"Policy(Retry(grpc_classifier, retry_after_or(equal_jitter({b.backoff_initial:g}, {b.backoff_max:g})), "
        f"max_attempts={b.attempts}, deadline_s={b.deadline:g}), CircuitBreaker(failure_threshold="
        f"{b.breaker_failures}, recovery_timeout_s={b.breaker_delay:g})) via redress.contrib.grpc; "
        f"{b.attempt_timeout:g} s per attempt"
    ),
    _redress_sync,
    _redress_aio,
)
OURS_RETRY = Approach(
    "ours: retry",
    lambda b: (
        f"RetryPolicy({b.attempts} attempts, Backoff({b.backoff_initial:g}, {b.backoff_max:g}), 20 % jitter); "
        f"{b.deadline:g} s deadline"
    ),
    *_ours_retry,
)
OURS_RESILIENT = Approach(
    "ours: retry > breaker > timeout",
    lambda b: (
        f"RetryPolicy as above, CircuitBreaker({b.breaker_failures} consecutive, {b.breaker_delay:g} s), "
        f"Timeout({b.attempt_timeout:g}) per attempt; {b.deadline:g} s deadline"
    ),
    *_ours_resilient,
)
OURS_RECOMMENDED = Approach(
    "ours: recommended",
    lambda b: (
        f"RetryPolicy({b.attempts} attempts, Backoff({b.backoff_initial:g}, {b.backoff_max:g}), "
        "budget=RetryBudget()) > AdaptiveThrottle(k=3) > CircuitBreaker(failure_rate=0.8 of 20 calls, "
        f"{b.breaker_delay:g} s or the server's pushback); "
        f"{b.deadline:g} s deadline"
    ),
    *_ours_recommended,
)
OURS_COMPOSED = Approach(
    "ours: fallback > retry > breaker > timeout",
    lambda b: "Fallback() in front of the above",
    *_ours_composed,
)

PEERS = [BUILTIN, TENACITY] + ([REDRESS] if HAVE_REDRESS else [])
OURS_LIMITED = Approach(
    "ours: composed + bulkhead + rate limiter",
    lambda b: f"the above with Bulkhead({LIMITS}) and RateLimiter({LIMITS * 1000}) a second inside the breaker",
    *_ours_limited,
)
OURS_HEDGED = Approach(
    "ours: hedge",
    lambda b: (
        f"HedgePolicy(delay=0.05, max_attempts=2); {b.deadline:g} s deadline (no hedge fires: calls answer in ~1 ms)"
    ),
    *_ours(lambda b: (HedgePolicy(delay=0.05),)),
)

OURS_STALE = Approach(
    "ours: recommended + stale cache",
    lambda b: (
        "CachePolicy(ttl=1 ms, stale_if_error=60 s) in front of the recommended chain: fresh answers for hardly any "
        "call, an answer kept from before the outage for the calls it fails"
    ),
    *_ours(lambda b: (CachePolicy(ttl=0.001, stale_if_error=60), *recommended(b))),
)
OURS_CACHE_MISS = Approach(
    "ours: cache, every call a miss",
    lambda b: "CachePolicy(ttl=1 ns): each call finds its answer expired, asks, and keeps the new one",
    *_ours(lambda b: (CachePolicy(ttl=1e-9),)),
)
OURS_CACHE_HIT = Approach(
    "ours: cache, every call a hit",
    lambda b: "CachePolicy(ttl=1 h): each call after the first is answered from the cache, with no call",
    *_ours(lambda b: (CachePolicy(ttl=3600),)),
)


def _metrics() -> Any:
    """OpenTelemetry metrics into the SDK with an in-memory reader: the cost of recording, not of exporting."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from interceptors.otel import Metrics

    return Metrics(MeterProvider(metric_readers=[InMemoryMetricReader()]))


def _ours_measured() -> tuple[Any, Any]:
    def sync(target: str, budget: Budget) -> Client:
        channel = resilient_channel(target, *_composed(budget), metrics=_metrics())
        hello = service_b_pb2_grpc.ServiceBStub(channel).Hello
        return Client(lambda: hello(REQUEST, timeout=budget.deadline), channel.close)

    async def aio(target: str, budget: Budget) -> Client:
        channel = interceptors.aio.resilient_channel(target, *_composed(budget), metrics=_metrics())
        hello = service_b_pb2_grpc.ServiceBStub(channel).Hello
        return Client(lambda: hello(REQUEST, timeout=budget.deadline), channel.close)

    return sync, aio


def _composed(b: Budget) -> tuple[Policy, ...]:
    return Fallback(), _retry(b), _breaker(b), Timeout(b.attempt_timeout)


def _ours_intercepted() -> tuple[Any, Any]:
    """The composed chain through grpc's own interceptor hooks, on channels of the user's own."""

    def sync(target: str, budget: Budget) -> Client:
        interceptor = ResilienceInterceptor(*_composed(budget))
        channel = grpc.intercept_channel(grpc.insecure_channel(target, options=NO_RETRIES), interceptor)
        hello = service_b_pb2_grpc.ServiceBStub(channel).Hello
        return Client(lambda: hello(REQUEST, timeout=budget.deadline), channel.close)

    async def aio(target: str, budget: Budget) -> Client:
        chain = interceptors.aio.resilience_interceptors(*_composed(budget))
        channel = grpc.aio.insecure_channel(target, options=NO_RETRIES, interceptors=chain)
        hello = service_b_pb2_grpc.ServiceBStub(channel).Hello
        return Client(lambda: hello(REQUEST, timeout=budget.deadline), channel.close)

    return sync, aio


OURS_INTERCEPTED = Approach(
    "ours: composed, intercepted",
    lambda b: (
        "fallback > retry > breaker > timeout as ResilienceInterceptor / resilience_interceptors on a channel of "
        "one's own (grpc's interceptor machinery)"
    ),
    *_ours_intercepted(),
)


# -- what grpc's own hooks cost, with nothing of ours -----------------------------------------------------------------


def _intercepted_floor() -> tuple[Any, Any]:
    def sync(target: str, budget: Budget) -> Client:
        channel = grpc.intercept_channel(grpc.insecure_channel(target, options=NO_RETRIES), PassThrough())
        hello = service_b_pb2_grpc.ServiceBStub(channel).Hello
        return Client(lambda: hello(REQUEST, timeout=budget.deadline), channel.close)

    async def aio(target: str, budget: Budget) -> Client:
        channel = grpc.aio.insecure_channel(target, options=NO_RETRIES, interceptors=[AioPassThrough()])
        hello = service_b_pb2_grpc.ServiceBStub(channel).Hello
        return Client(lambda: hello(REQUEST, timeout=budget.deadline), channel.close)

    return sync, aio


def _by_hand_hedge_floor() -> tuple[Any, Any]:
    """One attempt as a call hedged by hand must send it: a grpc future (sync) or a task (aio), waited for."""

    def sync(target: str, budget: Budget) -> Client:
        channel = grpc.insecure_channel(target, options=NO_RETRIES)
        hello = service_b_pb2_grpc.ServiceBStub(channel).Hello
        return Client(lambda: hello.future(REQUEST, timeout=budget.deadline).result(), channel.close)

    async def aio(target: str, budget: Budget) -> Client:
        channel = grpc.aio.insecure_channel(target, options=NO_RETRIES)
        hello = service_b_pb2_grpc.ServiceBStub(channel).Hello

        async def attempt() -> Any:
            return await hello(REQUEST, timeout=budget.deadline)

        return Client(lambda: asyncio.ensure_future(attempt()), channel.close)

    return sync, aio


GRPC_INTERCEPTED = Approach(
    "grpc: a pass-through interceptor",
    lambda b: "grpc.intercept_channel / grpc.aio interceptors= with one interceptor that only calls on (no policies)",
    *_intercepted_floor(),
)
GRPC_BY_HAND = Approach(
    "grpc: one attempt as hedged by hand",
    lambda b: "the call as a grpc future waited for (sync) or a task awaited (aio), as a hedge by hand sends it",
    *_by_hand_hedge_floor(),
)

OURS_MEASURED = Approach(
    "ours: composed + OpenTelemetry metrics",
    lambda b: "fallback > retry > breaker > timeout with Metrics(SDK MeterProvider, in-memory reader)",
    *_ours_measured(),
)
HEALTHY = [
    *PEERS,
    OURS_RETRY,
    OURS_COMPOSED,
    GRPC_INTERCEPTED,
    OURS_INTERCEPTED,
    OURS_LIMITED,
    GRPC_BY_HAND,
    OURS_HEDGED,
    OURS_MEASURED,
    OURS_CACHE_MISS,
    OURS_CACHE_HIT,
]
"""Compared with a bare channel on a healthy backend."""
UNDER_FAULTS = [BARE, BUILTIN, BUILTIN_THROTTLED, *PEERS[1:], OURS_RESILIENT, OURS_RECOMMENDED]
"""Compared under faults (no fallback: successes are real answers)."""
