"""Channel helpers turn grpcio's built-in retries off; per-method chains; caller cancellation stops everything."""

from __future__ import annotations

import asyncio
import json
import time
import warnings

import grpc
import pytest
from scripted.v1 import scripted_pb2_grpc as pb_grpc

import interceptors.aio
from interceptors import (
    CircuitBreaker,
    CircuitState,
    ResilienceInterceptor,
    RetriesExceededError,
    RetryPolicy,
    StackedRetriesWarning,
    resilient_channel,
)
from interceptors._routing import Router

from ..scripted import AIO_LOOP, Request, ScriptedServer
from .paths import Client

UNARY = "/scripted.v1.Scripted/Unary"
SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "scripted.v1.Scripted"}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.01s",
                    "maxBackoff": "0.01s",
                    "backoffMultiplier": 1,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)
OPTIONS = [("grpc.service_config", SERVICE_CONFIG)]


def test_builtin_retries_would_multiply_attempts(server: ScriptedServer) -> None:
    """Why the helpers exist: under our 2 attempts, grpcio's own retry policy makes 4 of each."""
    channel = grpc.intercept_channel(
        grpc.insecure_channel(server.target, options=OPTIONS), ResilienceInterceptor(RetryPolicy(max_attempts=2))
    )
    with pytest.raises(grpc.RpcError):
        pb_grpc.ScriptedStub(channel).Unary(Request(id="x", fail_first=100))
    channel.close()
    assert server.attempts("x") == 8


@pytest.mark.parametrize("path", ["call", "aio"])
def test_helpers_turn_builtin_retries_off_and_warn(server: ScriptedServer, path: str) -> None:
    with pytest.warns(StackedRetriesWarning, match="retryPolicy"):
        client = Client(path, server.target, RetryPolicy(max_attempts=2), options=OPTIONS)
    with client:
        outcome = client.unary(Request(id="x", fail_first=100))
    assert isinstance(outcome.error, RetriesExceededError)
    assert server.attempts("x") == 2


def test_helpers_warn_when_builtin_retries_are_asked_for() -> None:
    with pytest.warns(StackedRetriesWarning, match="enable_retries"):
        resilient_channel("127.0.0.1:1", RetryPolicy(), options=[("grpc.enable_retries", 1)]).close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resilient_channel("127.0.0.1:1", RetryPolicy()).close()


def test_per_method_chains(server: ScriptedServer) -> None:
    three, five = RetryPolicy(max_attempts=3), RetryPolicy(max_attempts=5)

    def attempts(*policies: RetryPolicy, methods: dict[str, list[RetryPolicy]]) -> tuple[int, object]:
        id = f"m{time.monotonic_ns()}"
        with Client("call", server.target, *policies, methods=methods) as client:
            outcome = client.unary(Request(id=id, fail_first=100))
        return server.attempts(id), outcome.error

    assert attempts(methods={UNARY: [three]})[0] == 3
    assert attempts(methods={"/scripted.v1.Scripted/*": [three]})[0] == 3
    count, error = attempts(methods={"/other.v1.Other/*": [three]})
    assert count == 1  # not matched: the call passes untouched
    assert isinstance(error, grpc.RpcError) and not isinstance(error, RetriesExceededError)
    # the most specific entry wins: method over service over the default chain
    assert attempts(three, methods={UNARY: [five], "/scripted.v1.Scripted/*": [three]})[0] == 5
    assert attempts(three, methods={"/scripted.v1.Scripted/*": [five]})[0] == 5
    assert attempts(three, methods={"/other.v1.Other/*": [five]})[0] == 3
    assert attempts(three, methods={UNARY: []})[0] == 1  # an empty chain passes the method through


@pytest.mark.parametrize(
    "methods",
    [{"Unary": [RetryPolicy()]}, {"/svc/": [RetryPolicy()]}, {"/a/b/c": [RetryPolicy()]}, {UNARY: RetryPolicy()}],
)
def test_bad_method_keys_and_values(methods: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="methods"):
        Router((), methods)  # type: ignore[arg-type]


def test_aio_method_names_arrive_as_bytes() -> None:
    router = Router((RetryPolicy(),), {UNARY: []})
    assert router.route(UNARY.encode()) is None
    assert router.route(b"/x.Y/Z") is not None


def test_cancelling_an_aio_call_during_backoff_stops_retrying(server: ScriptedServer) -> None:
    breaker = CircuitBreaker(failure_threshold=100)

    async def main() -> None:
        async with interceptors.aio.resilient_channel(
            server.target, RetryPolicy(max_attempts=100, delay=0.05), breaker
        ) as channel:
            call = pb_grpc.ScriptedStub(channel).Unary(Request(id="c", fail_first=1000))
            await asyncio.sleep(0.12)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call

    AIO_LOOP.run(main())
    attempts = server.attempts("c")
    assert 1 <= attempts <= 4
    time.sleep(0.2)
    assert server.attempts("c") == attempts


def test_cancelling_an_aio_trial_call_frees_the_breaker(server: ScriptedServer) -> None:
    breaker = CircuitBreaker(failure_threshold=1, delay=60)
    breaker.half_open()

    async def main() -> None:
        async with interceptors.aio.resilient_channel(server.target, breaker) as channel:
            stub = pb_grpc.ScriptedStub(channel)
            call = stub.Unary(Request(id="slow", sleep_ms=2000))
            await asyncio.sleep(0.1)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert (await stub.Unary(Request(id="quick"))).attempt == 1  # the trial slot was released

    AIO_LOOP.run(main())
    assert breaker.state is CircuitState.CLOSED


def test_cancelling_a_future_cancels_the_attempt_in_flight(server: ScriptedServer) -> None:
    channel = resilient_channel(server.target, RetryPolicy(max_attempts=5))
    future = pb_grpc.ScriptedStub(channel).Unary.future(Request(id="slow", sleep_ms=3000))
    time.sleep(0.1)
    started = time.monotonic()
    assert future.cancel()
    assert future.cancelled() and time.monotonic() - started < 0.5
    time.sleep(0.2)
    assert server.attempts("slow") == 1
    assert "slow" in server.recorder.cancelled
    channel.close()
