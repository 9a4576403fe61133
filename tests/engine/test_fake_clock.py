from __future__ import annotations

import asyncio
import threading

import pytest

from interceptors.engine import SYSTEM_CLOCK, Clock
from interceptors.testing import FakeClock


def test_sleep_advances_time_at_once() -> None:
    clock = FakeClock(start=10)
    clock.sleep(2.5)
    clock.advance(0.5)
    assert clock.now() == 13
    assert clock.sleeps == [2.5]


async def test_async_sleep_advances_and_yields() -> None:
    clock = FakeClock()
    order: list[str] = []

    async def other() -> None:
        order.append("other")

    task = asyncio.ensure_future(other())
    await clock.asleep(1)
    order.append("after sleep")
    await task
    assert order == ["other", "after sleep"] and clock.now() == 1


def test_threads_share_the_clock() -> None:
    clock = FakeClock()

    def sleeps() -> None:
        for _ in range(100):
            clock.sleep(0.5)

    threads = [threading.Thread(target=sleeps) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clock.now() == 400 and len(clock.sleeps) == 800


def test_clocks_satisfy_the_protocol() -> None:
    assert isinstance(FakeClock(), Clock) and isinstance(SYSTEM_CLOCK, Clock)
    with pytest.raises(ValueError, match="advance"):
        FakeClock().advance(-1)


@pytest.mark.parametrize("start", ["x", float("nan"), float("inf"), None])
def test_a_fake_clock_starts_at_a_finite_number(start: object) -> None:
    with pytest.raises(ValueError, match="start"):
        FakeClock(start)  # type: ignore[arg-type]


def test_it_is_grpc_testings_time_what_it_schedules_runs_when_time_reaches_it() -> None:
    clock = FakeClock(start=100)
    ran: list[tuple[str, float]] = []
    clock.call_in(lambda: ran.append(("b", clock.time())), 2)
    clock.call_at(lambda: ran.append(("a", clock.time())), 101)
    dropped = clock.call_in(lambda: ran.append(("dropped", clock.time())), 1.5)
    clock.call_at(lambda: ran.append(("due", clock.time())), 99)  # due already: at once
    assert ran == [("due", 100.0)]
    assert dropped.cancel() and dropped.cancelled()
    clock.sleep_for(1)
    assert ran == [("due", 100.0), ("a", 101.0)]
    clock.sleep(5)  # a policy's sleep moves the same time on
    assert ran[-1] == ("b", 106.0)
    assert clock.sleeps == [5]  # grpc_testing's sleeps are not a policy's
    clock.sleep_until(110)
    assert clock.time() == clock.now() == 110


def test_what_it_schedules_may_schedule_more_and_runs_once() -> None:
    clock = FakeClock()
    ran: list[float] = []

    def again() -> None:
        ran.append(clock.time())
        if len(ran) < 3:
            clock.call_in(again, 0)  # due at once: runs now, not later

    first = clock.call_in(again, 1)
    clock.advance(1)
    assert ran == [1.0, 1.0, 1.0]
    assert not first.cancel()  # it ran
    clock.advance(10)
    assert ran == [1.0, 1.0, 1.0]
