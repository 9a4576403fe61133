from __future__ import annotations

import asyncio
import threading
import time

import pytest

from interceptors import Executor, Timeout, TimeoutExceededError
from interceptors.engine import Execution
from interceptors.events import TimeoutExceeded
from interceptors.testing import FakeClock

from ..support.calls import Boom


def test_fast_call_passes(clock: FakeClock) -> None:
    assert Executor(Timeout(1, clock=clock)).call(lambda: 7) == 7


def test_deadline_is_handed_to_the_call(clock: FakeClock) -> None:
    clock.advance(100)
    seen: list[float | None] = []
    Executor(Timeout(1.5, clock=clock)).call_with_execution(lambda e: seen.append(e.deadline))
    assert seen == [101.5]


def test_sync_result_after_the_deadline_is_a_timeout(clock: FakeClock) -> None:
    events: list[TimeoutExceeded] = []
    timeout = Timeout(1, on_timeout_exceeded=events.append, clock=clock)

    def slow() -> str:
        clock.sleep(2)
        return "late"

    with pytest.raises(TimeoutExceededError) as raised:
        Executor(timeout).call(slow)
    assert raised.value.timeout == 1
    assert isinstance(raised.value, TimeoutError)
    assert events == [TimeoutExceeded(timeout=1.0, elapsed=2.0, policy="Timeout")]


def test_failure_after_the_deadline_is_a_timeout_chaining_the_failure(clock: FakeClock) -> None:
    def slow_failure() -> None:
        clock.sleep(2)
        raise Boom

    with pytest.raises(TimeoutExceededError) as raised:
        Executor(Timeout(1, clock=clock)).call(slow_failure)
    assert isinstance(raised.value.__cause__, Boom)


def test_failure_before_the_deadline_passes_through(clock: FakeClock) -> None:
    def quick_failure() -> None:
        raise Boom

    with pytest.raises(Boom):
        Executor(Timeout(1, clock=clock)).call(quick_failure)


def test_tighter_outer_deadline_wins_and_belongs_to_its_owner(clock: FakeClock) -> None:
    inner_events: list[TimeoutExceeded] = []
    outer_events: list[TimeoutExceeded] = []
    executor = Executor(
        Timeout(1, on_timeout_exceeded=outer_events.append, clock=clock),
        Timeout(5, on_timeout_exceeded=inner_events.append, clock=clock),
    )
    deadlines: list[float | None] = []

    def slow(execution: Execution) -> None:
        deadlines.append(execution.deadline)
        clock.sleep(3)

    with pytest.raises(TimeoutExceededError) as raised:
        executor.call_with_execution(slow)
    assert deadlines == [1.0]
    assert raised.value.timeout == 1
    assert inner_events == [] and len(outer_events) == 1


def test_deadline_given_by_the_caller_bounds_the_timeout(clock: FakeClock) -> None:
    seen: list[float | None] = []
    Executor(Timeout(10, clock=clock)).call_with_execution(lambda e: seen.append(e.deadline), deadline=2.0)
    assert seen == [2.0]


def test_deadline_is_restored_after_the_timeout(clock: FakeClock) -> None:
    seen: list[float | None] = []

    def record(execution: Execution) -> None:
        seen.append(execution.deadline)

    timeout = Timeout(1, clock=clock).wrap(record)
    execution = Execution(record, clock=clock, deadline=50.0)
    timeout(execution)
    assert seen == [1.0] and execution.deadline == 50.0


async def test_async_work_is_cancelled_at_the_deadline() -> None:
    cancelled = asyncio.Event()

    async def hangs() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    started = time.monotonic()
    with pytest.raises(TimeoutExceededError):
        await Executor(Timeout(0.05)).acall(hangs)
    assert time.monotonic() - started < 2
    assert cancelled.is_set()


async def test_async_fake_clock_result_after_deadline_is_a_timeout(clock: FakeClock) -> None:
    async def slow() -> str:
        await clock.asleep(2)
        return "late"

    with pytest.raises(TimeoutExceededError):
        await Executor(Timeout(1, clock=clock)).acall(slow)


async def test_async_fast_call_and_inner_failure(clock: FakeClock) -> None:
    async def ok() -> int:
        return 3

    async def fails() -> None:
        raise Boom

    executor = Executor(Timeout(1, clock=clock))
    assert await executor.acall(ok) == 3
    with pytest.raises(Boom):
        await executor.acall(fails)


async def test_async_caller_cancellation_is_not_a_timeout() -> None:
    async def hangs() -> None:
        await asyncio.sleep(10)

    task = asyncio.ensure_future(Executor(Timeout(5)).acall(hangs))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_many_concurrent_async_timeouts_fire_only_for_the_slow_calls() -> None:
    # the fast calls have 0.29 s of slack: a loaded loop that starts 64 tasks late must not cut them
    executor = Executor(Timeout(0.3))

    async def work(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    durations = [0.0, 0.01, 1.2, 0.005, 1.5, 0.0, 0.01, 1.0] * 8
    outcomes = await asyncio.gather(*(executor.acall(work, d) for d in durations), return_exceptions=True)
    for duration, outcome in zip(durations, outcomes, strict=True):
        if duration >= 1.0:
            assert isinstance(outcome, TimeoutExceededError), duration
        else:
            assert outcome == duration
    # the policy keeps working for later calls after its alarms fired
    assert await executor.acall(work, 0) == 0
    with pytest.raises(TimeoutExceededError):
        await executor.acall(work, 1)


def test_one_async_timeout_serves_several_event_loops_in_threads() -> None:
    executor = Executor(Timeout(0.05))
    results: list[str] = []

    async def hangs() -> None:
        await asyncio.sleep(5)

    async def fast() -> str:
        return "fast"

    async def main() -> None:
        results.append(await executor.acall(fast))
        try:
            await executor.acall(hangs)
        except TimeoutExceededError:
            results.append("timeout")

    threads = [threading.Thread(target=asyncio.run, args=(main(),)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=5)
    asyncio.run(main())  # and again in a fresh loop on this thread
    assert sorted(results) == ["fast"] * 5 + ["timeout"] * 5


async def test_inner_timeout_error_is_not_mistaken_for_ours() -> None:
    async def raises_timeout_error() -> None:
        raise TimeoutError("from the call itself")

    with pytest.raises(TimeoutError, match="from the call itself"):
        await Executor(Timeout(5)).acall(raises_timeout_error)
