"""The circuit breaker's state machine: CLOSED -> OPEN -> HALF_OPEN -> CLOSED or OPEN, plus manual modes, and the
frozen configuration it runs by.

All state changes happen under one lock that is held only to admit or record a call, never while it runs.
A call is admitted with the state's generation number; its outcome counts only if the state has not changed
since (a call admitted while closed that ends after the breaker opened says nothing about the half-open trial).
The lock-free fast path reads ``(state, generation)`` as one snapshot, so a call it admits was admitted by the
closed state whose generation it carries. Events are reported after the lock is released.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import _options as options
from ._clock import Clock
from ._delays import jittered
from ._errors import CircuitOpenError
from ._events import CircuitMetrics, CircuitRejected, CircuitState, CircuitStateChanged
from ._execution import PLAIN, Semantics
from ._results import ResultFailure
from ._windows import CountWindow, TimeWindow, Window

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
FORCED_OPEN, DISABLED = CircuitState.FORCED_OPEN, CircuitState.DISABLED


@dataclass(frozen=True, slots=True)
class CircuitConfig:
    """A circuit breaker's validated options, and the rules they make (see :class:`CircuitBreaker`)."""

    failure_threshold: int | None
    failure_rate: float | None
    failure_window: int | None
    failure_period: float | None
    minimum_calls: int
    slow_call_duration: float | None
    slow_call_rate: float | None
    success_threshold: int
    success_window: int
    delay: float
    jitter_factor: float
    pushback: options.PushbackReader | bool
    max_pushback: float
    handle: options.FailurePredicate | None
    on_state_change: options.Listener[CircuitStateChanged] | None
    clock: Clock
    name: str = "CircuitBreaker"
    on_rejected: options.Listener[CircuitRejected] | None = None
    handle_result: Callable[[Any], bool] | None = None
    delay_multiplier: float = 1.0
    max_delay: float | None = None
    delay_reset: float | None = None
    half_open_max_wait: float | None = None
    dry_run: bool = False

    def failure_counter(self) -> Window:
        """An empty window of closed-state outcomes."""
        if self.failure_period is not None:
            return TimeWindow(self.failure_period, self.clock)
        assert self.failure_window is not None
        return CountWindow(self.failure_window)

    def trips(self, window: Window) -> bool:
        """Whether the closed-state outcomes in ``window`` open the breaker."""
        executions = window.executions
        if executions < self.minimum_calls:
            return False
        if self.slow_call_rate is not None and window.slow_calls / executions >= self.slow_call_rate:
            return True
        if self.failure_rate is not None:
            return window.failures / executions >= self.failure_rate
        assert self.failure_threshold is not None
        return window.failures >= self.failure_threshold

    def open_delay(self, failure: BaseException | None, semantics: Semantics, openings: int = 0) -> tuple[float, bool]:
        """How long to stay open after ``failure`` when it opens the breaker for the ``openings``-th time in a row (0:
        the first), and whether that is what the failure asked for (pushback)."""
        if failure is not None:
            asked = options.pushback_delay(self.pushback, failure, semantics, self.max_pushback)
            if asked is not None and asked >= 0:
                return asked, True
        delay, multiplier, cap = self.delay, self.delay_multiplier, self.longest_delay
        if multiplier > 1.0 and openings and 0.0 < delay < cap:  # delay * multiplier**openings, at most the cap
            capped = openings * math.log(multiplier) >= math.log(cap / delay)  # (the power could overflow)
            delay = cap if capped else min(delay * multiplier**openings, cap)
        return jittered(delay, factor=self.jitter_factor, absolute=0.0, maximum=None), False

    @property
    def longest_delay(self) -> float:
        """The longest a growing open time gets: ``max_delay``, by default 10 times ``delay``."""
        return self.delay * 10 if self.max_delay is None else self.max_delay

    @property
    def reset_after(self) -> float:
        """Seconds closed after which openings in a row are counted again from none: ``delay_reset``, by default the
        longest open time."""
        return self.longest_delay if self.delay_reset is None else self.delay_reset

    def failed(self, failure: BaseException | None, semantics: Semantics, overdue: bool = False) -> bool:
        """Whether an outcome counts as a failure (failures ``handle`` rejects count as successes); ``overdue``: it
        came at the call's deadline (see :meth:`Semantics.trips`)."""
        if failure is None:
            return False
        if isinstance(failure, ResultFailure):  # its result predicate judged the answer
            return True
        return self.handle(failure) if self.handle is not None else semantics.trips(failure, overdue)


