from __future__ import annotations

import asyncio
import contextlib
import math
import threading

import pytest

from interceptors import CircuitBreaker, CircuitOpenError, CircuitState, Executor, RetryPolicy
from interceptors.engine import Semantics
from interceptors.events import CircuitMetrics, CircuitRejected, CircuitStateChanged, RetryAborted
from interceptors.testing import FakeClock

from ..support.calls import Boom, CallerMistake, Calls

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


def run(breaker: CircuitBreaker, *outcomes: bool) -> None:
    """Run one call per outcome through the breaker: True succeeds, False fails with Boom."""
    executor = Executor(breaker)
    for ok in outcomes:

        def fn(ok: bool = ok) -> None:
            if not ok:
                raise Boom

        with contextlib.suppress(Boom, CircuitOpenError):
            executor.call(fn)


def test_opens_after_consecutive_failures_and_rejects_without_calling(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=3, delay=10, clock=clock)
    calls = Calls()
    executor = Executor(breaker)
    for _ in range(3):
        with pytest.raises(Boom):
            executor.call(calls)
    assert breaker.state is OPEN
    with pytest.raises(CircuitOpenError) as raised:
        executor.call(calls)
    assert calls.count == 3
    assert raised.value.remaining == 10
    clock.advance(4)
    assert breaker.remaining_delay == 6


def test_a_success_breaks_the_run_of_consecutive_failures(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=3, clock=clock)
    run(breaker, False, False, True, False, False)
    assert breaker.state is CLOSED
    run(breaker, False)
    assert breaker.state is OPEN


def test_k_failures_of_the_last_n_calls(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=3, failure_window=5, clock=clock)
    run(breaker, False, True, False, True, True, True, False)  # failures fall out of the window of 5
    assert breaker.state is CLOSED
    run(breaker, True, False, False)  # the last 5: T F T F F
    assert breaker.state is OPEN


def test_failure_rate_over_a_count_window(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_rate=0.5, failure_window=4, clock=clock)
    run(breaker, False, False)  # 2 of 2 but fewer than minimum_calls (the window, 4)
    assert breaker.state is CLOSED
    run(breaker, True, True)
    assert breaker.state is OPEN


def test_state_turns_half_open_when_the_delay_passes_without_a_call(clock: FakeClock) -> None:
    changes: list[CircuitStateChanged] = []
    breaker = CircuitBreaker(failure_threshold=1, delay=5, clock=clock, on_state_change=changes.append)
    run(breaker, False)
    clock.advance(4.999)
    assert breaker.state is OPEN
    clock.advance(0.001)
    assert breaker.state is HALF_OPEN
    assert [(c.old, c.new) for c in changes] == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]


def test_half_open_admits_exactly_success_threshold_concurrent_trials() -> None:
    breaker = CircuitBreaker(success_threshold=3)
    breaker.half_open()
    release = threading.Event()
    admitted = threading.Barrier(4)
    executor = Executor(breaker)

    def trial() -> str:
        admitted.wait(timeout=5)
        release.wait(timeout=5)
        return "ok"

    threads = [threading.Thread(target=executor.call, args=(trial,)) for _ in range(3)]
    for t in threads:
        t.start()
    admitted.wait(timeout=5)  # all three trials are running
    for _ in range(5):
        with pytest.raises(CircuitOpenError):
            executor.call(lambda: "extra")
    release.set()
    for t in threads:
        t.join(timeout=5)
    assert breaker.state is CLOSED


def test_half_open_reopens_on_failure_and_closes_after_success_threshold(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, success_threshold=2, delay=1, clock=clock)
    run(breaker, False)
    clock.advance(1)
    run(breaker, True, False)
    assert breaker.state is OPEN
    clock.advance(1)
    run(breaker, True)
    assert breaker.state is HALF_OPEN
    run(breaker, True)
    assert breaker.state is CLOSED


