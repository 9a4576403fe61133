from __future__ import annotations

import contextlib
import random
from collections import Counter
from typing import Any

import pytest

from interceptors import (
    AdaptiveThrottle,
    Backoff,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    Executor,
    RandomDelay,
    RetriesExceededError,
    RetryPolicy,
    TimeoutExceededError,
)
from interceptors.events import RetriesExceeded, RetryAborted, RetryScheduled, RetryStarted
from interceptors.testing import FakeClock

from ..support.calls import Boom, CallerMistake, Calls


def test_default_retry_makes_three_attempts_and_chains_the_last_failure(clock: FakeClock) -> None:
    calls = Calls(error=lambda: Boom(f"failure {calls.count}"))
    with pytest.raises(RetriesExceededError) as raised:
        Executor(RetryPolicy(clock=clock)).call(calls)
    assert calls.count == 3
    assert raised.value.attempts == 3
    assert raised.value.__cause__ is raised.value.last_failure
    assert str(raised.value.last_failure) == "failure 3"


def test_reraise_gives_the_last_failure_itself(clock: FakeClock) -> None:
    calls = Calls()
    with pytest.raises(Boom):
        Executor(RetryPolicy(max_attempts=2, reraise=True, clock=clock)).call(calls)
    assert calls.count == 2


def test_success_after_failures_returns_the_result(clock: FakeClock) -> None:
    calls = Calls(failures=2, result=42)
    assert Executor(RetryPolicy(clock=clock)).call(calls) == 42
    assert calls.count == 3


def test_unlimited_attempts_five_failures_then_success_makes_six_attempts(clock: FakeClock) -> None:
    calls = Calls(failures=5)
    assert Executor(RetryPolicy(max_attempts=None, clock=clock)).call(calls) == "ok"
    assert calls.count == 6


def test_backoff_initial_1_maximum_10(clock: FakeClock) -> None:
    calls = Calls()
    with pytest.raises(RetriesExceededError):
        Executor(RetryPolicy(max_attempts=7, delay=Backoff(1, 10), jitter_factor=0, clock=clock)).call(calls)
    assert clock.sleeps == [1, 2, 4, 8, 10, 10]


def test_backoff_with_multiplier_and_huge_attempt_counts() -> None:
    backoff = Backoff(0.5, 30, multiplier=3)
    assert [backoff.delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.5, 4.5, 13.5, 30]
    assert backoff.delay(100_000) == 30


def test_full_jitter_draws_each_delay_from_zero_to_the_backoff(clock: FakeClock) -> None:
    """gRPC's formula (A6): retry n waits random(0, min(initial * multiplier**(n-1), maximum)); no jitter on top."""
    backoff = Backoff(0.1, 0.3, multiplier=2, full_jitter=True)
    for _ in range(50):
        with pytest.raises(RetriesExceededError):
            Executor(RetryPolicy(max_attempts=4, delay=backoff, jitter_factor=0.5, clock=clock)).call(Calls())
    first, second, third = (clock.sleeps[n::3] for n in range(3))
    assert max(first) <= 0.1 and max(second) <= 0.2 and max(third) <= 0.3
    assert min(first) < 0.05 and max(third) > 0.2  # spread over the whole range, not around the backoff


def test_a6_jitter_spreads_each_delay_by_a_share_after_the_cap(clock: FakeClock) -> None:
    """gRFC A6 as amended (2024), as gRPC's C core, Go and Java retry: retry n waits
    min(initial * multiplier**(n-1), maximum) * random(0.8, 1.2), so a delay at the cap may pass it by 20 %; the
    policy adds no jitter of its own."""
    backoff = Backoff(0.1, 0.3, multiplier=2, jitter_factor=0.2)
    for _ in range(100):
        with pytest.raises(RetriesExceededError):
            Executor(RetryPolicy(max_attempts=5, delay=backoff, jitter_factor=0.5, clock=clock)).call(Calls())
    by_retry = [clock.sleeps[n::4] for n in range(4)]
    for delays, nominal in zip(by_retry, [0.1, 0.2, 0.3, 0.3], strict=True):
        assert 0.8 * nominal <= min(delays) and max(delays) <= 1.2 * nominal
    assert min(by_retry[0]) < 0.09 and max(by_retry[0]) > 0.11  # spread over the whole share
    assert max(by_retry[3]) > 0.3  # past the cap: the jitter comes after it
    assert backoff.delay(4) == 0.3  # the schedule itself, before jitter


