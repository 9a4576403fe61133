"""The breaker's lock-free fast path under thread switches every microsecond (issue 8, defect 15).

A call must be admitted by a state that admits it: never while OPEN, and never beyond the half-open trial capacity.
Every transition is logged (generation -> state) from inside the state machine's lock, so each admitted call can
be checked against the state its generation belonged to.
"""

from __future__ import annotations

import contextlib
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from interceptors import CircuitBreaker, CircuitOpenError, CircuitState, Executor
from interceptors.engine import _circuit_state
from interceptors.engine._circuit_state import CircuitStateMachine

from ..support.calls import Boom

CAPACITY = 4
SECONDS = 1.5


@pytest.fixture
def transitions(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[int, CircuitState]]:
    """Every generation's state, and thread switches every microsecond while the test runs."""
    states: dict[int, CircuitState] = {0: CircuitState.CLOSED}
    original = CircuitStateMachine._transition

    def logged(self: CircuitStateMachine, new: CircuitState) -> None:
        original(self, new)
        states[self.generation] = new  # under the machine's lock, like the change itself

    monkeypatch.setattr(_circuit_state.CircuitStateMachine, "_transition", logged)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield states
    finally:
        sys.setswitchinterval(interval)


def hammer(work: Any, threads: int = 8) -> None:
    ends = time.monotonic() + SECONDS
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            while time.monotonic() < ends:
                work()
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []


def test_permits_are_admitted_only_by_states_that_admit(transitions: dict[int, CircuitState]) -> None:
    breaker = CircuitBreaker(failure_threshold=1, delay=0, success_threshold=CAPACITY)
    lock = threading.Lock()
    in_flight: Counter[int] = Counter()
    admitted: Counter[int] = Counter()
    overfull: list[int] = []

    def work() -> None:
        try:
            permit = breaker.acquire_permit()
        except CircuitOpenError:
            return
        generation = permit._generation
        with lock:
            in_flight[generation] += 1
            admitted[generation] += 1
            if in_flight[generation] > CAPACITY and transitions.get(generation) is CircuitState.HALF_OPEN:
                overfull.append(generation)
        with lock:
            in_flight[generation] -= 1  # before recording: a slot is never counted free before it is
        permit.record(Boom() if random.random() < 0.3 else None)

    hammer(work)
    states = Counter(transitions[g] for g in admitted.elements())
    assert states[CircuitState.OPEN] == 0
    assert overfull == []
    assert states[CircuitState.HALF_OPEN] > 100 and states[CircuitState.CLOSED] > 100  # both paths were exercised
    assert breaker._machine._trials >= 0


def test_the_chain_admits_only_by_states_that_admit(transitions: dict[int, CircuitState]) -> None:
    breaker = CircuitBreaker(failure_threshold=1, delay=0, success_threshold=CAPACITY)
    recorded: list[int] = []
    original = CircuitStateMachine.record

    def record(self: CircuitStateMachine, generation: int, *rest: Any) -> None:
        recorded.append(generation)
        original(self, generation, *rest)

    executor = Executor(breaker)

    def call() -> None:
        if random.random() < 0.3:
            raise Boom

    def work() -> None:
        with contextlib.suppress(CircuitOpenError, Boom):
            executor.call(call)
        assert breaker._machine._trials >= 0

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_circuit_state.CircuitStateMachine, "record", record)
        hammer(work)
    states = Counter(transitions[g] for g in recorded)
    assert states[CircuitState.OPEN] == 0
    assert states[CircuitState.HALF_OPEN] > 100 and states[CircuitState.CLOSED] > 100