class CircuitStateMachine:
    __slots__ = (
        "_changes",
        "_closed_since",
        "_config",
        "_half_open_since",
        "_lock",
        "_open_until",
        "_opened_by_pushback",
        "_openings",
        "_owner",
        "_trials",
        "_window",
        "gate",
        "generation",
        "snapshot",
        "state",
        "tap",
    )

    def __init__(self, config: CircuitConfig, owner: Any) -> None:
        self._config = config
        self._owner = owner  # the breaker: its observers hear the changes of state
        self._lock = threading.Lock()
        self._changes: list[CircuitStateChanged] = []
        self.state = CLOSED
        self.generation = 0
        self.snapshot = (CLOSED, 0)  # (state, generation), replaced as one object: the fast path's one read
        self._window: Window = config.failure_counter()
        self._open_until = 0.0
        self._opened_by_pushback = False
        self._openings = 0  # consecutive openings, for a growing delay (see CircuitConfig.open_delay)
        self._closed_since = self._half_open_since = config.clock.now()
        self._trials = 0  # half-open trial calls in flight
        self.tap: Callable[[bool], object] | None = None
        """Hears each closed-state outcome that counts (True: failed), under the lock: a fleet's shared evidence."""
        self.gate: Callable[[float], float | None] | None = None
        """Asked, under the lock, when the delay has passed: None lets the breaker turn half-open, else the seconds
        it stays open before asking again (a fleet lets one replica at a time probe)."""

    def acquire(self) -> int:
        """Admit a call and return its generation, or raise CircuitOpenError."""
        state, generation = self.snapshot
        if state is CLOSED or state is DISABLED:
            return generation
        with self._lock:
            now = self._config.clock.now()
            self._advance(now)
            if self.state is HALF_OPEN and self._trials < self._config.success_window:
                if not self._trials:
                    self._half_open_since = now  # the trials in flight are waited for from now
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
                if self.tap is not None:
                    self.tap(failed or slow)
                if config.trips(window):
                    self._trip(failure, semantics)
            elif self.state is HALF_OPEN:
                self._trials -= 1
                window.record(failed or slow, slow)
                if window.executions - window.failures >= config.success_threshold:
                    self._transition(CLOSED)
                elif window.failures > config.success_window - config.success_threshold:
                    self._trip(failure, semantics)
        if self._changes:
            self._publish()

    def release(self, generation: int) -> None:
        """Forget a call that ended without an outcome (cancelled), freeing its half-open trial slot."""
        with self._lock:
            if generation == self.generation and self.state is HALF_OPEN:
                self._trials -= 1

    def current_state(self) -> CircuitState:
        if self._due(self._config.clock.now()):
            with self._lock:
                self._advance(self._config.clock.now())
            self._publish()
        return self.state

    def remaining_delay(self) -> float:
        return max(self._open_until - self._config.clock.now(), 0.0) if self.current_state() is OPEN else 0.0

    def metrics(self) -> CircuitMetrics:
        with self._lock:
            self._advance(self._config.clock.now())
            self._window.roll()
            metrics = self._window.metrics()
        self._publish()
        return metrics

    def move_to(self, state: CircuitState) -> None:
        """Enter ``state`` by hand; OPEN starts the configured delay; CLOSED also clears the window."""
        with self._lock:
            if state is OPEN:
                self._open(*self._config.open_delay(None, PLAIN))
            elif state is not self.state:
                self._transition(state)
            elif state is CLOSED:
                self._window = self._config.failure_counter()
        self._publish()

    def reconfigure(self, config: CircuitConfig, owner: Any) -> None:
        """Decide by ``config`` from now on, reporting to ``owner`` (a breaker that replaced this one's), keeping the
        state: a closed window measured as before, a half-open trial window of the same size."""
        with self._lock:
            old, self._config, self._owner = self._config, config, owner
            if self.state is CLOSED and (old.failure_window, old.failure_period) != (
                config.failure_window,
                config.failure_period,
            ):
                self._window = config.failure_counter()
            elif self.state is HALF_OPEN and old.success_window != config.success_window:
                self._window = CountWindow(config.success_window)

    def open_for(self, delay: float) -> None:
        """Open now for ``delay`` seconds (a fleet's decision)."""
        with self._lock:
            self._open(delay, False)
        self._publish()

    def _due(self, now: float) -> bool:
        """Whether the state's time is up: OPEN past its delay, HALF_OPEN with trials in flight for longer than its
        ``half_open_max_wait`` (from when the first of them was admitted)."""
        state = self.state
        if state is OPEN:
            return now >= self._open_until
        wait = self._config.half_open_max_wait
        return state is HALF_OPEN and wait is not None and self._trials > 0 and now >= self._half_open_since + wait

    def _advance(self, now: float) -> None:
        """Leave a state whose time is up (see :meth:`_due`): OPEN turns HALF_OPEN (when the gate lets it), and a
        HALF_OPEN whose trial calls have not decided in time opens again (a consecutive opening)."""
        if not self._due(now):
            return
        if self.state is HALF_OPEN:
            self._trip(None, PLAIN)
            return
        wait = None if self.gate is None else self.gate(now)
        if wait is None:
            self._transition(HALF_OPEN)
        else:
            self._open_until = now + wait

    def _trip(self, failure: BaseException | None, semantics: Semantics) -> None:
        """Open, for as long as the ``failure`` that tripped it and the openings in a row so far say: the count
        starts again when the breaker has stayed closed for ``delay_reset`` seconds."""
        config = self._config
        if self.state is CLOSED and config.clock.now() - self._closed_since >= config.reset_after:
            self._openings = 0
        delay, by_pushback = config.open_delay(failure, semantics, self._openings)
        self._openings += 1
        self._open(delay, by_pushback)

    def _open(self, delay: float, by_pushback: bool) -> None:
        self._open_until = self._config.clock.now() + delay
        self._opened_by_pushback = by_pushback
        self._transition(OPEN)

    def _transition(self, new: CircuitState) -> None:
        old, metrics = self.state, self._window.metrics()
        if new is CLOSED:
            self._window = self._config.failure_counter()
            self._closed_since = self._config.clock.now()
        elif new is HALF_OPEN:
            self._window = CountWindow(self._config.success_window)
            self._trials = 0
            self._half_open_since = self._config.clock.now()
        self.state, self.generation = new, self.generation + 1
        self.snapshot = (new, self.generation)
        if old is not new:
            config = self._config
            self._changes.append(CircuitStateChanged(old, new, metrics, config.name, dry_run=config.dry_run))

    def _rejection(self, now: float) -> CircuitOpenError:
        if self.state is FORCED_OPEN:
            return CircuitOpenError("circuit breaker is held open", remaining=math.inf)
        if self.state is HALF_OPEN:
            return CircuitOpenError("circuit breaker is half-open and its trial calls are all in flight")
        remaining = max(self._open_until - now, 0.0)
        return CircuitOpenError(
            f"circuit breaker is open for another {remaining:.3g}s",
            remaining=remaining,
            from_pushback=self._opened_by_pushback,
        )

    def _publish(self) -> None:
        if not self._changes:
            return
        with self._lock:
            changes, self._changes = self._changes, []
        listener = self._config.on_state_change
        observers = self._owner._observers
        if listener is not None or observers:
            for change in changes:
                options.emit(listener, change, observers)
