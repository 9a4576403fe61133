"""A retried call leaves no reference cycle that holds grpc's call objects: each failed attempt's traceback holds
the frames that hold the call's execution, so an execution that kept its attempts' failures made cycles that only
the garbage collector frees — at any moment, in any thread, and a grpc call finalized so can deadlock grpc
(README Known issues). Released when the call ends, they are freed with it."""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Iterator

import grpc
import pytest

from interceptors import Fallback, HedgePolicy, RetryPolicy

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


def settled() -> None:
    """Free (the collector's debugging off) until nothing more is found: what earlier tests in this process, or the
    calls that warmed the channel, left to their threads and loops to let go of is gone before the calls looked at
    are made; then what the collector finds is kept again."""
    gc.set_debug(0)
    gc.garbage.clear()
    for _ in range(40):
        if gc.collect() == 0:
            break
        time.sleep(0.025)
    gc.set_debug(gc.DEBUG_SAVEALL)


def grpc_calls_in_cycles() -> list[str]:
    gc.collect()
    return [type(found).__name__ for found in gc.garbage if type(found).__name__ in GRPC_CALLS]


@pytest.mark.parametrize("path", PATHS)
def test_retried_calls_leave_no_grpc_call_in_a_cycle(server: ScriptedServer, path: str, collector_off: None) -> None:
    retry = RetryPolicy(max_attempts=3, delay=0.001)
    with Client(path, server.target, Fallback(message={"text": "fallback"}), retry) as client:
        client.unary(Request(id="warm"))
        settled()
        answered = [client.unary(Request(id=f"r{i}", fail_first=2)) for i in range(5)]  # answered by the third
        failed = [client.unary(Request(id=f"f{i}", fail_first=9)) for i in range(5)]  # the fallback's
    assert [o.code for o in answered + failed] == [grpc.StatusCode.OK] * 10
    assert [o.reply.text for o in failed] == ["fallback"] * 5
    assert grpc_calls_in_cycles() == []


ASYNC_RACES = {"future", "intercepted-future", "aio", "intercepted-aio"}
"""Paths whose hedges race on an event loop: before Python 3.13 their coroutines' frames cannot be cleared safely
(clearing a suspended one closed it), and they still make cycles (README Known issues)."""
COROUTINE_FRAMES = pytest.mark.xfail(
    sys.version_info < (3, 13), strict=True, reason="coroutine frames before Python 3.13: README Known issues"
)


@pytest.mark.parametrize(
    "path", [pytest.param(path, marks=COROUTINE_FRAMES) if path in ASYNC_RACES else path for path in PATHS]
)
def test_hedged_calls_leave_no_grpc_call_in_a_cycle(server: ScriptedServer, path: str, collector_off: None) -> None:
    """Hedges that win (the first attempt, held 0.2 s, is cancelled) and attempts that fail, one after another."""
    with Client(path, server.target, HedgePolicy(delay=0.02)) as client:
        client.unary(Request(id="warm"))
        settled()
        won = [client.unary(Request(id=f"h{i}", sleep_ms=200, sleep_attempts=1)) for i in range(4)]
        failed = [client.unary(Request(id=f"f{i}", fail_first=9)) for i in range(4)]
    assert [o.code for o in won] == [grpc.StatusCode.OK] * 4
    assert [o.code for o in failed] == [grpc.StatusCode.UNAVAILABLE] * 4
    assert grpc_calls_in_cycles() == []
