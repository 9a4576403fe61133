"""Breaker modes on the fake clock: an open time that grows across openings in a row and starts again after a closed
period, a half-open state that gives up on trials that never come back, forced states told apart, and a dry run
that reports exactly what the real breaker does."""

from __future__ import annotations

import asyncio
import math
import random
from typing import Any

import pytest

from interceptors import CircuitBreaker, CircuitOpenError, CircuitState, Executor
from interceptors.engine import PLAIN, _delays
from interceptors.events import CircuitRejected, CircuitStateChanged
from interceptors.testing import FakeClock

from ..support.calls import Boom

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


def fail(executor: Executor) -> None:
    with pytest.raises((Boom, CircuitOpenError)):
        executor.call(_boom)


def _boom() -> None:
    raise Boom


def open_times(breaker: CircuitBreaker, clock: FakeClock, openings: int) -> list[float]:
    """Trip the breaker, then fail its trial each time it half-opens: how long each opening lasted."""
    executor, times = Executor(breaker), []
    fail(executor)
    for _ in range(openings):
        assert breaker.state is OPEN
        times.append(breaker.remaining_delay)
        clock.advance(breaker.remaining_delay)
        assert breaker.state is HALF_OPEN
        fail(executor)
    return times


def test_the_open_time_grows_with_each_opening_in_a_row_up_to_the_cap(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, delay=1, delay_multiplier=2, max_delay=10, clock=clock)
    assert open_times(breaker, clock, 6) == [1, 2, 4, 8, 10, 10]


def test_the_default_cap_is_ten_times_the_delay(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, delay=1, delay_multiplier=3, clock=clock)
    assert open_times(breaker, clock, 4) == [1, 3, 9, 10]
    assert breaker.config.longest_delay == 10


def test_a_huge_multiplier_reaches_the_cap_without_overflow(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, delay=1, delay_multiplier=1000, max_delay=3600, clock=clock)
    assert open_times(breaker, clock, 3) == [1, 1000, 3600]
    assert breaker.config.open_delay(None, PLAIN, 10**6) == (3600, False)  # a breaker that flapped for ever


def test_jitter_moves_the_grown_delay(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_delays, "DRAWS", random.Random(7))  # the library's draws, repeatable
    breaker = CircuitBreaker(
        failure_threshold=1, delay=1, delay_multiplier=2, max_delay=100, jitter_factor=0.5, clock=clock
    )
    times = open_times(breaker, clock, 4)
    for time, nominal in zip(times, [1, 2, 4, 8], strict=True):
        assert nominal * 0.5 <= time <= nominal * 1.5
    assert times != [1, 2, 4, 8]


def test_growth_starts_again_after_the_breaker_stayed_closed_long_enough(clock: FakeClock) -> None:
    breaker = CircuitBreaker(
        failure_threshold=1, delay=1, delay_multiplier=2, max_delay=60, delay_reset=30, clock=clock
    )
    executor = Executor(breaker)
    assert open_times(breaker, clock, 3) == [1, 2, 4]
    clock.advance(8)
    executor.call(lambda: "ok")  # the trial succeeds: closed
    assert breaker.state is CLOSED
    clock.advance(29)
    fail(executor)  # closed for only 29 s: still in a row
    assert breaker.remaining_delay == 16
    clock.advance(16)
    executor.call(lambda: "ok")
    clock.advance(30)
    fail(executor)  # closed for 30 s: starts again
    assert breaker.remaining_delay == 1


def test_a_half_open_breaker_whose_trials_never_come_back_opens_again(clock: FakeClock) -> None:
    changes: list[CircuitStateChanged] = []
    breaker = CircuitBreaker(
        failure_threshold=1, delay=5, half_open_max_wait=2, clock=clock, on_state_change=changes.append
    )
    Executor(breaker)
    breaker.open()
    clock.advance(5)
    permit = breaker.acquire_permit()  # a trial call that hangs
    assert breaker.state is HALF_OPEN
    with pytest.raises(CircuitOpenError):
        breaker.acquire_permit()  # its one trial slot is taken
    clock.advance(2)
    assert breaker.state is OPEN
    assert [(c.old, c.new) for c in changes][-1] == (HALF_OPEN, OPEN)
    permit.record()  # it comes back at last: too late to count
    assert breaker.state is OPEN
    clock.advance(5)
    breaker.acquire_permit().record()
    assert breaker.state is CLOSED


def test_without_half_open_max_wait_a_half_open_breaker_waits_for_its_trials(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, delay=5, clock=clock)
    breaker.open()
    clock.advance(5)
    breaker.acquire_permit()
    clock.advance(10_000)
    assert breaker.state is HALF_OPEN


