"""CircuitBreaker: stop calling a dependency that keeps failing, then probe it before trusting it again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import _options
from ._circuit_state import CLOSED, CircuitStateMachine
from ._windows import CountWindow, TimeWindow, Window
from .clock import Clock
from .delays import jittered
from .events import CircuitMetrics, CircuitState, CircuitStateChanged
from .execution import PLAIN, Execution, Semantics
from .policy import AsyncLink, Link, Policy

__all__ = ["CircuitBreaker", "Permit"]


class CircuitBreaker(Policy):
    """Rejects calls with :class:`CircuitOpenError` while the dependency is failing.

    **Closed**: outcomes fill a window, the last ``failure_window`` calls (default: ``failure_threshold``, so
    the threshold means consecutive failures) or the calls of the last ``failure_period`` seconds. Once the window
    holds ``minimum_calls`` calls, the breaker opens when it holds ``failure_threshold`` failures, or a failure
    share of at least ``failure_rate``. Calls lasting ``slow_call_duration`` or more are slow: they count as
    failures, or, with ``slow_call_rate``, open the breaker when their share reaches that rate. Failures
    ``handle`` rejects (by default the transport's caller-side errors) count as successes.

    **Open** for ``delay`` seconds (moved by up to ``jitter_factor`` of itself), or, with ``pushback``, for the
    delay the failure that opened it asked for (capped at ``max_pushback``). Then **half-open**: up to
    ``success_window`` (default ``success_threshold``) trial calls run at once; ``success_threshold`` successes
    close the breaker, and as soon as that can no longer happen it opens again. A slow trial is a failed one.

    ``state`` turns HALF_OPEN as soon as the delay has passed, without waiting for a call. ``open()``,
    ``close()``, ``half_open()``, ``force_open()`` (no automatic exit) and ``disable()`` (admit all, count
    nothing) change state by hand. The lock is held only to admit and record calls, never while one runs.
    """

    __slots__ = (
        "_machine",
        "_trial_capacity",
        "clock",
        "delay",
        "failure_period",
        "failure_rate",
        "failure_threshold",
        "failure_window",
        "handle",
        "jitter_factor",
        "max_pushback",
        "minimum_calls",
        "on_state_change",
        "pushback",
        "slow_call_duration",
        "slow_call_rate",
        "success_threshold",
        "success_window",
    )
    clock: Clock
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
    pushback: _options.Pushback | bool
    max_pushback: float
    handle: _options.FailurePredicate | None
    on_state_change: Callable[[CircuitStateChanged], object] | None
    _trial_capacity: int
    _machine: CircuitStateMachine

    def __init__(
        self,
        *,
        failure_threshold: int | None = None,
        failure_rate: float | None = None,
        failure_window: int | None = None,
        failure_period: _options.Duration | None = None,
        minimum_calls: int | None = None,
        slow_call_duration: _options.Duration | None = None,
        slow_call_rate: float | None = None,
        success_threshold: int = 1,
        success_window: int | None = None,
        delay: _options.Duration = 60.0,
        jitter_factor: float = 0.0,
        pushback: _options.Pushback | bool = False,
        max_pushback: _options.Duration = 60.0,
        handle: _options.Handles | None = None,
        on_state_change: Callable[[CircuitStateChanged], object] | None = None,
        clock: Clock | None = None,
    ) -> None:
        if failure_threshold is not None and failure_rate is not None:
            raise ValueError("give failure_threshold or failure_rate, not both")
        if failure_window is not None and failure_period is not None:
            raise ValueError("give failure_window (calls) or failure_period (seconds), not both")
        if failure_rate is not None:
            rate, threshold = _options.ratio(failure_rate, "failure_rate"), None
        else:
            rate, threshold = (
                None,
                _options.count(5 if failure_threshold is None else failure_threshold, "failure_threshold"),
            )
        window = None if failure_window is None else _options.count(failure_window, "failure_window")
        period = _options.optional_seconds(failure_period, "failure_period", positive=True)
        if rate is not None and window is None and period is None:
            raise ValueError("failure_rate needs failure_window or failure_period to measure the rate over")
        if threshold is not None and window is not None and threshold > window:
            raise ValueError(f"failure_threshold ({threshold}) must be <= failure_window ({window})")
        slow_duration = _options.optional_seconds(slow_call_duration, "slow_call_duration", positive=True)
        slow_rate = None if slow_call_rate is None else _options.ratio(slow_call_rate, "slow_call_rate")
        if slow_rate is not None and slow_duration is None:
            raise ValueError("slow_call_rate needs slow_call_duration to tell which calls are slow")
        if period is None and window is None:
            window = threshold  # consecutive failures
        if minimum_calls is None:
            uses_rate = rate is not None or slow_rate is not None
            minimum = (window or 10) if uses_rate else 1
        else:
            minimum = _options.count(minimum_calls, "minimum_calls")
        if window is not None and minimum > window:
            raise ValueError(f"minimum_calls ({minimum}) must be <= the window of {window} calls")
        successes = _options.count(success_threshold, "success_threshold")
        trials = successes if success_window is None else _options.count(success_window, "success_window")
        if trials < successes:
            raise ValueError(f"success_window ({trials}) must be >= success_threshold ({successes})")
        self._init(
            failure_threshold=threshold,
            failure_rate=rate,
            failure_window=window,
            failure_period=period,
            minimum_calls=minimum,
            slow_call_duration=slow_duration,
            slow_call_rate=slow_rate,
            success_threshold=successes,
            success_window=trials,
            delay=_options.seconds(delay, "delay"),
            jitter_factor=_options.ratio(jitter_factor, "jitter_factor", allow_zero=True),
            pushback=_options.pushback(pushback),
            max_pushback=_options.seconds(max_pushback, "max_pushback"),
            handle=_options.handles(handle, "handle"),
            on_state_change=_options.listener(on_state_change, "on_state_change"),
            clock=_options.clock(clock),
            _trial_capacity=trials,
        )
        self._init(_machine=CircuitStateMachine(self))

    @property
    def state(self) -> CircuitState:
        """The current state; OPEN becomes HALF_OPEN here as soon as the delay has passed."""
        return self._machine.current_state()

    @property
    def remaining_delay(self) -> float:
        """Seconds until an open breaker turns half-open (0 unless OPEN)."""
        return self._machine.remaining_delay()

    @property
    def metrics(self) -> CircuitMetrics:
        """Counts of the current window (closed: the failure window; half-open: the trial calls)."""
        return self._machine.metrics()

    def open(self) -> None:
        """Open now, for the configured ``delay``."""
        self._machine.move_to(CircuitState.OPEN)

    def close(self) -> None:
        """Close now, with an empty window."""
        self._machine.move_to(CircuitState.CLOSED)

    def half_open(self) -> None:
        self._machine.move_to(CircuitState.HALF_OPEN)

    def force_open(self) -> None:
        """Reject every call until ``close()`` (or another manual change)."""
        self._machine.move_to(CircuitState.FORCED_OPEN)

    def disable(self) -> None:
        """Admit every call and count nothing until ``close()`` (or another manual change)."""
        self._machine.move_to(CircuitState.DISABLED)

    def acquire_permit(self) -> Permit:
        """Admit one call by hand (raises CircuitOpenError); report its outcome on the permit."""
        return Permit(self, self._machine.acquire())

    def _failure_window(self) -> Window:
        if self.failure_period is not None:
            return TimeWindow(self.failure_period, self.clock)
        assert self.failure_window is not None
        return CountWindow(self.failure_window)

    def _trips(self, window: Window) -> bool:
        executions = window.executions
        if executions < self.minimum_calls:
            return False
        if self.slow_call_rate is not None and window.slow_calls / executions >= self.slow_call_rate:
            return True
        if self.failure_rate is not None:
            return window.failures / executions >= self.failure_rate
        assert self.failure_threshold is not None
        return window.failures >= self.failure_threshold

    def _open_delay(self, failure: BaseException | None, semantics: Semantics | None) -> float:
        if failure is not None:
            asked = _options.pushback_delay(self.pushback, failure, semantics or PLAIN, self.max_pushback)
            if asked is not None and asked >= 0:
                return asked
        return jittered(self.delay, factor=self.jitter_factor, absolute=0.0, maximum=None)

    def _record(self, generation: int, start: float, failure: BaseException | None, semantics: Semantics) -> None:
        failed = failure is not None and (self.handle or semantics.is_failure)(failure)
        slow = self.slow_call_duration is not None and self.clock.now() - start >= self.slow_call_duration
        self._machine.record(generation, failed, slow, failure, semantics)

    def wrap(self, inner: Link) -> Link:
        machine, record, now = self._machine, self._record, self.clock.now
        timed, slow = self.slow_call_duration is not None, self.slow_call_duration or 0.0

        def run(execution: Execution) -> Any:
            generation = machine.generation if machine.state is CLOSED else machine.acquire()
            start = now() if timed else 0.0
            try:
                result = inner(execution)
            except Exception as failure:
                record(generation, start, failure, execution.semantics)
                raise
            except BaseException:
                machine.release(generation)
                raise
            machine.record(generation, False, timed and now() - start >= slow, None, execution.semantics)
            return result

        return run

    def wrap_async(self, inner: AsyncLink) -> AsyncLink:
        machine, record, now = self._machine, self._record, self.clock.now
        timed, slow = self.slow_call_duration is not None, self.slow_call_duration or 0.0

        async def run(execution: Execution) -> Any:
            generation = machine.generation if machine.state is CLOSED else machine.acquire()
            start = now() if timed else 0.0
            try:
                result = await inner(execution)
            except Exception as failure:
                record(generation, start, failure, execution.semantics)
                raise
            except BaseException:
                machine.release(generation)
                raise
            machine.record(generation, False, timed and now() - start >= slow, None, execution.semantics)
            return result

        return run


class Permit:
    """One call admitted by :meth:`CircuitBreaker.acquire_permit`; report how it ended exactly once."""

    __slots__ = ("_breaker", "_done", "_generation", "_start")

    def __init__(self, breaker: CircuitBreaker, generation: int) -> None:
        self._breaker, self._generation = breaker, generation
        self._start = breaker.clock.now()
        self._done = False

    def record(self, failure: BaseException | None = None, *, semantics: Semantics = PLAIN) -> None:
        """The call succeeded (``failure`` None) or failed with ``failure``, classified as the breaker does."""
        if not self._done:
            self._done = True
            self._breaker._record(self._generation, self._start, failure, semantics)

    def release(self) -> None:
        """The call ended without an outcome worth counting (e.g. cancelled by its caller)."""
        if not self._done:
            self._done = True
            self._breaker._machine.release(self._generation)
