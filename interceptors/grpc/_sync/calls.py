"""A sync unary call that ``.future()`` returns, its policies run on the background loop or in the caller's thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc

from ...engine._execution import Execution
from ...engine._loop import BACKGROUND, Spawned
from .._core import CallExecution, Route, rpc_error, time_left
from .attempts import Send, awaited_attempt, cancellable_attempt, offload, succeeded
from .ended import SYNC, ended_call

if TYPE_CHECKING:  # generic in typeshed only
    _Future = grpc.Future[Any]
else:
    _Future = grpc.Future


class ResilientFuture(grpc.Call, _Future):
    """What ``.future()`` returns: its policies run as a task of the background loop (or, ``inline``, in this thread
    before the constructor returns), each attempt a grpc future that ``cancel()`` cancels, as does the
    cancellation of the incoming call it is made for; then it stands for the call that ended it."""

    _spawned: Spawned | None = None

    def __init__(self, route: Route, send: Send, request: Any, timeout: Any, inline: bool = False) -> None:
        self._send = send
        self._ended: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._execution: CallExecution | None = None
        self._clock, self._deadline = route.executor.clock, None
        background = not inline and self._unary
        try:
            execution = route.execution(self._attempt_function(background), request, timeout, awaits=background)
        except Exception as error:
            self._ended.set_result(ended_call(rpc_error(error, SYNC)))
            return
        self._execution, self._deadline = execution, execution.deadline
        self._cancel_with_incoming(execution)
        self._prepare(execution)
        if inline:
            self._run(route, execution)
        else:
            self._background(route, execution)

    _unary = True
    """A unary response: its policies run on the background loop, its attempts end with the answer (a stream's run
    in a worker thread, its attempts end at their first message: see :class:`ResilientStream`)."""

    def _background(self, route: Route, execution: CallExecution) -> None:
        """Run the policies while the caller goes on, in a copy of the caller's context (e.g. a tracing span)."""
        execution.offload = offload
        self._spawned = BACKGROUND.spawn(lambda: self._arun(route, execution), contextvars.copy_context())

    async def _arun(self, route: Route, execution: CallExecution) -> None:
        try:
            ended = route.ended(execution, await route.executor.arun_execution(execution), SYNC)
        except asyncio.CancelledError:
            return  # cancel() has already ended the future
        except Exception as failure:
            ended = ended_call(rpc_error(failure, SYNC))
        finally:
            execution.release()  # a unary call is over (see Execution.release)
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled meanwhile
            self._ended.set_result(ended)
        del ended  # it may be the failure, whose traceback holds this frame

    def _cancel_with_incoming(self, execution: CallExecution) -> None:
        """Be cancelled with the incoming call the execution is made for, until the call (a stream: its last
        message) ends."""
        if execution.incoming is not None:
            forget = execution.incoming.on_cancel(self.cancel)
            self.add_done_callback(lambda _: forget())

    def _attempt_function(self, awaits: bool) -> Callable[[Execution], Any]:
        return self._aattempt if awaits else self._attempt

    def _prepare(self, execution: Execution) -> None:
        """Make ready what the policies will run (nothing, for a unary call)."""

    def _conclude(self, route: Route, execution: CallExecution) -> Any:
        """Run the policies: what the call ended with (raises the failure)."""
        return route.ended(execution, route.executor.run_execution(execution), SYNC)

    def _outcome(self, call: Any) -> Any:
        """The attempt ``call`` when it has succeeded; raises its failure (see :func:`succeeded`), holding it no
        more."""
        try:
            return succeeded(call)
        finally:
            del call

    def _run(self, route: Route, execution: CallExecution) -> None:
        try:
            ended = self._conclude(route, execution)
        except asyncio.CancelledError:
            return  # cancel() has already ended the future
        except Exception as failure:
            ended = ended_call(rpc_error(failure, SYNC))
        finally:
            if self._unary:  # a stream's execution lives on with its committed attempt (to cancel, to resume)
                execution.release()
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled meanwhile
            self._ended.set_result(ended)
        del ended  # it may be the failure, whose traceback holds this frame

    def _attempt(self, execution: Execution) -> Any:
        return cancellable_attempt(execution, self._send, self._outcome, self._unary)

    def _aattempt(self, execution: Execution) -> Any:
        return awaited_attempt(execution, self._send, self._outcome)

    def cancel(self) -> bool:
        if self._ended.done():
            return False
        execution = self._execution
        if execution is not None:
            execution.cancel()  # the attempt in flight (every one, when hedged), and no more
        if self._spawned is not None:
            self._spawned.cancel()  # a backoff or a wait in progress
        return self._ended.cancel()

    def _final(self, timeout: float | None = None) -> Any:
        try:
            return self._ended.result(timeout)
        except concurrent.futures.CancelledError:
            raise grpc.FutureCancelledError() from None
        except concurrent.futures.TimeoutError:
            raise grpc.FutureTimeoutError() from None

    def result(self, timeout: float | None = None) -> Any:
        return self._final(timeout).result()

    def exception(self, timeout: float | None = None) -> Exception | None:
        error: Exception | None = self._final(timeout).exception()
        return error

    def traceback(self, timeout: float | None = None) -> TracebackType | None:
        error = self.exception(timeout)
        return None if error is None else error.__traceback__

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        self._ended.add_done_callback(lambda _: fn(self))

    def cancelled(self) -> bool:
        return self._ended.cancelled()

    def running(self) -> bool:
        return not self._ended.done()

    def done(self) -> bool:
        return self._ended.done()

    def is_active(self) -> bool:
        return not self._ended.done()

    def time_remaining(self) -> float | None:  # type: ignore[override]
        return time_left(self._deadline, self._clock)

    def add_callback(self, callback: Callable[[], None]) -> bool:
        if self._ended.done():
            return False
        self._ended.add_done_callback(lambda _: callback())
        return True

    def initial_metadata(self) -> Any:
        return self._final().initial_metadata()

    def trailing_metadata(self) -> Any:
        return self._final().trailing_metadata()

    def code(self) -> grpc.StatusCode:
        if self._ended.cancelled():
            return grpc.StatusCode.CANCELLED
        code: grpc.StatusCode = self._final().code()
        return code

    def details(self) -> str:
        if self._ended.cancelled():
            return "Locally cancelled by application!"
        details: str = self._final().details()
        return details
