"""The hedging load of ``tests/client/test_load_bounds.py``, in a client process of its own so that nothing an
earlier test left behind (threads, channels, an event loop's tasks) shares its GIL: 64 threads and 64 tasks call
through a sync and an aio channel, hedged by hand with grpc's futures and tasks first (the yardstick), then through
ours. ``python -m tests.support.hedged_load TARGET`` prints what it saw as JSON."""

from __future__ import annotations

import asyncio
import collections
import heapq
import json
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
from scripted.v1 import scripted_pb2_grpc as pb_grpc

import interceptors.aio
from interceptors import HedgePolicy, resilient_channel

from .server import AIO_LOOP, Request

THREADS = TASKS = 64
CALLS = 10
DEADLINE = 0.1
LATE = 0.05
"""How far past its deadline a call may end."""
DELAY = 0.05
BESIDE = 8
"""Threads and tasks of each yardstick beside ours (grpc's calls hedged by hand, and grpc's plain calls), in the same
seconds: how late the machine lets grpc's own calls end then."""


def request(load: str, worker: int, call: int) -> Any:
    """A tail: one call in ten has a first attempt of 300 ms (past the deadline), which its hedge answers, one in
    twenty has every attempt that slow and runs out of time; the others answer in 5 ms. Each load has ids of its
    own: the server counts a call's attempts by its id, for as long as it runs."""
    slow, named = (worker + call) % 20, f"{load}-{worker}-{call}"
    if slow in (0, 10):
        return Request(id=named, sleep_ms=300, sleep_attempts=1)
    if slow == 5:
        return Request(id=named, sleep_ms=300, sleep_attempts=3)
    return Request(id=named, sleep_ms=5)


