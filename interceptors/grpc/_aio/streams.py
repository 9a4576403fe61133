"""An aio call with streamed responses: its policies run until an attempt commits, then it reads that attempt."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import grpc
from grpc.aio import AioRpcError, Metadata

from ...engine._execution import Execution
from .._core import CallExecution, Route, Router, attempt_timeout, rpc_error, sent
from .._grpc_shapes import WrittenByGrpc, at_once
from .._incoming import INCOMING
from .._streams import AsyncReplay, Committed, Replay, resumes, settle, settled
from .attempts import attempt_details, run_policies
from .calls import ResilientCall
from .ended import AIO, OK, AnsweredCall

_SETTLING: set[asyncio.Task[None]] = set()


def _settle_when_done(call: Any, callbacks: Any) -> None:
    """Tell ``callbacks`` (see ``Execution.settle``) how the committed stream ``call`` ends, once it has."""

    def ended(done: Any) -> None:
        if done.cancelled():
            settle(callbacks, asyncio.CancelledError())
            return
        task = asyncio.ensure_future(_settle_final_status(done, callbacks))
        _SETTLING.add(task)  # keep a reference until it has run
        task.add_done_callback(_SETTLING.discard)

    call.add_done_callback(ended)


async def _settle_final_status(call: Any, callbacks: Any) -> None:
    code = await call.code()  # the call is done: this returns at once
    if code is OK:
        settle(callbacks, None)
    else:
        settle(callbacks, AioRpcError(code, Metadata(), await call.trailing_metadata(), await call.details()))


class ResilientStream(WrittenByGrpc, ResilientCall, grpc.aio.UnaryStreamCall, grpc.aio.StreamStreamCall):  # type: ignore[type-arg]
    """A call with streamed responses (server-streaming or bidi).

    Its policies run in a task of their own until an attempt commits: when its first response message arrives
    (kept to be read first), or it ends. Reads then come straight from that attempt's grpc call. A failure after
    commit ends the stream, unless the route's :class:`StreamResume` gives a request that resumes it: the policies
    then run again, in the reading task, as a retry of the failed attempt. Cancelling the call, or the task that
    reads it, cancels the attempt in flight and every later one.
    """

    def __init__(
        self,
        router: Router,
        route: Route,
        continuation: Any,
        details: Any,
        request: Any,
        replay: Replay | AsyncReplay | None,
    ) -> None:
        self._router, self._continuation, self._details, self._replay = router, continuation, details, replay
        self._resume = route.resume if replay is None else None
        self._delivered: list[Any] | None = None if self._resume is None else []
        self._source: Any = None
        self._latest: Any = None  # the call a resumed stream reads
        self._failure: BaseException | None = None  # what ended a resumed stream
        self._execution: CallExecution | None = None
        super().__init__(route, self._send, request, details.timeout)
        incoming = INCOMING.get()
        if incoming is not None:  # cancelled with the incoming call it is made for, until its last message
            forget = incoming.on_cancel(self.cancel)
            self.add_done_callback(lambda _: forget())

    async def _send(self, execution: Execution) -> Any:
        details = attempt_details(self._details, attempt_timeout(execution), execution, self._router)
        replay = self._replay
        requests = execution.request if replay is None else replay.attempt(execution)
        call = sent(execution, await self._continuation(details, requests))
        witness = None if replay is None else StatusWitness(call)
        try:
            first = await call.read()
        except asyncio.CancelledError:
            call.cancel()
            raise
        except AioRpcError as failure:
            raise (failure if witness is None else witness.failure(failure)) from None
        if replay is not None:
            replay.commit()
            execution.committed = True  # its requests are no longer kept to send again
        return _Committed(call, [] if first is grpc.aio.EOF else [first], witness)

    async def _policies(self) -> Any:
        try:
            execution = self._route.execution(self._attempt, self._request, self._timeout)
        except Exception as failure:
            raise rpc_error(failure, AIO)  # noqa: B904
        execution.settle = []
        self._execution = execution
        return await self._conclude(execution)

    async def _conclude(self, execution: CallExecution) -> Any:
        with settled(execution, lambda: execution.call, _settle_when_done):
            return await run_policies(self._route, execution)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Any]:
        try:
            while (message := await self.read()) is not grpc.aio.EOF:
                yield message
        finally:
            self.cancel()  # the caller stopped reading (a finished call is not cancelled)

    async def read(self) -> Any:
        while True:
            source = self._source
            if source is None:
                self._source = await self._opened()
                continue
            try:
                message = await source.read()
            except AioRpcError as failure:
                await self._resumed(failure)
                continue
            except asyncio.CancelledError:
                self.cancel()
                raise
            if message is grpc.aio.EOF:
                return message
            break
        delivered = self._delivered
        if delivered is not None:
            delivered.append(message)
        return message

    async def _opened(self) -> Any:
        """What to read: the committed attempt's call, or a fallback's answer (raises the call's failure)."""
        self._start()
        try:
            ended = await asyncio.shield(self._outcome)
        except asyncio.CancelledError:
            if not self._outcome.cancelled():  # the reading task's own cancellation: the call's too
                self.cancel()
            raise  # a cancelled call raises CancelledError when read, as grpc.aio's own
        return _Answer(ended._response) if isinstance(ended, AnsweredCall) else ended

    async def _resumed(self, failure: AioRpcError) -> None:
        """After ``failure`` ended the committed attempt: run the policies again with the request that resumes
        the stream; raises ``failure`` when there is none (or the call was cancelled), or what ends the retry."""
        execution = self._execution
        if getattr(self._source, "witness", None) is not None:  # a bidi stream: its status as the server gave it
            self._failure = failure
        answered = self._source is None or isinstance(self._source, _Answer)  # a fallback's, not a stream
        if not resumes(execution, self._resume, self._delivered, answered, self._request, failure):
            raise failure
        assert execution is not None
        try:
            ended = await self._conclude(execution)
        except Exception as error:
            self._failure = rpc_error(error, AIO)
            raise self._failure from None
        if execution.fallback is not None:  # messages were delivered: a fallback's cannot follow them
            self._failure = failure
            raise failure
        self._source = self._latest = ended

    def cancel(self) -> bool:
        if not self._outcome.done():
            return super().cancel()
        in_flight = None if self._execution is None else self._execution.call
        return bool(in_flight is not None and not in_flight.done() and in_flight.cancel())

    def cancelled(self) -> bool:
        if self._outcome.cancelled():
            return True
        in_flight = None if self._execution is None else self._execution.call
        return bool(self._outcome.done() and in_flight is not None and in_flight.cancelled())

    def done(self) -> bool:
        if not self._outcome.done():
            return False
        if self._outcome.cancelled() or self._outcome.exception() is not None:
            return True
        current = self._latest or self._outcome.result()
        return bool(current.done())

    def add_done_callback(self, callback: Any) -> None:
        self._start()

        def ended(outcome: asyncio.Future[Any]) -> None:
            if outcome.cancelled() or outcome.exception() is not None:
                callback(self)
            else:
                outcome.result().add_done_callback(lambda _: callback(self))

        self._outcome.add_done_callback(ended)

    async def _end(self) -> Any:
        end = await super()._end()
        if self._failure is not None:
            return self._failure
        return end if self._latest is None or isinstance(end, AioRpcError) else self._latest


class _Committed(Committed):
    """A committed attempt's grpc call, its first message read ahead: that message first, then the call's, each
    failure with the status the server gave it (see :class:`StatusWitness`)."""

    __slots__ = ("witness",)

    def __init__(self, call: Any, first: list[Any], witness: StatusWitness | None) -> None:
        self._call, self._first, self.witness = call, first, witness

    async def read(self) -> Any:
        if self._first:
            return self._first.pop()
        try:
            return await self._call.read()
        except AioRpcError as failure:
            raise (failure if self.witness is None else self.witness.failure(failure)) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


class StatusWitness:
    """The first status grpc.aio gives a call that streams requests.

    When a server ends such a call while the client is still writing, grpc.aio may report INTERNAL "Internal
    error from Core" (``Failed "execute_batch"``) in place of the status the server sent (grpc/grpc#36066): the
    failed write overwrites it. The server's status is set first, and the call's done callbacks see it.
    """

    __slots__ = ("_status",)

    def __init__(self, call: Any) -> None:
        self._status: AioRpcError | None = None
        call.add_done_callback(self._ended)

    def _ended(self, call: Any) -> None:
        if self._status is not None or call.cancelled():
            return
        code, details = at_once(call.code()), at_once(call.details())
        initial, trailing = at_once(call.initial_metadata()), at_once(call.trailing_metadata())
        if isinstance(code, grpc.StatusCode):
            self._status = AioRpcError(code, initial or Metadata(), trailing or Metadata(), details)

    def failure(self, failure: AioRpcError) -> AioRpcError:
        """``failure``, or the status the server gave the call when ``failure`` is grpc's overwritten one."""
        status = self._status
        overwritten = failure.code() is grpc.StatusCode.INTERNAL and "execute_batch" in (
            failure.debug_error_string() or ""
        )
        return status if overwritten and status is not None and status.code() is not failure.code() else failure


class _Answer:
    """A fallback's answer to a streaming call, read as a call's messages (its iterable may be async)."""

    def __init__(self, messages: Any) -> None:
        self._messages = aiter(messages) if isinstance(messages, AsyncIterable) else iter(messages)

    async def read(self) -> Any:
        messages = self._messages
        try:
            return await anext(messages) if isinstance(messages, AsyncIterator) else next(messages)
        except (StopIteration, StopAsyncIteration):
            return grpc.aio.EOF
