"""64 threads and 64 tasks at once in one process (the server in a process of its own): hedged and ``.future()``
calls end by their deadline, and the threads the library starts do not grow with the calls in flight (compared
with bare grpc making the same calls)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from scripted.v1 import scripted_pb2_grpc as pb_grpc

import interceptors.aio
from interceptors import HedgePolicy, resilient_channel

from ..support.remote import RemoteServer
from ..support.server import AIO_LOOP, Request

THREADS = TASKS = 64
CALLS = 10
DEADLINE = 0.1
LATE = 0.05
"""How far past its deadline a call may end: grpc's own calls under this load end about that late at worst."""


def request(worker: int, call: int) -> Any:
    """Every attempt takes 300 ms (past the deadline) up to ``sleep_attempts``: half the calls are answered by their
    first hedge, half run out of time."""
    return Request(id=f"{worker}-{call}", sleep_ms=300, sleep_attempts=1 if call % 2 else 3)


class PeakThreads:
    """The most threads alive at once while it runs (sampled every 10 ms), less ``callers`` (the test's own)."""

    def __init__(self, callers: int = 0) -> None:
        self.peak, self._callers = 0, callers + 1  # and the sampler
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="peak-threads", daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, threading.active_count() - self._callers)

    def __enter__(self) -> PeakThreads:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def in_threads(work: Callable[[int], None], count: int = THREADS) -> None:
    callers = [threading.Thread(target=work, args=(w,), name=f"caller-{w}") for w in range(count)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(30)
    assert not any(caller.is_alive() for caller in callers)


@pytest.fixture(scope="module")
def aio_server() -> Any:
    server = RemoteServer("aio")
    yield server
    server.stop()


def test_hedged_calls_from_64_threads_and_64_tasks_end_by_their_deadline(aio_server: RemoteServer) -> None:
    """The sync and aio helpers share the process (the issue's load: 1 280 calls, 100 ms deadline, half of them
    answered by their hedge, half out of time): every call ends by its deadline + 50 ms (or, on a machine so busy
    that bare grpc calls made beside them end later, no later than those), and the library starts at most 8
    threads."""
    policy = HedgePolicy(delay=0.05)
    ours = Callers(
        pb_grpc.ScriptedStub(resilient_channel(aio_server.target, policy)),
        pb_grpc.ScriptedStub(AIO_LOOP.run(_aio_channel(interceptors.aio.resilient_channel, aio_server.target, policy))),
    )
    bare = Callers(  # beside ours, to tell how late the machine makes any call
        pb_grpc.ScriptedStub(grpc.insecure_channel(aio_server.target)),
        pb_grpc.ScriptedStub(AIO_LOOP.run(_aio_channel(grpc.aio.insecure_channel, aio_server.target))),
    )
    for callers in (ours, bare):
        callers.warm()
    before = threading.active_count()
    with PeakThreads(THREADS + CONTROL) as threads:
        aio = asyncio.run_coroutine_threadsafe(_all(ours.task, TASKS, bare.task, CONTROL), AIO_LOOP.loop)
        in_threads(lambda w: ours.thread(w) if w < THREADS else bare.thread(w), THREADS + CONTROL)
        aio.result(30)
    assert len(ours.latencies) == (THREADS + TASKS) * CALLS
    assert set(ours.codes) <= {grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED}
    assert ours.codes.count(grpc.StatusCode.OK) > 0
    bound = max(DEADLINE, *bare.latencies) + LATE
    late = sorted(latency for latency in ours.latencies if latency > bound)
    assert not late, f"{len(late)} calls ended past {bound:.3f} s (bare grpc's latest + 50 ms): {late[-5:]}"
    assert threads.peak - before <= 8, (before, threads.peak)


CONTROL = 8
"""Bare grpc callers (threads, and tasks) beside the library's."""


class Callers:
    """Threads and tasks calling through a sync and an aio stub, each call's latency and code noted."""

    def __init__(self, stub: Any, aio_stub: Any) -> None:
        self.stub, self.aio_stub = stub, aio_stub
        self.latencies: list[float] = []
        self.codes: list[grpc.StatusCode] = []

    def warm(self) -> None:
        self.stub.Unary(Request(id="warm"), timeout=10)

        async def warm() -> None:
            await self.aio_stub.Unary(Request(id="warm"), timeout=10)

        AIO_LOOP.run(warm())

    def thread(self, worker: int) -> None:
        for call in range(CALLS):
            started = time.monotonic()
            try:
                self.stub.Unary(request(worker, call), timeout=DEADLINE)
                self._ended(started, grpc.StatusCode.OK)
            except grpc.RpcError as error:
                self._ended(started, error.code())

    async def task(self, worker: int) -> None:
        for call in range(CALLS):
            started = time.monotonic()
            try:
                await self.aio_stub.Unary(request(THREADS + worker, call), timeout=DEADLINE)
                self._ended(started, grpc.StatusCode.OK)
            except grpc.RpcError as error:
                self._ended(started, error.code())

    def _ended(self, started: float, code: grpc.StatusCode) -> None:
        self.latencies.append(time.monotonic() - started)
        self.codes.append(code)


async def _all(*tasks: Any) -> None:
    """``(task, count, task, count...)``: every task ``count`` times, at once."""
    pairs = zip(tasks[::2], tasks[1::2], strict=True)
    await asyncio.gather(*(task(w) for task, count in pairs for w in range(count)))


async def _aio_channel(make: Callable[..., Any], *arguments: Any) -> Any:
    return make(*arguments)


@pytest.mark.parametrize("hedged", [False, True], ids=["plain", "hedged"])
def test_futures_in_flight_start_no_thread_each(aio_server: RemoteServer, hedged: bool) -> None:
    """64 threads each with 4 ``.future()`` calls in flight (256 at once): the library's threads do not grow with
    them; bare grpc making the same calls is the yardstick."""

    def load(stub: Any) -> int:
        def thread(worker: int) -> None:
            futures = [stub.Unary.future(Request(id=f"f{worker}-{i}", sleep_ms=50), timeout=5) for i in range(4)]
            for future in futures:
                assert future.result().id.startswith("f")

        with PeakThreads(THREADS) as threads:
            in_threads(thread)
        return threads.peak

    bare_channel = grpc.insecure_channel(aio_server.target)
    grpc.channel_ready_future(bare_channel).result(10)
    bare = load(pb_grpc.ScriptedStub(bare_channel))
    bare_channel.close()
    policies = (HedgePolicy(delay=0.02),) if hedged else ()
    channel = resilient_channel(aio_server.target, *policies)
    grpc.channel_ready_future(channel).result(10)
    ours = load(pb_grpc.ScriptedStub(channel))
    channel.close()
    assert ours - bare <= 8, (bare, ours)