def test_jitter_leaves_the_random_modules_state_alone(clock: FakeClock) -> None:
    """The library draws its own random numbers: a user's seeded code, or a test framework's, sees the ``random``
    module's state move only by what it draws itself (Hypothesis warned when a retry in another thread drew)."""
    state = random.getstate()
    for delay in (Backoff(0.1, 1, full_jitter=True), Backoff(0.1, 1, jitter_factor=0.2), Backoff(0.1, 1)):
        with pytest.raises(RetriesExceededError):
            Executor(RetryPolicy(max_attempts=3, delay=delay, clock=clock)).call(Calls())
    throttle = AdaptiveThrottle(min_requests=1, clock=clock)
    for _ in range(20):
        with contextlib.suppress(Exception):
            Executor(throttle).call(Calls())
    assert len(clock.sleeps) == 6 and random.getstate() == state


def test_a_backoff_jitters_one_way() -> None:
    with pytest.raises(ValueError, match="full_jitter or jitter_factor"):
        Backoff(0.1, 1, full_jitter=True, jitter_factor=0.2)
    for bad in (-0.1, 1.5, float("nan"), "0.2", True):
        with pytest.raises(ValueError, match="Backoff jitter_factor"):
            Backoff(0.1, 1, jitter_factor=bad)  # type: ignore[arg-type]


def test_a_backoff_may_shrink() -> None:
    assert [Backoff(1, 1, multiplier=0.5).delay(n) for n in (1, 2, 3)] == [1, 0.5, 0.25]


def test_fixed_delay(clock: FakeClock) -> None:
    with pytest.raises(RetriesExceededError):
        Executor(RetryPolicy(max_attempts=4, delay=0.25, jitter_factor=0, clock=clock)).call(Calls())
    assert clock.sleeps == [0.25, 0.25, 0.25]


def test_random_delay_stays_in_range(clock: FakeClock) -> None:
    with pytest.raises(RetriesExceededError):
        Executor(RetryPolicy(max_attempts=200, delay=RandomDelay(0.1, 0.3), jitter_factor=0, clock=clock)).call(Calls())
    assert all(0.1 <= d <= 0.3 for d in clock.sleeps)
    assert len(set(clock.sleeps)) > 100


@pytest.mark.parametrize("jitter", [{}, {"jitter_factor": 0.5}, {"jitter": 3.0}], ids=["default", "factor", "seconds"])
def test_capped_delays_stay_spread_out(clock: FakeClock, jitter: dict[str, Any]) -> None:
    """Delays at the cap are drawn below it, not clamped to it: capped retries never fire together."""
    policy = RetryPolicy(max_attempts=10_004, delay=Backoff(1, 8), clock=clock, **jitter)
    with pytest.raises(RetriesExceededError):
        Executor(policy).call(Calls())
    capped = clock.sleeps[3:]  # 1, 2, 4, then 8 (the cap) 10 000 times
    assert len(capped) == 10_000
    assert all(0 <= d <= 8 for d in clock.sleeps)
    assert max(Counter(capped).values()) <= 3
    assert min(capped) < 7.5 and max(capped) > 7.9


def test_the_default_schedule_is_exponential_backoff_with_jitter(clock: FakeClock) -> None:
    """min(0.1 * 2**(n-1), 5) seconds, drawn from [0.8, 1.2] times that, never past 5."""
    with pytest.raises(RetriesExceededError):
        Executor(RetryPolicy(max_attempts=12, clock=clock)).call(Calls())
    for n, delay in enumerate(clock.sleeps, start=1):
        nominal = min(0.1 * 2 ** (n - 1), 5.0)
        assert 0.8 * nominal <= delay <= min(1.2 * nominal, 5.0)
    assert len(set(clock.sleeps)) == 11


def test_fixed_delay_jitter_factor_spreads_around_the_delay(clock: FakeClock) -> None:
    with pytest.raises(RetriesExceededError):
        Executor(RetryPolicy(max_attempts=300, delay=1.0, jitter_factor=0.2, clock=clock)).call(Calls())
    assert all(0.8 <= d <= 1.2 for d in clock.sleeps)
    assert min(clock.sleeps) < 0.95 and max(clock.sleeps) > 1.05


def test_handle_selects_which_failures_are_retried(clock: FakeClock) -> None:
    retry = RetryPolicy(handle=Boom, clock=clock)
    mistakes = Calls(error=CallerMistake)
    with pytest.raises(CallerMistake):
        Executor(retry).call(mistakes)
    assert mistakes.count == 1
    by_predicate = RetryPolicy(handle=lambda e: "transient" in str(e), clock=clock)
    transient = Calls(failures=1, error=lambda: Boom("transient"))
    assert Executor(by_predicate).call(transient) == "ok"
    assert transient.count == 2