def test_success_ratio_in_half_open(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, success_threshold=2, success_window=3, delay=1, clock=clock)
    run(breaker, False)
    clock.advance(1)
    run(breaker, True, False)
    assert breaker.state is HALF_OPEN  # 2 of 3 still possible
    run(breaker, True)
    assert breaker.state is CLOSED
    run(breaker, False)
    clock.advance(1)
    run(breaker, False, False)  # 2 failures of 3: success threshold no longer reachable
    assert breaker.state is OPEN


def test_time_based_failures_walk_through_every_state(clock: FakeClock) -> None:
    """failsafe-go TestShouldSupportTimeBasedFailureThresholding, on the fake clock."""
    changes: list[CircuitStateChanged] = []
    breaker = CircuitBreaker(
        failure_threshold=2,
        failure_period=0.2,
        minimum_calls=3,
        delay=0,
        clock=clock,
        on_state_change=changes.append,
    )
    run(breaker, False, True)
    clock.advance(0.21)  # results roll off
    run(breaker, False, True)
    clock.advance(0.05)
    assert breaker.state is CLOSED
    run(breaker, False)
    assert changes[0] == CircuitStateChanged(CLOSED, OPEN, CircuitMetrics(3, 2, 1, 0), "CircuitBreaker")
    assert breaker.state is HALF_OPEN  # delay 0: half-open at once
    run(breaker, False)
    assert breaker.state is HALF_OPEN  # re-opened, and half-open again right away
    run(breaker, True)
    assert breaker.state is CLOSED


def test_time_based_walk_with_a_delay(clock: FakeClock) -> None:
    changes: list[CircuitStateChanged] = []
    breaker = CircuitBreaker(
        failure_threshold=2, failure_period=10, delay=5, clock=clock, on_state_change=changes.append
    )
    run(breaker, False)
    clock.advance(11)
    run(breaker, False)
    assert breaker.state is CLOSED  # the first failure left the period
    clock.advance(3)
    run(breaker, False)
    assert breaker.state is OPEN
    clock.advance(5)
    assert breaker.state is HALF_OPEN
    run(breaker, False)
    assert breaker.state is OPEN
    clock.advance(5)
    run(breaker, True)
    assert breaker.state is CLOSED
    assert [(c.old.value, c.new.value) for c in changes] == [
        ("closed", "open"),
        ("open", "half-open"),
        ("half-open", "open"),
        ("open", "half-open"),
        ("half-open", "closed"),
    ]


def test_time_based_failure_rate_walk(clock: FakeClock) -> None:
    """failsafe-go TestShouldSupportTimeBasedFailureRateThresholding, on the fake clock."""
    breaker = CircuitBreaker(
        failure_rate=0.5, minimum_calls=3, failure_period=0.2, delay=1, success_threshold=2, clock=clock
    )
    run(breaker, False, True)
    clock.advance(0.21)
    run(breaker, False, True)
    clock.advance(0.05)
    run(breaker, True)
    assert breaker.state is CLOSED  # 1 of 3 failed
    run(breaker, False)
    assert breaker.state is OPEN  # 2 of 4
    assert breaker.metrics.failure_rate == 0.5
    clock.advance(1)
    assert breaker.state is HALF_OPEN
    run(breaker, False)
    assert breaker.state is OPEN
    clock.advance(1)
    run(breaker, True)
    assert breaker.state is HALF_OPEN
    run(breaker, True)
    assert breaker.state is CLOSED


def test_slow_calls_count_as_failures(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=2, slow_call_duration=1, clock=clock)
    executor = Executor(breaker)

    def slow() -> str:
        clock.sleep(1.5)
        return "slow but fine"

    assert executor.call(slow) == "slow but fine"
    assert breaker.metrics == CircuitMetrics(executions=1, failures=1, successes=0, slow_calls=1)
    executor.call(slow)
    assert breaker.state is OPEN


