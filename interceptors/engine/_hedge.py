"""HedgePolicy: when an attempt is slow to answer, start another beside it; the first answer wins."""

from __future__ import annotations

import _thread
import asyncio
import contextvars
import functools
import math
import queue
import sys
import threading
from collections import deque
from typing import Any

from . import _options as options
from ._budget import RetryBudget
from ._clock import Clock
from ._events import HedgeCancelled, HedgeStarted, HedgeWon
from ._execution import LATE_REPORT, Deferred, Execution, Semantics, forget_frames, settle
from ._policy import AsyncLink, Link, Policy
from ._results import Judge, ResultPredicate, judge, passed_over
from ._timers import TIMERS, Timer
from ._workers import Inbox, Workers

__all__ = ["HedgePolicy", "LatencyQuantile"]

HEDGES = Workers("interceptors-hedge")
"""The threads sync hedged attempts that cannot be deferred run in (a stream's, until it commits)."""
STARTERS = Workers("interceptors-hedge-start", limit=4)
"""The threads that start sync hedges when their timer goes off: a start runs the policies inside the HedgePolicy
(a bulkhead may wait for a place, listeners hear it) and the transport's send, which must not hold up the timer."""


METHODS_KEPT = 1000
"""Methods whose latencies a :class:`LatencyQuantile` keeps at most."""


class LatencyQuantile:
    """A hedging delay that follows the method: the ``quantile`` of the latencies of its last ``window`` successful
    attempts (failsafe-go's ``WithDelayQuantile``). Until ``min_samples`` have been seen, calls are not hedged. The
    delay is never below ``minimum`` seconds. Latencies are kept per method name (``Semantics.method``), for at
    most :data:`METHODS_KEPT` methods: past that, the method seen first is forgotten first.

    :param quantile: in (0, 1), e.g. 0.95 hedges the slowest 5 % of calls.
    :param window: how many recent latencies to keep (default 1000).
    :param min_samples: latencies needed before hedging starts (default 100, at most ``window``).
    :param minimum: the shortest delay, seconds (default 0).
    """

    __slots__ = ("_lock", "_windows", "min_samples", "minimum", "quantile", "window")
    quantile: float
    window: int
    min_samples: int
    minimum: float

    def __init__(
        self, quantile: float, *, window: int = 1000, min_samples: int = 100, minimum: options.Duration = 0.0
    ) -> None:
        self.quantile = options.number(quantile, "LatencyQuantile quantile", 0, 1, above=True, below=True)
        self.window = options.count(window, "LatencyQuantile window", minimum=1, maximum=options.MAX_CALLS)
        self.min_samples = options.count(min_samples, "LatencyQuantile min_samples", maximum=self.window)
        self.minimum = options.seconds(minimum, "LatencyQuantile minimum")
        self._lock = threading.Lock()
        self._windows: dict[str | None, _Window] = {}

    def delay(self, semantics: Semantics) -> float | None:
        """The hedging delay for calls of ``semantics``' method now; None until enough latencies were seen."""
        window = self._windows.get(semantics.method)
        if window is None or window.current is None:
            return None
        return max(window.current, self.minimum)

    def record(self, semantics: Semantics, latency: float) -> None:
        """A successful attempt of ``semantics``' method took ``latency`` seconds."""
        window = self._windows.get(semantics.method)
        if window is None:
            with self._lock:
                window = self._windows.get(semantics.method)
                if window is None:
                    if len(self._windows) >= METHODS_KEPT:
                        del self._windows[next(iter(self._windows))]
                    window = self._windows[semantics.method] = _Window(self)
        window.add(latency)

    def __repr__(self) -> str:
        return (
            f"LatencyQuantile({self.quantile:g}, window={self.window}, min_samples={self.min_samples}, "
            f"minimum={self.minimum:g})"
        )


