"""Result predicates (``handle_result=``, a hedge's ``non_fatal_result=``) in each policy, on the fake clock: an
answer that means failure is retried, counted, hedged over or replaced, and the caller gets the last answer when
nothing else comes."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from interceptors import (
    CircuitBreaker,
    CircuitState,
    Executor,
    Fallback,
    HedgePolicy,
    RetryBudget,
    RetryPolicy,
)
from interceptors.engine._results import ResultFailure
from interceptors.events import FallbackExecuted, HedgeStarted, RetriesExceeded, RetryScheduled
from interceptors.testing import FakeClock


class Answers:
    """Answers ``answers`` in turn (the last one again once they run out), counting calls."""

    def __init__(self, *answers: Any) -> None:
        self.answers, self.count = answers, 0

    def __call__(self, *_: Any) -> Any:
        self.count += 1
        return self.answers[min(self.count, len(self.answers)) - 1]

    async def async_call(self, *_: Any) -> Any:
        return self()


def pending(answer: Any) -> bool:
    return bool(answer == "pending")


def run(executor: Executor, answers: Answers, flavour: str) -> Any:
    if flavour == "sync":
        return executor.call(answers)
    return asyncio.run(executor.acall(answers.async_call))


FLAVOURS = pytest.mark.parametrize("flavour", ["sync", "aio"])


@FLAVOURS
def test_retry_retries_an_answer_judged_a_failure_until_a_good_one(clock: FakeClock, flavour: str) -> None:
    scheduled: list[RetryScheduled] = []
    retry = RetryPolicy(
        handle_result=pending, delay=1.0, jitter_factor=0, clock=clock, on_retry_scheduled=scheduled.append
    )
    answers = Answers("pending", "pending", "done")
    assert run(Executor(retry), answers, flavour) == "done"
    assert answers.count == 3
    assert clock.sleeps == [1.0, 1.0]
    assert [type(e.failure) for e in scheduled] == [ResultFailure, ResultFailure]
    assert getattr(scheduled[0].failure, "result", None) == "pending"


@FLAVOURS
def test_when_attempts_run_out_the_caller_gets_the_last_answer(clock: FakeClock, flavour: str) -> None:
    exceeded: list[RetriesExceeded] = []
    retry = RetryPolicy(max_attempts=3, handle_result=pending, clock=clock, on_retries_exceeded=exceeded.append)
    answers = Answers("pending")
    assert run(Executor(retry), answers, flavour) == "pending"
    assert answers.count == 3
    assert len(exceeded) == 1 and isinstance(exceeded[0].failure, ResultFailure)


def test_no_time_left_for_a_retry_gives_the_answer_not_a_timeout(clock: FakeClock) -> None:
    retry = RetryPolicy(handle_result=pending, delay=5.0, jitter_factor=0, clock=clock)
    answers = Answers("pending")
    assert Executor(retry).call_with_execution(answers, deadline=clock.now() + 1.0) == "pending"
    assert answers.count == 1


def test_a_retried_answer_draws_on_the_budget_like_a_failure(clock: FakeClock) -> None:
    budget = RetryBudget(ratio=0.1, min_per_second=0, clock=clock)
    retry = RetryPolicy(max_attempts=5, handle_result=pending, budget=budget, clock=clock)
    answers = Answers("pending")
    assert Executor(retry).call(answers) == "pending"
    assert answers.count == 2  # retries < 0.1 * 1 call: one retry, then the budget refuses and the answer comes back


def test_a_predicate_that_raises_leaves_the_answer_judged_by_its_status_logged_once(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(answer: Any) -> bool:
        raise KeyError("status")

    executor = Executor(RetryPolicy(handle_result=broken, clock=clock))
    with caplog.at_level(logging.ERROR, "interceptors"):
        assert [executor.call(Answers("pending")) for _ in range(3)] == ["pending"] * 3
    logged = [r for r in caplog.records if "result predicate raised" in r.getMessage()]
    assert len(logged) == 1 and "RetryPolicy" in logged[0].getMessage()


@FLAVOURS
def test_the_breaker_counts_answers_judged_failures_and_opens(clock: FakeClock, flavour: str) -> None:
    breaker = CircuitBreaker(failure_threshold=3, handle_result=pending, clock=clock)
    executor = Executor(breaker)
    for _ in range(2):
        assert run(executor, Answers("pending"), flavour) == "pending"
    assert breaker.state is CircuitState.CLOSED
    assert run(executor, Answers("done"), flavour) == "done"  # consecutive failures: a good answer resets them
    for _ in range(3):
        run(executor, Answers("pending"), flavour)
    assert breaker.state is CircuitState.OPEN


def test_a_half_open_trial_answer_judged_a_failure_opens_the_breaker_again(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, delay=10, handle_result=pending, clock=clock)
    executor = Executor(breaker)
    executor.call(Answers("pending"))
    clock.advance(10)
    assert breaker.state is CircuitState.HALF_OPEN
    executor.call(Answers("pending"))
    assert breaker.state is CircuitState.OPEN
    clock.advance(10)
    executor.call(Answers("done"))
    assert breaker.state is CircuitState.CLOSED


@FLAVOURS
def test_a_fallback_answers_in_place_of_an_answer_judged_a_failure(clock: FakeClock, flavour: str) -> None:
    heard: list[FallbackExecuted] = []
    fallback = Fallback(
        lambda failure: f"cached, not {failure.result}", handle_result=pending, on_fallback=heard.append
    )
    assert run(Executor(fallback), Answers("pending"), flavour) == "cached, not pending"
    assert run(Executor(fallback), Answers("done"), flavour) == "done"
    assert len(heard) == 1 and isinstance(heard[0].failure, ResultFailure)


def test_a_fallback_that_cannot_answer_leaves_the_caller_the_answer(caplog: pytest.LogCaptureFixture) -> None:
    def broken(failure: BaseException) -> Any:
        raise RuntimeError("no cache")

    with caplog.at_level(logging.ERROR, "interceptors"):
        assert Executor(Fallback(broken, handle_result=pending)).call(Answers("pending")) == "pending"
    assert any("could not answer" in r.getMessage() for r in caplog.records)


def test_fallback_over_retry_answers_once_retries_give_the_last_answer(clock: FakeClock) -> None:
    answers = Answers("pending")
    executor = Executor(
        Fallback(value="fallback", handle_result=pending),
        RetryPolicy(max_attempts=2, handle_result=pending, clock=clock),
    )
    assert executor.call(answers) == "fallback"
    assert answers.count == 2


@FLAVOURS
def test_a_hedge_judges_an_answer_non_fatal_and_starts_the_next_at_once(flavour: str) -> None:
    started: list[HedgeStarted] = []
    hedge = HedgePolicy(delay=30.0, max_attempts=3, non_fatal_result=pending, on_hedge=started.append)
    answers = Answers("pending", "done")
    assert run(Executor(hedge), answers, flavour) == "done"  # never waited 30 s for the hedge
    assert answers.count == 2
    assert isinstance(started[0].failure, ResultFailure)


@FLAVOURS
def test_when_every_hedge_answers_badly_the_caller_gets_the_last_answer(flavour: str) -> None:
    answers = Answers("pending")
    assert (
        run(Executor(HedgePolicy(delay=30.0, max_attempts=3, non_fatal_result=pending)), answers, flavour) == "pending"
    )
    assert answers.count == 3


def test_predicates_must_be_functions_of_the_answer() -> None:
    for make in (
        lambda: RetryPolicy(handle_result="pending"),  # type: ignore[arg-type]
        lambda: CircuitBreaker(handle_result=42),  # type: ignore[arg-type]
        lambda: Fallback(handle_result=lambda a, b: True),  # type: ignore[arg-type,misc]
        lambda: HedgePolicy(delay=1, non_fatal_result=object()),  # type: ignore[arg-type]
    ):
        with pytest.raises(ValueError, match=r"(handle_result|non_fatal_result) must be a function of \(answer\)"):
            make()


def test_a_cancelled_race_lets_go_of_an_answer_it_judged_and_kept() -> None:
    """A stream's answer judged non-fatal is the race's latest; the caller is cancelled before any other answers:
    that answer's attempt is given up (the bulkhead inside gets its place back), not kept for ever."""
    from interceptors import Bulkhead
    from interceptors.engine import SYSTEM_CLOCK, Execution

    async def scenario() -> None:
        bulkhead = Bulkhead(5)
        executor = Executor(HedgePolicy(delay=10, max_attempts=2, non_fatal_result=lambda answer: True), bulkhead)
        hang = asyncio.Event()

        async def attempt(execution: Execution) -> Any:
            if execution.attempts == 1:
                return "pending"
            await hang.wait()

        execution = Execution(attempt, clock=SYSTEM_CLOCK)
        execution.settle = []  # as a stream's: each attempt holds its place until it ends
        task = asyncio.ensure_future(executor.arun_execution(execution))
        for _ in range(100):
            await asyncio.sleep(0.005)
            if bulkhead.in_flight == 2:
                break
        assert bulkhead.in_flight == 2
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)
        assert bulkhead.in_flight == 0

    asyncio.run(scenario())


def test_a_cache_outside_does_not_keep_an_answer_judged_a_failure(clock: FakeClock) -> None:
    from interceptors import CachePolicy

    answers = Answers("pending", "pending", "pending", "done")
    executor = Executor(
        CachePolicy(ttl=60, clock=clock), RetryPolicy(max_attempts=2, handle_result=pending, clock=clock)
    )
    assert executor.call_with_execution(answers, request="job") == "pending"  # retries ran out: not kept
    assert executor.call_with_execution(answers, request="job") == "done"
    assert executor.call_with_execution(answers, request="job") == "done"  # kept
    assert answers.count == 4
