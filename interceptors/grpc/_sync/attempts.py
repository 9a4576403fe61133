"""How a sync call's attempts are sent and waited for: blocking (cancellable or not), as grpc futures, or awaited on
the background loop."""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
from collections.abc import Callable
from typing import Any

import grpc

from ...engine._execution import LATE_REPORT, Execution
from ...engine._workers import Workers
from .._core import Route, Router, StatusError, attempt_metadata, attempt_timeout, cancelled_error, rpc_error, sent
from .._grpc_shapes import cancel_blocking, hand_calls_to
from .ended import DEADLINE_PASSED, SYNC, ended_call

Send = Callable[[Execution], Any]
"""Sends the execution's current attempt (its own timeout and metadata); returns what grpc gives back for it."""


def via_continuation(
    router: Router,
    continuation: Any,
    details: Any,
    request: Any,
    requests: Callable[[Execution], Any] | None = None,
) -> Send:
    """Attempts through an interceptor's continuation: the caller's details with each attempt's timeout and
    metadata; each sends ``request``, or what ``requests`` gives for the attempt."""
    method, metadata, credentials = details.method, details.metadata, details.credentials
    wait_for_ready, compression = getattr(details, "wait_for_ready", None), getattr(details, "compression", None)

    def send(execution: Execution) -> Any:
        timeout, attempt = attempt_timeout(execution), attempt_metadata(metadata, execution, router)
        details = _CallDetails(method, timeout, attempt, credentials, wait_for_ready, compression)
        return continuation(details, request if requests is None else requests(execution))

    return send


def current_request(execution: Execution) -> Any:
    """The request of a server stream's attempt: the caller's, or the one that resumes the stream."""
    return execution.request


def directly(invoke: Any, request: Any, metadata: Any, options: dict[str, Any], router: Router | None = None) -> Send:
    """Attempts through grpc's own ``with_call`` or ``future``, with each attempt's timeout and metadata and the
    caller's other ``options``."""

    def send(execution: Execution) -> Any:
        return invoke(
            request,
            timeout=attempt_timeout(execution),
            metadata=attempt_metadata(metadata, execution, router),
            **options,
        )

    return send


def run_blocking(route: Route, send: Send, request: Any, timeout: Any, alone: Send | None = None) -> Any:
    """A blocking call through the route's policies, in this thread: the last attempt's outcome or a fallback's
    answer (an ended call); raises the error the caller gets. ``send`` raises an attempt's failure (grpc's
    ``with_call`` does), except on a hedged route, whose attempts it sends as grpc futures, to be cancelled (see
    :func:`_hedged_attempt`), the caller's own by ``alone`` where there is one."""
    try:
        attempt = functools.partial(_hedged_attempt, futures=send, alone=alone) if route.hedged else send
        execution = route.execution(attempt, request, timeout)
        try:
            result = route.chain(execution)
            return result if execution.fallback is None else route.ended(execution, result, SYNC)
        finally:
            execution.release()  # what its attempts left behind, which their tracebacks would keep in a cycle
    except Exception as failure:
        raise rpc_error(failure, SYNC)  # noqa: B904  (its own cause is kept; the failure is its context)
    except asyncio.CancelledError:  # the incoming call was cancelled: no attempt after that
        raise cancelled_error(SYNC, "no more attempts were sent") from None


def _hedged_attempt(execution: Execution, futures: Send, alone: Send | None) -> Any:
    """An attempt of a hedged unary call. A hedge (``execution.deferred``) is a grpc future, whose end grpc reports.
    The caller's own, with ``alone``, is a blocking call that a hedge that wins can cancel (see
    :func:`.._grpc_shapes.cancellable_blocking`: the caller's thread waits for it as for any blocking call), answered
    as the finished call; without ``alone``, it is a grpc future too, which the caller waits for."""
    if execution.deferred or alone is None:
        return cancellable_attempt(execution, futures, succeeded, True)
    if execution.abandoned:  # cancelled before it was sent: it never will be
        raise asyncio.CancelledError
    outer = hand_calls_to(functools.partial(_handed, execution))
    try:
        return alone(execution)[1]  # (response, call): the call, finished, whose result() is the response
    except grpc.RpcError:
        if execution.abandoned:
            raise asyncio.CancelledError from None
        raise
    finally:
        hand_calls_to(outer)