def test_abort_on_stops_at_once_and_reports(clock: FakeClock) -> None:
    aborted: list[RetryAborted] = []
    retry = RetryPolicy(max_attempts=5, abort_on=(CallerMistake,), on_abort=aborted.append, clock=clock)
    outcomes = iter([Boom(), CallerMistake(), Boom()])

    def fn() -> None:
        raise next(outcomes)

    with pytest.raises(CallerMistake):
        Executor(retry).call(fn)
    assert [(e.attempts, type(e.failure)) for e in aborted] == [(2, CallerMistake)]


def test_events_in_order(clock: FakeClock) -> None:
    events: list[object] = []
    retry = RetryPolicy(
        delay=Backoff(1, 10),
        jitter_factor=0,
        on_retry_scheduled=events.append,
        on_retry=events.append,
        on_retries_exceeded=events.append,
        clock=clock,
    )
    with pytest.raises(RetriesExceededError):
        Executor(retry).call(Calls())
    assert [type(e) for e in events] == [
        RetryScheduled,
        RetryStarted,
        RetryScheduled,
        RetryStarted,
        RetriesExceeded,
    ]
    scheduled = [e for e in events if isinstance(e, RetryScheduled)]
    assert [(e.attempt, e.delay) for e in scheduled] == [(1, 1.0), (2, 2.0)]
    assert [e.attempt for e in events if isinstance(e, RetryStarted)] == [2, 3]