def test_slow_call_rate(clock: FakeClock) -> None:
    breaker = CircuitBreaker(
        failure_threshold=3, failure_window=4, slow_call_duration=1, slow_call_rate=0.5, clock=clock
    )
    executor = Executor(breaker)

    def slow() -> None:
        clock.sleep(2)

    executor.call(slow)
    executor.call(lambda: None)
    executor.call(lambda: None)
    assert breaker.state is CLOSED  # 1 slow of 3, and slow calls are not failures here
    assert breaker.metrics.failures == 0
    executor.call(slow)
    assert breaker.state is OPEN  # 2 slow of 4


def test_failures_the_breaker_does_not_handle_count_as_successes(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, handle=Boom, clock=clock)
    with pytest.raises(CallerMistake):
        Executor(breaker).call(Calls(error=CallerMistake))
    assert breaker.state is CLOSED
    assert breaker.metrics.successes == 1


def test_open_delay_from_pushback_is_capped(clock: FakeClock) -> None:
    class Busy(Exception):
        def __init__(self, retry_after: float) -> None:
            self.retry_after = retry_after

    breaker = CircuitBreaker(
        failure_threshold=1,
        delay=60,
        pushback=lambda failure: getattr(failure, "retry_after", None),
        max_pushback=20,
        clock=clock,
    )

    def busy(seconds: float) -> None:
        raise Busy(seconds)

    with pytest.raises(Busy):
        Executor(breaker).call(busy, 2)
    assert breaker.remaining_delay == 2
    clock.advance(2)
    with pytest.raises(Busy):
        Executor(breaker).call(busy, 1000)
    assert breaker.remaining_delay == 20
    clock.advance(20)
    run(breaker, False)  # no pushback: the configured delay
    assert breaker.remaining_delay == 60


def test_jittered_open_delay(clock: FakeClock) -> None:
    delays = set()
    for _ in range(50):
        breaker = CircuitBreaker(failure_threshold=1, delay=10, jitter_factor=0.5, clock=clock)
        run(breaker, False)
        delays.add(breaker.remaining_delay)
    assert all(5 <= d <= 15 for d in delays) and len(delays) > 40


def test_manual_modes(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, delay=3, clock=clock)
    breaker.open()
    assert breaker.state is OPEN and breaker.remaining_delay == 3
    breaker.close()
    assert breaker.state is CLOSED
    breaker.force_open()
    clock.advance(1000)
    assert breaker.state is CircuitState.FORCED_OPEN
    with pytest.raises(CircuitOpenError) as raised:
        Executor(breaker).call(lambda: None)
    assert raised.value.remaining == math.inf  # held open: a retry stops at once
    breaker.disable()
    run(breaker, False, False, False)
    assert breaker.state is CircuitState.DISABLED
    assert breaker.metrics.executions == 0
    breaker.close()
    run(breaker, False)
    assert breaker.state is OPEN


def test_close_clears_the_window(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=2, clock=clock)
    run(breaker, False)
    breaker.close()
    run(breaker, False)
    assert breaker.state is CLOSED


def test_metrics_snapshot(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=5, failure_window=10, clock=clock)
    run(breaker, True, True, False, True)
    metrics = breaker.metrics
    assert (metrics.executions, metrics.failures, metrics.successes) == (4, 1, 3)
    assert metrics.failure_rate == 0.25


def test_listener_may_read_the_breaker_without_deadlock(clock: FakeClock) -> None:
    seen: list[tuple[CircuitState, CircuitState]] = []
    breaker: CircuitBreaker

    def listener(change: CircuitStateChanged) -> None:
        seen.append((change.new, breaker.state))
        _ = breaker.metrics

    breaker = CircuitBreaker(failure_threshold=1, on_state_change=listener, clock=clock)
    run(breaker, False)
    assert seen == [(OPEN, OPEN)]


