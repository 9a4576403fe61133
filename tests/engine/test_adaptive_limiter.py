"""AdaptiveLimiter: the limit rises while latency stays at its baseline and the limit is used, falls when latency
grows (calls queueing at the dependency), and only meaningful latencies count; on the fake clock."""

# mypy: disable-error-code="arg-type,misc"
# (the option cases pass values of the wrong type on purpose)

from __future__ import annotations

import asyncio
import threading

import pytest

from interceptors import AdaptiveLimiter, Executor, LimitExceededError, Timeout, TimeoutExceededError
from interceptors.events import LimitChanged, LimitExceeded
from interceptors.testing import FakeClock

from ..support.calls import Boom
from ..support.clients import wait_until


def windows(limiter: AdaptiveLimiter, clock: FakeClock, latency: float, count: int, busy: float = 1.0) -> list[int]:
    """Run ``count`` windows of calls, in batches of ``busy`` times the limit taking ``latency`` each, until the
    limiter has its 5 samples; returns the limit after each window."""
    limits = []
    for _ in range(count):
        done = 0
        while done < 5:
            permits = [limiter.acquire_permit() for _ in range(max(1, int(limiter.limit * busy)))]
            clock.advance(latency if done + len(permits) < 5 else max(latency, limiter.window))
            for permit in permits:
                permit.record()
            done += len(permits)
        limits.append(limiter.limit)
    return limits


def test_the_limit_rises_under_steady_latency_and_falls_when_latency_doubles(clock: FakeClock) -> None:
    events: list[LimitChanged] = []
    limiter = AdaptiveLimiter(initial_limit=10, max_limit=100, on_limit_changed=events.append, clock=clock)
    rising = windows(limiter, clock, latency=1.0, count=10)
    assert rising == sorted(rising) and rising[-1] > 15  # at its baseline and fully used: more
    clock_latency = 2.0  # the dependency now queues: every call takes twice as long
    falling = windows(limiter, clock, latency=clock_latency, count=5)
    assert falling == sorted(falling, reverse=True) and falling[-1] < rising[-1]
    assert events and all(e.old != e.new for e in events)
    assert events[-1].latency == pytest.approx(2.0) and events[-1].baseline < 2.0


def test_an_unused_limit_does_not_grow(clock: FakeClock) -> None:
    limiter = AdaptiveLimiter(initial_limit=20, clock=clock)
    assert windows(limiter, clock, latency=1.0, count=5, busy=0.25) == [20] * 5  # 5 in flight of 20: no evidence


def test_the_limit_stays_within_its_bounds(clock: FakeClock) -> None:
    limiter = AdaptiveLimiter(min_limit=4, max_limit=12, initial_limit=10, clock=clock)
    assert max(windows(limiter, clock, latency=1.0, count=20)) == 12
    small = AdaptiveLimiter(min_limit=4, initial_limit=6, clock=clock)
    windows(small, clock, latency=1.0, count=1)  # its baseline
    assert min(windows(small, clock, latency=50.0, count=5)) == 4


def test_calls_beyond_the_limit_are_rejected_and_counted_for_nothing(clock: FakeClock) -> None:
    events: list[LimitExceeded] = []
    limiter = AdaptiveLimiter(initial_limit=2, on_rejected=events.append, clock=clock)
    held = [limiter.acquire_permit(), limiter.acquire_permit()]
    with pytest.raises(LimitExceededError):
        Executor(limiter).call(lambda: None)
    with pytest.raises(LimitExceededError):
        limiter.acquire_permit()
    assert events == [LimitExceeded(2, 2, 0, "AdaptiveLimiter")] * 2  # the second, taken by hand, is no call's
    for permit in held:
        permit.drop()
    assert limiter.in_flight == 0 and limiter._samples == 0


def test_only_successes_and_timeouts_are_latency_samples(clock: FakeClock) -> None:
    limiter = AdaptiveLimiter(clock=clock)

    def fails_fast() -> None:
        raise Boom

    with pytest.raises(Boom):
        Executor(limiter).call(fails_fast)

    async def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(Executor(limiter).acall(cancelled))
    assert limiter._samples == 0 and limiter.in_flight == 0

    def slow() -> None:
        clock.advance(2)

    with pytest.raises(TimeoutExceededError):
        Executor(limiter, Timeout(1, clock=clock)).call(slow)
    Executor(limiter).call(lambda: None)
    assert limiter._samples == 2 and limiter._total == pytest.approx(2.0)


