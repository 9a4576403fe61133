"""Bulkhead: at most N calls in flight; waiters served first come first served, within max_wait and the deadline."""

# mypy: disable-error-code="arg-type,misc"
# (the option cases pass values of the wrong type on purpose)

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from functools import partial

import pytest

from interceptors import Bulkhead, BulkheadFullError, CircuitBreaker, Executor, Timeout, TimeoutExceededError
from interceptors.events import BulkheadFull

from ..support.calls import Boom
from ..support.clients import wait_until


def test_calls_beyond_the_limit_are_rejected_at_once_and_nothing_runs() -> None:
    events: list[BulkheadFull] = []
    bulkhead = Bulkhead(2, on_full=events.append)
    release, ran = threading.Event(), []

    def hold() -> None:
        ran.append(1)
        release.wait(5)

    executor = Executor(bulkhead)
    holders = [threading.Thread(target=executor.call, args=(hold,)) for _ in range(2)]
    for holder in holders:
        holder.start()
    wait_until(lambda: bulkhead.in_flight == 2)
    with pytest.raises(BulkheadFullError):
        executor.call(hold)
    assert len(ran) == 2 and len(events) == 1 and events[0].max_concurrent == 2
    release.set()
    for holder in holders:
        holder.join()
    assert bulkhead.in_flight == 0
    assert executor.call(lambda: "free again") == "free again"


def test_waiters_are_served_in_arrival_order_threads_and_tasks_alike() -> None:
    bulkhead = Bulkhead(1, max_wait=5)
    executor = Executor(bulkhead)
    gate, order = threading.Event(), list[int]()

    def first() -> None:
        gate.wait(5)

    holder = threading.Thread(target=executor.call, args=(first,))
    holder.start()
    wait_until(lambda: bulkhead.in_flight == 1)
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever)
    loop_thread.start()
    ends: list[Callable[[], object]] = []
    for i in range(6):
        if i % 2:

            async def as_task(i: int = i) -> None:
                await Executor(bulkhead).acall(lambda: _append(order, i))

            ends.append(partial(asyncio.run_coroutine_threadsafe(as_task(), loop).result, 5))
        else:
            thread = threading.Thread(target=executor.call, args=(partial(order.append, i),))
            thread.start()
            ends.append(partial(thread.join, 5))
        wait_until(partial(lambda n: bulkhead.waiting == n, i + 1))
    gate.set()
    holder.join()
    for end in ends:
        end()
    loop.call_soon_threadsafe(loop.stop)
    loop_thread.join()
    loop.close()
    assert order == list(range(6)) and bulkhead.in_flight == 0


async def _append(order: list[int], i: int) -> None:
    order.append(i)


def test_a_wait_is_bounded_by_max_wait_and_by_the_deadline() -> None:
    bulkhead = Bulkhead(1, max_wait=10)
    release = threading.Event()
    holder = threading.Thread(target=Executor(bulkhead).call, args=(lambda: release.wait(5),))
    holder.start()
    wait_until(lambda: bulkhead.in_flight == 1)
    started = time.monotonic()
    with pytest.raises(TimeoutExceededError):  # it waited what was left of its 0.1 s: then the Timeout says so
        Executor(Timeout(0.1), bulkhead).call(lambda: None)
    assert time.monotonic() - started < 1
    short = Bulkhead(1, max_wait=0.05)
    held = short._places.take(0)
    assert held
    started = time.monotonic()
    with pytest.raises(BulkheadFullError):
        Executor(short).call(lambda: None)
    assert 0.04 < time.monotonic() - started < 1
    release.set()
    holder.join()


async def test_a_cancelled_waiter_takes_no_place() -> None:
    bulkhead = Bulkhead(1, max_wait=10)
    release = asyncio.Event()
    holder = asyncio.ensure_future(Executor(bulkhead).acall(release.wait))
    await asyncio.sleep(0)
    waiter = asyncio.ensure_future(Executor(bulkhead).acall(asyncio.sleep, 0))
    await asyncio.sleep(0.01)
    assert bulkhead.waiting == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert bulkhead.waiting == 0
    release.set()
    await holder
    assert bulkhead.in_flight == 0


def test_a_breaker_around_a_full_bulkhead_counts_nothing() -> None:
    breaker = CircuitBreaker(failure_threshold=1)
    bulkhead = Bulkhead(1)
    bulkhead._places.take(0)
    with pytest.raises(BulkheadFullError):
        Executor(breaker, bulkhead).call(lambda: None)
    assert breaker.metrics.executions == 0


def test_failures_give_their_place_back() -> None:
    bulkhead = Bulkhead(1)

    def fails() -> None:
        raise Boom

    for _ in range(3):
        with pytest.raises(Boom):
            Executor(bulkhead).call(fails)
    assert bulkhead.in_flight == 0


def test_32_threads_never_exceed_the_limit_and_nothing_is_serialised() -> None:
    bulkhead = Bulkhead(8, max_wait=10)
    lock, running, peak = threading.Lock(), [0], [0]

    def work() -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.002)
        with lock:
            running[0] -= 1

    threads = [threading.Thread(target=lambda: [Executor(bulkhead).call(work) for _ in range(5)]) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak[0] == 8 and bulkhead.in_flight == 0 and bulkhead.waiting == 0  # 8 at once: no lock held in calls


async def test_32_tasks_never_exceed_the_limit() -> None:
    bulkhead = Bulkhead(4, max_wait=10)
    running, peak = [0], [0]

    async def work() -> None:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        await asyncio.sleep(0.001)
        running[0] -= 1

    await asyncio.gather(*(Executor(bulkhead).acall(work) for _ in range(32 * 5)))
    assert peak[0] == 4 and bulkhead.in_flight == 0


@pytest.mark.parametrize(
    ("make", "option"),
    [
        (lambda: Bulkhead(0), "max_concurrent"),
        (lambda: Bulkhead(10**9), "max_concurrent"),
        (lambda: Bulkhead(2.5), "max_concurrent"),
        (lambda: Bulkhead(2, max_wait=-1), "max_wait"),
        (lambda: Bulkhead(2, on_full=3), "on_full"),
    ],
)
def test_bad_bulkhead_options_are_named(make: object, option: str) -> None:
    with pytest.raises(ValueError, match=option):
        make()  # type: ignore[operator]