def test_a_failing_listener_does_not_break_the_call(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    def broken(_: object) -> None:
        raise RuntimeError("listener bug")

    assert Executor(RetryPolicy(on_retry_scheduled=broken, clock=clock)).call(Calls(failures=1)) == "ok"
    assert "listener" in caplog.text


def test_pushback_drives_the_delay_and_is_capped(clock: FakeClock) -> None:
    asked = iter([2.5, 500.0, None])
    retry = RetryPolicy(
        max_attempts=4, delay=0.1, pushback=lambda _: next(asked), max_pushback=30, jitter_factor=0, clock=clock
    )
    assert Executor(retry).call(Calls(failures=3)) == "ok"
    assert clock.sleeps == [2.5, 30, 0.1]


def test_negative_pushback_means_do_not_retry(clock: FakeClock) -> None:
    aborted: list[RetryAborted] = []
    retry = RetryPolicy(pushback=lambda _: -1, on_abort=aborted.append, clock=clock)
    calls = Calls()
    with pytest.raises(Boom):
        Executor(retry).call(calls)
    assert calls.count == 1 and len(aborted) == 1


def test_max_duration_stops_retrying(clock: FakeClock) -> None:
    calls = Calls()

    def slow_failure() -> None:
        clock.sleep(1)
        calls()

    with pytest.raises(RetriesExceededError) as raised:
        Executor(RetryPolicy(max_attempts=None, max_duration=3.5, delay=0.5, jitter_factor=0, clock=clock)).call(
            slow_failure
        )
    # attempts end at 1, 2.5, 4 (the retry after 2.5 would start at 3.0 < 3.5; after 4 it would pass 3.5)
    assert calls.count == 3 and raised.value.attempts == 3


def test_a_retry_that_would_pass_the_deadline_fails_now(clock: FakeClock) -> None:
    calls = Calls()
    retry = RetryPolicy(max_attempts=10, delay=Backoff(1, 10), jitter_factor=0, clock=clock)
    with pytest.raises(TimeoutExceededError) as raised:
        Executor(retry).call_with_execution(lambda _: calls(), deadline=clock.now() + 5)
    # delays 1 and 2 fit (t=1, t=3); the next (4) would end at 7 > 5: fail at t=3 without sleeping
    assert calls.count == 3
    assert clock.now() == 3
    assert isinstance(raised.value.__cause__, Boom)


def test_a_pushback_reaching_past_the_deadline_ends_with_the_servers_failure(clock: FakeClock) -> None:
    """The server asked callers to stay away longer than the call has: no retry, and the caller gets that answer
    (retries exceeded, chaining it), not a DEADLINE_EXCEEDED of a deadline that has not passed."""
    exceeded: list[RetriesExceeded] = []
    calls = Calls()
    retry = RetryPolicy(max_attempts=5, pushback=lambda _: 30.0, on_retries_exceeded=exceeded.append, clock=clock)
    with pytest.raises(RetriesExceededError) as raised:
        Executor(retry).call_with_execution(lambda _: calls(), deadline=clock.now() + 5)
    assert calls.count == 1 and clock.now() == 0  # at once
    assert isinstance(raised.value.last_failure, Boom) and raised.value.__cause__ is raised.value.last_failure
    assert len(exceeded) == 1
    with pytest.raises(Boom):  # reraise=True: the failure itself
        Executor(RetryPolicy(max_attempts=5, pushback=lambda _: 30.0, reraise=True, clock=clock)).call_with_execution(
            lambda _: calls(), deadline=clock.now() + 5
        )


def test_execution_data_per_attempt(clock: FakeClock) -> None:
    seen: list[tuple[int, float, object]] = []

    def fn(execution):  # type: ignore[no-untyped-def]
        seen.append((execution.attempts, execution.attempt_start_time, execution.last_failure))
        clock.sleep(0.5)
        if execution.attempts < 3:
            raise Boom(execution.attempts)
        return execution.elapsed

    elapsed = Executor(RetryPolicy(delay=1, jitter_factor=0, clock=clock)).call_with_execution(fn)
    assert [(a, t) for a, t, _ in seen] == [(1, 0.0), (2, 1.5), (3, 3.0)]
    assert seen[0][2] is None and isinstance(seen[2][2], Boom)
    assert elapsed == 3.5


async def test_async_retry_same_policy_object(clock: FakeClock) -> None:
    retry = RetryPolicy(delay=Backoff(1, 10), jitter_factor=0, clock=clock)
    calls = Calls(failures=2)
    assert await Executor(retry).acall(calls.async_call) == "ok"
    assert calls.count == 3 and clock.sleeps == [1, 2]
    sync_calls = Calls(failures=2)
    assert Executor(retry).call(sync_calls) == "ok"


async def test_async_retries_exceeded(clock: FakeClock) -> None:
    calls = Calls()
    with pytest.raises(RetriesExceededError):
        await Executor(RetryPolicy(clock=clock)).acall(calls.async_call)
    assert calls.count == 3


def test_min_attempt_time_keeps_retries_out_of_the_last_moments(clock: FakeClock) -> None:
    calls = Calls()
    retry = RetryPolicy(max_attempts=10, delay=1.0, min_attempt_time=0.5, jitter_factor=0, clock=clock)
    with pytest.raises(TimeoutExceededError):
        Executor(retry).call_with_execution(lambda _: calls(), deadline=clock.now() + 2.4)
    # retries at t=1 (1.4 left) fit; one at t=2 would leave 0.4 < 0.5: fail now
    assert calls.count == 2 and clock.now() == 1


def test_a_retry_waits_for_an_open_breaker_only_within_its_own_delay(clock: FakeClock) -> None:
    """Issue 8, defect 2, on the fake clock: the breaker's remaining open time is waited for when it is at most the
    retry's own delay for that attempt (or a server's pushback the retry honours); else the retry stops now."""
    breaker = CircuitBreaker(failure_threshold=1, delay=0.6, clock=clock)
    aborted: list[RetryAborted] = []
    retry = RetryPolicy(max_attempts=3, delay=Backoff(1, 10), jitter_factor=0, on_abort=aborted.append, clock=clock)
    assert Executor(retry, breaker).call(Calls(failures=1)) == "ok"
    assert clock.sleeps == [1]  # the failure's own backoff covered the breaker's 0.6 s
    breaker.open()
    assert Executor(retry, breaker).call(Calls(failures=0)) == "ok"
    assert clock.sleeps == pytest.approx([1, 0.6])  # rejected, waited the 0.6 s left (< 1 s): the probe went through

    long_open = CircuitBreaker(failure_threshold=1, delay=30, clock=clock)
    long_open.open()
    with pytest.raises(CircuitOpenError):
        Executor(retry, long_open).call(Calls(failures=0))
    assert len(clock.sleeps) == 2 and [a.attempts for a in aborted] == [1]

    pushed = CircuitBreaker(failure_threshold=1, pushback=lambda _: 30, delay=1, clock=clock)
    assert Executor(retry, pushed).call(Calls(failures=1)) == "ok"  # honours the server's 30 s as its own delay
    assert clock.sleeps[2:] == pytest.approx([1, 29])
    held = CircuitBreaker(clock=clock)
    held.force_open()
    with pytest.raises(CircuitOpenError):
        Executor(retry, held).call(Calls(failures=0))
    assert len(aborted) == 2


def test_a_half_open_breaker_with_its_trials_in_flight_gets_the_usual_delay(clock: FakeClock) -> None:
    """Its trial decides within an attempt: the retry waits its own delay (here the trial succeeds meanwhile)."""
    breaker = CircuitBreaker(failure_threshold=1, delay=60, clock=clock)
    breaker.half_open()
    trial = breaker.acquire_permit()  # the one trial slot is taken
    retry = RetryPolicy(
        max_attempts=3, delay=0.25, jitter_factor=0, on_retry_scheduled=lambda _: trial.record(), clock=clock
    )
    calls = Calls(failures=0)
    assert Executor(retry, breaker).call(calls) == "ok"
    assert calls.count == 1 and clock.sleeps == [0.25] and breaker.state is CircuitState.CLOSED
