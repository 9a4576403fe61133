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
from collections.abc import Awaitable, Callable, Generator, Sequence
from functools import partial
from typing import Any

import grpc
from grpc.aio import AioRpcError, ClientCallDetails, Metadata

from ..engine.errors import CircuitOpenError, TimeoutExceededError
from ..engine.execution import Execution
from ..engine.policy import Policy
from ._channel import channel_options, open_channel
from ._core import (
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
)
from ._incoming import cancel_task

__all__ = ["resilience_interceptors", "resilient_channel"]

OK = grpc.StatusCode.OK
Attempt = Callable[[Execution], Awaitable[Any]]
"""Makes one attempt of a unary call: its finished call, or raises its failure."""


def resilience_interceptors(
    *policies: Policy, methods: MethodPolicies | None = None
) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for ``grpc.aio`` channels running every call through ``policies`` (first = outermost).

    ``methods`` works as for :class:`interceptors.ResilienceInterceptor`, and streams get the same treatment:
    the chain's tightest Timeout as their deadline and its breakers' admission and recording, no retry or fallback.
    Pass them all to the channel: grpc.aio files each under the one kind of call it serves.
    """
    router = Router(policies, methods, AIO)
    return [_UnaryUnary(router), _UnaryStream(router), _StreamUnary(router), _StreamStream(router)]


def resilient_channel(
    target: str,
    *policies: Policy,
    methods: MethodPolicies | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
    compression: grpc.Compression | None = None,
) -> grpc.aio.Channel:
    """An aio channel to ``target`` whose calls run through ``policies``; grpcio's own retries as for
    :func:`interceptors.resilient_channel`.

    It behaves as a channel made with :func:`resilience_interceptors`, but unary calls skip grpc's interceptor
    machinery, which costs more per call than the policies. Parameters as for :func:`interceptors.resilient_channel`.
    """
    router = Router(policies, methods, AIO)
    opts = channel_options(options, retries=router.retries)
    streams: list[grpc.aio.ClientInterceptor] = [_UnaryStream(router), _StreamUnary(router), _StreamStream(router)]
    channel = open_channel(grpc.aio, target, credentials, opts, compression=compression, interceptors=streams)
    return _ResilientChannel(channel, router)


class _ResilientChannel(RoutedChannel, grpc.aio.Channel):
    """An aio channel whose unary-unary calls run the policies directly; streams go through its interceptors."""

    def __init__(self, channel: grpc.aio.Channel, router: Router) -> None:
        self._channel = self._streams = channel
        self._router, self._unary_type = router, _UnaryUnaryMultiCallable

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


class _UnaryUnaryMultiCallable(RoutedMethod, grpc.aio.UnaryUnaryMultiCallable):  # type: ignore[type-arg]
    def __call__(self, request: Any, *, timeout: float | None = None, metadata: Any = None, **options: Any) -> Any:
        """As grpc's; ``options`` (credentials, wait_for_ready, compression) go to every attempt."""
        multicallable, route = self._multicallable, self.route()
        if route is None:
            return multicallable(request, timeout=timeout, metadata=metadata, **options)

        async def attempt(execution: Execution) -> Any:
            call = multicallable(
                request, timeout=attempt_timeout(execution), metadata=_metadata(metadata, execution), **options
            )
            await call  # raises the attempt's AioRpcError
            return call

        return _ResilientCall(route, attempt, request, timeout)


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, router: Router) -> None:
        self._router = router

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        route = self._router.route(client_call_details.method)
        if route is None:
            return await continuation(client_call_details, request)

        async def attempt(execution: Execution) -> Any:
            details = _details(client_call_details, attempt_timeout(execution), execution)
            call = await continuation(details, request)
            await call  # raises the attempt's AioRpcError; awaiting call.code() instead can hang (grpc/grpc#34530)
            return call

        return await _unary(route, attempt, request, client_call_details.timeout)


