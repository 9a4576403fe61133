"""The aio flavour's entry points: the interceptors, the channel and its unary methods."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from grpc.aio import AioRpcError

from ...engine._execution import Execution
from ...engine._policy import Policy
from ...engine._priority import Priority
from .._channel import open_channel
from .._core import (
    BIDI_STREAM,
    CLIENT_STREAM,
    SERVER_STREAM,
    CallMetrics,
    MethodPolicies,
    RoutedChannel,
    RoutedMethod,
    Router,
    attempt_timeout,
    sent,
)
from .._registry import Registry
from .._service_config import channel_plan
from .._streams import DEFAULT_REPLAY_BUFFER, replay_of
from .._streams import replay_buffer as checked_replay_buffer
from .attempts import aio_attempt_metadata, attempt_details, unary_call
from .calls import ResilientCall, ResilientStreamUnary
from .ended import AIO
from .streams import ResilientStream, StatusWitness

__all__ = ["resilience_interceptors", "resilient_channel"]


def resilience_interceptors(
    *policies: Policy,
    methods: MethodPolicies | None = None,
    replay_buffer: int = DEFAULT_REPLAY_BUFFER,
    metrics: CallMetrics | None = None,
    target: str = "other",
    priority: Priority | str | None = None,
    registry: Registry | None = None,
) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for ``grpc.aio`` channels running every call through ``policies`` (first = outermost).

    ``methods``, ``replay_buffer``, ``metrics``, ``target``, ``priority`` and ``registry`` work as for
    :class:`interceptors.ResilienceInterceptor`, and streams get the same treatment. Pass them all to the channel:
    grpc.aio files each under the one kind of call it serves.
    """
    router = Router(policies, methods, AIO, metrics, target, priority, registry)
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
    metrics: CallMetrics | None = None,
    priority: Priority | str | None = None,
    registry: Registry | None = None,
) -> grpc.aio.Channel:
    """An aio channel to ``target`` whose calls run through ``policies``; grpcio's own retries and service configs
    as for :func:`interceptors.resilient_channel`.

    It behaves as a channel made with :func:`resilience_interceptors`, but unary calls skip grpc's interceptor
    machinery, which costs more per call than the policies. Parameters as for :func:`interceptors.resilient_channel`.
    """
    router, opts = channel_plan(policies, methods, options, service_config, AIO, metrics, target, priority, registry)
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
                request,
                timeout=attempt_timeout(execution),
                metadata=aio_attempt_metadata(metadata, execution),
                **options,
            )
            execution.response = await sent(execution, call)  # type: ignore[attr-defined]  # raises its AioRpcError
            return call

        return ResilientCall(route, attempt, request, timeout)


class _UnaryUnaryInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, router: Router) -> None:
        self._router = router

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        route = self._router.route(client_call_details.method)
        if route is None:
            return await continuation(client_call_details, request)

        async def attempt(execution: Execution) -> Any:
            details = attempt_details(client_call_details, attempt_timeout(execution), execution, self._router)
            call = sent(execution, await continuation(details, request))
            # raises the attempt's AioRpcError; awaiting call.code() instead can hang (grpc/grpc#34530)
            execution.response = await call  # type: ignore[attr-defined]  # a CallExecution
            return call

        return await unary_call(route, attempt, request, client_call_details.timeout)


class _Streams:
    def __init__(self, router: Router, replay_buffer: int) -> None:
        self._router, self._replay_buffer = router, replay_buffer


class _UnaryStreamInterceptor(_Streams, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        route = self._router.route(client_call_details.method, SERVER_STREAM)
        if route is None:
            return await continuation(client_call_details, request)
        return ResilientStream(self._router, route, continuation, client_call_details, request, None)


class _StreamUnaryInterceptor(_Streams, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        route = self._router.route(client_call_details.method, CLIENT_STREAM)
        if route is None:
            return await continuation(client_call_details, request_iterator)
        replay = replay_of(request_iterator, self._replay_buffer)

        async def attempt(execution: Execution) -> Any:
            details = attempt_details(client_call_details, attempt_timeout(execution), execution, self._router)
            call = await continuation(details, replay.attempt(execution))
            witness = StatusWitness(call)
            try:
                execution.response = await call  # type: ignore[attr-defined]  # a CallExecution
            except AioRpcError as failure:
                raise witness.failure(failure) from None
            return call

        return ResilientStreamUnary(route, attempt, None, client_call_details.timeout)


class _StreamStreamInterceptor(_Streams, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        route = self._router.route(client_call_details.method, BIDI_STREAM)
        if route is None:
            return await continuation(client_call_details, request_iterator)
        replay = replay_of(request_iterator, self._replay_buffer)
        return ResilientStream(self._router, route, continuation, client_call_details, None, replay)
