"""Every invalid option raises ValueError naming the option."""

# mypy: disable-error-code="arg-type,misc,dict-item"
# (the cases pass values of the wrong type on purpose)

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from interceptors import (
    AdaptiveLimiter,
    AdaptiveThrottle,
    Backoff,
    CircuitBreaker,
    CircuitState,
    Executor,
    Fallback,
    HedgePolicy,
    LatencyQuantile,
    RandomDelay,
    RateLimiter,
    RetryBudget,
    RetryPolicy,
    Timeout,
)
from interceptors.testing import FakeClock


@pytest.mark.parametrize(
    ("make", "option"),
    [
        (lambda: Timeout(0), "seconds"),
        (lambda: Timeout(-1), "seconds"),
        (lambda: Timeout(float("nan")), "seconds"),
        (lambda: Timeout("1s"), "seconds"),
        (lambda: Timeout(True), "seconds"),
        (lambda: RetryPolicy(max_attempts=0), "max_attempts"),
        (lambda: RetryPolicy(max_attempts=2.5), "max_attempts"),
        (lambda: RetryPolicy(delay=-0.1), "delay"),
        (lambda: RetryPolicy(max_duration=0), "max_duration"),
        (lambda: RetryPolicy(min_attempt_time=-1), "min_attempt_time"),
        (lambda: RetryPolicy(jitter_factor=1.5), "jitter_factor"),
        (lambda: RetryPolicy(jitter=-1), "jitter"),
        (lambda: RetryPolicy(jitter=1, jitter_factor=0.1), "jitter"),
        (lambda: RetryPolicy(max_pushback=-5), "max_pushback"),
        (lambda: RetryPolicy(pushback="yes"), "pushback"),
        (lambda: RetryPolicy(handle=42), "handle"),
        (lambda: RetryPolicy(abort_on=(ValueError, 3)), "abort_on"),
        (lambda: RetryPolicy(on_retry="log"), "on_retry"),
        (lambda: RetryPolicy(clock=object()), "clock"),
        (lambda: Backoff(0, 10), "initial"),
        (lambda: Backoff(5, 1), "maximum"),
        (lambda: Backoff(1, 10, multiplier=0), "multiplier"),
        (lambda: RandomDelay(-1, 1), "minimum"),
        (lambda: RandomDelay(2, 1), "maximum"),
        (lambda: CircuitBreaker(failure_threshold=0), "failure_threshold"),
        (lambda: CircuitBreaker(failure_threshold=3, failure_rate=0.5), "failure_rate"),
        (lambda: CircuitBreaker(failure_rate=1.5, failure_window=10), "failure_rate"),
        (lambda: CircuitBreaker(failure_rate=0, failure_window=10), "failure_rate"),
        (lambda: CircuitBreaker(failure_rate=0.5), "failure_window"),
        (lambda: CircuitBreaker(failure_window=0), "failure_window"),
        (lambda: CircuitBreaker(failure_threshold=5, failure_window=3), "failure_window"),
        (lambda: CircuitBreaker(failure_window=5, failure_period=10), "failure_period"),
        (lambda: CircuitBreaker(failure_period=0), "failure_period"),
        (lambda: CircuitBreaker(minimum_calls=0), "minimum_calls"),
        (lambda: CircuitBreaker(failure_threshold=2, failure_window=4, minimum_calls=5), "minimum_calls"),
        (lambda: CircuitBreaker(slow_call_duration=-1), "slow_call_duration"),
        (lambda: CircuitBreaker(slow_call_rate=0.5), "slow_call_duration"),
        (lambda: CircuitBreaker(slow_call_duration=1, slow_call_rate=2), "slow_call_rate"),
        (lambda: CircuitBreaker(success_threshold=0), "success_threshold"),
        (lambda: CircuitBreaker(success_threshold=3, success_window=2), "success_window"),
        (lambda: CircuitBreaker(delay=-1), "delay"),
        (lambda: CircuitBreaker(jitter_factor=-0.1), "jitter_factor"),
        (lambda: CircuitBreaker(on_state_change=1), "on_state_change"),
        (lambda: Fallback(value=1, message={}), "message"),
        # issue 8, defect 13: accepted before, failing later (or refused without naming the option)
        (lambda: CircuitBreaker(delay=1e308), "delay"),
        (lambda: CircuitBreaker(delay=float("inf")), "delay"),
        (lambda: RetryPolicy(delay=1e12), "delay"),
        (lambda: RetryPolicy(max_pushback=1e300), "max_pushback"),
        (lambda: RetryPolicy(max_duration=float("inf")), "max_duration"),
        (lambda: Timeout(1e300), "seconds"),
        (lambda: Backoff(1, 1e300), "maximum"),
        (lambda: Backoff(1, 10, multiplier=float("inf")), "multiplier"),
        (lambda: Backoff(1, 10, multiplier=float("nan")), "multiplier"),
        (lambda: RandomDelay(0, float("inf")), "maximum"),
        (lambda: CircuitBreaker(success_window=10**9), "success_window"),
        (lambda: CircuitBreaker(failure_window=10**9), "failure_window"),
        (lambda: CircuitBreaker(failure_threshold=10**9), "failure_threshold"),
        (lambda: CircuitBreaker(minimum_calls=10**9, failure_period=10), "minimum_calls"),
        (lambda: RetryPolicy(handle=int), "handle"),
        (lambda: RetryPolicy(handle=(ValueError, int)), "handle"),
        (lambda: RetryPolicy(handle=()), "handle"),
        (lambda: RetryPolicy(handle=lambda: True), "handle"),
        (lambda: RetryPolicy(handle=lambda a, b: True), "handle"),
        (lambda: RetryPolicy(abort_on=lambda *, failure: True), "abort_on"),
        (lambda: CircuitBreaker(handle=str), "handle"),
        (lambda: Fallback(handle=lambda: False), "handle"),
        (lambda: RetryPolicy(on_retry=lambda: None), "on_retry"),
        (lambda: RetryPolicy(on_retry_scheduled=lambda a, b: None), "on_retry_scheduled"),
        (lambda: CircuitBreaker(on_state_change=lambda: None), "on_state_change"),
        (lambda: Timeout(1, on_timeout_exceeded=lambda: None), "on_timeout_exceeded"),
        (lambda: Fallback(on_fallback=lambda a, b: None), "on_fallback"),
        (lambda: RetryPolicy(pushback=lambda: 1.0), "pushback"),
        (lambda: CircuitBreaker(pushback="yes"), "pushback"),
        (lambda: RetryPolicy(reraise="no"), "reraise"),
        (lambda: RetryPolicy(reraise=1), "reraise"),
        (lambda: Fallback(lambda: "x"), "fallback function"),
        (lambda: Fallback(lambda a, b, c: "x"), "fallback function"),
        (lambda: Fallback("x"), "fallback function"),
        (lambda: Fallback(message={1: "x"}), "message"),
        (lambda: Fallback(message=[("text", "x")]), "message"),
        (lambda: RetryPolicy(max_attempts=None, jitter_factor=float("nan")), "jitter_factor"),
        (lambda: RetryPolicy(min_attempt_time=timedelta(days=400)), "min_attempt_time"),
        (lambda: CircuitBreaker(max_pushback=-1), "max_pushback"),
        (lambda: CircuitBreaker(clock=1), "clock"),
        (lambda: Executor(RetryPolicy(), Timeout(1), RetryPolicy(clock=FakeClock())), "clock"),
        # integers too large for a float, denormal windows (OverflowError before), windows shorter than 1 ms
        (lambda: Backoff(1, 10, multiplier=10**400), "Backoff multiplier"),
        (lambda: Backoff(10**400, 10**401), "Backoff initial"),
        (lambda: Timeout(10**400), "Timeout seconds"),
        (lambda: CircuitBreaker(delay=10**400), "delay"),
        (lambda: CircuitBreaker(failure_period=1e-320), "failure_period"),
        (lambda: CircuitBreaker(failure_period=1e-300), r"failure_period must be a time window of at least 0.001 s"),
        (lambda: CircuitBreaker(failure_period=timedelta(microseconds=999)), "failure_period.*1 ms"),
        (lambda: RetryBudget(window=1e-320), "window.*1 ms"),
        (lambda: RetryBudget(min_per_second=float("nan")), "min_per_second"),
        (lambda: RetryBudget.token_bucket(max_tokens=10**400, token_ratio=0.1), "max_tokens"),
        (lambda: AdaptiveThrottle(window=1e-320), "window.*1 ms"),
        (lambda: AdaptiveThrottle(k=float("inf")), "k"),
        (lambda: AdaptiveLimiter(window=1e-300), "window.*1 ms"),
        (lambda: RateLimiter(1, period=1e-320), "period.*1 ms"),
        (lambda: LatencyQuantile(10**400), "quantile"),
        (lambda: HedgePolicy(delay=10**400), "delay"),
        (lambda: RetryPolicy(jitter=-(10**400)), "jitter"),
        (lambda: RetryPolicy(max_attempts=-(10**5000)), "max_attempts"),  # too long for a repr: still named
        (lambda: RetryPolicy(reraise=10**5000), "reraise"),
        (lambda: RetryPolicy(budget=10**5000), "budget"),
        (lambda: FakeClock(10**400), "FakeClock start"),
    ],
)
def test_invalid_options_name_the_option(make: Any, option: str) -> None:
    with pytest.raises(ValueError, match=option):
        make()


