"""RateLimiter: smooth (evenly spaced) and bursty (all at a period's start) permits, waits bounded by the
deadline, and the standalone permit API; on the fake clock."""

# mypy: disable-error-code="arg-type,misc"
# (the option cases pass values of the wrong type on purpose)

from __future__ import annotations

import asyncio
import threading

import pytest

from interceptors import Executor, RateLimitedError, RateLimiter, Timeout
from interceptors.events import RateLimited
from interceptors.testing import FakeClock


def test_smooth_permits_are_evenly_spaced(clock: FakeClock) -> None:
    limiter = RateLimiter(4, period=1, max_wait=10, clock=clock)
    times = []
    for _ in range(6):
        Executor(limiter).call(lambda: times.append(clock.now()))
    assert times == pytest.approx([0, 0.25, 0.5, 0.75, 1.0, 1.25])


def test_bursty_permits_come_at_each_period_start(clock: FakeClock) -> None:
    limiter = RateLimiter(3, period=1, bursty=True, max_wait=10, clock=clock)
    times = []
    for _ in range(7):
        Executor(limiter).call(lambda: times.append(clock.now()))
    assert times == pytest.approx([0, 0, 0, 1, 1, 1, 2])


def test_a_call_whose_permit_comes_too_late_is_rejected_and_takes_none(clock: FakeClock) -> None:
    events: list[RateLimited] = []
    limiter = RateLimiter(2, period=1, max_wait=0.3, on_limited=events.append, clock=clock)
    executor = Executor(limiter)
    assert executor.call(lambda: 1) == 1  # the permit of t=0
    with pytest.raises(RateLimitedError) as raised:
        executor.call(lambda: 2)  # the next comes at 0.5: later than 0.3
    assert raised.value.remaining == pytest.approx(0.5) and len(events) == 1 and clock.now() == 0
    clock.advance(0.25)
    assert executor.call(lambda: 3) == 3  # the refused call took nothing: 0.5 is within 0.3 of 0.25
    assert clock.now() == pytest.approx(0.5)


def test_waits_never_pass_max_wait_or_the_deadline(clock: FakeClock) -> None:
    events: list[RateLimited] = []
    limiter = RateLimiter(1, period=1, max_wait=5, on_limited=events.append, clock=clock)
    executor = Executor(limiter)
    executor.call(lambda: None)  # takes the permit of t=0
    with pytest.raises(RateLimitedError) as raised:
        Executor(Timeout(0.5, clock=clock), limiter).call(lambda: None)  # its permit at t=1 is past its deadline
    assert raised.value.remaining == pytest.approx(1.0) and events == [RateLimited(pytest.approx(1.0), "RateLimiter")]
    assert clock.now() == 0  # rejected at once, without waiting
    executor.call(lambda: None)  # the refused call took nothing: the next permit is still t=1
    assert clock.now() == 1


def test_no_wait_means_only_a_free_permit(clock: FakeClock) -> None:
    limiter = RateLimiter(10, period=1, clock=clock)
    executor = Executor(limiter)
    executor.call(lambda: None)
    with pytest.raises(RateLimitedError):
        executor.call(lambda: None)
    clock.advance(0.1)
    executor.call(lambda: None)


def test_the_permit_api(clock: FakeClock) -> None:
    limiter = RateLimiter(2, period=1, clock=clock)
    assert limiter.try_acquire() and not limiter.try_acquire()  # the second comes at 0.5
    assert limiter.reserve(2) == pytest.approx(1.0)  # permits at 0.5 and 1.0, taken now
    assert not limiter.acquire(max_wait=1.0)  # the next is at 1.5
    assert limiter.acquire() and clock.now() == pytest.approx(1.5)
    assert asyncio.run(limiter.aacquire(max_wait=0.5)) and clock.now() == pytest.approx(2.0)
    bursty = RateLimiter(3, bursty=True, clock=clock)
    assert bursty.try_acquire(3) and not bursty.try_acquire()
    assert bursty.reserve(4) == pytest.approx(2.0)  # 3 at t=3, the 4th at t=4 (clock at 2)


def test_32_threads_share_the_permits_exactly(clock: FakeClock) -> None:
    limiter = RateLimiter(100, period=1, clock=clock)
    taken = []
    lock = threading.Lock()

    def grab() -> None:
        for _ in range(10):
            if limiter.try_acquire():
                with lock:
                    taken.append(1)

    threads = [threading.Thread(target=grab) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == 1  # the clock stands still: one permit is free, the next comes in 10 ms
    reservations = [limiter.reserve() for _ in range(320)]
    assert reservations == sorted(reservations) and reservations[-1] == pytest.approx(3.2)


async def test_32_tasks_wait_their_turn(clock: FakeClock) -> None:
    limiter = RateLimiter(10, period=1, max_wait=100, clock=clock)
    times: list[float] = []

    async def call() -> None:
        times.append(clock.now())

    await asyncio.gather(*(Executor(limiter).acall(call) for _ in range(32)))
    assert len(times) == 32 and times == sorted(times) and clock.now() == pytest.approx(3.1)


@pytest.mark.parametrize(
    ("make", "option"),
    [
        (lambda: RateLimiter(0), "max_calls"),
        (lambda: RateLimiter(1.5), "max_calls"),
        (lambda: RateLimiter(10, period=0), "period"),
        (lambda: RateLimiter(10, bursty="yes"), "bursty"),
        (lambda: RateLimiter(10, max_wait=float("inf")), "max_wait"),
        (lambda: RateLimiter(10, on_limited=2), "on_limited"),
        (lambda: RateLimiter(10).try_acquire(0), "permits"),
        (lambda: RateLimiter(10).acquire(max_wait=-1), "max_wait"),
    ],
)
def test_bad_rate_limiter_options_are_named(make: object, option: str) -> None:
    with pytest.raises(ValueError, match=option):
        make()  # type: ignore[operator]
