"""What server interceptors that watch every call share (the access log, ``interceptors.otel``'s server
metrics): each call's start, and its end with the status its client saw, for sync and aio servers.

Every call is seen: answered, failed, aborted, refused by another interceptor further in, and calls to methods the
server does not have (UNIMPLEMENTED). A call that ended because its deadline passed or its client cancelled it
ends DEADLINE_EXCEEDED or CANCELLED, as its client saw it, not with the error its abandoned handler may raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc

from ._handlers import Behavior, aio_responses, awaited, wrapped

OK, UNKNOWN = grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN
DEADLINE_TOLERANCE = 0.01
"""Seconds before its deadline within which a call that ended early is taken to have reached it."""


class CallObserver:
    """What server interceptors that watch every call share: each call's start, and its end with the status its
    client saw (see :func:`final_code`), for a sync or aio server (:class:`SyncObserver`, :class:`AioObserver`)."""

    def _began(self, method: str) -> None:
        """A call of ``method`` starts."""

    def _ended(self, method: str, code: grpc.StatusCode, started: float) -> None:
        """A call of ``method`` that started at ``started`` (``time.monotonic()``) ended with ``code``."""
        raise NotImplementedError

    def _observed(self, handler: Any, method: str, *, aio: bool) -> Any:
        """``handler`` with its calls observed; an unknown method (no handler) ends now, UNIMPLEMENTED."""
        if handler is None:
            self._began(method)
            self._ended(method, grpc.StatusCode.UNIMPLEMENTED, time.monotonic())
            return None
        unary, streaming = (lambda b: self._wrap(method, b)), (lambda b: self._wrap_streaming(method, b))
        return wrapped(self, handler, method, unary, streaming, aio=aio, refuse_first=False)

    @contextlib.contextmanager
    def _call(self, method: str, context: Any) -> Iterator[None]:
        """Observe the call made inside the block."""
        self._began(method)
        started = time.monotonic()
        try:
            yield
        except BaseException as error:
            self._ended(method, final_code(context, error), started)
            raise
        self._ended(method, final_code(context, None), started)

    def _wrap(self, method: str, behavior: Behavior) -> Behavior:
        raise NotImplementedError

    def _wrap_streaming(self, method: str, behavior: Behavior) -> Behavior:
        raise NotImplementedError


class SyncObserver(CallObserver, grpc.ServerInterceptor):
    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        return self._observed(continuation(handler_call_details), handler_call_details.method, aio=False)

    def _wrap(self, method: str, behavior: Behavior) -> Behavior:
        def observed(request: Any, context: grpc.ServicerContext) -> Any:
            with self._call(method, context):
                return behavior(request, context)

        return observed

    def _wrap_streaming(self, method: str, behavior: Behavior) -> Behavior:
        def observed(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            with self._call(method, context):
                yield from behavior(request, context)

        return observed


class AioObserver(CallObserver, grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        return self._observed(await continuation(handler_call_details), handler_call_details.method, aio=True)

    def _wrap(self, method: str, behavior: Behavior) -> Behavior:
        async def observed(request: Any, context: Any) -> Any:
            with self._call(method, context):
                return await awaited(behavior(request, context))

        return observed

    def _wrap_streaming(self, method: str, behavior: Behavior) -> Behavior:
        async def observed(request: Any, context: Any) -> AsyncIterator[Any]:
            with self._call(method, context):
                async for response in aio_responses(behavior(request, context)):
                    yield response

        return observed


def final_code(context: Any, error: BaseException | None) -> grpc.StatusCode:
    """The status the client of ``context``'s call saw, its handler having ended with ``error`` (None: none).

    A call that its client cancelled, or whose deadline passed, ended then, whatever the handler did afterwards
    (a sync handler runs on; an aio handler is cancelled).
    """
    if isinstance(error, asyncio.CancelledError) or not _active(context):
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= DEADLINE_TOLERANCE
        return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
    code = context.code() if callable(getattr(context, "code", None)) else None
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):  # grpc.aio reports the numeric code of an abort
        return next((c for c in grpc.StatusCode if c.value[0] == code), UNKNOWN)
    return UNKNOWN if error is not None else OK


def _active(context: Any) -> bool:
    """Whether the call is still on (sync contexts tell; an aio call that ended early cancels its handler)."""
    is_active = getattr(context, "is_active", None)
    return bool(is_active()) if callable(is_active) else True
