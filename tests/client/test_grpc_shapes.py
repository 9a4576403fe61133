"""The private shapes of grpcio the library reads (interceptors/grpc/_grpc_shapes.py), checked against the grpcio
installed: when a release changes one, this fails naming the version, instead of the library quietly taking its
safe answer (slower, or less precise) from then on."""

from __future__ import annotations

import inspect
import threading
import time
from typing import Any

import grpc
import grpc.aio._interceptor
import pytest
from scripted.v1 import scripted_pb2_grpc as pb_grpc

from interceptors.grpc._grpc_shapes import (
    TAKEN_OVER,
    at_once,
    blocks,
    cancel_blocking,
    cancellable_blocking,
    hand_calls_to,
    is_idle,
    next_multicallable,
)

from ..support.server import AIO_LOOP, Request, ScriptedServer

GRPCIO = f"grpcio {grpc.__version__}"


class _Continuations(grpc.UnaryUnaryClientInterceptor):
    def __init__(self) -> None:
        self.seen: list[Any] = []

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self.seen.append(continuation)
        return continuation(details, request)


def test_a_blocking_continuation_is_told_from_a_futures_and_leads_to_futures(server: ScriptedServer) -> None:
    kept = _Continuations()
    with grpc.intercept_channel(grpc.insecure_channel(server.target), kept) as channel:
        stub = pb_grpc.ScriptedStub(channel)
        stub.Unary(Request(id="blocking"), timeout=5)
        stub.Unary.future(Request(id="future"), timeout=5).result()
        blocking, future = kept.seen
        assert blocks(blocking), f"{GRPCIO}: a blocking call's continuation is no longer {blocking.__qualname__!r}"
        assert not blocks(future), f"{GRPCIO}: a future's continuation is no longer {future.__qualname__!r}"
        method = "/scripted.v1.Scripted/Unary"
        multicallable = next_multicallable(blocking, method)
        assert multicallable is not None, f"{GRPCIO}: a continuation no longer closes over a multicallable with _thunk"
        reply = multicallable.future(Request(id="through"), timeout=5).result()
        assert next_multicallable(blocking, method) is multicallable, f"{GRPCIO}: the next multicallable is not kept"
        assert next_multicallable(future, method) is None  # a future's attempts go through its continuation
    assert reply.id == "through"


def test_a_stubs_blocking_calls_are_taken_over_from_grpcs_hooks_at_the_second(server: ScriptedServer) -> None:
    """grpc's intercepted multicallable of a stub becomes ours at its second blocking call through our interceptor
    (see next_multicallable); its futures stay grpc's; a failure raises as grpc's hooks raise it."""
    from interceptors import ResilienceInterceptor, RetryPolicy

    assert TAKEN_OVER is not None, f"{GRPCIO}: grpc._interceptor._UnaryUnaryMultiCallable is gone or takes new options"
    channel = grpc.intercept_channel(
        grpc.insecure_channel(server.target, options=[("grpc.enable_retries", 0)]),
        ResilienceInterceptor(RetryPolicy(max_attempts=2)),
    )
    with channel:
        unary = pb_grpc.ScriptedStub(channel).Unary
        unary(Request(id="first"), timeout=5)
        assert type(unary) is not TAKEN_OVER  # one call could be its only one: a multicallable made for it alone
        unary(Request(id="second"), timeout=5)
        taken_over = type(unary) is TAKEN_OVER  # (not asserted as it is: mypy would narrow unary to a bare type)
        assert taken_over, f"{GRPCIO}: a stub's multicallable was not taken over"
        assert unary.future(Request(id="future", fail_first=1), timeout=5).result().attempt == 2
        reply, call = unary.with_call(Request(id="with_call"), timeout=5)
        assert (reply.id, call.code(), type(call.trailing_metadata())) == ("with_call", grpc.StatusCode.OK, tuple)
        with pytest.raises(grpc.RpcError) as failed:
            unary(Request(id="fails", fail_first=9), timeout=5)
        with pytest.raises(grpc.RpcError) as failed_with_call:
            unary.with_call(Request(id="fails too", fail_first=9), timeout=5)
        with pytest.raises(TypeError, match="timeout must be a number"):
            unary(Request(id="bad timeout"), timeout="5")
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE and server.attempts("fails") == 2
    assert failed_with_call.value.code() is grpc.StatusCode.UNAVAILABLE and server.attempts("fails too") == 2


def test_a_blocking_call_is_handed_over_and_another_thread_can_cancel_it(server: ScriptedServer) -> None:
    with grpc.insecure_channel(server.target) as channel:
        with_call = cancellable_blocking(pb_grpc.ScriptedStub(channel).Unary)
        assert with_call is not None, (
            f"{GRPCIO}: a multicallable no longer makes its calls with _channel.segregated_call"
        )
        handed: list[Any] = []
        hand_calls_to(handed.append)
        try:
            reply, call = with_call(Request(id="answered"), timeout=5)
            assert (reply.id, call.code(), len(handed)) == ("answered", grpc.StatusCode.OK, 1)
            threading.Timer(0.05, lambda: cancel_blocking(handed[-1])).start()
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as failed:
                with_call(Request(id="held", sleep_ms=2000), timeout=10)
        finally:
            hand_calls_to(None)
        assert time.monotonic() - started < 1.5, f"{GRPCIO}: a handed-over blocking call was not cancelled"
        assert (failed.value.code(), failed.value.details()) == (
            grpc.StatusCode.CANCELLED,
            "Locally cancelled by application!",
        )
        cancel_blocking(handed[0])  # a call that has ended: nothing happens
        with_call(Request(id="nobody-told"), timeout=5)
        assert len(handed) == 2


def test_grpc_reads_the_done_writing_flag_of_the_call_an_interceptor_returns() -> None:
    source = inspect.getsource(grpc.aio._interceptor)
    assert "call._done_writing_flag" in source, f"{GRPCIO}: intercepted streams no longer read _done_writing_flag"


def test_a_finished_aio_calls_accessors_answer_without_waiting(server: ScriptedServer) -> None:
    async def ended() -> tuple[Any, Any]:
        async with grpc.aio.insecure_channel(server.target) as channel:
            call = pb_grpc.ScriptedStub(channel).Unary(Request(id="aio"), timeout=5)
            await call
            return at_once(call.code()), at_once(call.details())

    code, details = AIO_LOOP.run(ended())
    assert code is grpc.StatusCode.OK, f"{GRPCIO}: a finished aio call's code() now waits"
    assert details is not None, f"{GRPCIO}: a finished aio call's details() now waits"


def test_a_new_channel_tells_whether_grpc_took_its_service_config() -> None:
    good = grpc.insecure_channel("localhost:1", options=[("grpc.service_config", "{}")])
    bad = grpc.insecure_channel("localhost:1", options=[("grpc.service_config", '{"loadBalancingPolicy": "nope"}')])
    try:
        assert is_idle(good), f"{GRPCIO}: a new channel's core channel no longer tells its state"
        assert not is_idle(bad)
    finally:
        good.close()
        bad.close()