def _handed(execution: Execution, call: Any) -> None:
    """The grpc call of a caller's own attempt, kept to be cancelled (by :data:`CANCELS`) when a hedge wins."""
    sent(execution, call, functools.partial(CANCELS.submit, functools.partial(cancel_blocking, call)))


def cancellable_attempt(execution: Execution, send: Send, outcome: Callable[[Any], Any], unary: bool) -> Any:
    """Send the execution's attempt, a grpc future, and wait for ``outcome(call)``; the call is kept on the execution
    (see :func:`sent`), so that cancelling the execution (its caller, or a hedge that won) cancels it. An attempt
    cancelled so raises asyncio.CancelledError: breakers count nothing, retries stop. A deferred attempt (see
    ``Execution.deferred``) returns at once, as a :class:`_Sent`. A ``unary`` call's end is waited for no longer
    than its deadline allows (see :func:`_expired`)."""
    if execution.abandoned:  # cancelled before this attempt was sent: it never will be
        raise asyncio.CancelledError
    call = _sent_future(execution, send(execution))
    if execution.deferred:
        return _Sent(execution, call, outcome)
    if unary and not _ended_by(call, execution.deadline, execution.clock):
        return _expired(execution, call)
    try:
        return _outcome_of(execution, call, outcome)
    finally:
        del call  # in a failure's traceback, this frame lets go of the call (see _outcome_of)


async def awaited_attempt(execution: Execution, send: Send, outcome: Callable[[Any], Any]) -> Any:
    """:func:`cancellable_attempt` on an event loop (the background loop of ``.future()`` calls): it waits for the
    grpc future's end without a thread, and cancelling the task cancels the attempt."""
    if execution.abandoned:
        raise asyncio.CancelledError
    call = _sent_future(execution, send(execution))
    expires = execution.deadline
    try:
        await _ended(call, None if expires is None else expires - execution.clock.now() + LATE_REPORT)
    except asyncio.CancelledError:
        CANCELS.submit(call.cancel)  # not on the loop, which grpc's cancel() may hold up
        raise
    if not call.done():
        return _expired(execution, call)
    try:
        return _outcome_of(execution, call, outcome)
    finally:
        del call  # in a failure's traceback, this frame lets go of the call (see _outcome_of)


CANCELS = Workers("interceptors-cancel", limit=2)
"""The threads that cancel sync attempts (grpc futures) for the threads and the loop that decide it: grpc's
``cancel()`` waits for the channel's lock, which its callback thread holds for tens of milliseconds in a busy
process, and a hedged call's winner must not wait on its losers."""


OFFLOADS = Workers("interceptors-offload", limit=4)
"""The threads that run the sync fallback functions of ``.future()`` calls, which may block, off the background
loop (see ``Execution.offload``): a slow one holds up no other call (at most four at once)."""


def offload(fn: Callable[[], Any]) -> asyncio.Future[Any]:
    """``fn()`` in one of :data:`OFFLOADS`, in a copy of the current context, as a future of the running loop."""
    loop, context = asyncio.get_running_loop(), contextvars.copy_context()
    done: asyncio.Future[Any] = loop.create_future()

    def job() -> None:
        try:
            result = context.run(fn)
        except BaseException as error:
            loop.call_soon_threadsafe(_fail, done, error)
        else:
            loop.call_soon_threadsafe(_answer, done, result)

    OFFLOADS.submit(job)
    return done


