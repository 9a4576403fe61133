"""CircuitBreaker: stop calling a dependency that keeps failing, then probe it before trusting it again."""

from __future__ import annotations

import math
from dataclasses import fields
from functools import partial
from typing import Any

from . import _options as options
from ._circuit_state import CLOSED, CircuitConfig, CircuitStateMachine
from ._clock import Clock
from ._errors import CircuitOpenError, RejectedError
from ._events import CircuitMetrics, CircuitRejected, CircuitState, CircuitStateChanged
from ._execution import PLAIN, Execution, Semantics, overdue
from ._policy import AsyncLink, Link, Policy
from ._results import Judge, ResultPredicate, judge

__all__ = ["DEFAULT_DELAY", "DEFAULT_FAILURE_THRESHOLD", "DEFAULT_RATE_MINIMUM_CALLS", "CircuitBreaker", "Permit"]

DEFAULT_FAILURE_THRESHOLD = 5
DEFAULT_DELAY = 60.0
DEFAULT_MAX_PUSHBACK = 60.0
DEFAULT_RATE_MINIMUM_CALLS = 10
PASSED = -1
"""What a breaker in dry run admits a call it would have rejected at: no generation (it is not counted)."""


class CircuitBreaker(Policy):
    """Rejects calls with :class:`CircuitOpenError` while the dependency is failing.

    **Closed**: outcomes fill a window, the last ``failure_window`` calls (default: ``failure_threshold``, so
    the threshold means consecutive failures) or the calls of the last ``failure_period`` seconds. Once the window
    holds ``minimum_calls`` calls, the breaker opens when it holds ``failure_threshold`` failures, or a failure
    share of at least ``failure_rate``. Calls lasting ``slow_call_duration`` or more are slow: they count as
    failures, or, with ``slow_call_rate``, open the breaker when their share reaches that rate. Failures
    ``handle`` rejects (by default the transport's caller-side errors) count as successes; a call another policy
    rejected (nothing was sent) counts as neither.

    **Open** for ``delay`` seconds, or, with ``pushback``, for the delay the failure that opened it asked for
    (capped at ``max_pushback``). A breaker that opens again soon after (without staying closed ``delay_reset``
    seconds in between) stays open longer: the ``n``-th opening in a row (0 for the first) lasts
    ``min(delay * delay_multiplier**n, max_delay)``; each open time is moved by up to ``jitter_factor`` of itself.
    Then **half-open**: up to ``success_window`` (default ``success_threshold``) trial calls run at once;
    ``success_threshold`` successes close the breaker, and as soon as that can no longer happen it opens again. A
    slow trial is a failed one; trials that have not decided within ``half_open_max_wait`` open it again too.

    **Dry run** (``dry_run=True``): the breaker decides as it would, with its states, events and metrics (each
    ``dry_run=True``), but lets every call through; a call it would have rejected goes through uncounted, as a
    rejected call is. How a new breaker is tried on live traffic.

    ``state`` turns HALF_OPEN as soon as the delay has passed, without waiting for a call. ``open()``,
    ``close()``, ``half_open()``, ``force_open()`` (no automatic exit) and ``disable()`` (admit all, count
    nothing) change state by hand. The lock is held only to admit and record calls, never while one runs.

    :param failure_threshold: failures in the window that open the breaker (default 5; exclusive with
        ``failure_rate``).
    :param failure_rate: share of failures in the window that opens the breaker, in (0, 1].
    :param failure_window: the window's size in calls (default ``failure_threshold``; at most 100 000).
    :param failure_period: the window's length in seconds instead (at least 1 ms; exclusive with ``failure_window``).
    :param minimum_calls: calls the window must hold before it may open the breaker (default 1; 10 or the window
        size with a rate).
    :param slow_call_duration: seconds from which a call is slow (default None: no call is).
    :param slow_call_rate: share of slow calls that opens the breaker (default None: slow calls are failures).
    :param success_threshold: half-open successes that close the breaker (default 1).
    :param success_window: half-open trial calls allowed at once (default ``success_threshold``).
    :param delay: seconds the breaker stays open (default 60).
    :param delay_multiplier: how much longer each opening in a row stays open (default 1: all ``delay``).
    :param max_delay: the longest a growing open time gets, seconds (default 10 times ``delay``).
    :param delay_reset: seconds the breaker must stay closed for the next opening to last ``delay`` again (default
        ``max_delay``).
    :param half_open_max_wait: seconds a half-open breaker waits for the trial calls in flight to decide (from the
        first of them) before it opens again (default None: as long as they take).
    :param jitter_factor: share of ``delay`` to move it by, at most, either way (default 0).
    :param pushback: stay open as long as the failure that opened it asked (True: the transport's way; a function
        of the failure: yours), capped at ``max_pushback`` (default False).
    :param max_pushback: the longest pushback honoured, seconds (default 60).
    :param dry_run: decide and report, but let every call through (default False).
    :param handle: which failures count (default: the transport's failures, as for retries).
    :param handle_result: a predicate of each call's answer (see :mod:`._results`): True counts it as a failure. A
        stream's answer is judged when it commits (its first message), and counted then.
    :param on_state_change: hears :class:`CircuitStateChanged` on every change of state.
    :param on_rejected: hears :class:`CircuitRejected` for every call it rejects.
    :param name: the policy's name in its events (default: its class's name, "CircuitBreaker").
    :param clock: the clock for windows and delays (default the system clock).
    """

    __slots__ = ("_judge", "_machine", "config")
    serves_deferred = True
    config: CircuitConfig
    """The options, as given and defaulted (``breaker.config.delay``), and the rules they make."""
    _machine: CircuitStateMachine
    _judge: Judge | None

    def __init__(
        self,
        *,
        failure_threshold: int | None = None,
        failure_rate: float | None = None,
        failure_window: int | None = None,
        failure_period: options.Duration | None = None,
        minimum_calls: int | None = None,
        slow_call_duration: options.Duration | None = None,
        slow_call_rate: float | None = None,
        success_threshold: int = 1,
        success_window: int | None = None,
        delay: options.Duration = DEFAULT_DELAY,
        delay_multiplier: float = 1.0,
        max_delay: options.Duration | None = None,
        delay_reset: options.Duration | None = None,
        half_open_max_wait: options.Duration | None = None,
        jitter_factor: float = 0.0,
        pushback: options.PushbackReader | bool = False,
        max_pushback: options.Duration = DEFAULT_MAX_PUSHBACK,
        handle: options.Handles | None = None,
        handle_result: ResultPredicate | None = None,
        dry_run: bool = False,
        on_state_change: options.Listener[CircuitStateChanged] | None = None,
        on_rejected: options.Listener[CircuitRejected] | None = None,
        clock: Clock | None = None,
        name: str | None = None,
    ) -> None:
        calls = options.MAX_CALLS
        if failure_threshold is not None and failure_rate is not None:
            raise ValueError("give failure_threshold or failure_rate, not both")
        if failure_window is not None and failure_period is not None:
            raise ValueError("give failure_window (calls) or failure_period (seconds), not both")
        if failure_rate is not None:
            rate, threshold = options.ratio(failure_rate, "failure_rate"), None
        else:
            threshold = DEFAULT_FAILURE_THRESHOLD if failure_threshold is None else failure_threshold
            rate, threshold = None, options.count(threshold, "failure_threshold", maximum=calls)
        window = None if failure_window is None else options.count(failure_window, "failure_window", maximum=calls)
        period = options.optional_window(failure_period, "failure_period")
        if rate is not None and window is None and period is None:
            raise ValueError("failure_rate needs failure_window or failure_period to measure the rate over")
        if threshold is not None and window is not None and threshold > window:
            raise ValueError(f"failure_threshold ({threshold}) must be <= failure_window ({window})")
        slow_duration = options.optional_seconds(slow_call_duration, "slow_call_duration", positive=True)
        slow_rate = None if slow_call_rate is None else options.ratio(slow_call_rate, "slow_call_rate")
        if slow_rate is not None and slow_duration is None:
            raise ValueError("slow_call_rate needs slow_call_duration to tell which calls are slow")
        if period is None and window is None:
            window = threshold  # consecutive failures
        if minimum_calls is None:
            uses_rate = rate is not None or slow_rate is not None
            minimum = (window or DEFAULT_RATE_MINIMUM_CALLS) if uses_rate else 1
        else:
            minimum = options.count(minimum_calls, "minimum_calls", maximum=calls)
        if window is not None and minimum > window:
            raise ValueError(f"minimum_calls ({minimum}) must be <= the window of {window} calls")
        successes = options.count(success_threshold, "success_threshold", maximum=calls)
        trials = successes if success_window is None else options.count(success_window, "success_window", maximum=calls)
        if trials < successes:
            raise ValueError(f"success_window ({trials}) must be >= success_threshold ({successes})")
        open_for = options.seconds(delay, "delay")
        multiplier = options.number(delay_multiplier, "delay_multiplier", 1, 1000)
        longest = options.optional_seconds(max_delay, "max_delay")
        if longest is not None and longest < open_for:
            raise ValueError(f"max_delay ({longest:g}s) must be >= delay ({open_for:g}s)")
        config = CircuitConfig(
            failure_threshold=threshold,
            failure_rate=rate,
            failure_window=window,
            failure_period=period,
            minimum_calls=minimum,
            slow_call_duration=slow_duration,
            slow_call_rate=slow_rate,
            success_threshold=successes,
            success_window=trials,
            delay=open_for,
            delay_multiplier=multiplier,
            max_delay=longest,
            delay_reset=options.optional_seconds(delay_reset, "delay_reset"),
            half_open_max_wait=options.optional_seconds(half_open_max_wait, "half_open_max_wait", positive=True),
            dry_run=options.flag(dry_run, "dry_run"),
            jitter_factor=options.ratio(jitter_factor, "jitter_factor", allow_zero=True),
            pushback=options.pushback(pushback),
            max_pushback=options.seconds(max_pushback, "max_pushback"),
            handle=options.handles(handle, "handle"),
            handle_result=options.optional_function(handle_result, "handle_result", "answer"),
            on_state_change=options.listener(on_state_change, "on_state_change"),
            on_rejected=options.listener(on_rejected, "on_rejected"),
            clock=options.clock(clock),
            name=options.policy_name(name, self),
        )
        machine, judged = CircuitStateMachine(config, self), judge(handle_result, "handle_result", config.name)
        self._init(name=config.name, config=config, _machine=machine, _judge=judged)

    @property
    def clock(self) -> Clock:
        return self.config.clock

    def inherit(self, old: Policy) -> None:
        """Keep ``old``'s state (open stays open, for as long as it had left), its window of outcomes when it is
        measured as before (else a new one), and its openings in a row; the new options decide from now on."""
        if isinstance(old, CircuitBreaker) and old.clock is self.clock:
            machine = old._machine
            machine.reconfigure(self.config, self)
            object.__setattr__(self, "_machine", machine)

    def __repr__(self) -> str:
        settings = ", ".join(f"{f.name}={getattr(self.config, f.name)!r}" for f in fields(self.config))
        return f"CircuitBreaker({settings})"

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
        """Half-open now, as after the delay: trial calls go through (``success_window`` at once)."""
        self._machine.move_to(CircuitState.HALF_OPEN)

    def force_open(self) -> None:
        """Reject every call until ``close()`` (or another manual change)."""
        self._machine.move_to(CircuitState.FORCED_OPEN)

    def disable(self) -> None:
        """Admit every call and count nothing until ``close()`` (or another manual change)."""
        self._machine.move_to(CircuitState.DISABLED)

    def acquire_permit(self) -> Permit:
        """Admit one call by hand (raises CircuitOpenError; in dry run, reports it and admits the call uncounted);
        report its outcome on the permit."""
        return Permit(self, self._admit(None))

    def _record(
        self,
        generation: int,
        start: float,
        failure: BaseException | None,
        semantics: Semantics,
        deadline: float | None = None,
    ) -> None:
        if isinstance(failure, RejectedError):  # another policy sent nothing: it says nothing of the dependency
            self._machine.release(generation)
            return
        config = self.config
        now = config.clock.now()
        slow = config.slow_call_duration is not None and now - start >= config.slow_call_duration
        failed = config.failed(failure, semantics, overdue(deadline, now))
        self._machine.record(generation, failed, slow, failure, semantics)

    def _settle(
        self, generation: int, start: float, semantics: Semantics, deadline: float | None, outcome: BaseException | None
    ) -> None:
        """Record how a call it admitted ended (see ``Execution.settle``). A stream settles after it answered (its
        first message came, or it ended well), so its caller's deadline passing later is not a deadline with no
        answer (``deadline`` None); a deferred attempt's is."""
        if Execution.cancelled(outcome):
            self._machine.release(generation)
        else:
            self._record(generation, start, outcome, semantics, deadline)

    def _settle_answer(
        self, generation: int, start: float, execution: Execution, sent: Any, outcome: BaseException | None
    ) -> None:
        """:meth:`_settle` for a deferred attempt (``sent``, the transport's :class:`Deferred`); with a result
        predicate, its answer is judged once it came."""
        if outcome is None and self._judge is not None:
            try:
                outcome = self._judge(execution, sent.outcome())
            except Exception:
                outcome = None
        self._settle(generation, start, execution.semantics, execution.deadline, outcome)

    def _admit(self, method: str | None) -> int:
        """A place in the breaker's current generation for the call; raises CircuitOpenError (reported as
        :class:`CircuitRejected`), or, in dry run, returns :data:`PASSED` for a call it would have rejected."""
        try:
            return self._machine.acquire()
        except CircuitOpenError as rejected:
            config = self.config
            if config.on_rejected is not None or self._observers:
                forced = rejected.remaining == math.inf
                event = CircuitRejected(rejected.remaining, self.name, method, dry_run=config.dry_run, forced=forced)
                options.emit(config.on_rejected, event, self._observers)
            if config.dry_run:
                return PASSED
            raise

    def wrap(self, inner: Link) -> Link:
        machine, record, settle, now = self._machine, self._record, self._settle, self.config.clock.now
        admit, judged, settle_answer = self._admit, self._judge, self._settle_answer
        timed, slow = self.config.slow_call_duration is not None, self.config.slow_call_duration or 0.0

        def run(execution: Execution) -> Any:
            state, generation = machine.snapshot
            if state is not CLOSED:
                generation = admit(execution.semantics.method)
                if generation == PASSED:
                    return inner(execution)
            start = now() if timed else 0.0
            try:
                result = inner(execution)
            except Exception as failure:
                record(generation, start, failure, execution.semantics, execution.deadline)
                raise
            except BaseException:
                machine.release(generation)
                raise
            if judged is not None and not execution.deferred and (unwanted := judged(execution, result)) is not None:
                record(generation, start, unwanted, execution.semantics)  # a stream's is judged at commit
                return result
            if execution.settle is not None:  # a stream or a deferred attempt: its final status counts, once it ends
                if execution.deferred:
                    execution.settle.append(partial(settle_answer, generation, start, execution, result))
                else:
                    execution.settle.append(partial(settle, generation, start, execution.semantics, None))
                return result
            machine.record(generation, False, timed and now() - start >= slow, None, execution.semantics)
            return result

        return run

    def wrap_async(self, inner: AsyncLink) -> AsyncLink:
        machine, record, settle, now = self._machine, self._record, self._settle, self.config.clock.now
        admit, judged, settle_answer = self._admit, self._judge, self._settle_answer
        timed, slow = self.config.slow_call_duration is not None, self.config.slow_call_duration or 0.0

        async def run(execution: Execution) -> Any:
            state, generation = machine.snapshot
            if state is not CLOSED:
                generation = admit(execution.semantics.method)
                if generation == PASSED:
                    return await inner(execution)
            start = now() if timed else 0.0
            try:
                result = await inner(execution)
            except Exception as failure:
                record(generation, start, failure, execution.semantics, execution.deadline)
                raise
            except BaseException:
                machine.release(generation)
                raise
            if judged is not None and not execution.deferred and (unwanted := judged(execution, result)) is not None:
                record(generation, start, unwanted, execution.semantics)  # a stream's is judged at commit
                return result
            if execution.settle is not None:  # a stream or a deferred attempt: its final status counts, once it ends
                if execution.deferred:
                    execution.settle.append(partial(settle_answer, generation, start, execution, result))
                else:
                    execution.settle.append(partial(settle, generation, start, execution.semantics, None))
                return result
            machine.record(generation, False, timed and now() - start >= slow, None, execution.semantics)
            return result

        return run


class Permit:
    """One call admitted by :meth:`CircuitBreaker.acquire_permit`; report how it ended exactly once."""

    __slots__ = ("_breaker", "_done", "_generation", "_start")

    def __init__(self, breaker: CircuitBreaker, generation: int) -> None:
        self._breaker, self._generation = breaker, generation
        self._start = breaker.config.clock.now()
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