def test_forced_states_are_told_apart_in_events(clock: FakeClock) -> None:
    changes: list[CircuitStateChanged] = []
    rejected: list[CircuitRejected] = []
    breaker = CircuitBreaker(clock=clock, on_state_change=changes.append, on_rejected=rejected.append)
    executor = Executor(breaker)
    breaker.force_open()
    with pytest.raises(CircuitOpenError):
        executor.call(lambda: "ok")
    breaker.disable()
    assert executor.call(lambda: "ok") == "ok"
    assert [c.new for c in changes] == [CircuitState.FORCED_OPEN, CircuitState.DISABLED]
    assert rejected[0].forced and rejected[0].remaining == math.inf
    breaker.close()
    breaker.open()
    with pytest.raises(CircuitOpenError):
        executor.call(lambda: "ok")
    assert not rejected[1].forced


def outcomes(seed: int, count: int) -> list[tuple[float, bool]]:
    """A sequence of calls: seconds since the one before, and whether it fails."""
    draw = random.Random(seed)
    return [(draw.choice([0.0, 0.1, 0.5, 2.0]), draw.random() < 0.45) for _ in range(count)]


BREAKERS = {
    "consecutive": {"failure_threshold": 3, "delay": 2},
    "rate": {"failure_rate": 0.5, "failure_window": 10, "delay": 1, "success_threshold": 2},
    "period": {"failure_threshold": 4, "failure_period": 5, "delay": 3, "delay_multiplier": 2, "max_delay": 20},
    "half-open wait": {"failure_threshold": 2, "delay": 1, "success_threshold": 3, "half_open_max_wait": 1.5},
}


@pytest.mark.parametrize("options", BREAKERS.values(), ids=BREAKERS.keys())
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_dry_run_reports_exactly_what_the_real_breaker_does(options: dict[str, Any], seed: int) -> None:
    """Side by side, on the same outcomes: the dry run rejects nothing, and reports a rejection for exactly the
    calls the real breaker rejects, with the same changes of state."""
    clock = FakeClock()
    real_changes: list[CircuitStateChanged] = []
    dry_changes: list[CircuitStateChanged] = []
    dry_rejections: list[CircuitRejected] = []
    real = Executor(CircuitBreaker(**options, clock=clock, on_state_change=real_changes.append))
    dry = Executor(
        CircuitBreaker(
            **options, dry_run=True, clock=clock, on_state_change=dry_changes.append, on_rejected=dry_rejections.append
        )
    )
    rejected_by_real, reported_by_dry, ran = [], [], 0
    for index, (pause, fails) in enumerate(outcomes(seed, 300)):
        clock.advance(pause)

        def call(fails: bool = fails) -> str:
            if fails:
                raise Boom
            return "ok"

        try:
            real.call(call)
        except CircuitOpenError:
            rejected_by_real.append(index)
        except Boom:
            pass
        before = len(dry_rejections)
        try:
            dry.call(call)
            ran += 1
        except Boom:
            ran += 1
        if len(dry_rejections) > before:
            reported_by_dry.append(index)
    assert rejected_by_real, "the sequence never opened the breaker: it proves nothing"
    assert reported_by_dry == rejected_by_real
    assert ran == 300
    assert [(c.old, c.new) for c in dry_changes] == [(c.old, c.new) for c in real_changes]
    assert all(c.dry_run for c in dry_changes) and not any(c.dry_run for c in real_changes)
    assert all(r.dry_run for r in dry_rejections)


def test_a_dry_run_lets_async_calls_through(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, delay=10, dry_run=True, clock=clock)
    breaker.open()

    async def answer() -> str:
        return "ok"

    assert asyncio.run(Executor(breaker).acall(answer)) == "ok"
    assert breaker.state is OPEN
    assert breaker.acquire_permit() is not None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"delay_multiplier": 0.5}, "delay_multiplier must be a finite number in"),
        ({"delay_multiplier": math.inf}, "delay_multiplier"),
        ({"delay": 10, "max_delay": 5}, r"max_delay \(5s\) must be >= delay \(10s\)"),
        ({"half_open_max_wait": 0}, "half_open_max_wait must be > 0"),
        ({"delay_reset": -1}, "delay_reset must be >= 0"),
        ({"dry_run": "yes"}, "dry_run must be True or False"),
    ],
)
def test_bad_mode_options_are_refused_naming_them(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CircuitBreaker(**options)


def test_half_open_max_wait_counts_only_while_trials_are_in_flight(clock: FakeClock) -> None:
    """A half-open breaker nobody calls stays half-open; the wait runs from its first trial in flight."""
    breaker = CircuitBreaker(failure_threshold=1, delay=5, half_open_max_wait=2, success_threshold=2, clock=clock)
    breaker.open()
    clock.advance(5)
    assert breaker.state is HALF_OPEN
    clock.advance(60)  # idle: nothing to wait for
    assert breaker.state is HALF_OPEN
    breaker.acquire_permit().record()  # a trial that came back
    clock.advance(60)
    assert breaker.state is HALF_OPEN
    breaker.acquire_permit()  # one that hangs
    clock.advance(2)
    assert breaker.state is OPEN