def test_waiters_queue_up_to_max_queued_within_max_wait() -> None:
    limiter = AdaptiveLimiter(initial_limit=1, max_wait=5, max_queued=1)
    release = threading.Event()
    holder = threading.Thread(target=Executor(limiter).call, args=(lambda: release.wait(5),))
    holder.start()
    while limiter.in_flight == 0:
        pass
    queued = threading.Thread(target=Executor(limiter).call, args=(lambda: None,))
    queued.start()
    while limiter.queued == 0:
        pass
    with pytest.raises(LimitExceededError):  # the queue of one is full: rejected at once
        Executor(limiter).call(lambda: None)
    release.set()
    holder.join()
    queued.join()
    assert limiter.in_flight == 0 and limiter.queued == 0


def test_a_burst_of_threads_beyond_max_limit_waits_within_max_wait_none_rejected_at_once(clock: FakeClock) -> None:
    """By default (``max_queued`` None) a call that may wait does: only ``max_wait`` and its deadline bound it."""
    limiter = AdaptiveLimiter(initial_limit=2, max_limit=4, max_wait=10, clock=clock)
    gate, rejected, done = threading.Event(), list[BaseException](), list[int]()

    def call() -> None:
        try:
            Executor(limiter).call(lambda: gate.wait(5))
        except LimitExceededError as error:
            rejected.append(error)
        else:
            done.append(1)

    threads = [threading.Thread(target=call) for _ in range(40)]
    for thread in threads:
        thread.start()
    wait_until(lambda: (limiter.in_flight, limiter.queued) == (2, 38) or bool(rejected))
    assert rejected == [] and (limiter.in_flight, limiter.queued) == (2, 38)
    gate.set()
    for thread in threads:
        thread.join(10)
    assert len(done) == 40 and rejected == [] and limiter.in_flight == 0 and limiter.queued == 0
    assert limiter.max_queued is None


async def test_a_burst_of_tasks_beyond_max_limit_waits_within_max_wait_none_rejected_at_once(clock: FakeClock) -> None:
    limiter = AdaptiveLimiter(initial_limit=2, max_limit=4, max_wait=10, clock=clock)
    gate = asyncio.Event()
    calls = [asyncio.ensure_future(Executor(limiter).acall(gate.wait)) for _ in range(200)]
    for _ in range(100):
        await asyncio.sleep(0)
        if limiter.queued == 198 or any(call.done() for call in calls):
            break
    assert not [call.exception() for call in calls if call.done()]  # none rejected at once
    assert (limiter.in_flight, limiter.queued) == (2, 198)
    gate.set()
    await asyncio.gather(*calls)
    assert limiter.in_flight == 0 and limiter.queued == 0


def test_without_max_wait_nobody_waits_and_max_queued_still_bounds_the_line(clock: FakeClock) -> None:
    limiter = AdaptiveLimiter(initial_limit=1, clock=clock)
    permit = limiter.acquire_permit()
    with pytest.raises(LimitExceededError):  # max_wait 0: rejected at once, nobody queued
        Executor(limiter).call(lambda: None)
    assert limiter.queued == 0
    permit.drop()
    assert AdaptiveLimiter(max_wait=1, max_queued=3).max_queued == 3


def test_32_threads_and_32_tasks_keep_exact_places(clock: FakeClock) -> None:
    limiter = AdaptiveLimiter(initial_limit=8, max_wait=10, max_queued=10_000, clock=clock)

    def work() -> None:
        for _ in range(20):
            Executor(limiter).call(lambda: None)

    threads = [threading.Thread(target=work) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    async def tasks() -> None:
        async def one() -> None:
            await asyncio.sleep(0)

        await asyncio.gather(*(Executor(limiter).acall(one) for _ in range(32 * 20)))

    asyncio.run(tasks())
    assert limiter.in_flight == 0 and limiter.queued == 0 and limiter._samples >= 0


@pytest.mark.parametrize(
    ("make", "option"),
    [
        (lambda: AdaptiveLimiter(min_limit=0), "min_limit"),
        (lambda: AdaptiveLimiter(min_limit=10, max_limit=5), "max_limit"),
        (lambda: AdaptiveLimiter(initial_limit=500), "initial_limit"),
        (lambda: AdaptiveLimiter(max_limit=10**9), "max_limit"),
        (lambda: AdaptiveLimiter(max_queued=-1), "max_queued"),
        (lambda: AdaptiveLimiter(window=0), "window"),
        (lambda: AdaptiveLimiter(max_wait="1"), "max_wait"),
        (lambda: AdaptiveLimiter(on_limit_changed=1), "on_limit_changed"),
    ],
)
def test_bad_limiter_options_are_named(make: object, option: str) -> None:
    with pytest.raises(ValueError, match=option):
        make()  # type: ignore[operator]
