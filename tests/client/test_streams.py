"""Streaming calls pass through intact, get the chain's deadline, and are admitted and counted by breakers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from scripted.v1 import scripted_pb2_grpc as pb_grpc

import interceptors.aio
from interceptors import CircuitBreaker, CircuitOpenError, CircuitState, RetryPolicy, Timeout, resilient_channel

from ..scripted import AIO_LOOP, Request, ScriptedServer
from .test_unary import wait_until

KINDS = ["server_stream", "client_stream", "bidi_stream"]


def requests(n: int, **fields: Any) -> Iterator[Any]:
    for i in range(n):
        yield Request(text=f"r{i}", **fields)


async def arequests(n: int, **fields: Any) -> AsyncIterator[Any]:
    for item in requests(n, **fields):
        yield item


def sync_call(stub: Any, kind: str, n: int, timeout: float | None = None, **fields: Any) -> list[Any]:
    if kind == "server_stream":
        return list(stub.ServerStream(Request(count=n, **fields), timeout=timeout))
    if kind == "client_stream":
        return [stub.ClientStream(requests(n, **fields), timeout=timeout)]
    return list(stub.BidiStream(requests(n, **fields), timeout=timeout))


async def aio_call(stub: Any, kind: str, n: int, timeout: float | None = None, **fields: Any) -> list[Any]:
    if kind == "server_stream":
        return [r async for r in stub.ServerStream(Request(count=n, **fields), timeout=timeout)]
    if kind == "client_stream":
        return [await stub.ClientStream(arequests(n, **fields), timeout=timeout)]
    return [r async for r in stub.BidiStream(arequests(n, **fields), timeout=timeout)]


class Clients:
    """A sync or an aio client, called the same way."""

    def __init__(self, kind: str, target: str, *policies: Any) -> None:
        self.kind = kind
        if kind == "aio":

            async def make() -> Any:
                return interceptors.aio.resilient_channel(target, *policies)

            self.channel = AIO_LOOP.run(make())
        else:
            self.channel = resilient_channel(target, *policies)
        self.stub = pb_grpc.ScriptedStub(self.channel)

    def call(self, kind: str, n: int, timeout: float | None = None, **fields: Any) -> list[Any]:
        if self.kind == "aio":
            return AIO_LOOP.run(aio_call(self.stub, kind, n, timeout, **fields))  # type: ignore[no-any-return]
        return sync_call(self.stub, kind, n, timeout, **fields)

    def close(self) -> None:
        if self.kind == "aio":
            AIO_LOOP.run(self.channel.close())
        else:
            self.channel.close()


@pytest.fixture(params=["sync", "aio"], ids=["sync-client", "aio-client"])
def client_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def expected(kind: str, n: int) -> list[str]:
    if kind == "server_stream":
        return ["" for _ in range(n)]
    if kind == "client_stream":
        return ["".join(f"r{i}" for i in range(n))]
    return [f"r{i}" for i in range(n)]


@pytest.mark.parametrize("kind", KINDS)
def test_streams_pass_through_intact(server: ScriptedServer, client_kind: str, kind: str) -> None:
    breaker = CircuitBreaker(failure_threshold=3)
    client = Clients(client_kind, server.target, RetryPolicy(), breaker, Timeout(5))
    try:
        replies = client.call(kind, 200)
    finally:
        client.close()
    assert [r.text for r in replies] == expected(kind, 200)
    if kind != "client_stream":
        assert [r.index for r in replies] == list(range(200))
    assert breaker.metrics.successes == 1


@pytest.mark.parametrize("kind", KINDS)
def test_streams_get_the_chain_deadline(server: ScriptedServer, client_kind: str, kind: str) -> None:
    client = Clients(client_kind, server.target, Timeout(0.5))
    try:
        client.call(kind, 1, id=f"deadline-{kind}")
        with pytest.raises(grpc.RpcError) as raised:
            client.call(kind, 1, sleep_ms=2000)
    finally:
        client.close()
    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
    seen = [s for s in server.recorder.seen if s.id == f"deadline-{kind}"]
    assert seen and 0.3 < seen[0].time_remaining <= 0.51  # type: ignore[operator]


@pytest.mark.parametrize("kind", KINDS)
def test_breaker_counts_stream_failures_and_rejects_when_open(
    server: ScriptedServer, client_kind: str, kind: str
) -> None:
    breaker = CircuitBreaker(failure_threshold=2, delay=60)
    client = Clients(client_kind, server.target, breaker)
    try:
        for _ in range(2):
            with pytest.raises(grpc.RpcError):
                client.call(kind, 1, fail_first=100)  # one request: no write can race the abort
        # a stream's outcome is recorded when grpc reports the RPC done, which may trail the caller's error
        wait_until(lambda: breaker.state is CircuitState.OPEN)
        before = len(server.recorder.seen)
        with pytest.raises(grpc.RpcError) as raised:
            client.call(kind, 3)
    finally:
        client.close()
    assert isinstance(raised.value, CircuitOpenError)
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert len(server.recorder.seen) == before  # nothing reached the server
