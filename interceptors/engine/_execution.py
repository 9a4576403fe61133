"""Per-call state shared by the policies of one execution, and the transport's rules for reading failures."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ._clock import Clock
from ._priority import PRIORITY, Priority

if TYPE_CHECKING:
    from ._events import CacheHit, FallbackExecuted
    from ._results import ResultFailure

__all__ = ["Deferred", "Execution", "Semantics", "settle"]

_log = logging.getLogger("interceptors")

Settle = Callable[["BaseException | None"], "BaseException | None"]
"""Told how a call ended (see ``Execution.settle``); returns None, or the failure the policies outside see instead."""


OVERDUE_SLACK = 0.005
"""Seconds before a deadline within which a failure counts as having come at it (the transport's timer and the
policies' clock do not tick together)."""


LATE_REPORT = 0.02
"""Seconds past an attempt's deadline a transport that ends attempts there is given to report the end; a sync
:class:`HedgePolicy` waits no longer for a deferred attempt (gRPC reports a future's end from one thread per
channel, which a busy process can hold up for longer: see :class:`Deferred`)."""


def overdue(deadline: float | None, now: float) -> bool:
    """Whether a failure at ``now`` came when ``deadline`` had passed: nothing answered in the time the call had."""
    return deadline is not None and now >= deadline - OVERDUE_SLACK


class Semantics:
    """How a transport's failures and responses look to the policies.

    Policies defer to it whenever their own option is left unset: which failures count (``handle=None``), what
    delay a server asked for (``pushback=True``), and what a fallback answers (``Fallback()``,
    ``Fallback(message=...)``). This base class describes plain Python calls; the gRPC adapters subclass it.
    """

    __slots__ = ()

    method: str | None = None
    """The name of what is called, for events (gRPC: ``/package.Service/Method``)."""

    concurrent_attempts = True
    """Whether attempts of one call may run side by side (a :class:`HedgePolicy` runs them one at a time if not:
    e.g. gRPC calls whose requests are streamed, replayed to one attempt at a time)."""

    cancellable_attempts = False
    """Whether an attempt in flight ends promptly when ``execution.cancel()`` is called (the transport sets
    ``on_cancel``): an async :class:`HedgePolicy` then runs the first attempt in the caller's task."""

    defers_attempts = False
    """Whether the transport's sync attempts can be deferred (see ``Execution.deferred``): a sync
    :class:`HedgePolicy` then races them from the caller's thread alone, with no thread per attempt."""

    unary = True
    """Whether a call is one request and one answer, which a :class:`CachePolicy` may keep (not gRPC's streams)."""

    enforces_deadline = False
    """Whether the transport itself ends each attempt at ``execution.deadline`` (gRPC sends it as the call's
    timeout); then an async Timeout need not set an alarm of its own."""

    def is_failure(self, failure: BaseException) -> bool:
        """Whether ``failure`` should be retried, counted by a breaker and answered by a fallback."""
        return isinstance(failure, Exception)

    def trips(self, failure: BaseException, overdue: bool = False) -> bool:
        """Whether ``failure`` says the dependency is unwell: what breakers and throttles count. ``overdue``: it
        came when the call's deadline had passed (see :func:`overdue`). Default: what :meth:`is_failure` says."""
        return self.is_failure(failure)

    def caller_error(self, failure: BaseException) -> BaseException:
        """``failure`` as the transport's callers see it (gRPC: a ``grpc.RpcError``), for fallback functions and
        events."""
        return failure

    def pushback(self, failure: BaseException) -> float | None:
        """Delay in seconds the other side asked for before the next try; negative means "do not retry"."""
        return None

    def default_response(self) -> Any:
        """What ``Fallback()`` answers."""
        return None

    def response_from_fields(self, fields: Mapping[str, Any]) -> Any:
        """What ``Fallback(message=fields)`` answers; raises ValueError when the fields do not fit."""
        return dict(fields)

    def check_response(self, response: object) -> None:
        """Raise TypeError when ``response`` cannot be the answer to a call (a fallback's, say)."""

    def request_key(self, request: Any) -> Hashable | None:
        """What tells ``request`` apart in a cache's key (with the method): plain calls, the request itself when it
        can be a key, else None (such calls are not cached)."""
        try:
            hash(request)
        except TypeError:
            return None
        return None if request is None else request

    def kept(self, answer: Any) -> tuple[Any, int]:
        """What a cache keeps of ``answer``, and its size in bytes: plain calls, the answer itself (Python's size)."""
        return answer, sys.getsizeof(answer)

    def from_kept(self, kept: Any) -> Any:
        """The answer a cache gives from what it kept (see :meth:`kept`)."""
        return kept

    def response_of(self, result: Any, execution: Execution) -> Any:
        """The answer an attempt of ``execution`` gave, as result predicates see it, from what the attempt returned
        (``result``). Plain calls: the result itself."""
        return result


PLAIN = Semantics()


def forget_frames(failure: BaseException) -> None:
    """Clear the local variables of the finished frames ``failure`` (and its causes and contexts) passed through in
    this library and in the transport it drives (:data:`INTERNAL_FRAMES`): frames that held the failure, or what
    holds it, made it a reference cycle. Its traceback still says where it came from, and a user's frames keep
    their locals. Frames still running (in any thread) are left as they are, and so, before Python 3.13, are those
    of generators and coroutines (clearing a suspended one closed it; 3.13 refuses, as it refuses a running one)."""
    internal = tuple(INTERNAL_FRAMES)
    seen: set[int] = set()
    chained = [failure]
    while chained and len(seen) < 16:
        error = chained.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        entry = error.__traceback__
        while entry is not None:
            code = entry.tb_frame.f_code
            if code.co_filename.startswith(internal) and (_CLEARS_SAFELY or not code.co_flags & _SUSPENDABLE):
                with contextlib.suppress(RuntimeError):  # running
                    entry.tb_frame.clear()
            entry = entry.tb_next
        chained.extend(linked for linked in (error.__cause__, error.__context__) if linked is not None)


INTERNAL_FRAMES = [os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep]
"""Where the frames :func:`forget_frames` clears live: this library, and the transport it drives (a transport adds
its own, as the gRPC adapter adds grpcio's)."""
_SUSPENDABLE = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR | inspect.CO_ITERABLE_COROUTINE
_CLEARS_SAFELY = sys.version_info >= (3, 13)  # frame.clear() raises RuntimeError for a suspended frame


def _over(execution: Execution) -> Any:
    raise asyncio.CancelledError  # released: the call is over, and makes no more attempts


class Execution:
    """State of one call through a chain of policies, visible to every policy and to the call itself.

    ``attempts`` counts attempts started (1 during the first); ``deadline`` is the absolute time (on ``clock``)
    by which the current attempt must finish, or None; ``last_failure`` is the most recent failure;
    ``fallback`` tells what answered in place of the attempts, if anything did: a Fallback (and in place of what), or
    a CachePolicy (see :class:`CacheHit`).

    Streams (an attempt that returns when it *commits*, and ends later) also use:

    - ``settle``: None for calls whose outcome is known when the attempt returns. Otherwise a list: policies that
      record an outcome or hold a place for the call's duration (breakers, bulkheads, limiters, throttles) append,
      when the attempt returns, a function that does so; the transport calls each once with how the call ended
      (None: success; an Exception: that failure; any other BaseException: cancelled, release without recording),
      innermost first (see :func:`settle`). A function returns None, or the failure the policies outside it see
      instead (a Timeout's, when its deadline passed).
    - ``deferred``: set (with ``settle``) on the attempts a sync :class:`HedgePolicy` races when every policy inside
      it serves deferred attempts (``Policy.serves_deferred``) and the transport can defer them
      (``Semantics.defers_attempts``): the attempt returns a :class:`Deferred` as soon as it is sent, and its
      outcome settles when it comes.
    - ``committed``: set by the transport when the call can no longer be retried (e.g. a stream sent more than it
      can replay); a RetryPolicy then raises the attempt's failure as it is.
    - ``resuming``: a failure that ended the call after it returned (a stream that failed after commit), set
      before running the chain again to resume it: the RetryPolicy treats it as the last attempt's failure (its
      classification, delay, attempt count and budget) before it starts the next attempt.

    ``unwanted`` is set when the answer the call ends with is one a policy's result predicate judged a failure (its
    retries ran out): policies outside that keep answers (a cache) do not keep it.

    ``priority`` is the call's :class:`~interceptors.Priority`: the ambient one when it started (see
    :func:`~interceptors.prioritized`), or what the transport sets (a channel's default); None: none said.

    ``offload``, where the transport sets it, runs a user's sync function that may block (a fallback function) off
    the event loop an async chain runs on, when that loop serves other callers (the sync adapter's background
    loop): ``await execution.offload(fn)``.

    Attempts that run at once (a :class:`HedgePolicy`'s) each get a :meth:`fork`; the one whose outcome the call
    takes is :meth:`adopt`-ed back. ``cancel()`` abandons an attempt: ``abandoned`` tells the transport to send
    nothing more, and ``on_cancel``, which the transport sets while an attempt is in flight, cancels it.
    """

    __slots__ = (
        "_fn",
        "abandoned",
        "attempt_start_time",
        "attempts",
        "clock",
        "committed",
        "deadline",
        "deferred",
        "fallback",
        "last_failure",
        "offload",
        "on_cancel",
        "priority",
        "request",
        "resuming",
        "semantics",
        "settle",
        "start_time",
        "unwanted",
    )
    abandoned: bool
    attempt_start_time: float
    attempts: int
    clock: Clock
    committed: bool
    deadline: float | None
    deferred: bool
    priority: Priority | None
    request: Any
    semantics: Semantics
    start_time: float

    def __init__(
        self,
        fn: Callable[[Execution], Any],
        clock: Clock,
        semantics: Semantics = PLAIN,
        request: Any = None,
        deadline: float | None = None,
    ) -> None:
        self._fn = fn
        self.clock = clock
        self.semantics = semantics
        self.request = request
        self.deadline = deadline
        self.start_time = self.attempt_start_time = clock.now()
        self.attempts = 1
        self.last_failure: BaseException | None = None
        self.fallback: FallbackExecuted | CacheHit | None = None
        self.unwanted: ResultFailure | None = None
        self.settle: list[Settle] | None = None
        self.committed = self.deferred = False
        self.resuming: BaseException | None = None
        self.abandoned = False
        self.on_cancel: Callable[[], object] | None = None
        self.offload: Callable[[Callable[[], Any]], Awaitable[Any]] | None = None
        self.priority = PRIORITY.get()

    def cancel(self) -> None:
        """Abandon this execution: no attempt is sent after this, and the one in flight is cancelled."""
        self.abandoned = True
        cancel = self.on_cancel
        if cancel is not None:
            cancel()

    def release(self) -> None:
        """Let go of what the attempts left behind (failures, a fallback's, how to cancel the last attempt): the call
        is over. A failure's traceback holds the frames that hold this execution, so kept here it would make a
        reference cycle that only the garbage collector frees (at any moment, in any thread, which grpc's objects do
        not bear well)."""
        if self.last_failure is not None:
            forget_frames(self.last_failure)  # frames that hold what holds it (the call's future, a bound method)
        self.last_failure = self.resuming = self.fallback = self.unwanted = None
        self.on_cancel = None
        self._fn = _over  # what made the attempts may hold what holds this execution

    def fork(self, attempts: int) -> Execution:
        """A copy of this execution for attempt number ``attempts`` running beside others: the same call (function,
        request, deadline, start), its own attempt state."""
        child = object.__new__(type(self))
        child._fn, child.clock, child.semantics, child.request = self._fn, self.clock, self.semantics, self.request
        child.deadline, child.start_time, child.attempt_start_time = self.deadline, self.start_time, self.clock.now()
        child.attempts, child.last_failure, child.fallback, child.resuming = attempts, None, None, None
        child.unwanted = None
        child.settle = None if self.settle is None else []
        child.committed = child.abandoned = child.deferred = False
        child.on_cancel, child.offload, child.priority = None, self.offload, self.priority
        return child

    def adopt(self, child: Execution) -> None:
        """Take the outcome of ``child`` (a :meth:`fork`) as this execution's: its fallback, failure, commitment,
        what settles it, and how to cancel it."""
        self.last_failure, self.fallback, self.committed = child.last_failure, child.fallback, child.committed
        self.unwanted = child.unwanted
        self.on_cancel = child.on_cancel
        if self.settle is not None and child.settle:
            self.settle.extend(child.settle)

    @staticmethod
    def cancelled(outcome: BaseException | None) -> bool:
        """Whether a ``settle`` outcome says the call was cancelled (not a success, not a failure)."""
        return outcome is not None and not isinstance(outcome, Exception)

    @property
    def elapsed(self) -> float:
        """Seconds since the execution started."""
        return self.clock.now() - self.start_time

    @property
    def remaining(self) -> float | None:
        """Seconds left before ``deadline`` (may be negative), or None without a deadline."""
        return None if self.deadline is None else self.deadline - self.clock.now()

    @property
    def is_retry(self) -> bool:
        return self.attempts > 1

    def __repr__(self) -> str:
        return (
            f"Execution(attempts={self.attempts}, elapsed={self.elapsed:.3f}, remaining={self.remaining}, "
            f"last_failure={self.last_failure!r})"
        )


class Deferred(Protocol):
    """An attempt sent and not yet ended (see ``Execution.deferred``): what a deferring transport's attempt returns."""

    expires: float | None
    """When the transport ends the attempt at the latest (its deadline, on the execution's clock), or None."""

    def when_done(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` once, from any thread, when the attempt has ended (at once if it has)."""

    def outcome(self) -> Any:
        """What the ended attempt answered; raises its failure. Asked before its end was reported (only when
        ``expires`` has passed by :data:`LATE_REPORT`), the transport takes it as ended by its deadline (its own end
        is then late news) and raises the failure of a deadline passed."""


def settle(callbacks: Sequence[Settle], outcome: BaseException | None) -> BaseException | None:
    """Tell the policies that admitted a call how it ended (see ``Execution.settle``), each once, innermost first;
    returns the outcome as the policies outside them see it. A function that raises is logged and passed over."""
    for callback in callbacks:
        try:
            replaced = callback(outcome)
        except Exception:
            _log.exception("a policy could not record the end of a call")
            continue
        if replaced is not None:
            outcome = replaced
    return outcome
