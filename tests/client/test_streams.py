"""Streaming calls pass through intact, get the chain's deadline, and are admitted and counted by breakers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from interceptors import CircuitBreaker, CircuitOpenError, CircuitState, RetryPolicy, Timeout

from ..support.clients import STREAM_KINDS, Client, wait_until
from ..support.server import AIO_LOOP, Request, ScriptedServer, check_deadline

CANCELLED = grpc.StatusCode.CANCELLED

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
        started = time.monotonic()
        client.stream(kind, 1, id=f"deadline-{kind}")
        with pytest.raises(grpc.RpcError) as raised:
            client.stream(kind, 1, sleep_ms=2000)
    finally:
        client.close()
    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    seen = [s for s in server.recorder.seen if s.id == f"deadline-{kind}"]
    assert seen
    check_deadline(seen[0], timeout=0.5, sent_after=started)


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


class Unsizable:
    """A request whose serialized size cannot be read (nor can it be serialized)."""

    def ByteSize(self) -> int:
        raise RuntimeError("no size")


def _bare(client_kind: str, target: str) -> Client:
    """A client of the same flavour with no policies on a channel of grpc's own: what grpc itself does."""
    return Client("intercepted-aio" if "aio" in client_kind else "intercepted-call", target)


def _outcome(client: Client, kind: str, requests: list[Any]) -> tuple[Any, ...]:
    """How a stream of ``requests`` ended, for the caller: its code, or the exception type when not an RpcError."""

    async def aio() -> Any:
        call = getattr(client.stub, kind)(iter(requests), timeout=5)
        return [r async for r in call] if kind == "BidiStream" else await call

    try:
        if client.is_aio or client.path == "aio":
            AIO_LOOP.run(aio())
        else:
            call = getattr(client.stub, kind)(iter(requests), timeout=5)
            _ = list(call) if kind == "BidiStream" else call
    except grpc.RpcError as failed:
        return ("rpc", failed.code())
    except BaseException as raised:
        return (type(raised).__name__,)
    return ("ok",)


@pytest.mark.parametrize("kind", ["ClientStream", "BidiStream"])
def test_a_request_whose_size_cannot_be_read_ends_the_call_as_grpc_does(
    server: ScriptedServer, client_kind: str, kind: str
) -> None:
    """The replay buffer's size reading must not turn grpc's INTERNAL ("Exception serializing request!") into an
    UNKNOWN of its own."""
    requests = [Request(text="a"), Unsizable()]
    with Client(client_kind, server.target, RetryPolicy()) as ours, _bare(client_kind, server.target) as bare:
        assert _outcome(ours, kind, requests) == _outcome(bare, kind, requests)


async def _raising_requests() -> AsyncIterator[Any]:
    yield Request(text="a")
    raise ValueError("the caller's iterator broke")


@pytest.mark.parametrize("client_kind", ["aio", "intercepted-aio"])
def test_an_aio_stream_whose_requests_raise_ends_as_grpc_does(server: ScriptedServer, client_kind: str) -> None:
    """grpc.aio cancels the call and its reader gets asyncio.CancelledError; ours raised an RpcError CANCELLED."""

    async def read(client: Client) -> tuple[str, grpc.StatusCode, bool]:
        call = client.stub.BidiStream(_raising_requests(), timeout=5)
        try:
            _ = [r async for r in call]
            raised = "nothing"
        except BaseException as error:
            raised = type(error).__name__
        return raised, await call.code(), call.cancelled()

    with Client(client_kind, server.target, RetryPolicy()) as ours, _bare(client_kind, server.target) as bare:
        assert AIO_LOOP.run(read(ours)) == AIO_LOOP.run(read(bare)) == ("CancelledError", CANCELLED, True)


def test_an_aio_call_cancelled_says_so_at_once(server: ScriptedServer) -> None:
    """As a bare grpc.aio call (gRPC's interop case cancel_after_begin): once its policies have started."""

    async def cancel() -> tuple[bool, bool]:
        call = client.stub.Unary(Request(id="c", sleep_ms=2000), timeout=5)
        await asyncio.sleep(0.05)  # sent: its policies run in a task of their own
        cancelled = call.cancel()
        return cancelled, call.cancelled()

    with Client("aio", server.target, RetryPolicy()) as client:
        assert AIO_LOOP.run(cancel()) == (True, True)
