"""A retried call leaves no reference cycle that holds grpc's call objects: each failed attempt's traceback holds
the frames that hold the call's execution, so an execution that kept its attempts' failures made cycles that only
the garbage collector frees — at any moment, in any thread, and a grpc call finalized so can deadlock grpc
(README Known issues). Released when the call ends, they are freed with it."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import grpc
import pytest

from interceptors import Fallback, RetryPolicy

from ..support.clients import PATHS, Client
from ..support.server import Request, ScriptedServer

GRPC_CALLS = {
    "_InactiveRpcError",
    "_MultiThreadedRendezvous",
    "_SingleThreadedRendezvous",
    "UnaryUnaryCall",
    "_AioCall",
}
"""grpc's client call objects (sync and aio): what must not be left to the garbage collector."""


@pytest.fixture
def collector_off() -> Iterator[None]:
    """The garbage collector off and what it finds kept (``gc.garbage``), so that a cycle made during the test
    stays to be seen."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def grpc_calls_in_cycles() -> list[str]:
    gc.collect()
    return [type(found).__name__ for found in gc.garbage if type(found).__name__ in GRPC_CALLS]


@pytest.mark.parametrize("path", PATHS)
def test_retried_calls_leave_no_grpc_call_in_a_cycle(server: ScriptedServer, path: str, collector_off: None) -> None:
    retry = RetryPolicy(max_attempts=3, delay=0.001)
    with Client(path, server.target, Fallback(message={"text": "fallback"}), retry) as client:
        client.unary(Request(id="warm"))
        gc.collect()
        gc.garbage.clear()
        answered = [client.unary(Request(id=f"r{i}", fail_first=2)) for i in range(5)]  # answered by the third
        failed = [client.unary(Request(id=f"f{i}", fail_first=9)) for i in range(5)]  # the fallback's
    assert [o.code for o in answered + failed] == [grpc.StatusCode.OK] * 10
    assert [o.reply.text for o in failed] == ["fallback"] * 5
    assert grpc_calls_in_cycles() == []
