"""RetryBudget: retries across calls bounded by a ratio of recent calls plus a floor, or by gRPC's token bucket."""

# mypy: disable-error-code="arg-type,misc"
# (the cases pass values of the wrong type on purpose)

from __future__ import annotations

import asyncio
import threading

import pytest

from interceptors import Executor, RetriesExceededError, RetryBudget, RetryPolicy
from interceptors.events import BudgetExceeded
from interceptors.testing import FakeClock

from ..support.calls import Boom, Calls


def test_retries_stay_under_the_ratio_of_recent_calls(clock: FakeClock) -> None:
    budget = RetryBudget(ratio=0.1, min_per_second=0, window=10, clock=clock)
    for _ in range(100):
        budget.record_call()
    allowed = [budget.try_retry(1, Boom()) for _ in range(15)]
    assert allowed == [True] * 10 + [False] * 5  # 10 % of 100 calls
    clock.advance(10)  # the window has moved on: no recent calls, no retries
    assert not budget.try_retry(1, Boom())


def test_the_floor_lets_a_quiet_client_retry(clock: FakeClock) -> None:
    budget = RetryBudget(ratio=0.1, min_per_second=2, window=5, clock=clock)
    assert [budget.try_retry(1, Boom()) for _ in range(11)] == [True] * 10 + [False]  # 2 a second over 5 s
    clock.advance(4.9)
    assert not budget.try_retry(1, Boom())
    clock.advance(0.1)  # the retries have left the window
    assert budget.try_retry(1, Boom())


def test_the_token_bucket_is_grpc_retry_throttling() -> None:
    """A6: failures take a token, successes put token_ratio back; retries only above half the bucket."""
    budget = RetryBudget.token_bucket(max_tokens=10, token_ratio=0.5)
    assert budget.tokens == 10 and budget.try_retry(1, Boom())
    for _ in range(5):
        budget.record_outcome(failed=True)
    assert budget.tokens == 5 and not budget.try_retry(1, Boom())  # not more than half
    budget.record_outcome(failed=False)
    assert budget.tokens == 5.5 and budget.try_retry(1, Boom())
    for _ in range(20):
        budget.record_outcome(failed=False)
    assert budget.tokens == 10  # never above the bucket


def test_a_refused_retry_ends_the_call_at_once_with_the_last_failure(clock: FakeClock) -> None:
    events: list[BudgetExceeded] = []
    budget = RetryBudget(ratio=0.5, min_per_second=0, on_exceeded=events.append, clock=clock)
    retry = RetryPolicy(max_attempts=5, delay=1, jitter_factor=0, budget=budget, clock=clock)
    calls = Calls(error=lambda: Boom(f"failure {calls.count}"))
    with pytest.raises(RetriesExceededError) as raised:
        Executor(retry).call(calls)
    # one call: 0.5 retries allowed, so the first retry (0 < 0.5) runs and the second (1 < 0.5) is refused
    assert calls.count == 2 and clock.sleeps == [1]
    assert str(raised.value.last_failure) == "failure 2" and raised.value.attempts == 2
    assert [(e.attempts, str(e.failure)) for e in events] == [(2, "failure 2")]


def test_the_token_bucket_counts_every_attempt(clock: FakeClock) -> None:
    budget = RetryBudget.token_bucket(max_tokens=4, token_ratio=1)
    retry = RetryPolicy(max_attempts=10, delay=0, budget=budget, clock=clock)
    with pytest.raises(RetriesExceededError):
        Executor(retry).call(Calls())  # 4 tokens: failures take them to 3 (retry), 2 (no: not above half)
    assert budget.tokens == 2
    assert Executor(retry).call(Calls(failures=0)) == "ok"
    assert budget.tokens == 3


def test_a_budget_is_shared_by_threads_with_exact_accounting() -> None:
    budget = RetryBudget(ratio=0.25, min_per_second=0, window=3600)
    retry = RetryPolicy(max_attempts=2, delay=0, budget=budget)
    outcomes: list[bool] = []
    lock = threading.Lock()
    attempts = [0]

    def flaky_call() -> None:
        calls = Calls(failures=1)

        def counted() -> str:
            with lock:
                attempts[0] += 1
            result: str = calls()
            return result

        try:
            Executor(retry).call(counted)
            ok = True
        except RetriesExceededError:
            ok = False
        with lock:
            outcomes.append(ok)

    def ten_calls() -> None:
        for _ in range(10):
            flaky_call()

    threads = [threading.Thread(target=ten_calls) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    retried = sum(outcomes)
    assert len(outcomes) == 320 and attempts[0] == 320 + retried
    assert 0 < retried <= 80  # a quarter of the calls at most


async def test_a_budget_is_shared_by_tasks() -> None:
    budget = RetryBudget(ratio=0.25, min_per_second=0, window=3600)
    retry = RetryPolicy(max_attempts=2, delay=0, budget=budget)

    async def flaky_call() -> bool:
        calls = Calls(failures=1)
        try:
            await Executor(retry).acall(calls.async_call)
        except RetriesExceededError:
            return False
        return True

    outcomes = await asyncio.gather(*(flaky_call() for _ in range(320)))
    assert 0 < sum(outcomes) <= 80


@pytest.mark.parametrize(
    ("make", "option"),
    [
        (lambda: RetryBudget(ratio=0), "ratio"),
        (lambda: RetryBudget(ratio=1.5), "ratio"),
        (lambda: RetryBudget(min_per_second=-1), "min_per_second"),
        (lambda: RetryBudget(min_per_second="1"), "min_per_second"),
        (lambda: RetryBudget(window=0), "window"),
        (lambda: RetryBudget(on_exceeded=lambda: None), "on_exceeded"),
        (lambda: RetryBudget.token_bucket(max_tokens=0, token_ratio=0.1), "max_tokens"),
        (lambda: RetryBudget.token_bucket(max_tokens=1001, token_ratio=0.1), "max_tokens"),
        (lambda: RetryBudget.token_bucket(max_tokens=10, token_ratio=0), "token_ratio"),
        (lambda: RetryPolicy(budget=0.1), "budget"),
    ],
)
def test_bad_budget_options_are_named(make: object, option: str) -> None:
    with pytest.raises(ValueError, match=option):
        make()  # type: ignore[operator]


def test_a_budget_is_read_only() -> None:
    with pytest.raises(AttributeError, match="read-only"):
        RetryBudget().ratio = 0.5
