"""grpc.aio client interceptors: the policy engine on every asyncio call path.

grpc.aio files an interceptor under one kind only (grpc/grpc#31442), so :func:`resilience_interceptors` returns
four single-kind adapters sharing one router; they use the very policy objects a sync channel may use too.
:func:`resilient_channel` runs unary calls without grpc's interceptor machinery (a task per call): the policies
run in the task that awaits the call. Either way, cancelling the task that awaits a call (``task.cancel()``,
``asyncio.wait_for``, ``gather``, a ``TaskGroup``) cancels the attempt in flight and every later one, as it
cancels a bare grpc.aio call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Generator, Mapping, Sequence
from typing import Any

import grpc
from grpc.aio import AioRpcError, ClientCallDetails, Metadata

from ..engine._execution import Execution
from ..engine._policy import Policy
from ._channel import open_channel
from ._core import (
    BIDI_STREAM,
    CLIENT_STREAM,
    SERVER_STREAM,
    CallExecution,
    Flavour,
    MethodPolicies,
    Route,
    RoutedChannel,
    RoutedMethod,
    Router,
    Status,
    attempt_metadata,
    attempt_timeout,
    rpc_error,
    sent,
    time_left,
)
from ._grpc_shapes import WrittenByGrpc, at_once
from ._incoming import INCOMING, cancel_task
from ._service_config import channel_plan
from ._streams import DEFAULT_REPLAY_BUFFER, AsyncReplay, Replay, replay_of, resumes, settle, settled
from ._streams import replay_buffer as checked_replay_buffer

__all__ = ["resilience_interceptors", "resilient_channel"]

OK = grpc.StatusCode.OK
Attempt = Callable[[Execution], Awaitable[Any]]
"""Makes one attempt of a unary call: its finished call, or raises its failure."""


def resilience_interceptors(
    *policies: Policy,
    methods: MethodPolicies | None = None,
    replay_buffer: int = DEFAULT_REPLAY_BUFFER,
    metrics: Any = None,
    target: str = "other",
) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for ``grpc.aio`` channels running every call through ``policies`` (first = outermost).

    ``methods``, ``replay_buffer``, ``metrics`` and ``target`` work as for :class:`interceptors.ResilienceInterceptor`,
    and streams get the same treatment. Pass them all to the channel: grpc.aio files each under the one kind of
    call it serves.
    """
    router = Router(policies, methods, AIO, metrics, target)
    return [_UnaryUnaryInterceptor(router), *_stream_interceptors(router, replay_buffer)]


def _stream_interceptors(router: Router, replay_buffer: int) -> list[grpc.aio.ClientInterceptor]:
    buffer = checked_replay_buffer(replay_buffer)
    kinds = (_UnaryStreamInterceptor, _StreamUnaryInterceptor, _StreamStreamInterceptor)
    return [kind(router, buffer) for kind in kinds]


def resilient_channel(
    target: str,
    *policies: Policy,
    methods: MethodPolicies | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
    compression: grpc.Compression | None = None,
    replay_buffer: int = DEFAULT_REPLAY_BUFFER,
    service_config: str | Mapping[str, Any] | None = None,
    metrics: Any = None,
) -> grpc.aio.Channel:
    """An aio channel to ``target`` whose calls run through ``policies``; grpcio's own retries and service configs
    as for :func:`interceptors.resilient_channel`.

    It behaves as a channel made with :func:`resilience_interceptors`, but unary calls skip grpc's interceptor
    machinery, which costs more per call than the policies. Parameters as for :func:`interceptors.resilient_channel`.
    """
    router, opts = channel_plan(policies, methods, options, service_config, AIO, metrics, target)
    streams = _stream_interceptors(router, replay_buffer)
    channel = open_channel(grpc.aio, target, credentials, opts, compression=compression, interceptors=streams)
    return _ResilientChannel(channel, router)