def test_time_windows_of_one_ms_are_the_shortest_accepted() -> None:
    """Windows are cut into slices that divide the clock's time: from 1 ms on they count calls as documented."""
    clock = FakeClock(30 * 24 * 3600.0)  # a month of uptime: now / slice is large
    breaker = CircuitBreaker(failure_threshold=2, failure_period=0.001, clock=clock)
    executor = Executor(breaker)

    def fail() -> None:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        executor.call(fail)
    clock.advance(0.002)  # the first failure leaves the window
    with pytest.raises(ConnectionError):
        executor.call(fail)
    assert breaker.state is CircuitState.CLOSED
    with pytest.raises(ConnectionError):
        executor.call(fail)
    assert breaker.state is CircuitState.OPEN
    assert RateLimiter(1, period=timedelta(milliseconds=1)).period == 0.001
    assert RetryBudget(window=0.001).window == AdaptiveThrottle(window=0.001).window == 0.001
    assert AdaptiveLimiter(window=0.001).window == 0.001


def test_a_pushback_reader_asking_more_than_a_float_holds_waits_the_cap() -> None:
    """An integer too large for a float asks for the longest pushback (before: logged and ignored)."""
    clock = FakeClock()
    retry = RetryPolicy(max_attempts=2, pushback=lambda failure: 10**400, max_pushback=7, clock=clock)
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("down")
        return "ok"

    assert Executor(retry).call(flaky) == "ok"
    assert clock.sleeps == [7]


