"""RetryPolicy: run the inner chain again after a failure it handles."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import _options
from .clock import Clock
from .delays import Backoff, RandomDelay, jittered
from .errors import RetriesExceededError, TimeoutExceededError
from .events import RetriesExceeded, RetryAborted, RetryScheduled, RetryStarted
from .execution import Execution
from .policy import AsyncLink, Link, Policy

__all__ = ["RetryPolicy"]


class RetryPolicy(Policy):
    """Retries failed attempts it handles, up to ``max_attempts`` attempts in all (None: unlimited).

    The delay before the next attempt is, in order of precedence:

    1. the server's pushback for the failure, capped at ``max_pushback`` (``pushback=True`` reads it the
       transport's way, e.g. gRPC's ``grpc-retry-pushback-ms``; a callable reads it your way; ``False`` ignores
       it). A negative pushback means "do not retry": the failure is raised as is.
    2. ``delay``: fixed seconds, :class:`Backoff` or :class:`RandomDelay`, then moved by ``jitter`` seconds or
       ``jitter_factor`` of itself, never beyond the schedule's maximum.

    A retry is not scheduled when its delay would reach ``max_duration`` after the first attempt (retries
    exceeded), or when it would leave less than ``min_attempt_time`` before the execution's deadline
    (:class:`TimeoutExceededError` now, rather than after waiting; a deadline a server derived from its caller's
    may run a few milliseconds long, so an attempt squeezed into the last of it can outlive the caller).
    Failures ``handle`` rejects and failures ``abort_on`` accepts are raised at once. When retries run out, raises
    :class:`RetriesExceededError` chaining the last failure, or with ``reraise=True`` the last failure itself.
    """

    __slots__ = (
        "abort_on",
        "clock",
        "delay",
        "handle",
        "jitter",
        "jitter_factor",
        "max_attempts",
        "max_duration",
        "max_pushback",
        "min_attempt_time",
        "on_abort",
        "on_retries_exceeded",
        "on_retry",
        "on_retry_scheduled",
        "pushback",
        "reraise",
    )
    clock: Clock
    max_attempts: int | None
    max_duration: float | None
    min_attempt_time: float
    delay: float | Backoff | RandomDelay
    jitter: float
    jitter_factor: float
    pushback: _options.Pushback | bool
    max_pushback: float
    handle: _options.FailurePredicate | None
    abort_on: _options.FailurePredicate | None
    reraise: bool
    on_retry_scheduled: Callable[[RetryScheduled], object] | None
    on_retry: Callable[[RetryStarted], object] | None
    on_retries_exceeded: Callable[[RetriesExceeded], object] | None
    on_abort: Callable[[RetryAborted], object] | None

    def __init__(
        self,
        *,
        max_attempts: int | None = 3,
        max_duration: _options.Duration | None = None,
        min_attempt_time: _options.Duration = 0.0,
        delay: _options.Duration | Backoff | RandomDelay = 0.0,
        jitter: _options.Duration = 0.0,
        jitter_factor: float = 0.0,
        pushback: _options.Pushback | bool = True,
        max_pushback: _options.Duration = 60.0,
        handle: _options.Handles | None = None,
        abort_on: _options.Handles | None = None,
        reraise: bool = False,
        on_retry_scheduled: Callable[[RetryScheduled], object] | None = None,
        on_retry: Callable[[RetryStarted], object] | None = None,
        on_retries_exceeded: Callable[[RetriesExceeded], object] | None = None,
        on_abort: Callable[[RetryAborted], object] | None = None,
        clock: Clock | None = None,
    ) -> None:
        if jitter and jitter_factor:
            raise ValueError("give jitter (seconds) or jitter_factor, not both")
        self._init(
            max_attempts=None if max_attempts is None else _options.count(max_attempts, "max_attempts"),
            max_duration=_options.optional_seconds(max_duration, "max_duration", positive=True),
            min_attempt_time=_options.seconds(min_attempt_time, "min_attempt_time"),
            delay=delay if isinstance(delay, (Backoff, RandomDelay)) else _options.seconds(delay, "delay"),
            jitter=_options.seconds(jitter, "jitter"),
            jitter_factor=_options.ratio(jitter_factor, "jitter_factor", allow_zero=True),
            pushback=_options.pushback(pushback),
            max_pushback=_options.seconds(max_pushback, "max_pushback"),
            handle=_options.handles(handle, "handle"),
            abort_on=_options.handles(abort_on, "abort_on"),
            reraise=bool(reraise),
            on_retry_scheduled=_options.listener(on_retry_scheduled, "on_retry_scheduled"),
            on_retry=_options.listener(on_retry, "on_retry"),
            on_retries_exceeded=_options.listener(on_retries_exceeded, "on_retries_exceeded"),
            on_abort=_options.listener(on_abort, "on_abort"),
            clock=_options.clock(clock),
        )

    def _scheduled_delay(self, attempt: int) -> float:
        schedule = self.delay
        if isinstance(schedule, float):
            base, maximum = schedule, None
        else:
            base, maximum = schedule.delay(attempt), schedule.maximum
        return jittered(base, factor=self.jitter_factor, absolute=self.jitter, maximum=maximum)

    def _next_delay(self, execution: Execution, failure: BaseException) -> float:
        """The delay before retrying ``failure``; raises what the caller should get when there is no retry."""
        execution.last_failure = failure
        attempt = execution.attempts
        if self.abort_on is not None and self.abort_on(failure):
            raise self._aborted(attempt, failure)
        if not (self.handle or execution.semantics.is_failure)(failure):
            raise failure
        if self.max_attempts is not None and attempt >= self.max_attempts:
            raise self._exceeded(attempt, failure)
        delay = _options.pushback_delay(self.pushback, failure, execution.semantics, self.max_pushback)
        if delay is None:
            delay = self._scheduled_delay(attempt)
        elif delay < 0:
            raise self._aborted(attempt, failure)
        resume = self.clock.now() + delay
        if self.max_duration is not None and resume - execution.start_time >= self.max_duration:
            raise self._exceeded(attempt, failure)
        if execution.deadline is not None and resume + self.min_attempt_time >= execution.deadline:
            self._report_exceeded(attempt, failure)
            raise TimeoutExceededError(
                f"no time left to retry: the next attempt would start {delay:g}s from now, "
                f"{resume - execution.deadline:g}s past the deadline"
            ) from failure
        if self.on_retry_scheduled is not None:
            _options.emit(self.on_retry_scheduled, RetryScheduled(attempt, delay, failure))
        return delay

    def _start_attempt(self, execution: Execution) -> None:
        execution.attempts += 1
        execution.attempt_start_time = self.clock.now()
        if self.on_retry is not None:
            assert execution.last_failure is not None
            _options.emit(self.on_retry, RetryStarted(execution.attempts, execution.last_failure))

    def _aborted(self, attempt: int, failure: BaseException) -> BaseException:
        if self.on_abort is not None:
            _options.emit(self.on_abort, RetryAborted(attempt, failure))
        return failure

    def _report_exceeded(self, attempt: int, failure: BaseException) -> None:
        if self.on_retries_exceeded is not None:
            _options.emit(self.on_retries_exceeded, RetriesExceeded(attempt, failure))

    def _exceeded(self, attempt: int, failure: BaseException) -> BaseException:
        self._report_exceeded(attempt, failure)
        if self.reraise:
            return failure
        error = RetriesExceededError(attempt, failure)
        error.__cause__ = failure
        return error

    def wrap(self, inner: Link) -> Link:
        sleep = self.clock.sleep

        def run(execution: Execution) -> Any:
            while True:
                try:
                    return inner(execution)
                except Exception as failure:
                    delay = self._next_delay(execution, failure)
                sleep(delay)
                self._start_attempt(execution)

        return run

    def wrap_async(self, inner: AsyncLink) -> AsyncLink:
        sleep = self.clock.asleep

        async def run(execution: Execution) -> Any:
            while True:
                try:
                    return await inner(execution)
                except Exception as failure:
                    delay = self._next_delay(execution, failure)
                await sleep(delay)
                self._start_attempt(execution)

        return run