def test_state_changed_event_carries_the_window_that_tripped(clock: FakeClock) -> None:
    changes: list[CircuitStateChanged] = []
    breaker = CircuitBreaker(failure_threshold=2, failure_window=4, clock=clock, on_state_change=changes.append)
    run(breaker, True, False, False)
    assert changes == [CircuitStateChanged(CLOSED, OPEN, CircuitMetrics(3, 2, 1, 0), "CircuitBreaker")]


def test_a_cancelled_trial_frees_its_half_open_slot(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, success_threshold=1, delay=1, clock=clock)
    run(breaker, False)
    clock.advance(1)

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Executor(breaker).call(interrupted)
    assert breaker.state is HALF_OPEN
    run(breaker, True)  # the slot is free again
    assert breaker.state is CLOSED


def test_outcomes_of_calls_admitted_in_an_earlier_state_are_ignored(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, delay=1, clock=clock)
    early = breaker.acquire_permit()  # admitted while closed
    run(breaker, False)  # opens
    clock.advance(1)
    assert breaker.state is HALF_OPEN
    early.record(Boom())  # ends during half-open: says nothing about the trial
    assert breaker.state is HALF_OPEN
    trial = breaker.acquire_permit()
    trial.record()
    trial.record(Boom())  # a second report is ignored
    assert breaker.state is CLOSED


def test_permits_by_hand(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=2, clock=clock)
    breaker.acquire_permit().record(Boom())
    breaker.acquire_permit().record(CallerMistake(), semantics=_OnlyBoom())
    breaker.acquire_permit().record(Boom())
    assert breaker.state is CLOSED  # the middle outcome was a success under its semantics
    breaker.acquire_permit().record(Boom())
    assert breaker.state is OPEN
    with pytest.raises(CircuitOpenError):
        breaker.acquire_permit()


class _OnlyBoom(Semantics):
    def is_failure(self, failure: BaseException) -> bool:
        return isinstance(failure, Boom)


async def test_async_calls_share_the_breaker_with_sync_calls(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=2, clock=clock)
    calls = Calls()
    with pytest.raises(Boom):
        await Executor(breaker).acall(calls.async_call)
    run(breaker, False)
    assert breaker.state is OPEN
    with pytest.raises(CircuitOpenError):
        await Executor(breaker).acall(calls.async_call)
    assert calls.count == 1


async def test_async_cancelled_trial_frees_its_slot(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, delay=1, clock=clock)
    run(breaker, False)
    clock.advance(1)

    async def hangs() -> None:
        await asyncio.sleep(10)

    task = asyncio.ensure_future(Executor(breaker).acall(hangs))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async def fine() -> str:
        return "ok"

    assert await Executor(breaker).acall(fine) == "ok"
    assert breaker.state is CLOSED


def test_retry_around_breaker_counts(clock: FakeClock) -> None:
    """failsafe-go TestRejectedWithRetries (7 attempts, 3 executions), under our rule: the retry stops at the open
    breaker instead of burning its last 4 attempts on rejections."""
    breaker = CircuitBreaker(failure_threshold=3, clock=clock)
    calls, aborted = Calls(), list[RetryAborted]()
    with pytest.raises(CircuitOpenError):
        Executor(RetryPolicy(max_attempts=7, on_abort=aborted.append, clock=clock), breaker).call(calls)
    assert calls.count == 3 and [a.attempts for a in aborted] == [4]
    assert breaker.metrics == CircuitMetrics(executions=3, failures=3, successes=0, slow_calls=0)


def test_rejections_are_heard(clock: FakeClock) -> None:
    heard: list[CircuitRejected] = []
    breaker = CircuitBreaker(name="b", failure_threshold=1, delay=10, on_rejected=heard.append, clock=clock)
    with pytest.raises(Boom):
        Executor(breaker).call(Calls(1))
    with pytest.raises(CircuitOpenError):
        Executor(breaker).call(Calls(0))
    assert heard == [CircuitRejected(pytest.approx(10.0), "b")]  # type: ignore[arg-type]
