"""Property-based check of the circuit breaker against a plain reference model, on a fake clock.

The model keeps every outcome in a list and recomputes everything from scratch; the breaker keeps ring buffers
and running counts. Hypothesis drives both through admissions, outcomes (also out of order, also stale),
cancellations, manual changes and the passing of time, and compares what they admit and report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, invariant, rule

from interceptors import CircuitBreaker, CircuitOpenError, CircuitState
from interceptors.engine import Permit
from interceptors.testing import FakeClock

from ..support.calls import Boom

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
BUCKETS = 10


@dataclass
class Model:
    threshold: int
    window: int | None  # calls; None: time-based
    period: float | None
    minimum: int
    successes_needed: int
    trials: int
    delay: float
    state: CircuitState = CLOSED
    generation: int = 0
    outcomes: list[tuple[float, bool]] = field(default_factory=list)  # (time, failed), closed state
    trial_outcomes: list[bool] = field(default_factory=list)  # failed?, half-open
    in_flight: int = 0
    open_until: float = 0.0
    opened_from: CircuitState = CLOSED  # an open breaker reports the window of the state that opened it

    def live(self, now: float) -> list[bool]:
        if self.window is not None:
            return [failed for _, failed in self.outcomes[-self.window :]]
        assert self.period is not None
        span = self.period / BUCKETS
        head = max([math.floor(now / span)] + [math.floor(t / span) for t, _ in self.outcomes])
        return [failed for t, failed in self.outcomes if math.floor(t / span) > head - BUCKETS]

    def refresh(self, now: float) -> None:
        if self.state is OPEN and now >= self.open_until:
            self.move(HALF_OPEN)

    def move(self, state: CircuitState) -> None:
        self.state = state
        self.generation += 1
        if state is CLOSED:
            self.outcomes = []
        if state is HALF_OPEN:
            self.trial_outcomes, self.in_flight = [], 0

    def open(self, now: float) -> None:
        self.open_until = now + self.delay
        if self.state is not OPEN:
            self.opened_from = self.state
        self.move(OPEN)

    def reported(self, now: float) -> list[bool]:
        """The outcomes the breaker's metrics describe."""
        if self.state is HALF_OPEN or (self.state is OPEN and self.opened_from is HALF_OPEN):
            return self.trial_outcomes
        return self.live(now)

    def acquire(self, now: float) -> int | None:
        self.refresh(now)
        if self.state is CLOSED:
            return self.generation
        if self.state is HALF_OPEN and self.in_flight < self.trials:
            self.in_flight += 1
            return self.generation
        return None

    def record(self, generation: int, failed: bool, now: float) -> None:
        if generation != self.generation:
            return
        if self.state is CLOSED:
            self.outcomes.append((now, failed))
            live = self.live(now)
            if len(live) >= self.minimum and sum(live) >= self.threshold:
                self.open(now)
        elif self.state is HALF_OPEN:
            self.in_flight -= 1
            self.trial_outcomes = [*self.trial_outcomes, failed][-self.trials :]
            failures = sum(self.trial_outcomes)
            if len(self.trial_outcomes) - failures >= self.successes_needed:
                self.move(CLOSED)
            elif failures > self.trials - self.successes_needed:
                self.open(now)

    def release(self, generation: int) -> None:
        if generation == self.generation and self.state is HALF_OPEN:
            self.in_flight -= 1


class BreakerMachine(RuleBasedStateMachine):
    permits = Bundle("permits")

    @initialize(
        threshold=st.integers(1, 4),
        extra_window=st.integers(0, 4),
        time_based=st.booleans(),
        successes=st.integers(1, 3),
        extra_trials=st.integers(0, 2),
        delay=st.sampled_from([0.0, 0.5, 1.0, 3.0]),
    )
    def setup(
        self, threshold: int, extra_window: int, time_based: bool, successes: int, extra_trials: int, delay: float
    ) -> None:
        self.clock = FakeClock()
        window = threshold + extra_window
        options = {"failure_period": 2.0} if time_based else {"failure_window": window}
        self.breaker = CircuitBreaker(
            failure_threshold=threshold,
            success_threshold=successes,
            success_window=successes + extra_trials,
            delay=delay,
            clock=self.clock,
            **options,
        )
        self.model = Model(
            threshold=threshold,
            window=None if time_based else window,
            period=2.0 if time_based else None,
            minimum=1,
            successes_needed=successes,
            trials=successes + extra_trials,
            delay=delay,
        )

    @rule(target=permits)
    def acquire(self) -> tuple[Permit | None, int | None]:
        expected = self.model.acquire(self.clock.now())
        try:
            permit: Permit | None = self.breaker.acquire_permit()
        except CircuitOpenError:
            permit = None
        assert (permit is None) == (expected is None)
        return permit, expected

    @rule(admitted=consumes(permits), failed=st.booleans())
    def finish(self, admitted: tuple[Permit | None, int | None], failed: bool) -> None:
        permit, generation = admitted
        if permit is None or generation is None:
            return
        self.model.record(generation, failed, self.clock.now())
        permit.record(Boom() if failed else None)

    @rule(admitted=consumes(permits))
    def cancel(self, admitted: tuple[Permit | None, int | None]) -> None:
        permit, generation = admitted
        if permit is None or generation is None:
            return
        self.model.release(generation)
        permit.release()

    @rule(seconds=st.sampled_from([0.1, 0.3, 0.5, 1.0, 2.5]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(state=st.sampled_from([CLOSED, OPEN, HALF_OPEN]))
    def move_by_hand(self, state: CircuitState) -> None:
        {CLOSED: self.breaker.close, OPEN: self.breaker.open, HALF_OPEN: self.breaker.half_open}[state]()
        if state is OPEN:
            self.model.open(self.clock.now())
        elif state is not self.model.state:
            self.model.move(state)
        else:
            self.model.outcomes = [] if state is CLOSED else self.model.outcomes

    @invariant()
    def same_state(self) -> None:
        if not hasattr(self, "model"):
            return
        self.model.refresh(self.clock.now())
        assert self.breaker.state is self.model.state

    @invariant()
    def same_counts(self) -> None:
        if not hasattr(self, "model"):
            return
        self.model.refresh(self.clock.now())
        metrics = self.breaker.metrics
        outcomes = self.model.reported(self.clock.now())
        assert (metrics.executions, metrics.failures) == (len(outcomes), sum(outcomes))


BreakerMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
test_breaker_matches_the_model = BreakerMachine.TestCase
pytestmark = pytest.mark.timeout(300)  # 300 runs of 60 steps: ~6 s of CPU alone, a minute beside two suites
