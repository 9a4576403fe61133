"""The composed chain under failure: an open breaker fails fast inside a retry (issue 8, defect 2); only our own
Timeout makes DEADLINE_EXCEEDED retryable and countable (defect 7); a fallback names the last real failure and,
apart, that time ran out (defect 8)."""

from __future__ import annotations

import socket
from typing import Any

import grpc
import pytest

from interceptors import (
    FALLBACK_METADATA_KEY,
    FALLBACK_OUT_OF_TIME_KEY,
    Backoff,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    Fallback,
    RetryPolicy,
    Timeout,
)
from interceptors.events import FallbackExecuted, RetryStarted

from ..support.clients import PATHS, Client, returns_call
from ..support.server import Request, ScriptedServer

paths = pytest.mark.parametrize("path", PATHS)
UNAVAILABLE, DEADLINE_EXCEEDED = grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED


def composed(events: list[FallbackExecuted]) -> tuple[CircuitBreaker, tuple[Any, ...]]:
    """The issue's chain: Fallback > Retry(3) > Breaker(5 failures, 10 s) > Timeout(1 s), default backoff."""
    breaker = CircuitBreaker(failure_threshold=5, delay=10)
    fallback = Fallback(message={"text": "fallback"}, on_fallback=events.append)
    return breaker, (fallback, RetryPolicy(max_attempts=3), breaker, Timeout(1))


@paths
def test_an_open_breaker_inside_a_retry_fails_fast_to_the_fallback(server: ScriptedServer, path: str) -> None:
    events: list[FallbackExecuted] = []
    breaker, chain = composed(events)
    with Client(path, server.target, *chain) as client:
        client.unary(Request(id="warm"))
        outcomes = [client.unary(Request(id=f"down-{i}", fail_first=100)) for i in range(6)]
    assert breaker.state is CircuitState.OPEN
    assert [o.reply.text for o in outcomes] == ["fallback"] * 6
    assert all(o.elapsed < 5 for o in outcomes)  # backoff 0.1 s, 0.2 s: never the breaker's 10 s
    # once open: answered at once, sooner than the first call, which waited 0.3 s of backoff (however loaded)
    assert all(o.elapsed < outcomes[0].elapsed for o in outcomes[2:]), [round(o.elapsed, 3) for o in outcomes]
    assert sum(server.attempts(f"down-{i}") for i in range(6)) == 5  # the breaker let 5 through, then none
    assert [status_code_name(e) for e in events] == ["UNAVAILABLE"] * 6  # what fallbacks see is a grpc.RpcError
    assert all(isinstance(e.failure, CircuitOpenError) for e in events[2:])


def test_with_nothing_listening_every_call_is_answered_by_the_fallback_at_once() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        target = f"127.0.0.1:{unused.getsockname()[1]}"  # nothing listens here once the socket closes
    for path in PATHS:
        events: list[FallbackExecuted] = []
        _, chain = composed(events)
        with Client(path, target, *chain, warm=False) as client:
            outcomes = [client.unary(Request(id="x")) for _ in range(8)]
        assert [o.reply.text for o in outcomes] == ["fallback"] * 8, path
        # at once: no attempt waited for its 1 s Timeout (each failed UNAVAILABLE, below), nor for the breaker's 10 s;
        # the retry's backoff is 0.3 s at most, and 2 s leaves a loaded machine room (two suites at once: 1.09 s)
        assert max(o.elapsed for o in outcomes) < 2.0, path
        assert all(status_code_name(e) == "UNAVAILABLE" for e in events), path


def status_code_name(event: FallbackExecuted) -> str:
    code = event.failure.code()  # type: ignore[attr-defined]
    return str(code.name)


@paths
def test_a_breaker_that_reopens_within_the_retry_delay_is_waited_for(server: ScriptedServer, path: str) -> None:
    """The article's composition: breaker open for 0.2 s, retry backoff 0.2 s: the retry waits and probes."""
    breaker = CircuitBreaker(failure_threshold=1, delay=0.2)
    retry = RetryPolicy(max_attempts=3, delay=Backoff(0.2, 1), jitter_factor=0)
    with Client(path, server.target, retry, breaker) as client:
        outcome = client.unary(Request(id="p", fail_first=1))
    assert outcome.code is grpc.StatusCode.OK and outcome.reply.attempt == 2
    assert outcome.elapsed >= 0.2


@paths
def test_a_server_that_answers_deadline_exceeded_itself_is_final(server: ScriptedServer, path: str) -> None:
    """Its own downstream ran out of time: retrying cannot help, and it says nothing about its health."""
    server.script.code = DEADLINE_EXCEEDED
    breaker = CircuitBreaker(failure_threshold=1)
    with Client(path, server.target, RetryPolicy(max_attempts=3), breaker, Timeout(5)) as client:
        outcome = client.unary(Request(id="d", fail_first=1))
    assert outcome.code is DEADLINE_EXCEEDED
    assert server.attempts("d") == 1
    assert breaker.state is CircuitState.CLOSED and breaker.metrics.failures == 0