def _answer(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _sent_future(execution: Execution, call: Any) -> Any:
    """The grpc future ``call``, kept as the execution's attempt in flight (see :func:`sent`), cancelled by
    :data:`CANCELS`."""
    return sent(execution, call, functools.partial(CANCELS.submit, call.cancel))


def _ended(call: Any, timeout: float | None) -> asyncio.Future[None]:
    """A future of the running loop, done when the grpc future ``call`` is (told by grpc's callback thread), or
    after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    call.add_done_callback(lambda _: loop.call_soon_threadsafe(_resolve, waiter))
    if timeout is not None:
        timer = loop.call_later(max(timeout, 0.0), _resolve, waiter)
        waiter.add_done_callback(lambda _: timer.cancel())
    return waiter


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _ended_by(call: Any, expires: float | None, clock: Any) -> bool:
    """Wait for the grpc future ``call`` to end, no longer than :data:`LATE_REPORT` past ``expires``; whether it
    ended."""
    if expires is None:
        call.exception()
        return True
    try:
        call.exception(timeout=max(expires + LATE_REPORT - clock.now(), 0.0))
    except grpc.FutureTimeoutError:
        return call.done()  # type: ignore[no-any-return]
    except grpc.FutureCancelledError:
        pass
    return True


def _expired(execution: Execution, call: Any) -> Any:
    """An attempt whose deadline passed and whose end grpc did not report in time: ended now, as grpc ended it
    (its core did, at the deadline). grpc reports a future's end from one thread per channel, which a busy process
    (other threads, an event loop) can hold up far past the deadline; a caller's deadline must not wait on it."""
    if execution.abandoned:
        raise asyncio.CancelledError
    raise StatusError.of(DEADLINE_PASSED, SYNC)


def _outcome_of(execution: Execution, call: Any, outcome: Callable[[Any], Any]) -> Any:
    """``outcome(call)``; a failure of an attempt that was cancelled (abandoned) is asyncio.CancelledError.

    A grpc future is its own failure: raised, its traceback holds every frame it passes through, and one that
    still held the call would make a reference cycle (see ``Execution.release``): each lets go of it."""
    try:
        return outcome(call)
    except Exception:
        if execution.abandoned:
            raise asyncio.CancelledError from None
        raise
    finally:
        del call


class _Sent:
    """A deferred attempt (see ``Execution.deferred``): its grpc future, whose end grpc reports."""

    __slots__ = ("_call", "_execution", "_outcome", "expires")

    def __init__(self, execution: Execution, call: Any, outcome: Callable[[Any], Any]) -> None:
        self._execution, self._call, self._outcome = execution, call, outcome
        self.expires = execution.deadline  # grpc ends it by then: it went out with what was left of it

    def when_done(self, callback: Callable[[], object]) -> None:
        self._call.add_done_callback(lambda _: callback())

    def outcome(self) -> Any:
        if not self._call.done():
            return _expired(self._execution, self._call)
        return _outcome_of(self._execution, self._call, self._outcome)


def run_for_interceptor(route: Route, send: Send, request: Any, timeout: Any) -> Any:
    """A blocking call for an interceptor (see :func:`run_blocking`) whose attempts go through grpc's continuation
    (``send``), which hands failures back rather than raising them: hands grpc a finished call whether it failed or
    not."""
    try:
        attempt = send if route.hedged else lambda execution: succeeded(send(execution))
        return run_blocking(route, attempt, request, timeout)
    except Exception as error:
        return ended_call(error)


def succeeded(outcome: Any) -> Any:
    """``outcome`` if the attempt succeeded; else raises its failure.

    grpc hands failures back rather than raising them (grpc/grpc#25207): its own failed calls (futures whose
    ``exception()`` tells, waiting for them to end), and, as they were, errors an interceptor further down raised.
    Raised, a failure's traceback holds this frame: it keeps no reference to the failure (a cycle, see
    ``Execution.release``).
    """
    exception = getattr(outcome, "exception", None)
    failure = outcome if exception is None else exception()
    if not isinstance(failure, BaseException):
        return outcome
    try:
        raise failure
    finally:
        del exception, failure, outcome


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    """Call details for the continuation, shaped as grpc's own."""
