"""64 threads and 64 tasks at once in one process (the server in a process of its own): hedged and ``.future()``
calls end by their deadline, and the threads the library starts do not grow with the calls in flight (compared
with bare grpc making the same calls)."""

from __future__ import annotations

import asyncio
import collections
import queue
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
"""How far past its deadline a call may end."""


def request(worker: int, call: int) -> Any:
    """A tail: one call in ten has a first attempt of 300 ms (past the deadline), which its hedge answers, one in
    twenty has every attempt that slow and runs out of time; the others answer in 5 ms."""
    slow = (worker + call) % 20
    if slow in (0, 10):
        return Request(id=f"{worker}-{call}", sleep_ms=300, sleep_attempts=1)
    if slow == 5:
        return Request(id=f"{worker}-{call}", sleep_ms=300, sleep_attempts=3)
    return Request(id=f"{worker}-{call}", sleep_ms=5)


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


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


def in_threads(work: Callable[[int], None]) -> None:
    callers = [threading.Thread(target=work, args=(w,), name=f"caller-{w}") for w in range(THREADS)]
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
    """The sync and aio helpers share the process (the issue's load: 1 280 calls, 100 ms deadline, a tail of slow
    attempts that hedges answer or that run out of time): the library starts at most 8 threads, and every call ends
    by its deadline + 50 ms. The same load hedged by hand, with grpc's own futures and tasks, just before, is the
    yardstick: on two cores this load keeps the process's one GIL so busy that some of those end later (~5 % past
    the deadline + 50 ms, the slowest ~0.2 s), and ours may too, but their p99 no later than theirs + 50 ms, and
    none more than twice as late as their slowest. With another test suite beside this one (p99 hedged by hand past
    0.2 s), every Python thread waits its turn for the GIL, and the deadline is not judged."""
    by_hand = ByHand(
        pb_grpc.ScriptedStub(grpc.insecure_channel(aio_server.target)),
        pb_grpc.ScriptedStub(AIO_LOOP.run(_aio_channel(grpc.aio.insecure_channel, aio_server.target))),
    )
    policy = HedgePolicy(delay=DELAY)
    ours = Callers(
        pb_grpc.ScriptedStub(resilient_channel(aio_server.target, policy)),
        pb_grpc.ScriptedStub(AIO_LOOP.run(_aio_channel(interceptors.aio.resilient_channel, aio_server.target, policy))),
    )
    by_hand.load()
    before = threading.active_count()
    with PeakThreads(THREADS) as threads:
        ours.load()
    assert len(ours.latencies) == (THREADS + TASKS) * CALLS
    assert set(ours.codes) <= {grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED}
    assert ours.codes.count(grpc.StatusCode.OK) > 0
    assert threads.peak - before <= 8, (before, threads.peak)
    yardstick, latencies = quantile(by_hand.latencies, 0.99), sorted(ours.latencies)
    if yardstick > DEADLINE + 2 * LATE:  # another suite beside this one: every Python thread waits its turn
        pytest.skip(f"too busy a machine to judge the deadline: grpc hedged by hand ended its p99 at {yardstick:.3f} s")
    assert quantile(latencies, 0.99) <= max(DEADLINE + LATE, yardstick + LATE), (yardstick, latencies[-15:], ours.late)
    assert latencies[-1] <= 2 * max(DEADLINE + LATE, *by_hand.latencies), (max(by_hand.latencies), latencies[-5:])


DELAY = 0.05


class Callers:
    """Threads and tasks calling through a sync and an aio stub, each call's latency and code noted."""

    def __init__(self, stub: Any, aio_stub: Any) -> None:
        self.stub, self.aio_stub = stub, aio_stub
        self.latencies: list[float] = []
        self.codes: list[grpc.StatusCode] = []
        self.late: collections.Counter[tuple[str, str, str]] = collections.Counter()  # by path, request, code

    def load(self) -> None:
        """64 threads and 64 tasks, each making its calls, all at once (the channels warmed first)."""
        self.stub.Unary(Request(id="warm"), timeout=10)

        async def warm() -> None:
            await self.aio_stub.Unary(Request(id="warm"), timeout=10)

        AIO_LOOP.run(warm())
        tasks = asyncio.run_coroutine_threadsafe(_all(self.task, TASKS), AIO_LOOP.loop)
        in_threads(self.thread)
        tasks.result(30)

    def thread(self, worker: int) -> None:
        for call in range(CALLS):
            started, asked = time.monotonic(), request(worker, call)
            try:
                self.stub.Unary(asked, timeout=DEADLINE)
                self._ended(started, grpc.StatusCode.OK, "sync", asked)
            except grpc.RpcError as error:
                self._ended(started, error.code(), "sync", asked)

    async def task(self, worker: int) -> None:
        for call in range(CALLS):
            started, asked = time.monotonic(), request(THREADS + worker, call)
            try:
                await self.aio_stub.Unary(asked, timeout=DEADLINE)
                self._ended(started, grpc.StatusCode.OK, "aio", asked)
            except grpc.RpcError as error:
                self._ended(started, error.code(), "aio", asked)

    def _ended(self, started: float, code: grpc.StatusCode, path: str = "", asked: Any = None) -> None:
        latency = time.monotonic() - started
        self.latencies.append(latency)
        self.codes.append(code)
        if latency > DEADLINE + LATE and asked is not None:
            self.late[(path, f"{asked.sleep_ms} ms x{asked.sleep_attempts or 'all'}", code.name)] += 1


class ByHand(Callers):
    """Calls hedged by hand, as a user would without the library: grpc futures (tasks), the second sent after the
    delay, the first to end taken, the other cancelled."""

    def thread(self, worker: int) -> None:
        for call in range(CALLS):
            started, ended = time.monotonic(), queue.SimpleQueue[Any]()
            calls = [self.stub.Unary.future(request(worker, call), timeout=DEADLINE)]
            calls[0].add_done_callback(ended.put)
            try:
                first = ended.get(timeout=DELAY)
            except queue.Empty:
                calls.append(self.stub.Unary.future(request(worker, call), timeout=DEADLINE - DELAY))
                calls[1].add_done_callback(ended.put)
                first = ended.get()
            for other in calls:
                other.cancel()
            self._ended(started, first.code())

    async def task(self, worker: int) -> None:
        for call in range(CALLS):
            started = time.monotonic()
            calls = {asyncio.ensure_future(self._call(worker, call, DEADLINE))}
            done, _ = await asyncio.wait(calls, timeout=DELAY)
            if not done:
                calls.add(asyncio.ensure_future(self._call(worker, call, DEADLINE - DELAY)))
                done, _ = await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
            for other in calls - done:
                other.cancel()
            self._ended(started, next(iter(done)).result())

    async def _call(self, worker: int, call: int, timeout: float) -> grpc.StatusCode:
        try:
            await self.aio_stub.Unary(request(THREADS + worker, call), timeout=timeout)
        except grpc.RpcError as error:
            return error.code()
        return grpc.StatusCode.OK


async def _all(task: Callable[[int], Any], count: int) -> None:
    await asyncio.gather(*(task(w) for w in range(count)))


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
