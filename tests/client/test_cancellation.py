"""A call its caller abandons stops: cancelling the task that awaits an aio call (wait_for, gather, a TaskGroup,
task.cancel()), or cancelling a sync future, cancels the attempt in flight and every later one, as it does for a
bare grpc call. An abandoned call never keeps loading the backend (issue 8, defect 1)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from interceptors import CircuitBreaker, CircuitState, RetryPolicy
from interceptors.events import RetryStarted

from ..support.clients import AIO_PATHS, Client, wait_until
from ..support.server import AIO_LOOP, Request, ScriptedServer

HOW = ["wait_for", "gather", "task_group", "task_cancel"]
RETRY = RetryPolicy(max_attempts=6, delay=0.1, jitter_factor=0)  # attempts at 0, 0.1, 0.2, ... while it fails


async def abandon(call: Callable[[], Awaitable[Any]], how: str, after: float) -> None:
    """Await ``call()`` the way ``how`` says, and give up on it after ``after`` seconds."""

    async def awaiting() -> Any:
        return await call()

    if how == "wait_for":
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(call(), after)
    elif how == "gather":
        gathered = asyncio.gather(call())
        await asyncio.sleep(after)
        gathered.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gathered
    elif how == "task_group":
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(after), asyncio.TaskGroup() as group:  # type: ignore[attr-defined]
                group.create_task(awaiting())
    else:
        task = asyncio.ensure_future(awaiting())
        await asyncio.sleep(after)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def skip_without_task_groups(how: str) -> None:
    if how == "task_group" and sys.version_info < (3, 11):
        pytest.skip("asyncio.TaskGroup needs Python 3.11")


@pytest.mark.parametrize("path", AIO_PATHS)
@pytest.mark.parametrize("how", HOW)
def test_abandoning_a_call_during_backoff_stops_its_retries(server: ScriptedServer, path: str, how: str) -> None:
    skip_without_task_groups(how)
    retries: list[RetryStarted] = []  # what the client started, however late a loaded server records it
    retry = RetryPolicy(max_attempts=6, delay=0.1, jitter_factor=0, on_retry=retries.append)
    with Client(path, server.target, retry) as client:
        client.unary(Request(id="warm"))  # a warm channel: the first attempt starts at once
        AIO_LOOP.run(abandon(lambda: client.stub.Unary(Request(id="c", fail_first=100)), how, after=0.15))
        given_up = 1 + len(retries)
        time.sleep(0.35)  # three more attempts would have been due by now
        assert 1 + len(retries) == given_up  # none started after the call was given up
        assert server.attempts("c") <= given_up
    # at 0 and 0.1 s (and 0.2 s if the machine was slow to give up at 0.15 s; only 1 if it was slow to send the 2nd)
    assert 1 <= given_up <= 3


@pytest.mark.parametrize("path", AIO_PATHS)
@pytest.mark.parametrize("how", HOW)
def test_abandoning_a_call_cancels_the_attempt_in_flight(server: ScriptedServer, path: str, how: str) -> None:
    skip_without_task_groups(how)
    breaker = CircuitBreaker(failure_threshold=1, delay=60)
    breaker.half_open()  # its one trial slot is held by the call, and must come back when the call is cancelled
    with Client(path, server.target, RETRY, breaker) as client:
        AIO_LOOP.run(abandon(lambda: client.stub.Unary(Request(id="slow", sleep_ms=3000)), how, after=0.1))
        wait_until(lambda: "slow" in server.recorder.cancelled)  # the server saw the attempt cancelled
        assert breaker.state is CircuitState.HALF_OPEN
        assert client.unary(Request(id="next")).reply.attempt == 1  # the trial slot was freed
    assert server.attempts("slow") == 1


@pytest.mark.parametrize("path", ["future", "intercepted-future"])
def test_cancelling_a_future_stops_the_attempt_in_flight_and_every_later_one(server: ScriptedServer, path: str) -> None:
    retries: list[RetryStarted] = []  # the flaky call's, as the client started them
    retry = RetryPolicy(max_attempts=6, delay=0.1, jitter_factor=0, on_retry=retries.append)
    with Client(path, server.target, retry) as client:
        client.unary(Request(id="warm"))
        future = client.stub.Unary.future(Request(id="slow", sleep_ms=3000))
        wait_until(lambda: server.attempts("slow") == 1)
        started = time.monotonic()
        assert future.cancel()
        assert future.cancelled() and time.monotonic() - started < 0.5
        assert future.code() is grpc.StatusCode.CANCELLED
        with pytest.raises(grpc.FutureCancelledError):
            future.result()
        wait_until(lambda: "slow" in server.recorder.cancelled)

        failing = client.stub.Unary.future(Request(id="flaky", fail_first=100))
        wait_until(lambda: server.attempts("flaky") == 2)  # cancelled during its backoff
        assert failing.cancel()
        given_up = 1 + len(retries)  # a loaded server may record the last of them later
        time.sleep(0.35)
        assert 1 + len(retries) == given_up <= 3  # none started after the cancel
        assert server.attempts("flaky") <= given_up
    assert server.attempts("slow") == 1
