"""An access log for sync and aio servers: one record per call, with the status its client saw.

Every call gets its line: answered, failed, aborted, refused by another interceptor further in (a shedding
rejection, an undecodable request) and calls to methods the server does not have (UNIMPLEMENTED). A call that
ended because its deadline passed or its client cancelled it is logged as DEADLINE_EXCEEDED or CANCELLED, as its
client saw it, not as the error its abandoned handler may have raised. Requests larger than the server's
``grpc.max_receive_message_length`` are refused by grpc's core before any Python code sees them: grpcio offers
no hook to log those.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc

from ._handlers import Behavior, aio_responses, awaited, wrapped

__all__ = ["AccessLog", "AioAccessLog"]

OK, UNKNOWN = grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN
DEADLINE_TOLERANCE = 0.01
"""Seconds before its deadline within which a call that ended early is taken to have reached it."""


class _CallObserver:
    """What server interceptors that watch every call share: each call's start, and its end with the status its
    client saw (see :func:`final_code`), for a sync or aio server (:class:`_Sync`, :class:`_Aio`)."""

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


class _Sync(_CallObserver, grpc.ServerInterceptor):
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


class _Aio(_CallObserver, grpc.aio.ServerInterceptor):
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


class _Logs(_CallObserver):
    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = _logger(logger)

    def _ended(self, method: str, code: grpc.StatusCode, started: float) -> None:
        latency_ms = round((time.monotonic() - started) * 1000, 3)
        level = logging.INFO if code is OK else logging.ERROR
        extra = {"method": method, "code": code.name, "latency_ms": latency_ms}
        self._log.log(level, "%s %s", code.name, method, extra=extra)


class AccessLog(_Logs, _Sync):
    """Logs one record per call of a sync server, when it ends: its method, status code and latency.

    Records go to ``logger`` (default ``interceptors.access``) at INFO when OK, ERROR otherwise, with the fields
    ``method``, ``code`` and ``latency_ms`` as extras, for a structured (e.g. JSON) formatter to print. Install it
    first (outermost), so that it sees the calls other interceptors refuse.
    """


class AioAccessLog(_Logs, _Aio):
    """:class:`AccessLog` for ``grpc.aio`` servers."""


def _logger(logger: object) -> logging.Logger:
    if logger is None:
        return logging.getLogger("interceptors.access")
    if not isinstance(logger, logging.Logger):
        raise ValueError(f"logger must be a logging.Logger, got {logger!r}")
    return logger


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
