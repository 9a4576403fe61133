"""grpc.aio client interceptors: the policy engine on every asyncio call path.

grpc.aio files an interceptor under one kind only (grpc/grpc#31442), so :func:`resilience_interceptors` returns
four single-kind adapters sharing one router; they use the very policy objects a sync channel may use too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Sequence
from functools import partial
from typing import Any

import grpc
from grpc.aio import AioRpcError, ClientCallDetails, Metadata

from ._routing import MethodPolicies, Route, Router, attempt_metadata, channel_options
from .errors import CircuitOpenError, ResilienceError, RetriesExceededError, TimeoutExceededError
from .execution import Execution
from .policy import Policy
from .status import FALLBACK_METADATA_KEY, Status, grpc_flavoured, status_code

__all__ = ["resilience_interceptors", "resilient_channel"]

OK = grpc.StatusCode.OK


def resilience_interceptors(
    *policies: Policy, methods: MethodPolicies | None = None
) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for ``grpc.aio`` channels running every call through ``policies`` (first = outermost).

    ``methods`` works as for :class:`interceptors.ResilienceInterceptor`, and streams get the same treatment:
    the chain's tightest Timeout as their deadline and its breakers' admission and recording, no retry or fallback.
    """
    router = Router(policies, methods)
    return [_UnaryUnary(router), _UnaryStream(router), _StreamUnary(router), _StreamStream(router)]


def resilient_channel(
    target: str,
    *policies: Policy,
    methods: MethodPolicies | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
    compression: grpc.Compression | None = None,
) -> grpc.aio.Channel:
    """An aio channel to ``target`` whose calls run through ``policies``, with grpcio's built-in retries off."""
    opts = channel_options(options)
    interceptors = resilience_interceptors(*policies, methods=methods)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=opts, compression=compression, interceptors=interceptors)
    return grpc.aio.secure_channel(
        target, credentials, options=opts, compression=compression, interceptors=interceptors
    )


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, router: Router) -> None:
        self._router = router

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        route = self._router.route(client_call_details.method)
        if route is None:
            return await continuation(client_call_details, request)

        async def attempt(execution: Execution) -> Any:
            details = _details(client_call_details, route.attempt_timeout(execution), execution)
            call = await continuation(details, request)
            await call  # raises the attempt's AioRpcError; awaiting call.code() instead can hang (grpc/grpc#34530)
            return call

        execution = route.execution(attempt, request, client_call_details.timeout)
        try:
            result = await route.executor.arun(execution)
        except Exception as failure:
            error = grpc_flavoured(failure, _FLAVOURS)
        else:
            if isinstance(result, grpc.aio.Call):
                return result
            return _FallbackCall(result, execution.last_failure)
        raise error


class _Streams:
    def __init__(self, router: Router) -> None:
        self._router = router

    async def _stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        route = self._router.route(client_call_details.method)
        if route is None:
            return await continuation(client_call_details, request)
        try:
            permits = route.admit_stream()
        except CircuitOpenError as rejected:
            error = grpc_flavoured(rejected, _FLAVOURS)
        else:
            try:
                timeout = route.stream_timeout_for(client_call_details.timeout)
                call = await continuation(_details(client_call_details, timeout), request)
            except Exception as failure:
                route.record_stream(permits, failure, cancelled=False)
                raise
            if permits:
                call.add_done_callback(partial(_record_stream, route, permits))
            return call
        raise error


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
    metadata = details.metadata if execution is None else attempt_metadata(details.metadata, execution)
    if metadata is not None and not isinstance(metadata, Metadata):
        metadata = Metadata(*metadata)
    return ClientCallDetails(details.method, timeout, metadata, details.credentials, details.wait_for_ready)


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


class _FallbackCall(grpc.aio.UnaryUnaryCall):  # type: ignore[type-arg]
    """A fallback's answer as a finished call: code OK, trailing metadata naming the status it replaced."""

    def __init__(self, response: Any, failure: BaseException | None) -> None:
        code = status_code(failure) if failure is not None else None
        self._response = response
        self._trailing = Metadata((FALLBACK_METADATA_KEY, code.name if code is not None else "UNKNOWN"))

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


class _StatusError(AioRpcError):
    """A policy's error as an aio RPC error with the status a caller should see."""

    def _set_status(self, status: Status) -> None:
        AioRpcError.__init__(
            self,
            status.code,
            Metadata(*status.initial_metadata),
            Metadata(*status.trailing_metadata),
            status.details,
            status.debug_error_string,
        )


class _CircuitOpenRpcError(CircuitOpenError, _StatusError):
    pass


class _RetriesExceededRpcError(RetriesExceededError, _StatusError):
    pass


class _TimeoutExceededRpcError(TimeoutExceededError, _StatusError):
    pass


_FLAVOURS: dict[type[ResilienceError], type[BaseException]] = {
    CircuitOpenError: _CircuitOpenRpcError,
    RetriesExceededError: _RetriesExceededRpcError,
    TimeoutExceededError: _TimeoutExceededRpcError,
}