class _ResilientChannel(RoutedChannel, grpc.aio.Channel):
    """An aio channel whose unary-unary calls run the policies directly; streams go through its interceptors."""

    def __init__(self, channel: grpc.aio.Channel, router: Router) -> None:
        self._channel = self._streams = channel
        self._router, self._unary_type = router, _ResilientUnaryUnary

    async def __aenter__(self) -> _ResilientChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._channel.close(None)

    async def close(self, grace: float | None = None) -> None:
        await self._channel.close(grace)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        state: grpc.ChannelConnectivity = self._channel.get_state(try_to_connect)
        return state

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._channel.channel_ready()


class _ResilientUnaryUnary(RoutedMethod, grpc.aio.UnaryUnaryMultiCallable):  # type: ignore[type-arg]
    def __call__(self, request: Any, *, timeout: float | None = None, metadata: Any = None, **options: Any) -> Any:
        """As grpc's; ``options`` (credentials, wait_for_ready, compression) go to every attempt."""
        multicallable, route = self._multicallable, self.route()
        if route is None:
            return multicallable(request, timeout=timeout, metadata=metadata, **options)

        async def attempt(execution: Execution) -> Any:
            call = multicallable(
                request, timeout=attempt_timeout(execution), metadata=_metadata(metadata, execution), **options
            )
            await sent(execution, call)  # raises the attempt's AioRpcError
            return call

        return _ResilientCall(route, attempt, request, timeout)


class _UnaryUnaryInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, router: Router) -> None:
        self._router = router

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        route = self._router.route(client_call_details.method)
        if route is None:
            return await continuation(client_call_details, request)

        async def attempt(execution: Execution) -> Any:
            details = _details(client_call_details, attempt_timeout(execution), execution, self._router)
            call = sent(execution, await continuation(details, request))
            await call  # raises the attempt's AioRpcError; awaiting call.code() instead can hang (grpc/grpc#34530)
            return call

        return await _unary(route, attempt, request, client_call_details.timeout)


async def _unary(route: Route, attempt: Attempt, request: Any, timeout: Any) -> Any:
    """Run a unary call's attempts through the route's policies; returns the finished call the caller gets (the
    last attempt's, or a fallback's answer as one), or raises the failure the caller gets."""
    try:
        execution = route.execution(attempt, request, timeout)
    except Exception as failure:
        raise rpc_error(failure, AIO)  # noqa: B904  (its own cause is kept; the failure is its context)
    return await _run(route, execution)


async def _run(route: Route, execution: CallExecution) -> Any:
    """Run an execution through the route's policies: see :func:`_unary`."""
    try:
        task: asyncio.Task[Any] | None
        if execution.incoming is None or (task := asyncio.current_task()) is execution.incoming.task:
            return route.ended(execution, await route.executor.arun_execution(execution), AIO)  # grpc cancels it
        assert task is not None
        forget = execution.incoming.on_cancel(cancel_task(task))  # the incoming call's cancellation cancels this
        try:
            return route.ended(execution, await route.executor.arun_execution(execution), AIO)
        finally:
            forget()
    except Exception as failure:
        raise rpc_error(failure, AIO)  # noqa: B904  (its own cause is kept; the failure is its context)


class _Streams:
    def __init__(self, router: Router, replay_buffer: int) -> None:
        self._router, self._replay_buffer = router, replay_buffer


