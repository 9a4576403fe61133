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