class _Window:
    """The latest latencies of one method, and their quantile, recomputed every twentieth of the window."""

    __slots__ = ("_every", "_latencies", "_lock", "_quantile", "_since", "current", "min_samples")

    def __init__(self, config: LatencyQuantile) -> None:
        self._latencies: deque[float] = deque(maxlen=config.window)
        self._quantile, self.min_samples = config.quantile, config.min_samples
        self._every = max(config.window // 20, 1)
        self._since = 0
        self._lock = threading.Lock()
        self.current: float | None = None

    def add(self, latency: float) -> None:
        with self._lock:
            self._latencies.append(latency)
            self._since += 1
            if (self._since < self._every and self.current is not None) or len(self._latencies) < self.min_samples:
                return
            self._since = 0
            ordered = sorted(self._latencies)
        self.current = ordered[max(math.ceil(self._quantile * len(ordered)) - 1, 0)]


class HedgePolicy(Policy):
    """Starts the call; when no attempt has answered after ``delay``, starts another beside it, up to
    ``max_attempts`` in all, one ``delay`` apart (gRPC's hedging, gRFC A6). The first answer wins and every other
    attempt is cancelled at once.

    A failure the policy deems non-fatal (``non_fatal``; by default the transport's retryable failures) lets the
    other attempts go on and starts the next one at once; a server's pushback delays it instead (by that many
    seconds, capped at ``max_pushback``; later hedges follow ``delay`` apart), or, when it says "do not retry",
    stops hedging. Any other failure ends the call at once with that failure, as does the last attempt's when
    no attempt is left running and no more may start. Hedges draw on ``budget`` as retries do: when it refuses one,
    hedging stops and the attempts in flight finish the call. No hedge starts past the execution's deadline.

    Each attempt is an attempt of the inner policies (a breaker admits it, a Timeout inside bounds it) and carries its
    number (``execution.attempts``; gRPC sends ``grpc-previous-rpc-attempts``). Async: the caller's task runs the first
    attempt when the transport can cancel it (``Semantics.cancellable_attempts``, as gRPC's adapters), hedges run in
    tasks of their own. Sync: the caller's thread starts every attempt and waits for their outcomes; where every policy
    inside serves deferred attempts (``Policy.serves_deferred``) and the transport defers them
    (``Semantics.defers_attempts``: gRPC's unary attempts, sent as grpc futures), no thread is started for them,
    otherwise (a RetryPolicy or Fallback inside the HedgePolicy) each runs in a worker thread. Calls whose transport
    cannot run attempts side by side (``Semantics.concurrent_attempts``: gRPC calls that stream requests) are not
    hedged. Hedge only calls that are safe to make twice.

    :param delay: seconds between attempts (0: all at once), or a :class:`LatencyQuantile`.
    :param max_attempts: attempts in all, the first included (>= 2; default 2).
    :param non_fatal: failures that let the other attempts go on (default: the transport's retryable ones).
    :param non_fatal_result: a predicate of an attempt's answer (see :mod:`._results`): True makes it a non-fatal
        failure, so the other attempts go on and the next starts at once. When no attempt is left and none may
        start, the caller gets the last such answer.
    :param pushback: as for :class:`RetryPolicy` (default True: read the transport's).
    :param max_pushback: the longest pushback honoured, seconds (default 60).
    :param budget: a :class:`RetryBudget` each hedge draws on (default None).
    :param on_hedge: hears :class:`HedgeStarted` when a hedge starts.
    :param on_hedge_won: hears :class:`HedgeWon` when an attempt of a call that was hedged answers first.
    :param on_hedge_cancelled: hears :class:`HedgeCancelled` for each attempt cancelled because the call ended.
    :param name: the policy's name in its events (default: its class's name, "HedgePolicy").
    :param clock: the clock delays and latencies are read on (default the system clock). Waits for an answer
        are real time.
    """

    __slots__ = (
        "_judge",
        "budget",
        "clock",
        "delay",
        "max_attempts",
        "max_pushback",
        "non_fatal",
        "non_fatal_result",
        "on_hedge",
        "on_hedge_cancelled",
        "on_hedge_won",
        "pushback",
    )
    clock: Clock
    delay: float | LatencyQuantile
    max_attempts: int
    non_fatal: options.FailurePredicate | None
    non_fatal_result: ResultPredicate | None
    _judge: Judge | None
    pushback: options.PushbackReader | bool
    max_pushback: float
    budget: RetryBudget | None
    on_hedge: options.Listener[HedgeStarted] | None
    on_hedge_won: options.Listener[HedgeWon] | None
    on_hedge_cancelled: options.Listener[HedgeCancelled] | None

    def __init__(
        self,
        *,
        delay: options.Duration | LatencyQuantile,
        max_attempts: int = 2,
        non_fatal: options.Handles | None = None,
        non_fatal_result: ResultPredicate | None = None,
        pushback: options.PushbackReader | bool = True,
        max_pushback: options.Duration = 60.0,
        budget: RetryBudget | None = None,
        on_hedge: options.Listener[HedgeStarted] | None = None,
        on_hedge_won: options.Listener[HedgeWon] | None = None,
        on_hedge_cancelled: options.Listener[HedgeCancelled] | None = None,
        clock: Clock | None = None,
        name: str | None = None,
    ) -> None:
        if budget is not None and not isinstance(budget, RetryBudget):
            raise ValueError(f"budget must be a RetryBudget, got {options.shown(budget)}")
        self._init(
            name=options.policy_name(name, self),
            delay=delay if isinstance(delay, LatencyQuantile) else options.seconds(delay, "delay"),
            max_attempts=options.count(max_attempts, "max_attempts", minimum=2),
            non_fatal=options.handles(non_fatal, "non_fatal"),
            pushback=options.pushback(pushback),
            max_pushback=options.seconds(max_pushback, "max_pushback"),
            budget=budget,
            on_hedge=options.listener(on_hedge, "on_hedge"),
            on_hedge_won=options.listener(on_hedge_won, "on_hedge_won"),
            on_hedge_cancelled=options.listener(on_hedge_cancelled, "on_hedge_cancelled"),
            clock=options.clock(clock),
        )
        self._init(non_fatal_result=non_fatal_result, _judge=judge(non_fatal_result, "non_fatal_result", self.name))

    def inherit(self, old: Policy) -> None:
        """Keep the latencies ``old``'s :class:`LatencyQuantile` delay has seen, when this one's is one alike."""
        mine, theirs = self.delay, getattr(old, "delay", None)
        if isinstance(mine, LatencyQuantile) and isinstance(theirs, LatencyQuantile) and repr(mine) == repr(theirs):
            self._init(delay=theirs)

    def _delay(self, semantics: Semantics) -> float | None:
        delay = self.delay
        return delay if type(delay) is float else delay.delay(semantics)  # type: ignore[union-attr]

    def _record(self, execution: Execution) -> None:
        """Keep the latency of the attempt that answered, for a :class:`LatencyQuantile` delay."""
        delay = self.delay
        if isinstance(delay, LatencyQuantile):
            delay.record(execution.semantics, self.clock.now() - execution.attempt_start_time)

    def wrap(self, inner: Link) -> Link:
        return self.wrap_over(inner, False)

    def wrap_over(self, inner: Link, deferrable: bool) -> Link:
        def run(execution: Execution) -> Any:
            if not execution.semantics.concurrent_attempts:
                return inner(execution)
            delay = self.delay if type(self.delay) is float else self._delay(execution.semantics)  # a call less
            if delay is None:  # a latency quantile not yet known: one attempt, timed
                result = inner(execution)
                self._record(execution)
                return result
            race = _SyncRace(self, execution, delay, inner, deferrable)
            try:
                return race.run()
            finally:
                race.forget()

        return run

    def wrap_async(self, inner: AsyncLink) -> AsyncLink:
        async def run(execution: Execution) -> Any:
            if not execution.semantics.concurrent_attempts:
                return await inner(execution)
            delay = self.delay if type(self.delay) is float else self._delay(execution.semantics)  # a call less
            if delay is None:
                result = await inner(execution)
                self._record(execution)
                return result
            race = _AsyncRace(self, execution, delay, inner)
            try:
                return await race.run()
            finally:
                race.forget()

        return run


Outcome = tuple[Execution, Any, "BaseException | None"]
"""An attempt's execution, and what it returned or raised."""


class _Race:
    """The attempts of one hedged call: which run, when the next may start, and what an outcome means.

    The caller runs the first attempt itself where it can (``inline``): a call answered in time then costs little
    more than a plain one. Hedges due meanwhile are started by a timer; an outcome of theirs that ends the call is
    kept in ``decided``, and the first attempt is cancelled. Otherwise, and once the first attempt is done, the
    caller waits for the outcomes of attempts running elsewhere.
    """

    __slots__ = (
        "_brought_by",
        "_delay",
        "_ended",
        "_forgotten",
        "_last",
        "_next_at",
        "_policy",
        "_started",
        "_stopped",
        "decided",
        "execution",
        "inline",
        "lock",
        "over",
        "running",
    )

    def __init__(self, policy: HedgePolicy, execution: Execution, delay: float) -> None:
        self._policy, self.execution, self._delay = policy, execution, delay
        self.lock = _thread.RLock()  # threading.RLock() is a Python call more
        self.running: list[Execution] = []
        self._ended: list[Outcome] = []  # the outcomes taken, forgotten when the race is over
        self._forgotten = False
        self.over = False
        self._started = 0
        self._stopped = False  # no more hedges: the server said so, the budget refused one
        self._last: Outcome | None = None  # the latest non-fatal failure
        self._next_at = policy.clock.now() + delay
        self._brought_by: BaseException | None = None  # the failure that brought the next hedge forward
        self.inline: Execution | None = None  # the attempt the caller runs itself, while it does
        self.decided: Outcome | None = None  # an outcome that ended the call while the caller ran the first attempt
        if policy.budget is not None:
            policy.budget.record_call()

    def launch(self) -> Execution:
        """The execution of the next attempt, counted as running."""
        execution = self.execution
        with self.lock:
            child = execution.fork(execution.attempts + self._started)
            self._started += 1
            if self.over:  # the call was cancelled meanwhile: nothing is sent for this one
                child.abandoned = True
            else:
                self.running.append(child)
        return child

    def until_hedge(self) -> float | None:
        """Seconds until the next hedge is due (0: now), or None when no more will start."""
        if self._stopped or self._started >= self._policy.max_attempts:
            return None
        return max(self._next_at - self._policy.clock.now(), 0.0)

    def hedge(self) -> Execution | None:
        """The execution of a hedge now due, or None when it may not start (then no other will)."""
        if self.until_hedge() is None:
            return None
        policy, execution = self._policy, self.execution
        now = policy.clock.now()
        budget = policy.budget
        if (execution.deadline is not None and now >= execution.deadline) or (
            budget is not None
            and not budget.try_retry(self._started, execution.last_failure, execution.semantics.method)
        ):
            self._stopped = True
            return None
        self._next_at, brought_by, self._brought_by = now + self._delay, self._brought_by, None
        child = self.launch()
        if policy.on_hedge is not None or policy._observers:
            in_flight, method = len(self.running) - 1, execution.semantics.method
            event = HedgeStarted(child.attempts, execution.elapsed, in_flight, brought_by, policy.name, method)
            options.emit(policy.on_hedge, event, policy._observers)
        return child

    def ended(self, outcome: Outcome) -> bool:
        """Take an attempt's outcome. True: the call ends with it (an answer, or a failure to raise); False: wait
        on."""
        child, result, failure = outcome
        with self.lock:
            self.running.remove(child)
            self._ended.append((child, None, failure))
        policy, execution = self._policy, self.execution
        budget = policy.budget
        if failure is None and policy._judge is not None and (unwanted := policy._judge(child, result)) is not None:
            execution.last_failure = child.unwanted = unwanted  # the call's, if it ends with this answer
            if budget is not None:
                budget.record_outcome(failed=True)
            self._pass_over_last(outcome)
            self._next_at, self._brought_by = policy.clock.now(), unwanted  # the next hedge at once
            return not self.running and self.until_hedge() is None
        if failure is None:
            if budget is not None:
                budget.record_outcome(failed=False)
            if type(policy.delay) is not float:
                policy._record(child)
            if self._started > 1 and (policy.on_hedge_won is not None or policy._observers):
                options.emit(
                    policy.on_hedge_won,
                    HedgeWon(child.attempts, self._started, policy.name, execution.semantics.method),
                    policy._observers,
                )
            return True
        if not isinstance(failure, Exception) or not (policy.non_fatal or execution.semantics.is_failure)(failure):
            return True  # fatal (or cancelled): the call ends with it
        execution.last_failure = failure
        self._pass_over_last((child, None, failure))
        if budget is not None:
            budget.record_outcome(failed=True)
        asked = options.pushback_delay(policy.pushback, failure, execution.semantics, policy.max_pushback)
        if asked is not None and asked < 0:
            self._stopped = True
        else:
            self._next_at = policy.clock.now() + (asked or 0.0)  # the next hedge at once, or when the server said
            self._brought_by = failure
        return not self.running and self.until_hedge() is None

    def _pass_over_last(self, outcome: Outcome) -> None:
        """``outcome`` is now the latest non-fatal one, the call's if no other attempt answers; the one before it
        will not be: an answer judged a failure there is passed over (see ``passed_over``)."""
        with self.lock:
            last, self._last = self._last, outcome
        if last is not None and last[2] is None:
            passed_over(last[0])

    def hedge_due(self) -> Outcome | None:
        """Start the hedge now due; when it may not start and no attempt is left running, the last failure to end
        the call with."""
        child = self.hedge()
        if child is not None:
            self._start(child)
            return None
        with self.lock:
            return None if self.running else self._last

    def _start(self, child: Execution) -> None:
        raise NotImplementedError

    def forget(self) -> None:
        """The race is over (the call's execution has adopted the winner's outcome): let go of what it kept, and
        forget each attempt whose outcome it took (see :func:`forget_attempt`); one that ends later is forgotten
        then (see :meth:`discarded`)."""
        with self.lock:
            self._forgotten = True
            last = self._last  # still kept: the race ended without finishing (its caller was cancelled)
            self.decided = self._last = self._brought_by = None
            ended, self._ended = self._ended, []
        if last is not None and last[2] is None:
            discard(*last)  # an answer judged a failure that nobody takes: its stream cancelled, its places given back
        for outcome in ended:
            forget_attempt(*outcome)

    def discarded(self, outcome: Outcome) -> None:
        """An outcome no caller takes (see :func:`discard`), forgotten with the race, or now if the race is."""
        discard(*outcome)
        with self.lock:
            if not self._forgotten:
                self._ended.append(outcome)
                return
        forget_attempt(*outcome)

    def elsewhere(self, outcome: Outcome) -> bool:
        """Take the outcome of an attempt that ended while the caller runs the first one (under ``lock``); True
        when it ends the call: it is kept in ``decided``, and the first attempt must be cancelled."""
        if self.decided is not None:
            self.discarded(outcome)
            return False
        if not self.ended(outcome):
            return False
        self.decided = outcome
        return True

    def settled(self, first: Outcome) -> Outcome | None:
        """After the caller's own first attempt: the outcome the call ends with (one decided meanwhile, else the
        first attempt's if it ends the call), or None to wait on for the other attempts."""
        with self.lock:
            self.inline = None
            decided = self.decided
            if decided is None and self.ended(first):
                decided = first
        if decided is not None and decided is not first:
            self.discarded(first)
        return decided

    def finish(self, winner: Execution | None) -> list[Execution]:
        """End the race with ``winner``'s outcome (None: the call was cancelled): the execution adopts it; returns
        the attempts still running, marked abandoned (their outcomes are discarded, see :func:`discard`)."""
        if winner is not None:
            self.execution.adopt(winner)
        with self.lock:
            self.over = True
            losers, self.running = self.running, []
            last, self._last = self._last, None
        if last is not None and last[2] is None and last[0] is not winner:  # an answer judged a failure, not taken
            passed_over(last[0])
        policy = self._policy
        listen = policy.on_hedge_cancelled
        for loser in losers:
            loser.abandoned = True
            if winner is not None and (listen is not None or policy._observers):
                options.emit(
                    listen,
                    HedgeCancelled(loser.attempts, policy.name, self.execution.semantics.method),
                    policy._observers,
                )
        return losers


def forget_attempt(execution: Execution, result: Any, failure: BaseException | None) -> None:
    """An attempt whose outcome a race took, once the race is over: its execution released, and its failure's
    frames cleared (see ``forget_frames``): the race's frames hold it, and a grpc call would otherwise wait for the
    garbage collector."""
    if failure is not None:
        forget_frames(failure)
    execution.release()


def discard(execution: Execution, result: Any, failure: BaseException | None) -> None:
    """An abandoned attempt's outcome, which no caller takes: a stream it committed is cancelled, and the policies
    that wait for its end (``execution.settle``) learn that it was cancelled."""
    if failure is not None:
        return
    cancel = execution.on_cancel
    if cancel is not None:
        cancel()
    settle(execution.settle or (), asyncio.CancelledError())


def _answer(outcome: Outcome) -> Any:
    if outcome[2] is not None:
        raise outcome[2]
    return outcome[1]


_CANCELLED = object()


class _SyncRace(_Race):
    """A race run by the caller's thread.

    Where every policy inside the HedgePolicy serves deferred attempts and the transport defers them
    (``Semantics.defers_attempts``), the caller runs the first attempt itself, not deferred (gRPC: a call its thread
    waits for as for a blocking one, which can still be cancelled), and the hedges are deferred attempts, started
    when due by one of :data:`STARTERS`, which the one timer thread wakes, in the caller's context: they return as
    soon as they are sent (a policy inside that waits for a place holds its starter meanwhile), and their ends come
    through the transport's callbacks. So hedging starts no thread per call, and a call answered in time costs a
    timer more than a plain one. An outcome of a hedge that
    ends the call while the caller runs its attempt cancels that attempt. Where attempts cannot be deferred, each
    runs in a worker thread, and the caller waits for their outcomes.
    """

    __slots__ = ("_context", "_deferring", "_inner", "_outcomes", "_sent", "_timers")

    def __init__(self, policy: HedgePolicy, execution: Execution, delay: float, inner: Link, deferrable: bool) -> None:
        super().__init__(policy, execution, delay)
        self._inner = inner
        self._deferring = deferrable and execution.semantics.defers_attempts
        self._outcomes: Inbox[Any] = Inbox()
        self._sent: dict[Execution, Deferred] = {}  # the deferred attempts whose end has not been taken yet
        self._timers: list[Timer] = []
        self._context = contextvars.copy_context()  # the caller's, for the hedges started for it

    def run(self) -> Any:
        self.execution.on_cancel = self._cancelled  # cancelling the call cancels every attempt
        if self._deferring:
            first = self.inline = self.launch()
            self._arm(self._delay)
            try:
                own: Outcome = (first, self._inner(first), None)
            except BaseException as failure:
                own = (first, None, failure)
            decided = self.settled(own)  # no timer is armed after this
            with self.lock:
                for timer in self._timers:
                    timer.callback = None  # cancelled, a call less
            if decided is not None:
                return self._end(decided)
        else:
            self._start(self.launch())
        while True:
            try:
                outcome = self._outcomes.get(timeout=self._wait())
            except queue.Empty:
                outcome = self._expired()
                if outcome is None:
                    if (last := self.hedge_due()) is not None:
                        return self._end(last)
                    continue
            if outcome is _CANCELLED or self.over:  # every attempt has been cancelled (see _cancelled)
                for child in self.finish(None):
                    self._release(child)
                raise asyncio.CancelledError
            if len(outcome) == 2:  # a deferred attempt ended: what it answered, as the policies inside see it
                with self.lock:
                    taken = self._sent.pop(outcome[0], None)
                if taken is None:
                    continue  # taken already, when its report was late
                outcome = _settled(*outcome)
            if self.ended(outcome):
                return self._end(outcome)

    def _wait(self) -> float | None:
        """Seconds to wait for an outcome: until the next hedge, and no longer than a deferred attempt's report of
        its end may be late (see :data:`LATE_REPORT`)."""
        wait = self.until_hedge()
        with self.lock:
            expiries = [sent.expires for sent in self._sent.values() if sent.expires is not None]
        if expiries:
            late = max(min(expiries) + LATE_REPORT - self._policy.clock.now(), 0.0)
            wait = late if wait is None else min(wait, late)
        return wait

    def _expired(self) -> Outcome | None:
        """The outcome of a deferred attempt past its deadline whose end was not reported in time (the transport
        takes it as ended by its deadline), or None."""
        now = self._policy.clock.now()
        with self.lock:
            for child, sent in self._sent.items():
                if sent.expires is not None and now >= sent.expires + LATE_REPORT:
                    del self._sent[child]
                    break
            else:
                return None
        return _settled(child, sent)

    def _end(self, outcome: Outcome) -> Any:
        cancelled = self.over  # the call was: every attempt has been (see _cancelled)
        for loser in self.finish(outcome[0]):
            if not cancelled:
                loser.cancel()
            self._release(loser)
        return _answer(outcome)

    def _arm(self, seconds: float) -> None:
        with self.lock:
            self._timers.append(TIMERS.after(seconds, self._went_off))

    def _went_off(self) -> None:
        """A timer went off (in the timer thread): a starter runs :meth:`_due` in the caller's context."""
        STARTERS.submit(functools.partial(self._context.copy().run, self._due))

    def _due(self) -> None:
        """A hedge may be due while the caller runs the first attempt (in a starter thread): start it now."""
        with self.lock:
            if self.inline is None or self.decided is not None or self.over:
                return
            wait = self.until_hedge()
            if wait is None:
                return
            if wait > 0:  # moved later by a pushback
                self._arm(wait)
                return
            child = self.hedge()
        if child is None:
            return
        self._start(child)
        with self.lock:
            wait = self.until_hedge()
            if wait is not None and self.inline is not None and self.decided is None:
                self._arm(wait)

    def _start(self, child: Execution) -> None:
        if child.abandoned:
            return  # the call was cancelled meanwhile
        if not self._deferring:
            context = contextvars.copy_context()  # each attempt sees the caller's context variables
            HEDGES.submit(lambda: context.run(self._attempt, child))
            return
        child.deferred, child.settle = True, []
        try:
            sent = self._inner(child)
        except BaseException as failure:  # refused before it was sent (an open breaker, no time left, ...)
            if child.settle:  # sent, then failed by a policy outside the transport: it goes no further
                child.cancel()
                failure = settle(child.settle, failure) or failure
                child.settle = []
            self._took((child, None, failure))
            return
        with self.lock:
            if child not in self.running:  # the race ended as it was sent: released, or released now
                self._release(child)
                return
            self._sent[child] = sent
        sent.when_done(functools.partial(self._came, child, sent))  # in the transport's thread: no more

    def _came(self, child: Execution, sent: Deferred) -> None:
        """A deferred hedge ended (in the transport's thread): the caller takes its outcome, or, while it runs the
        first attempt, it is taken now."""
        with self.lock:
            if self.inline is None or self._sent.pop(child, None) is None:
                self._outcomes.put((child, sent))
                return
            self._took(_settled(child, sent))

    def _took(self, outcome: Outcome) -> None:
        """An outcome of an attempt started elsewhere: the caller's to take, or, while it runs the first attempt,
        one that may end the call (the first attempt is then cancelled) or bring the next hedge forward."""
        with self.lock:
            inline = self.inline
            if inline is None or self.over:
                self._outcomes.put(outcome)
                return
            if not self.elsewhere(outcome):
                if self.decided is None:  # a non-fatal failure: the next hedge at once, or after the pushback
                    wait = self.until_hedge()
                    if wait is not None:
                        self._arm(wait)
                return
        inline.cancel()  # the transport ends the caller's attempt (its call is cancelled)

    def _attempt(self, child: Execution) -> None:
        """An attempt that cannot be deferred, in a worker thread."""
        try:
            outcome: Outcome = (child, self._inner(child), None)
        except BaseException as failure:
            outcome = (child, None, failure)
        with self.lock:
            if not self.over:
                self._outcomes.put(outcome)
                return
        self.discarded(outcome)

    def _cancelled(self) -> None:
        with self.lock:
            self.over = True
            running = list(self.running)
        for child in running:
            child.cancel()
        self._outcomes.put(_CANCELLED)

    def _release(self, child: Execution) -> None:
        """An attempt the race no longer waits for, cancelled: a deferred one's policies learn of it now (a worker's
        when its attempt returns: see :func:`discard`)."""
        with self.lock:
            if child.deferred:
                settle(child.settle or (), asyncio.CancelledError())
                child.settle = []


def _settled(child: Execution, sent: Deferred) -> Outcome:
    """The outcome of a deferred attempt that ended, once the policies inside the race have settled it."""
    try:
        result, failure = sent.outcome(), None
    except BaseException as error:
        result, failure = None, error
    failure = settle(child.settle or (), failure)
    child.settle = []
    return (child, result, None) if failure is None else (child, None, failure)


class _AsyncRace(_Race):
    """A race run by a task: the first attempt in it (if the transport can cancel it), the others in tasks of
    their own; a loop timer starts the hedges due while the caller's task is busy."""

    __slots__ = ("_inner", "_tasks", "_timer")

    def __init__(self, policy: HedgePolicy, execution: Execution, delay: float, inner: AsyncLink) -> None:
        super().__init__(policy, execution, delay)
        self._inner = inner
        self._tasks: dict[asyncio.Future[Any], Execution] = {}
        self._timer: asyncio.TimerHandle | None = None

    async def run(self) -> Any:
        tasks = self._tasks
        try:
            if self.execution.semantics.cancellable_attempts:
                first = self.inline = self.launch()
                self._timer = asyncio.get_running_loop().call_later(self._delay, self._due)
                try:
                    outcome: Outcome = (first, await self._inner(first), None)
                except asyncio.CancelledError as cancelled:
                    if not first.abandoned or self.decided is None or _cancelling():  # the caller's own
                        raise
                    outcome = (first, None, cancelled)
                except BaseException as failure:
                    outcome = (first, None, failure)
                finally:
                    if self._timer is not None:
                        self._timer.cancel()
                decided = self.settled(outcome)
                if decided is not None:
                    return self._end(decided)
            else:
                self._start(self.launch())
            while True:
                wait = self.until_hedge()
                if tasks:
                    done, _ = await asyncio.wait(tasks, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                else:  # the last attempt failed and the next one is held back by a pushback
                    await self._policy.clock.asleep(wait or 0.0)
                    done = set()
                if not done:
                    if (last := self.hedge_due()) is not None:
                        return self._end(last)
                    continue
                for task in done:
                    outcome = _task_outcome(tasks.pop(task), task)
                    if self.ended(outcome):
                        return self._end(outcome)
        finally:
            self.inline = None
            self.over = True
            if self._timer is not None:
                self._timer.cancel()
            for task, child in tasks.items():
                task.cancel()
                task.add_done_callback(functools.partial(self._discard_task, child))

    def _end(self, outcome: Outcome) -> Any:
        for loser in self.finish(outcome[0]):
            loser.cancel()  # now, not when its task next runs: the caller may hold the loop after this returns
        return _answer(outcome)

    def _due(self) -> None:
        """The loop's timer went off while the caller runs the first attempt: start the hedge now due."""
        if self.inline is None or self.decided is not None:
            return
        wait = self.until_hedge()
        if wait is None:
            return
        if wait == 0:
            child = self.hedge()
            if child is None:
                return
            self._start(child)
            wait = self.until_hedge()
        if wait is not None:
            self._timer = asyncio.get_running_loop().call_later(wait, self._due)

    def _start(self, child: Execution) -> None:
        task = asyncio.ensure_future(self._inner(child))
        self._tasks[task] = child
        if self.inline is not None:
            task.add_done_callback(self._ended_elsewhere)

    def _discard_task(self, child: Execution, task: asyncio.Future[Any]) -> None:
        if not task.cancelled():
            self.discarded(_task_outcome(child, task))

    def _ended_elsewhere(self, task: asyncio.Future[Any]) -> None:
        """An attempt ended while the caller runs the first one."""
        inline, child = self.inline, self._tasks.get(task)
        if inline is None or child is None:
            return  # the caller waits for it now, or the race is over
        del self._tasks[task]
        if self.elsewhere(_task_outcome(child, task)):
            inline.cancel()  # the transport ends the caller's attempt (its call is cancelled)
        elif self.decided is None:
            if self._timer is not None:
                self._timer.cancel()
            self._due()  # a non-fatal failure: the next hedge at once, or after the pushback


def _cancelling() -> bool:
    """Whether the current task has been asked to stop (Python 3.11+; earlier ones cannot tell)."""
    task = asyncio.current_task()
    return sys.version_info >= (3, 11) and task is not None and task.cancelling() > 0


def _task_outcome(child: Execution, task: asyncio.Future[Any]) -> Outcome:
    if task.cancelled():
        return child, None, asyncio.CancelledError()
    failure = task.exception()
    return child, None if failure is not None else task.result(), failure