def test_the_same_policy_twice_in_a_chain_is_refused() -> None:
    """It would count every failure twice (a breaker), or multiply attempts (a retry)."""
    breaker, retry = CircuitBreaker(), RetryPolicy()
    for chain in ((breaker, breaker), (retry, Timeout(1), retry)):
        with pytest.raises(ValueError, match="once"):
            Executor(*chain)
    Executor(RetryPolicy(), RetryPolicy())  # two retries are two policies, if you want that


def test_callables_whose_signature_cannot_be_read_are_accepted() -> None:
    RetryPolicy(handle=callable, on_retry=print, pushback=float)


def test_durations_accept_timedelta() -> None:
    assert Timeout(timedelta(milliseconds=250)).seconds == 0.25
    assert RetryPolicy(delay=timedelta(seconds=2)).delay == 2.0
    assert Backoff(timedelta(seconds=1), timedelta(minutes=1)).maximum == 60.0
    assert CircuitBreaker(delay=timedelta(seconds=30)).config.delay == 30.0


def test_policies_are_read_only() -> None:
    retry = RetryPolicy()
    with pytest.raises(AttributeError, match="read-only"):
        retry.max_attempts = 10
    with pytest.raises(AttributeError):
        Backoff(1, 2).initial = 3


def test_defaults_are_documented_values() -> None:
    retry = RetryPolicy()
    assert (retry.max_attempts, retry.delay, retry.jitter_factor, retry.reraise) == (3, Backoff(0.1, 5.0), 0.2, False)
    assert RetryPolicy(jitter=0.5).jitter_factor == 0
    breaker = CircuitBreaker()
    assert (breaker.config.failure_threshold, breaker.config.failure_window, breaker.config.delay) == (5, 5, 60.0)
    assert (breaker.config.success_threshold, breaker.config.minimum_calls) == (1, 1)
    assert CircuitBreaker(failure_rate=0.5, failure_period=60).config.minimum_calls == 10
    assert CircuitBreaker(failure_rate=0.5, failure_window=20).config.minimum_calls == 20


def test_repr_shows_the_configuration() -> None:
    assert "max_attempts=5" in repr(RetryPolicy(max_attempts=5))
    shown = repr(RetryPolicy(delay=Backoff(1, 10)))
    assert "Backoff(initial=1.0, maximum=10.0, multiplier=2.0, full_jitter=False, jitter_factor=0.0)" in shown
