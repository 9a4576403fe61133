"""The breaker's lock-free fast path under thread switches every microsecond (issue 8, defect 15).

A call must be admitted by a state that admits it: never while OPEN, and never beyond the half-open trial capacity.
Every transition is logged (generation -> state) from inside the state machine's lock, so each admitted call can
be checked against the state its generation belonged to. Reading the machine's ``generation`` yields the GIL first,
so a fast path that read the state and then the generation (not one snapshot) lets other threads change the state
in between far more often than CPython's switch points alone would.
"""

from __future__ import annotations

import contextlib
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from interceptors import CircuitBreaker, CircuitOpenError, CircuitState, Executor
from interceptors.engine import _circuit_state
from interceptors.engine._circuit_state import CircuitStateMachine

from ..support.calls import Boom

CAPACITY = 4
GENERATION_SLOT = vars(CircuitStateMachine)["generation"]  # the slot's own descriptor
SECONDS = 2.0
LONGEST = 30.0
"""Seconds more at most, on a loaded machine, until both paths have been exercised."""


@pytest.fixture
def transitions(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[int, CircuitState]]:
    """Every generation's state, and thread switches every microsecond while the test runs."""
    states: dict[int, CircuitState] = {0: CircuitState.CLOSED}
    original = CircuitStateMachine._transition

    def logged(self: CircuitStateMachine, new: CircuitState) -> None:
        original(self, new)
        states[self.generation] = new  # under the machine's lock, like the change itself

    monkeypatch.setattr(_circuit_state.CircuitStateMachine, "_transition", logged)
    monkeypatch.setattr(_circuit_state.CircuitStateMachine, "generation", _YieldingSlot(GENERATION_SLOT))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield states
    finally:
        sys.setswitchinterval(interval)


class _YieldingSlot:
    """A slot that lets other threads run just before it is read."""

    def __init__(self, slot: Any) -> None:
        self._slot = slot

    def __get__(self, machine: Any, owner: Any = None) -> Any:
        if machine is None:
            return self
        time.sleep(0)
        return self._slot.__get__(machine, owner)

    def __set__(self, machine: Any, value: int) -> None:
        self._slot.__set__(machine, value)


def hammer(work: Any, enough: Callable[[], bool], threads: int = 8) -> None:
    """``work`` in ``threads`` threads at once for :data:`SECONDS`, then on in rounds of 0.5 s until ``enough()``
    says both paths were exercised (a loaded machine runs fewer calls a second), for at most :data:`LONGEST` s."""
    _round(work, threads, SECONDS)
    longest = time.monotonic() + LONGEST
    while not enough():
        assert time.monotonic() < longest, f"both paths not exercised in {SECONDS + LONGEST:g} s"
        _round(work, threads, 0.5)


def _round(work: Any, threads: int, seconds: float) -> None:
    ends = time.monotonic() + seconds
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


def exercised(states: Counter[CircuitState]) -> bool:
    """Calls were admitted both half-open and closed, often enough that the race had its chances."""
    return states[CircuitState.HALF_OPEN] > 100 and states[CircuitState.CLOSED] > 100


def test_permits_are_admitted_only_by_states_that_admit(transitions: dict[int, CircuitState]) -> None:
    breaker = CircuitBreaker(failure_threshold=1, delay=0, success_window=CAPACITY)
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
        permit.record(Boom() if random.random() < 0.5 else None)
        assert breaker._machine._trials >= 0  # a trial slot freed that was never taken

    def states() -> Counter[CircuitState]:
        return Counter(transitions[g] for g in admitted.elements())

    hammer(work, lambda: exercised(states()))
    assert states()[CircuitState.OPEN] == 0
    assert overfull == []
    assert breaker._machine._trials >= 0


def test_the_chain_admits_only_by_states_that_admit(transitions: dict[int, CircuitState]) -> None:
    breaker = CircuitBreaker(failure_threshold=1, delay=0, success_window=CAPACITY)
    recorded: list[int] = []
    original = CircuitStateMachine.record

    def record(self: CircuitStateMachine, generation: int, *rest: Any) -> None:
        recorded.append(generation)
        original(self, generation, *rest)

    executor = Executor(breaker)

    def call() -> None:
        if random.random() < 0.5:
            raise Boom

    def work() -> None:
        with contextlib.suppress(CircuitOpenError, Boom):
            executor.call(call)
        assert breaker._machine._trials >= 0

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_circuit_state.CircuitStateMachine, "record", record)
        hammer(work, lambda: exercised(Counter(transitions[g] for g in list(recorded))))
    assert Counter(transitions[g] for g in recorded)[CircuitState.OPEN] == 0


class _OpensWhenReadUnlocked:
    """A ``generation`` slot that, read once outside the machine's lock (a fast path), opens the breaker first:
    the thread switch the race needs, made to happen."""

    def __init__(self, slot: Any) -> None:
        self._slot, self.fired = slot, False

    def __get__(self, machine: Any, owner: Any = None) -> Any:
        if machine is None:
            return self
        if not self.fired and not machine._lock.locked():
            self.fired = True
            machine.move_to(CircuitState.OPEN)
        return self._slot.__get__(machine, owner)

    def __set__(self, machine: Any, value: int) -> None:
        self._slot.__set__(machine, value)


@pytest.mark.parametrize("via", ["permit", "chain"])
def test_a_call_is_admitted_with_the_generation_of_the_state_that_admitted_it(
    transitions: dict[int, CircuitState], monkeypatch: pytest.MonkeyPatch, via: str
) -> None:
    """Were the breaker to open between the fast path's look at the state and at the generation, the call would
    carry the open state's generation although the closed state admitted it."""
    breaker = CircuitBreaker(failure_threshold=1, delay=60)
    opener = _OpensWhenReadUnlocked(GENERATION_SLOT)
    monkeypatch.setattr(_circuit_state.CircuitStateMachine, "generation", opener)
    recorded: list[int] = []
    original = CircuitStateMachine.record

    def record(self: CircuitStateMachine, generation: int, *rest: Any) -> None:
        recorded.append(generation)
        original(self, generation, *rest)

    monkeypatch.setattr(_circuit_state.CircuitStateMachine, "record", record)
    if via == "permit":
        breaker.acquire_permit().record()
    else:
        Executor(breaker).call(lambda: "ok")
    # one snapshot: no unlocked read of the generation alone, so nothing can open the breaker in between
    assert [transitions[g] for g in recorded] == [CircuitState.CLOSED]
