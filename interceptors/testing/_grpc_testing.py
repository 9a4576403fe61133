"""Policies over grpcio-testing's channel: a unit test plays the server (``take_unary_unary``, ``terminate``) while
the code under test calls its stubs through the policies, on one fake time, with no sockets and no sleeps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import grpc

from ..engine import Policy
from ..grpc._sync.client import ResilienceInterceptor

__all__ = ["resilient_testing_channel"]


def resilient_testing_channel(
    channel: Any, *policies: Policy, methods: Mapping[str, Sequence[Policy]] | None = None
) -> grpc.Channel:
    """grpcio-testing's ``channel`` (``grpc_testing.channel(descriptors, clock)``) with every call through
    ``policies`` and ``methods``, as :class:`~interceptors.ResilienceInterceptor` takes them (sync calls only:
    grpcio-testing has no asyncio channel). Give the policies and grpcio-testing one
    :class:`~interceptors.testing.FakeClock`: backoffs and breaker delays then pass as the test moves it.

    grpcio-testing's channel cannot express everything a real one does: it ignores deadlines (an attempt ends only
    when the test terminates it, so ``Timeout`` and hedging cannot be tried on it), and its calls take no
    ``wait_for_ready`` or ``compression`` (grpc's interceptor machinery passes them on: here they are left out).
    Trailers can be given (``rpc.terminate(response, trailing_metadata, code, details)``), pushback included. For
    deadlines, hedging and network faults, use a real server on 127.0.0.1 and :class:`FaultProxy`.
    """
    interceptor = ResilienceInterceptor(*policies, methods=methods)
    interceptor._router.unwarned = False  # no grpc retries here to strip grpc-previous-rpc-attempts
    return grpc.intercept_channel(cast(grpc.Channel, _Accepting(channel)), interceptor)


class _Accepting:
    """grpcio-testing's channel, whose multicallables take what grpc's interceptor machinery passes on (grpcio 1.65
    and later pass ``_registered_method``, which grpcio-testing before 1.65 does not take)."""

    __slots__ = ("_channel",)

    def __init__(self, channel: Any) -> None:
        self._channel = channel

    def _multicallable(
        self, kind: str, method: str, request_serializer: Any = None, response_deserializer: Any = None, *_: Any
    ) -> _Multicallable:
        return _Multicallable(getattr(self._channel, kind)(method, request_serializer, response_deserializer))

    def unary_unary(self, *args: Any, **_: Any) -> _Multicallable:
        return self._multicallable("unary_unary", *args)

    def unary_stream(self, *args: Any, **_: Any) -> _Multicallable:
        return self._multicallable("unary_stream", *args)

    def stream_unary(self, *args: Any, **_: Any) -> _Multicallable:
        return self._multicallable("stream_unary", *args)

    def stream_stream(self, *args: Any, **_: Any) -> _Multicallable:
        return self._multicallable("stream_stream", *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)


class _Multicallable:
    """A grpcio-testing multicallable: ``wait_for_ready`` and ``compression`` are left out."""

    __slots__ = ("_multicallable",)

    def __init__(self, multicallable: Any) -> None:
        self._multicallable = multicallable

    def __call__(
        self, request: Any, timeout: Any = None, metadata: Any = None, credentials: Any = None, **_: Any
    ) -> Any:
        return self._multicallable(request, timeout, metadata, credentials)

    def with_call(
        self, request: Any, timeout: Any = None, metadata: Any = None, credentials: Any = None, **_: Any
    ) -> Any:
        return self._multicallable.with_call(request, timeout, metadata, credentials)

    def future(self, request: Any, timeout: Any = None, metadata: Any = None, credentials: Any = None, **_: Any) -> Any:
        return self._multicallable.future(request, timeout, metadata, credentials)
