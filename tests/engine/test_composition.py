"""Ordering and composition, with cases ported from failsafe-go's policy_composition_test.go."""

from __future__ import annotations

import pytest

from interceptors import (
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    Executor,
    Fallback,
    RetriesExceededError,
    RetryPolicy,
    Timeout,
    TimeoutExceededError,
)
from interceptors.engine import Execution
from interceptors.testing import FakeClock

from ..support.calls import Boom, Calls


def test_retry_around_breaker_success_after_failures(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=3, delay=600, clock=clock)
    calls = Calls(failures=2, result=True)
    assert Executor(RetryPolicy(max_attempts=None, clock=clock), breaker).call(calls) is True
    assert calls.count == 3
    assert (breaker.metrics.successes, breaker.metrics.failures) == (1, 2)


def test_retry_around_an_opening_breaker(clock: FakeClock) -> None:
    """The breaker stays open (60 s) far longer than the retry would wait (0.1 s): the retry stops at once."""
    breaker = CircuitBreaker(failure_threshold=1, clock=clock)
    calls = Calls()
    with pytest.raises(CircuitOpenError):
        Executor(RetryPolicy(clock=clock), breaker).call(calls)
    assert calls.count == 1 and len(clock.sleeps) == 1  # waited once after the real failure, not for the breaker


def test_breaker_around_retry_sees_one_failure(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=3, clock=clock)
    calls = Calls()
    with pytest.raises(RetriesExceededError):
        Executor(breaker, RetryPolicy(clock=clock)).call(calls)
    assert calls.count == 3
    assert (breaker.metrics.successes, breaker.metrics.failures) == (0, 1)
    assert breaker.state is CircuitState.CLOSED


def test_breaker_around_timeout_counts_the_timeout(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, clock=clock)

    def slow() -> None:
        clock.sleep(0.1)

    with pytest.raises(TimeoutExceededError):
        Executor(breaker, Timeout(0.05, clock=clock)).call(slow)
    assert breaker.state is CircuitState.OPEN


def test_fallback_around_retry_answers_after_retries(clock: FakeClock) -> None:
    calls = Calls()
    result = Executor(Fallback(value=True, handle=RetriesExceededError), RetryPolicy(clock=clock)).call(calls)
    assert result is True and calls.count == 3


def test_retry_around_fallback_never_retries(clock: FakeClock) -> None:
    calls = Calls()
    assert Executor(RetryPolicy(clock=clock), Fallback(value="test")).call(calls) == "test"
    assert calls.count == 1


def test_fallback_around_open_breaker(clock: FakeClock) -> None:
    breaker = CircuitBreaker(clock=clock)
    breaker.open()
    seen: list[BaseException] = []

    def answer(request: object, failure: BaseException) -> bool:
        seen.append(failure)
        return False

    calls = Calls(failures=0, result=True)
    assert Executor(Fallback(answer), breaker).call(calls) is False
    assert calls.count == 0 and isinstance(seen[0], CircuitOpenError)


def test_fallback_outside_a_timeout_answers(clock: FakeClock) -> None:
    def slow() -> str:
        clock.sleep(2)
        return "late"

    assert Executor(Fallback(value="fallback"), Timeout(1, clock=clock)).call(slow) == "fallback"


def test_timeout_outside_a_fallback_does_not(clock: FakeClock) -> None:
    def slow() -> str:
        clock.sleep(2)
        return "late"

    with pytest.raises(TimeoutExceededError):
        Executor(Timeout(1, clock=clock), Fallback(value="fallback")).call(slow)


def test_timeout_outside_retry_bounds_the_total(clock: FakeClock) -> None:
    calls = Calls()

    def one_second_failure(execution: Execution) -> None:
        assert execution.deadline == 2.5
        clock.sleep(1)
        calls()

    with pytest.raises(TimeoutExceededError):
        Executor(Timeout(2.5, clock=clock), RetryPolicy(max_attempts=10, delay=0, clock=clock)).call_with_execution(
            one_second_failure
        )
    assert calls.count == 3 and clock.now() == 3


def test_timeout_inside_retry_bounds_each_attempt(clock: FakeClock) -> None:
    deadlines: list[float | None] = []

    def slow_success(execution: Execution) -> str:
        deadlines.append(execution.deadline)
        clock.sleep(1)
        return "late"

    with pytest.raises(RetriesExceededError) as raised:
        Executor(RetryPolicy(delay=0, clock=clock), Timeout(0.5, clock=clock)).call_with_execution(slow_success)
    assert deadlines == [0.5, 1.5, 2.5]
    assert isinstance(raised.value.last_failure, TimeoutExceededError)


def test_attempt_deadline_is_the_tighter_of_attempt_timeout_and_total(clock: FakeClock) -> None:
    deadlines: list[float | None] = []

    def slow_failure(execution: Execution) -> None:
        deadlines.append(execution.deadline)
        clock.sleep(1.2)
        raise Boom

    executor = Executor(
        Timeout(2.5, clock=clock), RetryPolicy(max_attempts=None, delay=0, clock=clock), Timeout(1, clock=clock)
    )
    with pytest.raises(TimeoutExceededError) as raised:
        executor.call_with_execution(slow_failure)
    assert deadlines == [1.0, 2.2, 2.5]  # per attempt 1 s, never past the 2.5 s total
    assert raised.value.timeout == 2.5
    assert clock.now() == pytest.approx(3.6)


def test_composed_fallback_retry_breaker_timeout(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=5, clock=clock)
    executor = Executor(Fallback(value="test"), RetryPolicy(clock=clock), breaker, Timeout(1, clock=clock))
    calls = Calls()
    assert executor.call(calls) == "test"
    assert calls.count == 3
    assert (breaker.metrics.successes, breaker.metrics.failures) == (0, 3)
    assert breaker.state is CircuitState.CLOSED
    assert executor.call(lambda: "real") == "real"


def test_policies_must_share_a_clock() -> None:
    with pytest.raises(ValueError, match="clock"):
        Executor(RetryPolicy(clock=FakeClock()), Timeout(1, clock=FakeClock()))
    with pytest.raises(ValueError, match="Policy"):
        Executor(RetryPolicy(), "timeout")  # type: ignore[arg-type]


def test_empty_executor_just_calls() -> None:
    def add(a: int, b: int = 0) -> int:
        return a + b

    assert Executor().call(add, 1, b=2) == 3


async def test_async_composition_uses_the_same_objects(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=5, clock=clock)
    policies = (Fallback(value="test"), RetryPolicy(clock=clock), breaker, Timeout(1, clock=clock))
    calls = Calls()
    assert await Executor(*policies).acall(calls.async_call) == "test"
    assert Executor(*policies).call(calls) == "test"
    assert calls.count == 5 and breaker.state is CircuitState.OPEN  # the sixth attempt met the open breaker
