"""Calls whose outcome comes after their attempt returns (streams, past commit): policies that count outcomes or
hold places settle when told how the call ended; a committed call is not retried; a resumed one is a retry."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from interceptors import (
    AdaptiveLimiter,
    Bulkhead,
    CircuitBreaker,
    CircuitState,
    Executor,
    RetriesExceededError,
    RetryPolicy,
)
from interceptors.engine import Execution
from interceptors.testing import FakeClock


def deferred(executor: Executor, fn: Callable[[Execution], Any]) -> Execution:
    """Run ``fn`` as a call whose outcome is settled later; returns its execution (``settle`` filled in)."""
    execution = Execution(fn, clock=executor.clock)
    execution.settle = []
    executor.run_execution(execution)
    return execution


def settle(execution: Execution, outcome: BaseException | None) -> None:
    assert execution.settle is not None
    for callback in execution.settle:
        callback(outcome)


def test_a_breaker_counts_the_outcome_it_is_told_once_not_the_return(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, clock=clock)
    execution = deferred(Executor(breaker), lambda _: "committed")
    assert breaker.metrics.executions == 0  # not yet: the call goes on
    settle(execution, ConnectionError("failed after commit"))
    assert breaker.state is CircuitState.OPEN and breaker.metrics.failures == 1


def test_a_breaker_counts_a_deferred_success(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, clock=clock)
    settle(deferred(Executor(breaker), lambda _: "committed"), None)
    assert (breaker.metrics.successes, breaker.metrics.failures) == (1, 0)


def test_a_cancelled_call_releases_a_half_open_breakers_trial(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, delay=1, clock=clock)
    breaker.open()
    clock.advance(1)
    execution = deferred(Executor(breaker), lambda _: "committed")  # the one trial call
    with pytest.raises(Exception, match="circuit"):
        Executor(breaker).call(lambda: "second trial")
    settle(execution, asyncio.CancelledError())
    assert breaker.state is CircuitState.HALF_OPEN and breaker.metrics.executions == 0
    Executor(breaker).call(lambda: "the trial place is free again")
    assert breaker.state is CircuitState.CLOSED


def test_a_bulkhead_holds_the_place_until_the_call_ends(clock: FakeClock) -> None:
    bulkhead = Bulkhead(1, clock=clock)
    execution = deferred(Executor(bulkhead), lambda _: "committed")
    assert bulkhead.in_flight == 1
    settle(execution, None)
    assert bulkhead.in_flight == 0


def test_an_adaptive_limiter_holds_the_place_and_times_the_whole_call(clock: FakeClock) -> None:
    limiter = AdaptiveLimiter(initial_limit=2, clock=clock)
    execution = deferred(Executor(limiter), lambda _: "committed")
    assert limiter.in_flight == 1
    settle(execution, asyncio.CancelledError())
    assert limiter.in_flight == 0


def test_outcomes_at_return_are_unchanged_without_settle(clock: FakeClock) -> None:
    breaker, bulkhead = CircuitBreaker(failure_threshold=1, clock=clock), Bulkhead(1, clock=clock)
    Executor(breaker, bulkhead).call(lambda: "done")
    assert breaker.metrics.successes == 1 and bulkhead.in_flight == 0


def test_a_committed_call_is_not_retried(clock: FakeClock) -> None:
    attempts: list[int] = []

    def attempt(execution: Execution) -> Any:
        attempts.append(execution.attempts)
        execution.committed = True  # e.g. its requests outgrew the replay buffer
        raise ConnectionError("failed after commit")

    with pytest.raises(ConnectionError):
        Executor(RetryPolicy(clock=clock)).run_execution(Execution(attempt, clock=clock))
    assert attempts == [1]


def test_a_resumed_call_is_a_retry_of_its_attempt(clock: FakeClock) -> None:
    """The failure after commit is the attempt's: its delay, then attempt 2; max_attempts and the budget count."""
    retry = RetryPolicy(max_attempts=3, delay=0.5, jitter_factor=0, clock=clock)
    seen: list[tuple[int, float]] = []

    def attempt(execution: Execution) -> Any:
        seen.append((execution.attempts, clock.now()))
        return "resumed"

    execution = Execution(attempt, clock=clock)
    execution.attempts = 1
    execution.resuming = ConnectionError("failed after commit")
    assert Executor(retry).run_execution(execution) == "resumed"
    assert seen == [(2, 0.5)] and execution.resuming is None

    execution.attempts, execution.resuming = 3, ConnectionError("again")
    with pytest.raises(RetriesExceededError):
        Executor(retry).run_execution(execution)
    assert len(seen) == 1


def test_a_resumed_call_is_a_retry_on_async_chains(clock: FakeClock) -> None:
    retry = RetryPolicy(max_attempts=2, delay=0.5, jitter_factor=0, clock=clock)

    async def attempt(execution: Execution) -> Any:
        return execution.attempts

    execution = Execution(attempt, clock=clock)
    execution.resuming = ConnectionError("failed after commit")
    assert asyncio.run(Executor(retry).arun_execution(execution)) == 2  # type: ignore[arg-type]