class _UnaryStreamInterceptor(_Streams, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        route = self._router.route(client_call_details.method, SERVER_STREAM)
        if route is None:
            return await continuation(client_call_details, request)
        return _ResilientStream(self._router, route, continuation, client_call_details, request, None)


class _StreamUnaryInterceptor(_Streams, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        route = self._router.route(client_call_details.method, CLIENT_STREAM)
        if route is None:
            return await continuation(client_call_details, request_iterator)
        replay = replay_of(request_iterator, self._replay_buffer)

        async def attempt(execution: Execution) -> Any:
            details = _details(client_call_details, attempt_timeout(execution), execution, self._router)
            call = await continuation(details, replay.attempt(execution))
            witness = _StatusWitness(call)
            try:
                await call
            except AioRpcError as failure:
                raise witness.failure(failure) from None
            return call

        return _ResilientStreamUnary(route, attempt, None, client_call_details.timeout)


class _StreamStreamInterceptor(_Streams, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        route = self._router.route(client_call_details.method, BIDI_STREAM)
        if route is None:
            return await continuation(client_call_details, request_iterator)
        replay = replay_of(request_iterator, self._replay_buffer)
        return _ResilientStream(self._router, route, continuation, client_call_details, None, replay)


def _details(details: Any, timeout: float | None, execution: Execution, router: Router) -> ClientCallDetails:
    metadata = _metadata(details.metadata, execution, router)
    return ClientCallDetails(details.method, timeout, metadata, details.credentials, details.wait_for_ready)


def _metadata(metadata: Any, execution: Execution, router: Router | None = None) -> Any:
    metadata = attempt_metadata(metadata, execution, router)
    return metadata if metadata is None or isinstance(metadata, Metadata) else Metadata(*metadata)


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


class _ResilientCall(grpc.aio.UnaryUnaryCall):  # type: ignore[type-arg]
    """A unary call of an aio :func:`resilient_channel`.

    Its policies run in the task that awaits it, as a bare call's work would; if nothing awaits it by the loop's
    next turn, or something asks it anything else first, they run in a task of their own. Either way ``_outcome``
    resolves to the call that ended it (the last attempt's, or a fallback's) or to the error. Cancelling a task
    that awaits the call cancels the call, as for grpc's own calls.
    """

    def __init__(self, route: Route, attempt: Attempt, request: Any, timeout: Any) -> None:
        loop = asyncio.get_running_loop()
        self._route, self._attempt, self._request, self._timeout = route, attempt, request, timeout
        self._deadline = route.deadline(timeout)
        self._outcome: asyncio.Future[Any] = loop.create_future()
        self._runner: asyncio.Future[Any] | None = None
        loop.call_soon(self._start)  # a call nobody awaits is still made, as grpc's are

    def _start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.ensure_future(self._execute())
            self._runner.add_done_callback(_retrieve)

    def _policies(self) -> Awaitable[Any]:
        """Run the policies: the call the caller gets (raises the failure)."""
        return _unary(self._route, self._attempt, self._request, self._timeout)

    async def _execute(self) -> Any:
        outcome = self._outcome
        try:
            call = await self._policies()
        except asyncio.CancelledError:
            outcome.cancel()
            raise
        except BaseException as error:
            if not outcome.done():  # else cancelled meanwhile
                outcome.set_exception(error)
                outcome.exception()  # retrieved: whoever awaits the call raises it
            raise
        if not outcome.done():
            outcome.set_result(call)
        return call

    def __await__(self) -> Generator[Any, None, Any]:
        if self._runner is None and not self._outcome.done():  # first: run the policies in this very task
            self._runner = asyncio.current_task()
            return self._respond(self._execute()).__await__()
        return self._respond(self._awaited()).__await__()

    async def _awaited(self) -> Any:
        """The outcome of policies running elsewhere; cancelling the awaiting task cancels them. A cancelled call is
        awaited until its policies have ended, so that they have let go of what they held (a breaker's trial, a
        place) when the awaiting task goes on."""
        try:
            return await asyncio.shield(self._outcome)
        except asyncio.CancelledError:
            self.cancel()
            runner = self._runner
            if runner is not None and not runner.done():
                await asyncio.wait([runner])
            raise

    @staticmethod
    async def _respond(outcome: Awaitable[Any]) -> Any:
        return await (await outcome)

    async def _end(self) -> Any:
        """The finished call, or the RPC error it ended with (its methods report an error's status, as grpc's do)."""
        self._start()
        try:
            return await asyncio.shield(self._outcome)
        except asyncio.CancelledError:
            if self._outcome.cancelled():
                return _CANCELLED
            raise
        except AioRpcError as error:
            return error
        except Exception as error:
            status = Status.of(error)
            return AioRpcError(
                status.code, Metadata(*status.initial_metadata), Metadata(*status.trailing_metadata), status.details
            )

    def cancel(self) -> bool:
        if self._outcome.done():
            return False
        if self._runner is None:
            self._outcome.cancel()
            self._runner = self._outcome  # never started, never will be
            return True
        if not self._runner.cancel():
            return False
        self._outcome.cancel()  # cancelled() says so now, as a bare call's does; the policies end on the next turn
        return True

    def cancelled(self) -> bool:
        return self._outcome.cancelled()

    def done(self) -> bool:
        return self._outcome.done()

    def add_done_callback(self, callback: Any) -> None:
        self._start()
        self._outcome.add_done_callback(lambda _: callback(self))

    def time_remaining(self) -> float | None:
        return time_left(self._deadline, self._route.executor.clock)

    async def initial_metadata(self) -> Metadata:
        end = await self._end()
        return end.initial_metadata() if isinstance(end, AioRpcError) else await end.initial_metadata()

    async def trailing_metadata(self) -> Metadata:
        end = await self._end()
        return end.trailing_metadata() if isinstance(end, AioRpcError) else await end.trailing_metadata()

    async def code(self) -> grpc.StatusCode:
        end = await self._end()
        return end.code() if isinstance(end, AioRpcError) else await end.code()

    async def details(self) -> str:
        end = await self._end()
        return (end.details() or "") if isinstance(end, AioRpcError) else await end.details()

    async def debug_error_string(self) -> str:
        end = await self._end()
        return (end.debug_error_string() or "") if isinstance(end, AioRpcError) else await end.debug_error_string()

    async def wait_for_connection(self) -> None:
        await self._end()


_CANCELLED = AioRpcError(grpc.StatusCode.CANCELLED, Metadata(), Metadata(), "Locally cancelled by application!")


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # the error reaches callers through the call; do not log it as unretrieved


class _AnsweredCall(grpc.aio.UnaryUnaryCall):  # type: ignore[type-arg]
    """A fallback's answer as a finished call: code OK, trailing metadata naming the failure it replaced."""

    def __init__(self, response: Any, status: Status) -> None:
        self._response = response
        self._trailing = Metadata(*status.trailing_metadata)

    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return True

    def add_done_callback(self, callback: Any) -> None:
        callback(self)

    def time_remaining(self) -> float | None:
        return None

    async def initial_metadata(self) -> Metadata:
        return Metadata()

    async def trailing_metadata(self) -> Metadata:
        return self._trailing

    async def code(self) -> grpc.StatusCode:
        return OK

    async def details(self) -> str:
        return ""

    async def debug_error_string(self) -> str:
        return ""

    async def wait_for_connection(self) -> None:
        return None

    def __await__(self) -> Generator[Any, None, Any]:
        return self._response
        yield  # a generator that finishes at once


class _ResilientStreamUnary(WrittenByGrpc, _ResilientCall, grpc.aio.StreamUnaryCall):  # type: ignore[type-arg]
    """A client-streaming call: as a unary one, its requests replayed to each attempt (see :func:`replay_of`)."""


class _ResilientStream(WrittenByGrpc, _ResilientCall, grpc.aio.UnaryStreamCall, grpc.aio.StreamStreamCall):  # type: ignore[type-arg]
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
        details = _details(self._details, attempt_timeout(execution), execution, self._router)
        replay = self._replay
        requests = execution.request if replay is None else replay.attempt(execution)
        call = sent(execution, await self._continuation(details, requests))
        witness = None if replay is None else _StatusWitness(call)
        try:
            first = await call.read()
        except asyncio.CancelledError:
            call.cancel()
            raise
        except AioRpcError as failure:
            raise (failure if witness is None else witness.failure(failure)) from None
        if replay is not None:
            replay.commit()
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
            return await _run(self._route, execution)

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
        return _Answer(ended._response) if isinstance(ended, _AnsweredCall) else ended

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


class _Committed:
    """A committed attempt's grpc call, its first message read ahead: that message first, then the call's, each
    failure with the status the server gave it (see :class:`_StatusWitness`)."""

    __slots__ = ("_call", "_first", "witness")

    def __init__(self, call: Any, first: list[Any], witness: _StatusWitness | None) -> None:
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


class _StatusWitness:
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


AIO = Flavour(metadata=lambda pairs: Metadata(*pairs), answered=_AnsweredCall, awaits=True)