async def _unary(route: Route, attempt: Attempt, request: Any, timeout: Any) -> Any:
    """Run a unary call's attempts through the route's policies; returns the finished call the caller gets (the
    last attempt's, or a fallback's answer as one), or raises the failure the caller gets."""
    try:
        execution = route.execution(attempt, request, timeout)
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
    def __init__(self, router: Router) -> None:
        self._router = router

    async def _stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        route = self._router.route(client_call_details.method)
        if route is None:
            return await continuation(client_call_details, request)
        try:
            timeout = route.stream_timeout_for(client_call_details.timeout)
            permits = route.admit_stream()
        except (CircuitOpenError, TimeoutExceededError) as rejected:
            raise rpc_error(rejected, AIO)  # noqa: B904
        try:
            call = await continuation(_details(client_call_details, timeout), request)
        except Exception as failure:
            route.record_stream(permits, failure, cancelled=False)
            raise
        if permits:
            call.add_done_callback(partial(_record_stream, route, permits))
        route.cancel_with_incoming(call)
        return call


class _UnaryStream(_Streams, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await self._stream(continuation, client_call_details, request)


class _StreamUnary(_Streams, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await self._stream(continuation, client_call_details, request_iterator)


class _StreamStream(_Streams, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await self._stream(continuation, client_call_details, request_iterator)


def _details(details: Any, timeout: float | None, execution: Execution | None = None) -> ClientCallDetails:
    metadata = details.metadata if execution is None else _metadata(details.metadata, execution)
    return ClientCallDetails(details.method, timeout, metadata, details.credentials, details.wait_for_ready)


def _metadata(metadata: Any, execution: Execution) -> Any:
    metadata = attempt_metadata(metadata, execution)
    return metadata if metadata is None or isinstance(metadata, Metadata) else Metadata(*metadata)


_RECORDING: set[asyncio.Task[None]] = set()


def _record_stream(route: Route, permits: Any, call: Any) -> None:
    if call.cancelled():
        route.record_stream(permits, None, cancelled=True)
        return
    task = asyncio.ensure_future(_record_final_status(route, permits, call))
    _RECORDING.add(task)  # keep a reference until it has run
    task.add_done_callback(_RECORDING.discard)


async def _record_final_status(route: Route, permits: Any, call: Any) -> None:
    code = await call.code()  # the call is done: this returns at once
    failure = None if code is OK else AioRpcError(code, None, await call.trailing_metadata(), await call.details())
    route.record_stream(permits, failure, cancelled=False)


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
        self._deadline = loop.time() + timeout if isinstance(timeout, (int, float)) and timeout > 0 else None
        self._outcome: asyncio.Future[Any] = loop.create_future()
        self._runner: asyncio.Future[Any] | None = None
        loop.call_soon(self._start)  # a call nobody awaits is still made, as grpc's are

    def _start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.ensure_future(self._execute())
            self._runner.add_done_callback(_retrieve)

    async def _execute(self) -> Any:
        outcome = self._outcome
        try:
            call = await _unary(self._route, self._attempt, self._request, self._timeout)
        except asyncio.CancelledError:
            outcome.cancel()
            raise
        except BaseException as error:
            outcome.set_exception(error)
            outcome.exception()  # retrieved: whoever awaits the call raises it
            raise
        outcome.set_result(call)
        return call

    def __await__(self) -> Generator[Any, None, Any]:
        if self._runner is None and not self._outcome.done():  # first: run the policies in this very task
            self._runner = asyncio.current_task()
            return self._respond(self._execute()).__await__()
        return self._respond(self._awaited()).__await__()

    async def _awaited(self) -> Any:
        """The outcome of policies running elsewhere; cancelling the awaiting task cancels them."""
        try:
            return await asyncio.shield(self._outcome)
        except asyncio.CancelledError:
            self.cancel()
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
        return self._runner.cancel()

    def cancelled(self) -> bool:
        return self._outcome.cancelled()

    def done(self) -> bool:
        return self._outcome.done()

    def add_done_callback(self, callback: Any) -> None:
        self._start()
        self._outcome.add_done_callback(lambda _: callback(self))

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(self._deadline - asyncio.get_running_loop().time(), 0.0)

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


AIO = Flavour(metadata=lambda pairs: Metadata(*pairs), answered=_AnsweredCall, awaits=True)
