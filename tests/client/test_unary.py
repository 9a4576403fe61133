"""Unary-unary calls through every client path against sync and aio servers: attempts, statuses, metadata."""

from __future__ import annotations

import grpc
import pytest

from interceptors import (
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    RetriesExceededError,
    RetryPolicy,
    Timeout,
    TimeoutExceededError,
)

from ..scripted import Request, ScriptedServer
from .paths import PATHS, Client

UNAVAILABLE, INVALID_ARGUMENT = grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INVALID_ARGUMENT
paths = pytest.mark.parametrize("path", PATHS)


@paths
def test_unavailable_twice_then_ok_takes_three_attempts(server: ScriptedServer, path: str) -> None:
    with Client(path, server.target, RetryPolicy(max_attempts=3)) as client:
        outcome = client.unary(Request(id="a", fail_first=2, text="hi"))
    assert outcome.code is grpc.StatusCode.OK
    assert (outcome.reply.text, outcome.reply.attempt) == ("hi", 3)
    assert server.attempts("a") == 3


@paths
def test_invalid_argument_is_raised_as_is_after_one_attempt(server: ScriptedServer, path: str) -> None:
    server.script.code, server.script.details = INVALID_ARGUMENT, "bad name"
    server.script.trailers = (("why", "no"),)
    with Client(path, server.target, RetryPolicy(max_attempts=5), CircuitBreaker(failure_threshold=1)) as client:
        outcome = client.unary(Request(id="b", fail_first=1))
    assert server.attempts("b") == 1
    assert isinstance(outcome.error, grpc.RpcError)
    assert not isinstance(outcome.error, RetriesExceededError)
    assert (outcome.code, outcome.details, outcome.trailing.get("why")) == (INVALID_ARGUMENT, "bad name", "no")


@paths
def test_retries_exhausted_give_the_last_real_status(server: ScriptedServer, path: str) -> None:
    server.script.details = "backend down"
    server.script.trailers = (("x-shard", "7"),)
    with Client(path, server.target, RetryPolicy(max_attempts=3)) as client:
        outcome = client.unary(Request(id="c", fail_first=10))
    assert server.attempts("c") == 3
    assert isinstance(outcome.error, grpc.RpcError) and isinstance(outcome.error, RetriesExceededError)
    assert outcome.error.attempts == 3
    assert (outcome.code, outcome.details, outcome.trailing.get("x-shard")) == (UNAVAILABLE, "backend down", "7")


@paths
def test_each_retry_carries_previous_attempts_metadata(server: ScriptedServer, path: str) -> None:
    with Client(path, server.target, RetryPolicy(max_attempts=3)) as client:
        outcome = client.unary(Request(id="d", fail_first=2), metadata=(("x-user", "u1"),))
    assert outcome.reply.previous_attempts == "2"
    seen = [s for s in server.recorder.seen if s.id == "d"]
    assert [s.metadata.get("grpc-previous-rpc-attempts") for s in seen] == [None, "1", "2"]
    assert all(s.metadata.get("x-user") == "u1" for s in seen)


@paths
def test_open_breaker_rejects_without_reaching_the_server_then_one_probe(server: ScriptedServer, path: str) -> None:
    breaker = CircuitBreaker(failure_threshold=2, delay=0.2)
    with Client(path, server.target, breaker) as client:
        for _ in range(2):
            assert client.unary(Request(id="e", fail_first=2)).code is UNAVAILABLE
        assert breaker.state is CircuitState.OPEN
        rejected = client.unary(Request(id="e"))
        assert server.attempts("e") == 2  # never sent
        assert isinstance(rejected.error, grpc.RpcError) and isinstance(rejected.error, CircuitOpenError)
        assert rejected.code is UNAVAILABLE and "circuit breaker is open" in rejected.details
        server.script.sleep = 0.3  # the probe is slow: a second call meanwhile must be rejected

        breaker_probe_wait(breaker)
        probe = client_in_thread(client, Request(id="e"))
        wait_until(lambda: server.attempts("e") == 3)
        assert client.unary(Request(id="e")).code is UNAVAILABLE  # half-open: the one trial is in flight
        assert probe().code is grpc.StatusCode.OK
    assert server.attempts("e") == 3
    assert breaker.state is CircuitState.CLOSED


@paths
def test_deadline_exceeded_is_retried_only_while_time_is_left(server: ScriptedServer, path: str) -> None:
    with Client(path, server.target, RetryPolicy(max_attempts=5), Timeout(0.1)) as client:
        outcome = client.unary(Request(id="f", sleep_ms=150), timeout=0.25)
    assert outcome.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert isinstance(outcome.error, TimeoutExceededError)
    assert server.attempts("f") == 3  # 0.1 + 0.1 + the 0.05 left
    assert outcome.elapsed < 0.25 + 0.2


def breaker_probe_wait(breaker: CircuitBreaker) -> None:
    wait_until(lambda: breaker.state is CircuitState.HALF_OPEN)


def wait_until(condition: object, timeout: float = 5.0) -> None:
    import time

    ends = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > ends:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def client_in_thread(client: Client, request: object) -> object:
    import concurrent.futures

    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(client.unary, request)
    pool.shutdown(wait=False)
    return lambda: future.result(10)
