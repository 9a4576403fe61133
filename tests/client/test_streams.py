"""Streaming calls pass through intact, get the chain's deadline, and are admitted and counted by breakers."""

from __future__ import annotations

import grpc
import pytest

from interceptors import CircuitBreaker, CircuitOpenError, CircuitState, RetryPolicy, Timeout

from ..support.clients import STREAM_KINDS, Client, wait_until
from ..support.server import ScriptedServer

STREAM_PATHS = ["call", "aio", "intercepted-call", "intercepted-aio"]


@pytest.fixture(params=STREAM_PATHS)
def client_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def expected(kind: str, n: int) -> list[str]:
    if kind == "server_stream":
        return ["" for _ in range(n)]
    if kind == "client_stream":
        return ["".join(f"r{i}" for i in range(n))]
    return [f"r{i}" for i in range(n)]


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_streams_pass_through_intact(server: ScriptedServer, client_kind: str, kind: str) -> None:
    breaker = CircuitBreaker(failure_threshold=3)
    client = Client(client_kind, server.target, RetryPolicy(), breaker, Timeout(5))
    try:
        replies = client.stream(kind, 200)
    finally:
        client.close()
    assert [r.text for r in replies] == expected(kind, 200)
    if kind != "client_stream":
        assert [r.index for r in replies] == list(range(200))
    assert breaker.metrics.successes == 1


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_streams_get_the_chain_deadline(server: ScriptedServer, client_kind: str, kind: str) -> None:
    client = Client(client_kind, server.target, Timeout(0.5))
    try:
        client.stream(kind, 1, id=f"deadline-{kind}")
        with pytest.raises(grpc.RpcError) as raised:
            client.stream(kind, 1, sleep_ms=2000)
    finally:
        client.close()
    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    seen = [s for s in server.recorder.seen if s.id == f"deadline-{kind}"]
    assert seen and 0.3 < seen[0].time_remaining <= 0.51  # type: ignore[operator]


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_breaker_counts_stream_failures_and_rejects_when_open(
    server: ScriptedServer, client_kind: str, kind: str
) -> None:
    breaker = CircuitBreaker(failure_threshold=2, delay=60)
    client = Client(client_kind, server.target, breaker)
    try:
        for _ in range(2):
            with pytest.raises(grpc.RpcError):
                client.stream(kind, 1, fail_first=100)  # one request: no write can race the abort
        # a stream's outcome is recorded when grpc reports the RPC done, which may trail the caller's error
        wait_until(lambda: breaker.state is CircuitState.OPEN)
        before = len(server.recorder.seen)
        with pytest.raises(grpc.RpcError) as raised:
            client.stream(kind, 3)
    finally:
        client.close()
    assert isinstance(raised.value, CircuitOpenError)
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
    assert len(server.recorder.seen) == before  # nothing reached the server


@pytest.mark.parametrize("kind", STREAM_KINDS)
@pytest.mark.parametrize("timeout", [0, -1])
def test_a_stream_whose_deadline_has_passed_is_never_sent(
    server: ScriptedServer, client_kind: str, kind: str, timeout: float
) -> None:
    """As for unary calls: grpcio would send timeout=0 with no deadline at all."""
    breaker = CircuitBreaker(failure_threshold=1)
    client = Client(client_kind, server.target, breaker)
    try:
        with pytest.raises(grpc.RpcError) as raised:
            client.stream(kind, 1, timeout=timeout, id="late")
    finally:
        client.close()
    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert server.attempts("late") == 0 and breaker.state is CircuitState.CLOSED
