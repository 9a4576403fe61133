"""The call object of an aio resilient_channel behaves as grpc's: awaited, asked first, cancelled, forgotten."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from scripted.v1 import scripted_pb2_grpc as pb_grpc

import interceptors.aio
from interceptors import Fallback, RetryPolicy, replaced_by_fallback

from ..support.clients import wait_until
from ..support.server import AIO_LOOP, Request, ScriptedServer


def run(server: ScriptedServer, body: Any, *policies: Any) -> Any:
    async def main() -> Any:
        async with interceptors.aio.resilient_channel(server.target, *(policies or (RetryPolicy(),))) as channel:
            return await body(pb_grpc.ScriptedStub(channel))

    return AIO_LOOP.run(main())


def test_status_asked_before_awaiting(server: ScriptedServer) -> None:
    async def body(stub: Any) -> Any:
        call = stub.Unary(Request(id="a", fail_first=1))
        code, trailing = await call.code(), await call.trailing_metadata()
        return code, trailing, await call, call.done(), await call  # awaiting twice gives the same answer

    code, trailing, reply, done, again = run(server, body)
    assert code is grpc.StatusCode.OK and trailing is not None
    assert reply.attempt == 2 and done and again == reply
    assert server.attempts("a") == 2


def test_errors_are_reported_by_the_call(server: ScriptedServer) -> None:
    server.script.details = "down"

    async def body(stub: Any) -> Any:
        call = stub.Unary(Request(id="e", fail_first=9))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        return raised.value, await call.code(), await call.details()

    error, code, details = run(server, body, RetryPolicy(max_attempts=2))
    assert error.code() is code is grpc.StatusCode.UNAVAILABLE and details == "down"


def test_fallback_metadata_on_the_call(server: ScriptedServer) -> None:
    async def body(stub: Any) -> Any:
        call = stub.Unary(Request(id="f", fail_first=9))
        return await call, await call.trailing_metadata(), await call.code()

    reply, trailing, code = run(server, body, Fallback(message={"text": "cached"}))
    assert reply.text == "cached" and code is grpc.StatusCode.OK
    assert replaced_by_fallback(trailing) == "UNAVAILABLE"


def test_a_call_nobody_awaits_is_still_made(server: ScriptedServer) -> None:
    async def body(stub: Any) -> Any:
        done: list[Any] = []
        call = stub.Unary(Request(id="forgotten"))
        call.add_done_callback(done.append)
        await asyncio.sleep(0.3)
        return done, call

    done, call = run(server, body)
    assert done == [call] and server.attempts("forgotten") == 1


def test_cancel_before_start_and_while_running(server: ScriptedServer) -> None:
    async def body(stub: Any) -> Any:
        never = stub.Unary(Request(id="never"))
        assert never.cancel() and never.cancelled()
        with pytest.raises(asyncio.CancelledError):
            await never
        slow = stub.Unary(Request(id="slow", sleep_ms=3000))
        waiter = asyncio.ensure_future(slow.code())
        await asyncio.sleep(0.2)
        assert slow.cancel()
        return await waiter, slow.cancelled()

    code, cancelled = run(server, body)
    assert code is grpc.StatusCode.CANCELLED and cancelled
    assert server.attempts("never") == 0
    wait_until(lambda: "slow" in server.recorder.cancelled)


def test_time_remaining_counts_down(server: ScriptedServer) -> None:
    async def body(stub: Any) -> Any:
        call = stub.Unary(Request(id="t", sleep_ms=100), timeout=2)
        first = call.time_remaining()
        await call
        return first, call.time_remaining(), stub.Unary(Request(id="u")).time_remaining()

    first, later, unbounded = run(server, body)
    assert 1.9 < first <= 2 and later < first and unbounded is None
