"""RetryPolicy: run the inner chain again after a failure it handles."""

from __future__ import annotations

from typing import Any

from . import _options as options
from ._budget import RetryBudget
from ._clock import Clock
from ._delays import Backoff, RandomDelay, jittered
from ._errors import CircuitOpenError, RejectedError, RetriesExceededError, TimeoutExceededError
from ._events import RetriesExceeded, RetryAborted, RetryScheduled, RetryStarted
from ._execution import Execution
from ._policy import AsyncLink, Link, Policy
from ._results import Judge, ResultFailure, ResultPredicate, judge, passed_over

__all__ = ["DEFAULT_DELAY", "DEFAULT_JITTER_FACTOR", "DEFAULT_MAX_ATTEMPTS", "DEFAULT_MAX_PUSHBACK", "RetryPolicy"]


DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_DELAY = Backoff(initial=0.1, maximum=5.0, multiplier=2.0)
DEFAULT_JITTER_FACTOR = 0.2
DEFAULT_MAX_PUSHBACK = 60.0


class RetryPolicy(Policy):
    """Retries failed attempts it handles, up to ``max_attempts`` attempts in all.

    By default the delay before retry ``n`` (1 for the first) is exponential backoff with jitter, in the spirit of
    gRPC's retry design (A6) and its connection backoff: ``d = min(0.1 * 2**(n-1), 5)`` seconds, drawn uniformly
    from ``[0.8 * d, min(1.2 * d, 5)]``, so clients that failed together do not retry together.

    The delay before the next attempt is, in order of precedence:

    1. for a rejection by an open :class:`CircuitBreaker`, the time until it lets a probe through, but only when
       that is no longer than the delay this policy would use anyway (``delay``'s for this attempt, before
       jitter; or, when the breaker's open time is a server's pushback and this policy honours pushback, up to
       ``max_pushback``). Otherwise (and for a breaker held open by hand) retrying stops at once and the
       rejection is raised (a fallback may answer it): a breaker is there to fail fast, not to park its callers.
       A half-open breaker whose trial calls are all in flight gets the delay of ``delay`` below.
    2. the server's pushback for the failure, capped at ``max_pushback``. A negative pushback means "do not
       retry": the failure is raised as is.
    3. ``delay``, moved by ``jitter`` seconds or ``jitter_factor`` of itself either way, never beyond the schedule's
       maximum; a :class:`Backoff` with a jitter of its own (``jitter_factor``, gRPC's formula; ``full_jitter``)
       draws it instead.

    A retry is not scheduled when its delay would reach ``max_duration`` after the first attempt (retries
    exceeded), or when it would leave less than ``min_attempt_time`` before the execution's deadline
    (:class:`TimeoutExceededError` now, chaining the last failure, rather than after waiting) — unless that delay
    is the server's pushback: a server that asks callers to stay away past the deadline has given the call its
    answer, so retries are exceeded (its status, with its pushback, is what the caller gets, at once; no deadline
    has passed). Failures ``handle``
    rejects and failures ``abort_on`` accepts are raised at once. When retries run out, raises
    :class:`RetriesExceededError` chaining the last failure, or with ``reraise=True`` the last failure itself.

    :param max_attempts: attempts in all, the first included (default 3); None: unlimited.
    :param max_duration: seconds after the first attempt's start past which no retry starts (default None).
    :param min_attempt_time: seconds an attempt must have before the deadline to be started (default 0). A
        deadline a server derived from its caller's may run a few milliseconds long, so an attempt squeezed into
        the last of it can outlive the caller.
    :param delay: seconds, :class:`Backoff` or :class:`RandomDelay` (default ``Backoff(0.1, 5.0)``).
    :param jitter: seconds to move each delay by, at most, either way (default 0; exclusive with ``jitter_factor``).
    :param jitter_factor: share of each delay to move it by, at most, either way (default 0.2; 0 when ``jitter``
        is given).
    :param pushback: True (default) reads the delay a server asked for the transport's way (gRPC:
        ``grpc-retry-pushback-ms``, RetryInfo, ``retry-after``); a function of the failure reads it your way
        (seconds, a timedelta, None for none, negative for "do not retry"); False ignores it.
    :param max_pushback: the longest pushback honoured, seconds (default 60).
    :param handle: which failures are retried (default: the transport's retryable failures).
    :param handle_result: a predicate of each attempt's answer (see :mod:`._results`): True retries it as a failure
        (a :class:`ResultFailure` in the events; the budget counts it). When no retry follows (attempts or time run
        out, the budget refuses, a stream can no longer be replayed), the caller gets that last answer.
    :param abort_on: failures that stop retrying at once (default None).
    :param budget: a :class:`RetryBudget` shared with the other retries of the client (default None: no limit
        across calls); a retry it refuses ends the call with the last attempt's failure, at once.
    :param reraise: raise the last failure itself rather than :class:`RetriesExceededError` (default False).
    :param on_retry_scheduled: hears :class:`RetryScheduled` when a retry is scheduled.
    :param on_retry: hears :class:`RetryStarted` when a retry starts.
    :param on_retries_exceeded: hears :class:`RetriesExceeded` when retries run out (also for lack of time).
    :param on_abort: hears :class:`RetryAborted` when ``abort_on``, a server's "do not retry" or an open breaker
        stops retrying.
    :param name: the policy's name in its events (default: its class's name, "RetryPolicy").
    :param clock: the clock for delays and deadlines (default the system clock).

    On streams (see ``Execution.committed`` and ``Execution.resuming``): no retry once the call has committed, and
    a stream resumed after a failure past its commit counts that failure as its attempt's, against the same
    ``max_attempts``, delays and ``budget``.
    """

    __slots__ = (
        "_judge",
        "abort_on",
        "budget",
        "clock",
        "delay",
        "handle",
        "handle_result",
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
    pushback: options.PushbackReader | bool
    max_pushback: float
    handle: options.FailurePredicate | None
    handle_result: ResultPredicate | None
    _judge: Judge | None
    abort_on: options.FailurePredicate | None
    budget: RetryBudget | None
    reraise: bool
    on_retry_scheduled: options.Listener[RetryScheduled] | None
    on_retry: options.Listener[RetryStarted] | None
    on_retries_exceeded: options.Listener[RetriesExceeded] | None
    on_abort: options.Listener[RetryAborted] | None

    def __init__(
        self,
        *,
        max_attempts: int | None = DEFAULT_MAX_ATTEMPTS,
        max_duration: options.Duration | None = None,
        min_attempt_time: options.Duration = 0.0,
        delay: options.Duration | Backoff | RandomDelay = DEFAULT_DELAY,
        jitter: options.Duration = 0.0,
        jitter_factor: float | None = None,
        pushback: options.PushbackReader | bool = True,
        max_pushback: options.Duration = DEFAULT_MAX_PUSHBACK,
        handle: options.Handles | None = None,
        handle_result: ResultPredicate | None = None,
        abort_on: options.Handles | None = None,
        budget: RetryBudget | None = None,
        reraise: bool = False,
        on_retry_scheduled: options.Listener[RetryScheduled] | None = None,
        on_retry: options.Listener[RetryStarted] | None = None,
        on_retries_exceeded: options.Listener[RetriesExceeded] | None = None,
        on_abort: options.Listener[RetryAborted] | None = None,
        clock: Clock | None = None,
        name: str | None = None,
    ) -> None:
        if jitter and jitter_factor:
            raise ValueError("give jitter (seconds) or jitter_factor, not both")
        if jitter_factor is None:
            jitter_factor = 0.0 if jitter else DEFAULT_JITTER_FACTOR
        self._init(
            name=options.policy_name(name, self),
            max_attempts=None if max_attempts is None else options.count(max_attempts, "max_attempts"),
            max_duration=options.optional_seconds(max_duration, "max_duration", positive=True),
            min_attempt_time=options.seconds(min_attempt_time, "min_attempt_time"),
            delay=delay if isinstance(delay, (Backoff, RandomDelay)) else options.seconds(delay, "delay"),
            jitter=options.seconds(jitter, "jitter"),
            jitter_factor=options.ratio(jitter_factor, "jitter_factor", allow_zero=True),
            pushback=options.pushback(pushback),
            max_pushback=options.seconds(max_pushback, "max_pushback"),
            handle=options.handles(handle, "handle"),
            abort_on=options.handles(abort_on, "abort_on"),
            budget=_budget(budget),
            reraise=options.flag(reraise, "reraise"),
            on_retry_scheduled=options.listener(on_retry_scheduled, "on_retry_scheduled"),
            on_retry=options.listener(on_retry, "on_retry"),
            on_retries_exceeded=options.listener(on_retries_exceeded, "on_retries_exceeded"),
            on_abort=options.listener(on_abort, "on_abort"),
            clock=options.clock(clock),
        )
        self._init(_judge=judge(handle_result, "handle_result", self.name), handle_result=handle_result)

    def _nominal_delay(self, attempt: int) -> float:
        """The schedule's delay after attempt ``attempt``, before jitter (a random delay's maximum)."""
        schedule = self.delay
        if isinstance(schedule, float):
            return schedule
        return schedule.delay(attempt) if isinstance(schedule, Backoff) else schedule.maximum

    def _scheduled_delay(self, attempt: int) -> float:
        schedule = self.delay
        if isinstance(schedule, float):
            base, maximum = schedule, None
        elif isinstance(schedule, Backoff) and (drawn := schedule.draw(attempt)) is not None:
            return drawn  # the backoff's own jitter
        else:
            base, maximum = schedule.delay(attempt), schedule.maximum
        return jittered(base, factor=self.jitter_factor, absolute=self.jitter, maximum=maximum)

    def _rejection_wait(self, attempt: int, rejection: RejectedError) -> float | None:
        """How long to wait for the policy that rejected attempt ``attempt``; None: stop retrying now."""
        remaining = rejection.remaining
        if remaining is None:
            if isinstance(rejection, CircuitOpenError):  # half-open, its trials in flight: they decide soon
                return self._scheduled_delay(attempt)
            return None  # a throttle or a full limiter: retrying at once would only add to the load
        allowance = self._nominal_delay(attempt)
        if isinstance(rejection, CircuitOpenError) and rejection.from_pushback and self.pushback is not False:
            allowance = max(allowance, self.max_pushback)
        return remaining if remaining <= allowance else None

    def _next_delay(self, execution: Execution, failure: BaseException) -> float:
        """The delay before retrying ``failure``; raises what the caller should get when there is no retry."""
        execution.last_failure = failure
        attempt = execution.attempts
        if self.abort_on is not None and self.abort_on(failure):
            raise self._aborted(execution, failure)
        if not isinstance(failure, ResultFailure) and not (self.handle or execution.semantics.is_failure)(failure):
            raise failure
        if self.budget is not None and not isinstance(failure, RejectedError):
            self.budget.record_outcome(failed=True)
        if execution.committed:  # e.g. a stream that sent more than it can replay: another attempt cannot be made
            raise failure
        if self.max_attempts is not None and attempt >= self.max_attempts:
            raise self._exceeded(execution, failure)
        pushed_back = False
        if isinstance(failure, RejectedError):
            delay = self._rejection_wait(attempt, failure)
            if delay is None:
                raise self._aborted(execution, failure)
        else:
            delay = options.pushback_delay(self.pushback, failure, execution.semantics, self.max_pushback)
            if delay is None:
                delay = self._scheduled_delay(attempt)
            elif delay < 0:
                raise self._aborted(execution, failure)
            else:
                pushed_back = True
        resume = self.clock.now() + delay
        if self.max_duration is not None and resume - execution.start_time >= self.max_duration:
            raise self._exceeded(execution, failure)
        if execution.deadline is not None and resume + self.min_attempt_time >= execution.deadline:
            if pushed_back:  # the server asked to be left alone past the deadline: its answer is the call's
                raise self._exceeded(execution, failure)
            self._report_exceeded(execution, failure)
            raise TimeoutExceededError(
                f"no time left to retry: the next attempt would start {delay:g}s from now, "
                f"{resume - execution.deadline:g}s past the deadline",
                last_failure=failure,
            ) from failure
        if self.budget is not None and not self.budget.try_retry(attempt, failure, execution.semantics.method):
            raise self._exceeded(execution, failure)
        if self.on_retry_scheduled is not None or self._observers:
            options.emit(
                self.on_retry_scheduled,
                RetryScheduled(attempt, delay, failure, self.name, execution.semantics.method),
                self._observers,
            )
        return delay

    def _retry_answer(self, execution: Execution, unwanted: ResultFailure) -> float | None:
        """The delay before retrying an answer judged a failure (the attempt passed over: see ``passed_over``), or
        None when there is no retry: the caller gets the answer."""
        try:
            delay = self._next_delay(execution, unwanted)
        except Exception:
            return None
        passed_over(execution)
        return delay

    def _start_attempt(self, execution: Execution) -> None:
        execution.attempts += 1
        execution.attempt_start_time = self.clock.now()
        if self.on_retry is not None or self._observers:
            assert execution.last_failure is not None
            options.emit(
                self.on_retry,
                RetryStarted(execution.attempts, execution.last_failure, self.name, execution.semantics.method),
                self._observers,
            )

    def _aborted(self, execution: Execution, failure: BaseException) -> BaseException:
        if self.on_abort is not None or self._observers:
            event = RetryAborted(execution.attempts, failure, self.name, execution.semantics.method)
            options.emit(self.on_abort, event, self._observers)
        return failure

    def _report_exceeded(self, execution: Execution, failure: BaseException) -> None:
        if self.on_retries_exceeded is not None or self._observers:
            event = RetriesExceeded(execution.attempts, failure, self.name, execution.semantics.method)
            options.emit(self.on_retries_exceeded, event, self._observers)

    def _exceeded(self, execution: Execution, failure: BaseException) -> BaseException:
        self._report_exceeded(execution, failure)
        attempt = execution.attempts
        if self.reraise:
            return failure
        error = RetriesExceededError(attempt, failure)
        error.__cause__ = failure
        return error

    def wrap(self, inner: Link) -> Link:
        sleep, budget, judged = self.clock.sleep, self.budget, self._judge

        def run(execution: Execution) -> Any:
            resuming = execution.resuming
            if resuming is not None:  # a stream that failed after commit, to be resumed: a retry of its attempt
                execution.resuming = None
                sleep(self._next_delay(execution, resuming))
                self._start_attempt(execution)
            elif budget is not None:
                budget.record_call()
            while True:
                try:
                    result = inner(execution)
                except Exception as failure:
                    delay = self._next_delay(execution, failure)
                else:
                    if judged is None or (unwanted := judged(execution, result)) is None:
                        if budget is not None:
                            budget.record_outcome(failed=False)
                        return result
                    retry = self._retry_answer(execution, unwanted)
                    if retry is None:
                        execution.unwanted = unwanted
                        return result
                    delay = retry
                sleep(delay)
                self._start_attempt(execution)

        return run

    def wrap_async(self, inner: AsyncLink) -> AsyncLink:
        sleep, budget, judged = self.clock.asleep, self.budget, self._judge

        async def run(execution: Execution) -> Any:
            resuming = execution.resuming
            if resuming is not None:  # a stream that failed after commit, to be resumed: a retry of its attempt
                execution.resuming = None
                await sleep(self._next_delay(execution, resuming))
                self._start_attempt(execution)
            elif budget is not None:
                budget.record_call()
            while True:
                try:
                    result = await inner(execution)
                except Exception as failure:
                    delay = self._next_delay(execution, failure)
                else:
                    if judged is None or (unwanted := judged(execution, result)) is None:
                        if budget is not None:
                            budget.record_outcome(failed=False)
                        return result
                    retry = self._retry_answer(execution, unwanted)
                    if retry is None:
                        execution.unwanted = unwanted
                        return result
                    delay = retry
                await sleep(delay)
                self._start_attempt(execution)

        return run


def _budget(value: object) -> RetryBudget | None:
    if value is not None and not isinstance(value, RetryBudget):
        raise ValueError(f"budget must be a RetryBudget, got {options.shown(value)}")
    return value
