"""A retried call leaves no reference cycle that holds grpc's call objects: each failed attempt's traceback holds
the frames that hold the call's execution, so an execution that kept its attempts' failures made cycles that only
the garbage collector frees — at any moment, in any thread, and a grpc call finalized so can deadlock grpc
(README Known issues). Released when the call ends, they are freed with it."""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Iterator
from typing import Any

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


FROZEN: set[int] = set()
"""The grpc calls alive when the test began (see :func:`collector_off`)."""


@pytest.fixture
def collector_off() -> Iterator[None]:
    """The garbage collector off and what it finds kept (``gc.garbage``), so that a cycle made during the test
    stays to be seen. What the process held before is frozen (``gc.freeze``): until the last look
    (:func:`grpc_calls_in_cycles`), the collector looks only at what the test makes, not at the worker's whole heap,
    each time it runs."""
    gc.collect()
    FROZEN.clear()
    FROZEN.update(id(alive) for alive in gc.get_objects() if type(alive).__name__ in GRPC_CALLS)
    gc.freeze()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.unfreeze()
        gc.enable()


def settled() -> set[int]:
    """Free (the collector's debugging off) until nothing more is found, then keep what the collector finds again;
    returns the grpc calls still alive, with those alive before the test: what earlier tests in this process (pytest
    keeps an expected failure's frames for a while) let go of later is not counted against the calls looked at."""
    gc.set_debug(0)
    gc.garbage.clear()
    for _ in range(40):
        if gc.collect() == 0:
            break
        time.sleep(0.025)
    gc.set_debug(gc.DEBUG_SAVEALL)
    return FROZEN | {id(alive) for alive in gc.get_objects() if type(alive).__name__ in GRPC_CALLS}


def grpc_calls_in_cycles(before: set[int]) -> list[str]:
    """The grpc calls made since ``before`` (see :func:`settled`) that only the collector could free: the whole heap
    looked at, so that a cycle through something older than the test (a thread's frame, a fixture's object) counts
    (the rest of the test looks at the whole heap too)."""
    gc.unfreeze()
    gc.collect()
    found = [type(kept).__name__ for kept in gc.garbage if id(kept) not in before]
    return [name for name in found if name in GRPC_CALLS]


def failed_calls_in_cycles(server: ScriptedServer, path: str, *policies: Any) -> list[str]:
    with Client(path, server.target, *policies) as client:
        client.unary(Request(id="warm"))
        before = settled()
        failed = [client.unary(Request(id=f"f{i}", fail_first=9)) for i in range(5)]
        assert {o.code for o in failed} == {grpc.StatusCode.UNAVAILABLE}
        del failed  # what a caller does with its failures: let go of them
    return grpc_calls_in_cycles(before)


def skip_where_grpc_leaves_cycles(server: ScriptedServer, path: str) -> None:
    """Skip the intercepted aio path where grpc.aio's interceptor machinery leaves a failed call in a cycle of its
    own (grpcio 1.65 does, with an interceptor that only calls on; 1.85 does not): there no count of ours means
    anything."""
    if path == "intercepted-aio" and (theirs := failed_calls_in_cycles(server, path)):
        pytest.skip(f"grpcio {grpc.__version__}'s own intercepted aio calls leave {len(theirs)} grpc calls in cycles")


@pytest.mark.parametrize("path", PATHS)
def test_retried_calls_leave_no_grpc_call_in_a_cycle(server: ScriptedServer, path: str, collector_off: None) -> None:
    skip_where_grpc_leaves_cycles(server, path)
    retry = RetryPolicy(max_attempts=3, delay=0.001)
    with Client(path, server.target, Fallback(message={"text": "fallback"}), retry) as client:
        client.unary(Request(id="warm"))
        before = settled()
        answered = [client.unary(Request(id=f"r{i}", fail_first=2)) for i in range(5)]  # answered by the third
        failed = [client.unary(Request(id=f"f{i}", fail_first=9)) for i in range(5)]  # the fallback's
    assert [o.code for o in answered + failed] == [grpc.StatusCode.OK] * 10
    assert [o.reply.text for o in failed] == ["fallback"] * 5
    assert grpc_calls_in_cycles(before) == []


AIO_KEEPS_ITS_FAILURE = pytest.mark.xfail(
    sys.version_info < (3, 13),
    strict=True,
    reason="before Python 3.13 an aio call keeps the failure it raised (for code() and details()) in a cycle through "
    "its coroutine's frame: README Known issues",
)


@pytest.mark.parametrize(
    "path", [pytest.param(path, marks=AIO_KEEPS_ITS_FAILURE) if "aio" in path else path for path in PATHS]
)
def test_failed_calls_leave_no_more_in_cycles_than_grpc(server: ScriptedServer, path: str, collector_off: None) -> None:
    """Calls whose retries run out, with no fallback: the caller gets the failure, as grpc's own calls on the same
    path give theirs (grpc's futures and aio calls raise themselves, in frames that hold them: cycles of grpc's)."""
    skip_where_grpc_leaves_cycles(server, path)
    theirs = failed_calls_in_cycles(server, path)
    ours = failed_calls_in_cycles(server, path, RetryPolicy(max_attempts=2, delay=0.001))
    assert len(ours) <= len(theirs), (ours, theirs)


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
    skip_where_grpc_leaves_cycles(server, path)
    with Client(path, server.target, HedgePolicy(delay=0.02)) as client:
        client.unary(Request(id="warm"))
        before = settled()
        won = [client.unary(Request(id=f"h{i}", sleep_ms=200, sleep_attempts=1)) for i in range(4)]
        failed = [client.unary(Request(id=f"f{i}", fail_first=9)) for i in range(4)]
    assert [o.code for o in won] == [grpc.StatusCode.OK] * 4
    assert [o.code for o in failed] == [grpc.StatusCode.UNAVAILABLE] * 4
    # a loser that ends after its race (a straggler, its frame still running when the race forgets it) may still
    # leave its call to the collector: seen once, under two suites at once; the cycles fixed were one per call
    assert len(grpc_calls_in_cycles(before)) <= 1
