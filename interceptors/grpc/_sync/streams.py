"""A sync call with streamed responses: its policies run until an attempt commits, then it reads that attempt."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from ...engine._execution import Execution
from ...engine._workers import FUTURES
from .._core import CallExecution, EndedCall, Route, StatusError, rpc_error
from .._streams import Committed, Replay, resumes, settle, settled
from .attempts import Send
from .calls import ResilientFuture
from .ended import LOCALLY_CANCELLED, SYNC, AnsweredCall


class ResilientStream(ResilientFuture):
    """A call with streamed responses (server-streaming or bidi), as grpc's own: its iterator, grpc.Call and
    grpc.Future.

    Its policies run in a worker thread until an attempt commits: when its first response message arrives (kept
    to be read first), or it ends. Reads then come straight from that attempt's grpc call. A failure after commit
    ends the stream, unless the route's :class:`StreamResume` gives a request that resumes it: the policies then
    run again, in the reading thread, as a retry of the failed attempt.
    """

    _unary = False

    def __init__(self, route: Route, send: Send, request: Any, timeout: Any, replay: Replay | None = None) -> None:
        self._replay, self._route, self._request = replay, route, request
        self._resume = route.resume if replay is None else None
        self._delivered: list[Any] | None = None if self._resume is None else []
        self._messages: Iterator[Any] | None = None
        super().__init__(route, send, request, timeout)

    def _background(self, route: Route, execution: CallExecution) -> None:
        context = contextvars.copy_context()  # the caller's context variables (e.g. a tracing span) go along
        FUTURES.submit(lambda: context.run(self._run, route, execution))

    def _attempt_function(self, awaits: bool) -> Callable[[Execution], Any]:
        """The attempt, through a weak reference: the stream keeps its execution (to resume it), and a stream its
        caller lets go of must be collected at once, to be cancelled."""
        attempt = weakref.WeakMethod(self._attempt)

        def weakly(execution: Execution) -> Any:
            bound = attempt()
            if bound is None:
                raise asyncio.CancelledError
            return bound(execution)

        return weakly

    def _prepare(self, execution: Execution) -> None:
        execution.settle = []

    def _outcome(self, call: Any) -> Any:
        try:
            first: list[Any] = [next(call)]
        except StopIteration:
            first = []
        if self._replay is not None:
            self._replay.commit()
            if self._execution is not None:
                self._execution.committed = True  # its requests are no longer kept to send again
        return _Peeked(call, first)

    def _conclude(self, route: Route, execution: CallExecution) -> Any:
        with settled(execution, lambda: execution.call, _settle_when_done):
            return super()._conclude(route, execution)

    def __iter__(self) -> ResilientStream:
        return self

    def __next__(self) -> Any:
        while True:
            messages = self._messages
            if messages is None:
                messages = self._messages = self._opened()
            try:
                message = next(messages)
            except grpc.RpcError as failure:
                self._resumed(failure)
                continue
            delivered = self._delivered
            if delivered is not None:
                delivered.append(message)
            return message

    def _opened(self) -> Iterator[Any]:
        """The messages of the call the policies ended with: a committed attempt's, a fallback's answer, or none
        (raises the failure)."""
        try:
            ended = self._final()
        except grpc.FutureCancelledError:
            raise StatusError.of(LOCALLY_CANCELLED, SYNC) from None
        if isinstance(ended, AnsweredCall):
            return iter(ended.result())
        if isinstance(ended, EndedCall):
            raise ended.exception()  # type: ignore[misc]
        return iter(ended)

    def _resumed(self, failure: grpc.RpcError) -> None:
        """After ``failure`` ended the committed attempt: run the policies again with the request that resumes
        the stream; raises ``failure`` when there is none (or the call was cancelled), or what ends the retry."""
        execution, committed = self._execution, self._messages
        answered = self._resume is not None and isinstance(self._final(), EndedCall)  # a fallback's, not a stream
        if not resumes(execution, self._resume, self._delivered, answered, self._request, failure):
            raise failure
        assert execution is not None
        try:
            ended = self._conclude(self._route, execution)
        except asyncio.CancelledError:
            raise failure from None
        except Exception as error:
            raise rpc_error(error, SYNC) from None
        if execution.fallback is not None:  # messages were delivered: a fallback's cannot follow them
            raise failure
        self._ended = concurrent.futures.Future()
        self._ended.set_result(ended)
        if self._messages is committed:
            self._messages = iter(ended)

    def cancel(self) -> bool:
        if super().cancel():
            return True
        execution = self._execution  # committed: cancel the attempt being read
        if execution is None or self._ended.cancelled() or not self._ended.done():
            return False
        execution.abandoned = True
        return bool(execution.call is not None and execution.call.cancel())

    def done(self) -> bool:
        return self._ended.done() and (self._ended.cancelled() or self._final().done())

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # a stream its caller let go of is cancelled, as grpc's own
            if not self.done():
                self.cancel()

    def running(self) -> bool:
        return not self.done()

    def is_active(self) -> bool:
        return not self.done()

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        self._ended.add_done_callback(lambda ended: self._when_ended(ended, lambda: fn(self)))

    def add_callback(self, callback: Callable[[], None]) -> bool:
        if self.done():
            return False
        self._ended.add_done_callback(lambda ended: self._when_ended(ended, callback))
        return True

    @staticmethod
    def _when_ended(ended: concurrent.futures.Future[Any], callback: Callable[[], None]) -> None:
        if ended.cancelled():
            callback()
        else:
            ended.result().add_done_callback(lambda _: callback())


class _Peeked(Committed):
    """A committed attempt's grpc call, its first message read ahead: that message first, then the call's."""

    __slots__ = ()

    def __init__(self, call: Any, first: list[Any]) -> None:
        self._call, self._first = call, first

    def __iter__(self) -> _Peeked:
        return self

    def __next__(self) -> Any:
        return self._first.pop() if self._first else next(self._call)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


def _settle_when_done(call: Any, callbacks: Any) -> None:
    """Tell ``callbacks`` (see ``Execution.settle``) how the committed stream ``call`` ends, once it has."""

    def ended(done: Any) -> None:
        settle(
            callbacks,
            asyncio.CancelledError() if done.cancelled() else None if done.code() is grpc.StatusCode.OK else done,
        )

    call.add_done_callback(ended)
