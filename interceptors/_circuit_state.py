"""The circuit breaker's state machine: CLOSED -> OPEN -> HALF_OPEN -> CLOSED or OPEN, plus manual modes.

All state changes happen under one lock that is held only to admit or record a call, never while it runs.
A call is admitted with the state's generation number; its outcome counts only if the state has not changed
since (a call admitted while closed that ends after the breaker opened says nothing about the half-open trial).
Events are reported after the lock is released.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import _options
from ._windows import CountWindow, Window
from .errors import CircuitOpenError
from .events import CircuitMetrics, CircuitState, CircuitStateChanged
from .execution import Semantics

if TYPE_CHECKING:
    from .circuit_breaker import CircuitBreaker

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
FORCED_OPEN, DISABLED = CircuitState.FORCED_OPEN, CircuitState.DISABLED


class CircuitStateMachine:
    __slots__ = ("_changes", "_config", "_lock", "_open_until", "_trials", "_window", "generation", "state")

    def __init__(self, config: CircuitBreaker) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._changes: list[CircuitStateChanged] = []
        self.state = CLOSED
        self.generation = 0
        self._window: Window = config._failure_window()
        self._open_until = 0.0
        self._trials = 0  # half-open trial calls in flight

    def acquire(self) -> int:
        """Admit a call and return its generation, or raise CircuitOpenError."""
        state = self.state
        if state is CLOSED or state is DISABLED:
            return self.generation
        with self._lock:
            now = self._config.clock.now()
            self._half_open_if_due(now)
            if self.state is HALF_OPEN and self._trials < self._config._trial_capacity:
                self._trials += 1
                admitted: int | None = self.generation
            elif self.state in (CLOSED, DISABLED):
                admitted = self.generation
            else:
                admitted = None
                error = self._rejection(now)
        self._publish()
        if admitted is None:
            raise error
        return admitted

    def record(
        self, generation: int, failed: bool, slow: bool, failure: BaseException | None, semantics: Semantics
    ) -> None:
        """Count the outcome of a call admitted at ``generation``; may open or close the breaker."""
        config = self._config
        with self._lock:
            if generation != self.generation:
                return
            window = self._window
            if self.state is CLOSED:
                window.record(failed or (slow and config.slow_call_rate is None), slow)
                if config._trips(window):
                    self._open(config._open_delay(failure, semantics))
            elif self.state is HALF_OPEN:
                self._trials -= 1
                window.record(failed or slow, slow)
                if window.executions - window.failures >= config.success_threshold:
                    self._transition(CLOSED)
                elif window.failures > config._trial_capacity - config.success_threshold:
                    self._open(config._open_delay(failure, semantics))
        if self._changes:
            self._publish()

    def release(self, generation: int) -> None:
        """Forget a call that ended without an outcome (cancelled), freeing its half-open trial slot."""
        with self._lock:
            if generation == self.generation and self.state is HALF_OPEN:
                self._trials -= 1

    def current_state(self) -> CircuitState:
        if self.state is OPEN and self._config.clock.now() >= self._open_until:
            with self._lock:
                self._half_open_if_due(self._config.clock.now())
            self._publish()
        return self.state

    def remaining_delay(self) -> float:
        return max(self._open_until - self._config.clock.now(), 0.0) if self.current_state() is OPEN else 0.0

    def metrics(self) -> CircuitMetrics:
        with self._lock:
            self._half_open_if_due(self._config.clock.now())
            self._window.roll()
            metrics = self._window.metrics()
        self._publish()
        return metrics

    def move_to(self, state: CircuitState) -> None:
        """Enter ``state`` by hand; OPEN starts the configured delay; CLOSED also clears the window."""
        with self._lock:
            if state is OPEN:
                self._open(self._config._open_delay(None, None))
            elif state is not self.state:
                self._transition(state)
            elif state is CLOSED:
                self._window = self._config._failure_window()
        self._publish()

    def _half_open_if_due(self, now: float) -> None:
        if self.state is OPEN and now >= self._open_until:
            self._transition(HALF_OPEN)

    def _open(self, delay: float) -> None:
        self._open_until = self._config.clock.now() + delay
        self._transition(OPEN)

    def _transition(self, new: CircuitState) -> None:
        old, metrics = self.state, self._window.metrics()
        self.state = new
        self.generation += 1
        if new is CLOSED:
            self._window = self._config._failure_window()
        elif new is HALF_OPEN:
            self._window = CountWindow(self._config._trial_capacity)
            self._trials = 0
        if old is not new:
            self._changes.append(CircuitStateChanged(old, new, metrics))

    def _rejection(self, now: float) -> CircuitOpenError:
        if self.state is FORCED_OPEN:
            return CircuitOpenError("circuit breaker is held open")
        if self.state is HALF_OPEN:
            return CircuitOpenError("circuit breaker is half-open and its trial calls are all in flight")
        remaining = max(self._open_until - now, 0.0)
        return CircuitOpenError(f"circuit breaker is open for another {remaining:.3g}s", remaining=remaining)

    def _publish(self) -> None:
        if not self._changes:
            return
        with self._lock:
            changes, self._changes = self._changes, []
        listener: Callable[[CircuitStateChanged], object] | None = self._config.on_state_change
        if listener is not None:
            for change in changes:
                _options.emit(listener, change)
