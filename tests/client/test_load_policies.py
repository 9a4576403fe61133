"""The load-aware policies in gRPC chains, on every call path against sync and aio servers: local rejections are
grpc.RpcErrors with honest codes (and pushback where it is known), fallbacks answer them, breakers ignore them, and
a retry budget bounds the retries of many calls."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from interceptors import (
    FALLBACK_METADATA_KEY,
    AdaptiveLimiter,
    AdaptiveThrottle,
    Bulkhead,
    BulkheadFullError,
    CircuitBreaker,
    Fallback,
    LimitExceededError,
    RateLimitedError,
    RateLimiter,
    RejectedError,
    RetryBudget,
    RetryPolicy,
    ThrottledError,
)

from ..support.clients import PATHS, Client, returns_call, wait_until
from ..support.server import Request, ScriptedServer

paths = pytest.mark.parametrize("path", PATHS)
UNAVAILABLE, RESOURCE_EXHAUSTED = grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED


def rejected_while_one_call_is_slow(server: ScriptedServer, path: str, policy: Any) -> Any:
    """A slow call holds the policy's one place; the next call's outcome."""
    with Client(path, server.target, policy) as client:
        slow = client.in_thread(Request(id="slow", sleep_ms=400))
        wait_until(lambda: server.attempts("slow") == 1)
        outcome = client.unary(Request(id="next"))
        assert slow().code is grpc.StatusCode.OK
    assert server.attempts("next") == 0  # nothing was sent
    return outcome


@paths
@pytest.mark.parametrize(
    ("make", "error", "code"),
    [
        (lambda: Bulkhead(1), BulkheadFullError, RESOURCE_EXHAUSTED),
        (lambda: AdaptiveLimiter(initial_limit=1, min_limit=1), LimitExceededError, UNAVAILABLE),
    ],
    ids=["bulkhead", "adaptive-limiter"],
)
def test_a_full_concurrency_limit_rejects_with_an_honest_code(
    server: ScriptedServer, path: str, make: Any, error: type[Exception], code: grpc.StatusCode
) -> None:
    outcome = rejected_while_one_call_is_slow(server, path, make())
    assert isinstance(outcome.error, grpc.RpcError) and isinstance(outcome.error, error)
    assert isinstance(outcome.error, RejectedError) and outcome.code is code


@paths
def test_the_rate_limit_rejects_with_pushback_saying_when(server: ScriptedServer, path: str) -> None:
    with Client(path, server.target, RateLimiter(1, period=10)) as client:
        assert client.unary(Request(id="first")).code is grpc.StatusCode.OK
        outcome = client.unary(Request(id="second"))
    assert isinstance(outcome.error, grpc.RpcError) and isinstance(outcome.error, RateLimitedError)
    assert outcome.code is RESOURCE_EXHAUSTED and server.attempts("second") == 0
    assert 9000 < int(outcome.trailing["grpc-retry-pushback-ms"]) <= 10_000


@paths
def test_a_throttle_sheds_calls_to_a_failing_backend_locally(server: ScriptedServer, path: str) -> None:
    throttle = AdaptiveThrottle()
    with Client(path, server.target, throttle) as client:
        outcomes = [client.unary(Request(id="down", fail_first=1000)) for _ in range(60)]
    throttled = [o for o in outcomes if isinstance(o.error, ThrottledError)]
    assert len(throttled) > 20 and all(o.code is UNAVAILABLE and isinstance(o.error, grpc.RpcError) for o in throttled)
    assert server.attempts("down") == 60 - len(throttled)


@paths
def test_a_fallback_answers_a_rejection_and_a_breaker_ignores_it(server: ScriptedServer, path: str) -> None:
    breaker = CircuitBreaker(failure_threshold=1)
    chain = (Fallback(message={"text": "later"}), breaker, RateLimiter(1, period=10))
    with Client(path, server.target, *chain) as client:
        client.unary(Request(id="first"))
        outcome = client.unary(Request(id="second"))
    assert outcome.code is grpc.StatusCode.OK and outcome.reply.text == "later"
    if returns_call(path):
        assert outcome.trailing[FALLBACK_METADATA_KEY] == "RESOURCE_EXHAUSTED"
    assert breaker.metrics.executions == 1 and breaker.metrics.failures == 0


@paths
def test_a_retry_budget_bounds_the_retries_of_many_calls(server: ScriptedServer, path: str) -> None:
    budget = RetryBudget(ratio=0.1, min_per_second=0)
    with Client(path, server.target, RetryPolicy(max_attempts=3, delay=0, budget=budget)) as client:
        outcomes = [client.unary(Request(id=f"c{i}", fail_first=1000)) for i in range(20)]
    assert {o.code for o in outcomes} == {UNAVAILABLE}
    assert sum(server.attempts(f"c{i}") for i in range(20)) == 22  # 20 calls, 10 % of them retried: 2 more
    assert all(o.details == "scripted failure" for o in outcomes)  # the last real failure, whoever stopped it