class PeakThreads:
    """The most threads alive at once while it runs (sampled every 10 ms), other than the callers of
    :func:`in_threads` and the sampler: what grpc, the library and the rest of the process run beside them."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="peak-threads", daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            others = sum(1 for thread in threading.enumerate() if not thread.name.startswith(CALLER))
            self.peak = max(self.peak, others - 1)

    def __enter__(self) -> PeakThreads:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


CALLER = "caller-"


def in_threads(work: Callable[[int], None], *beside: Callable[[int], None]) -> None:
    """``work(n)`` in each of :data:`THREADS` threads (and each of ``beside`` in :data:`BESIDE` more), all started
    before any begins (a loaded machine starts 64 threads slowly enough that the first would be done before the last
    began); raises the first error of any."""
    works = [(work, n) for n in range(THREADS)] + [(other, n) for other in beside for n in range(BESIDE)]
    ready, failed = threading.Barrier(len(works)), []

    def together(work: Callable[[int], None], worker: int) -> None:
        try:
            ready.wait(30)
            work(worker)
        except BaseException as error:
            failed.append(error)

    callers = [threading.Thread(target=together, args=each, name=f"{CALLER}{n}") for n, each in enumerate(works)]
    try:
        for caller in callers:
            caller.start()
    except BaseException:
        ready.abort()  # the callers started go on at once (and fail) rather than wait for the others
        raise
    for caller in callers:
        caller.join(30)
    assert not any(caller.is_alive() for caller in callers)
    if failed:
        raise failed[0]


class Callers:
    """Threads and tasks calling through a sync and an aio stub (the ``load`` named so), each call's latency and
    code noted."""

    def __init__(self, load: str, stub: Any, aio_stub: Any) -> None:
        self.name, self.stub, self.aio_stub = load, stub, aio_stub
        self.latencies: list[float] = []
        self.by_path: dict[str, list[float]] = {"sync": [], "aio": []}
        self.codes: list[grpc.StatusCode] = []
        self.late: collections.Counter[tuple[str, str, str]] = collections.Counter()  # by path, request, code
        self.lates: list[tuple[float, str, str, str]] = []  # latency, path, request, code
        self.odd: list[str] = []  # the first few calls that ended neither OK nor DEADLINE_EXCEEDED: who ended them
        self._lock = threading.Lock()

    def load(self, *beside: Callers) -> None:
        """64 threads and 64 tasks, each making its calls, all at once (the channels warmed first); and the
        :data:`BESIDE` threads and tasks of each of ``beside`` meanwhile."""
        for callers in (self, *beside):
            callers.stub.Unary(Request(id="warm"), timeout=10)
            AIO_LOOP.run(callers.warm())
        tasks: list[tuple[Callable[[int], Any], int]] = [(self.task, TASKS)]
        tasks += [(other.task, BESIDE) for other in beside]
        running = asyncio.run_coroutine_threadsafe(_all(tasks), AIO_LOOP.loop)
        in_threads(self.thread, *(other.thread for other in beside))
        running.result(30)

    async def warm(self) -> None:
        await self.aio_stub.Unary(Request(id="warm"), timeout=10)

    def thread(self, worker: int) -> None:
        for call in range(CALLS):
            started, asked = time.monotonic(), request(self.name, worker, call)
            try:
                self.stub.Unary(asked, timeout=DEADLINE)
                self._ended(started, grpc.StatusCode.OK, "sync", asked)
            except grpc.RpcError as error:
                self._ended(started, error.code(), "sync", asked, error)

    async def task(self, worker: int) -> None:
        for call in range(CALLS):
            started, asked = time.monotonic(), request(self.name, THREADS + worker, call)
            try:
                await self.aio_stub.Unary(asked, timeout=DEADLINE)
                self._ended(started, grpc.StatusCode.OK, "aio", asked)
            except grpc.RpcError as error:
                self._ended(started, error.code(), "aio", asked, error)

    def _ended(
        self, started: float, code: grpc.StatusCode, path: str = "", asked: Any = None, error: Any = None
    ) -> None:
        latency = time.monotonic() - started
        self.latencies.append(latency)
        if path:
            self.by_path[path].append(latency)
        self.codes.append(code)
        expected = code in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED)
        if (latency <= DEADLINE + LATE and expected) or not asked:
            return
        kind = f"{asked.sleep_ms} ms x{asked.sleep_attempts or 'all'}"
        with self._lock:  # from 64 threads and the loop
            self.late[(path, kind, code.name)] += 1
            self.lates.append((round(latency, 3), path, kind, code.name))
            if not expected and error is not None and len(self.odd) < 5:
                debug = error.debug_error_string() if hasattr(error, "debug_error_string") else ""
                self.odd.append(f"{path} {code.name} {error.details()!r} {debug}")


class ByHand(Callers):
    """Calls hedged by hand, as a user would without the library: grpc futures (tasks), the second sent after the
    delay, the first to end taken, the other cancelled."""

    def thread(self, worker: int) -> None:
        for call in range(CALLS):
            started, ended = time.monotonic(), queue.Queue[Any]()  # not SimpleQueue: see engine._workers.Inbox
            asked = request(self.name, worker, call)
            calls = [self.stub.Unary.future(asked, timeout=DEADLINE)]
            calls[0].add_done_callback(ended.put)
            try:
                first = ended.get(timeout=DELAY)
            except queue.Empty:
                calls.append(self.stub.Unary.future(asked, timeout=DEADLINE - DELAY))
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
            await self.aio_stub.Unary(request(self.name, THREADS + worker, call), timeout=timeout)
        except grpc.RpcError as error:
            return error.code()
        return grpc.StatusCode.OK


async def _all(tasks: list[tuple[Callable[[int], Any], int]]) -> None:
    await asyncio.gather(*(task(n) for task, count in tasks for n in range(count)))


async def _aio_channel(make: Callable[..., Any], *arguments: Any) -> Any:
    return make(*arguments)


def main(target: str) -> None:
    """The loads against ``target`` — by hand, then ours with a few callers beside it, by hand and plain (the
    yardsticks of what the machine lets grpc's calls do in the same seconds, whatever else it does) — then a JSON
    object: the latencies of grpc's calls (by hand alone, by hand beside ours, plain beside ours), ours, our codes,
    our late calls by kind and the slowest, and the most threads alive at once by hand and through ours."""
    by_hand = ByHand(
        "by-hand",
        pb_grpc.ScriptedStub(grpc.insecure_channel(target)),
        pb_grpc.ScriptedStub(AIO_LOOP.run(_aio_channel(grpc.aio.insecure_channel, target))),
    )
    policy = HedgePolicy(delay=DELAY)
    ours = Callers(
        "ours",
        pb_grpc.ScriptedStub(resilient_channel(target, policy)),
        pb_grpc.ScriptedStub(AIO_LOOP.run(_aio_channel(interceptors.aio.resilient_channel, target, policy))),
    )
    with PeakThreads() as bare_threads:
        by_hand.load()
    beside, plain = ByHand("beside", by_hand.stub, by_hand.aio_stub), Callers("plain", by_hand.stub, by_hand.aio_stub)
    with PeakThreads() as threads:
        ours.load(beside, plain)
    report = {
        "by_hand": [by_hand.latencies, beside.latencies, plain.latencies],
        "ours": ours.latencies,
        "ours_by_path": ours.by_path,
        "codes": [code.name for code in ours.codes],
        "odd": ours.odd,
        "codes_by_hand": sorted({code.name for code in by_hand.codes + beside.codes + plain.codes}),
        "late": [[*kind, count] for kind, count in ours.late.items()],
        "slowest": heapq.nlargest(5, ours.lates),
        "threads_by_hand": bare_threads.peak,
        "threads_ours": threads.peak,
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