@paths
def test_the_callers_own_deadline_is_final_and_counted_by_the_breaker(server: ScriptedServer, path: str) -> None:
    """Issue 14 (the blackhole): no answer in the time the call had is final, and the breaker counts it (issue 8
    had it uncounted; a backend behind a network that drops everything then never opened a breaker)."""
    breaker = CircuitBreaker(failure_threshold=1)
    with Client(path, server.target, RetryPolicy(max_attempts=3), breaker) as client:
        client.unary(Request(id="warm"))
        outcome = client.unary(Request(id="d", sleep_ms=500), timeout=0.1)
    assert outcome.code is DEADLINE_EXCEEDED
    assert server.attempts("d") == 1
    assert breaker.state is CircuitState.OPEN


@paths
def test_a_servers_own_deadline_exceeded_is_final_and_not_counted(server: ScriptedServer, path: str) -> None:
    breaker = CircuitBreaker(failure_threshold=1)
    server.script.code = DEADLINE_EXCEEDED  # the server's downstream ran out of time: it says so at once
    with Client(path, server.target, RetryPolicy(max_attempts=3), breaker) as client:
        outcome = client.unary(Request(id="s", fail_first=1), timeout=5)
    assert outcome.code is DEADLINE_EXCEEDED
    assert server.attempts("s") == 1
    assert breaker.state is CircuitState.CLOSED


@paths
def test_our_timeout_makes_deadline_exceeded_retryable_and_countable(server: ScriptedServer, path: str) -> None:
    breaker = CircuitBreaker(failure_threshold=2)
    retries: list[RetryStarted] = []  # as the client started them: a loaded server may start the second's handler
    retry = RetryPolicy(max_attempts=2, delay=0, on_retry=retries.append)  # after the client has cut it
    # 0.4 s per attempt: the warm call's attempts must not time out on a loaded machine (two would open the breaker)
    with Client(path, server.target, retry, breaker, Timeout(0.4)) as client:
        client.unary(Request(id="warm"))
        outcome = client.unary(Request(id="d", sleep_ms=2000))
    assert outcome.code is DEADLINE_EXCEEDED
    assert [r.attempt for r in retries] == [2] and server.attempts("d") >= 1
    assert breaker.state is CircuitState.OPEN


@paths
def test_the_fallback_names_the_last_real_failure_and_that_time_ran_out(server: ScriptedServer, path: str) -> None:
    """The retry gives up for lack of time: the marker says UNAVAILABLE (what the server said), and, apart,
    that the call's time ran out."""
    events: list[FallbackExecuted] = []
    fallback = Fallback(message={"text": "fallback"}, on_fallback=events.append)
    retry = RetryPolicy(max_attempts=4, delay=Backoff(0.2, 1), jitter_factor=0)  # attempts at 0, 0.2, 0.6, 1.4 s
    with Client(path, server.target, fallback, retry) as client:
        client.unary(Request(id="warm"))
        out_of_time = client.unary(Request(id="t", fail_first=100), timeout=0.45)
        exhausted = client.unary(Request(id="r", fail_first=100), timeout=5)
    assert (out_of_time.reply.text, exhausted.reply.text) == ("fallback", "fallback")
    # at 0 and 0.2 s (each failure has 0.25 s to come back, even on a loaded machine); the next, at 0.6 s, would
    # start past the deadline
    assert server.attempts("t") == 2
    assert [status_code_name(e) for e in events] == ["UNAVAILABLE", "UNAVAILABLE"]
    assert [e.out_of_time for e in events] == [True, False]
    if returns_call(path):
        assert out_of_time.trailing[FALLBACK_METADATA_KEY] == "UNAVAILABLE"
        assert out_of_time.trailing[FALLBACK_OUT_OF_TIME_KEY] == "true"
        assert exhausted.trailing[FALLBACK_METADATA_KEY] == "UNAVAILABLE"
        assert FALLBACK_OUT_OF_TIME_KEY not in exhausted.trailing


@paths
def test_a_fallback_for_a_timed_out_attempt_says_deadline_exceeded(server: ScriptedServer, path: str) -> None:
    events: list[FallbackExecuted] = []
    with Client(path, server.target, Fallback(on_fallback=events.append), Timeout(0.05)) as client:
        client.unary(Request(id="warm"))
        events.clear()  # on a loaded machine even the warm-up call may take 50 ms
        outcome = client.unary(Request(id="slow", sleep_ms=300))
    assert outcome.code is grpc.StatusCode.OK
    assert [(status_code_name(e), e.out_of_time) for e in events] == [("DEADLINE_EXCEEDED", True)]
    if returns_call(path):
        assert outcome.trailing[FALLBACK_METADATA_KEY] == "DEADLINE_EXCEEDED"
