"""What a policy takes over from the one it replaces at a registry's reload (``Policy.inherit``), on the fake clock:
state kept where the new options allow it, the new options deciding from then on."""

from __future__ import annotations

import asyncio

import pytest

from interceptors import (
    AdaptiveLimiter,
    AdaptiveThrottle,
    Bulkhead,
    BulkheadFullError,
    CachePolicy,
    CircuitBreaker,
    CircuitState,
    Executor,
    HedgePolicy,
    LatencyQuantile,
    RateLimiter,
    RetryBudget,
    Timeout,
)
from interceptors.engine import PLAIN
from interceptors.testing import FakeClock

from ..support.calls import Boom


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(Exception):  # noqa: B017  (Boom, or the breaker's rejection)
            Executor(breaker).call(_boom)


def _boom() -> None:
    raise Boom


def test_an_open_breaker_stays_open_for_the_time_it_had_left(clock: FakeClock) -> None:
    old = CircuitBreaker(failure_threshold=1, delay=60, clock=clock)
    fail(old)
    clock.advance(20)
    new = CircuitBreaker(failure_threshold=5, delay=10, clock=clock)
    new.inherit(old)
    assert new.state is CircuitState.OPEN and new.remaining_delay == 40
    clock.advance(40)
    assert new.state is CircuitState.HALF_OPEN


def test_a_closed_breaker_keeps_its_window_when_measured_alike(clock: FakeClock) -> None:
    old = CircuitBreaker(failure_threshold=3, failure_window=5, clock=clock)
    fail(old, 2)
    same_window = CircuitBreaker(failure_threshold=3, failure_window=5, clock=clock)
    same_window.inherit(old)
    assert same_window.metrics.failures == 2
    fail(same_window)
    assert same_window.state is CircuitState.OPEN


def test_a_closed_breaker_measured_otherwise_starts_a_new_window(clock: FakeClock) -> None:
    old = CircuitBreaker(failure_threshold=3, failure_window=5, clock=clock)
    fail(old, 2)
    new = CircuitBreaker(failure_rate=0.5, failure_period=10, clock=clock)
    new.inherit(old)
    assert new.metrics.executions == 0 and new.state is CircuitState.CLOSED


def test_openings_in_a_row_carry_over(clock: FakeClock) -> None:
    old = CircuitBreaker(failure_threshold=1, delay=1, delay_multiplier=2, clock=clock)
    fail(old)
    clock.advance(1)
    fail(old)  # the trial fails: open again, for 2 s
    new = CircuitBreaker(failure_threshold=1, delay=1, delay_multiplier=3, clock=clock)
    new.inherit(old)
    clock.advance(2)
    fail(new)
    assert new.remaining_delay == 9  # the third opening in a row, by the new multiplier


def test_a_bulkhead_keeps_its_calls_in_flight_under_the_new_limit() -> None:
    async def scenario() -> None:
        old = Bulkhead(2)
        release = asyncio.Event()
        held = [asyncio.ensure_future(Executor(old).acall(release.wait)) for _ in range(2)]
        await asyncio.sleep(0)
        new = Bulkhead(3)
        new.inherit(old)
        assert new.in_flight == 2
        third = asyncio.ensure_future(Executor(new).acall(release.wait))
        await asyncio.sleep(0)
        with pytest.raises(BulkheadFullError):
            await Executor(new).acall(release.wait)
        release.set()
        await asyncio.gather(*held, third)
        assert new.in_flight == 0

    asyncio.run(scenario())


def test_an_adaptive_limiter_keeps_its_limit_within_the_new_bounds(clock: FakeClock) -> None:
    old = AdaptiveLimiter(initial_limit=40, max_limit=100, clock=clock)
    new = AdaptiveLimiter(initial_limit=5, min_limit=2, max_limit=30, clock=clock)
    new.inherit(old)
    assert new.limit == 30
    permit = new.acquire_permit()
    assert old.in_flight == new.in_flight == 1
    permit.record()
    assert new.in_flight == 0


def test_a_rate_limiter_opens_no_new_burst(clock: FakeClock) -> None:
    old = RateLimiter(2, period=1, bursty=True, clock=clock)
    assert old.try_acquire() and old.try_acquire()
    new = RateLimiter(3, period=1, bursty=True, clock=clock)
    new.inherit(old)
    assert new.try_acquire() and not new.try_acquire()  # 3 a period now: one more in this one


def test_a_token_bucket_budget_keeps_its_tokens() -> None:
    old = RetryBudget.token_bucket(max_tokens=10, token_ratio=0.1)
    for _ in range(4):
        old.record_outcome(failed=True)
    new = RetryBudget.token_bucket(max_tokens=5, token_ratio=0.5)
    new.inherit(old)
    assert new.tokens == 5  # 6 left, at most the new size
    ratio = RetryBudget(ratio=0.2)
    ratio.inherit(old)  # another kind of budget: nothing to keep
    assert ratio.tokens is None


def test_a_throttle_keeps_its_window(clock: FakeClock) -> None:
    old = AdaptiveThrottle(k=1.1, min_requests=1, clock=clock)
    for _ in range(30):
        with pytest.raises(Exception):  # noqa: B017  (Boom, or the throttle's rejection)
            Executor(old).call(_boom)
    new = AdaptiveThrottle(k=1.5, min_requests=1, clock=clock)
    new.inherit(old)
    assert new.rejection_rate > 0.5


def test_a_cache_keeps_its_answers_under_the_new_bounds(clock: FakeClock) -> None:
    old = CachePolicy(ttl=60, clock=clock)
    for request in "abc":
        Executor(old).call_with_execution(lambda e: e.request.upper(), request=request)
    new = CachePolicy(ttl=60, max_entries=2, clock=clock)
    new.inherit(old)
    assert Executor(new).call_with_execution(lambda e: "fresh", request="c") == "C"
    assert Executor(new).call_with_execution(lambda e: "fresh", request="a") == "fresh"  # let go: 2 at most


def test_a_hedge_keeps_the_latencies_its_delay_has_seen() -> None:
    quantile = LatencyQuantile(0.5, min_samples=1, window=20)
    quantile.record(PLAIN, 0.25)
    new = HedgePolicy(delay=LatencyQuantile(0.5, min_samples=1, window=20), max_attempts=3)
    new.inherit(HedgePolicy(delay=quantile))
    assert new.delay is quantile and quantile.delay(PLAIN) == 0.25
    other = HedgePolicy(delay=LatencyQuantile(0.9, min_samples=1))
    other.inherit(HedgePolicy(delay=quantile))  # another quantile: its own latencies
    assert other.delay is not quantile


def test_policies_that_keep_no_state_inherit_nothing() -> None:
    new = Timeout(1)
    new.inherit(Timeout(2))
    assert new.seconds == 1
