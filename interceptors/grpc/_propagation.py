"""Context propagation for servers that call other services: the incoming call's deadline and cancellation bound
the calls its handler makes, and the status of a downstream failure goes back to the caller with its pushback.

The handler runs with the incoming call as its ambient context (a context variable, so threads started with
``contextvars.copy_context().run``, ``asyncio.to_thread`` and tasks it creates carry it too). Every call made
through this library's client interceptors or channels in that context:

- ends by ``incoming deadline - reserve`` at the latest, so that the server still has ``reserve`` seconds to
  answer its own caller (with a fallback's answer, say): the outgoing call's own DEADLINE_EXCEEDED then reaches
  its policies as a TimeoutExceededError, which a Fallback answers;
- is cancelled when the incoming call is (its caller cancelled it, or its deadline passed while the handler
  ran); once cancelled, calls fail with CANCELLED and nothing is sent.
- has the incoming call's priority (its ``x-priority``, no higher than the server believes of that caller: see
  :class:`~interceptors.Priorities`), unless the handler says otherwise with :func:`~interceptors.prioritized`;
  so a critical request stays critical down the whole chain of calls.

A ``grpc.RpcError`` that escapes the handler is answered with its own code and details, and with its pushback
(``grpc-retry-pushback-ms``, ``retry-after``, and a ``google.rpc.RetryInfo`` in ``grpc-status-details-bin``),
instead of grpc's UNKNOWN: a back-off request travels the whole chain. Handlers that catch errors themselves can
call :func:`forward` (sync) or :func:`aforward` (aio) to do the same.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import AsyncIterator, Iterator
from typing import Any, NoReturn

import grpc

from ..engine import _options as options
from ..engine._priority import Priorities, Priority
from ._claims import claimed
from ._handlers import Behavior, aio_responses, wrapped
from ._incoming import INCOMING, IncomingCall
from ._pushback import (
    DO_NOT_RETRY,
    MAX_PUSHBACK_MS,
    PUSHBACK_MS,
    RETRY_AFTER,
    STATUS_DETAILS,
    capped_retry_after,
    is_status_of,
    pushback_seconds,
    retry_info_details,
    with_retry_delay,
)

__all__ = [
    "DEFAULT_RESERVE",
    "AioContextPropagation",
    "ContextPropagation",
    "aforward",
    "forward",
    "incoming_priority",
]

DEFAULT_RESERVE = 0.05
"""Seconds of the incoming deadline a server keeps for its own answer."""
DEFAULT_PRIORITIES = Priorities()

OK = grpc.StatusCode.OK
Pairs = tuple[tuple[str, str | bytes], ...]


class _Propagation:
    def __init__(
        self, *, reserve: options.Duration = DEFAULT_RESERVE, forward: bool = True, priorities: Priorities | None = None
    ) -> None:
        self.reserve: float = options.seconds(reserve, "reserve")
        self.forward: bool = options.flag(forward, "forward")
        self.priorities: Priorities = options.priorities(priorities) or DEFAULT_PRIORITIES

    def _incoming(self, context: Any, task: asyncio.Task[Any] | None = None) -> IncomingCall:
        priority = claimed(context, self.priorities)[0]
        return IncomingCall(context.time_remaining(), self.reserve, task, priority)


class ContextPropagation(_Propagation, grpc.ServerInterceptor):
    """Makes each incoming call's deadline and cancellation the ambient context of its handler, on a sync server
    (see the module's doc), and forwards the status of a ``grpc.RpcError`` that escapes the handler.

    :param reserve: seconds of the incoming deadline kept for the server's own answer (default 0.05); outgoing
        calls get at most what is left of the incoming deadline less this.
    :param forward: whether an escaping ``grpc.RpcError`` is answered with its status and pushback (default True).
    :param priorities: what the server believes of a caller's priority (``max_claimed``; see
        :class:`~interceptors.Priorities`), which outgoing calls made for the call then have (default
        ``Priorities()``: up to CRITICAL from callers the channel authenticated, NORMAL from others). Give the
        server's LoadShedding the same, so that both believe a caller alike.
    """

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        return wrapped(self, handler, handler_call_details.method, self._wrap, self._wrap_streaming, aio=False)

    def _incoming(self, context: Any, task: asyncio.Task[Any] | None = None) -> IncomingCall:
        incoming = super()._incoming(context)
        if not context.add_callback(incoming.cancel):  # called when the call ends: cancels unless the handler has
            incoming.cancel()
        return incoming

    def _wrap(self, behavior: Behavior) -> Behavior:
        forwarding = self.forward

        def propagated(request: Any, context: grpc.ServicerContext) -> Any:
            incoming = self._incoming(context)
            token = INCOMING.set(incoming)
            try:
                return behavior(request, context)
            except grpc.RpcError as error:
                if not forwarding:
                    raise
                forward(context, error)
            finally:
                incoming.end()
                INCOMING.reset(token)

        return propagated

    def _wrap_streaming(self, behavior: Behavior) -> Behavior:
        forwarding = self.forward

        def propagated(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            incoming = self._incoming(context)
            responses: Iterator[Any] | None = None
            try:
                while True:  # the context is set while the handler runs, never across a yield
                    token = INCOMING.set(incoming)
                    try:
                        if responses is None:
                            responses = iter(behavior(request, context))
                        response = next(responses)
                    except StopIteration:
                        return
                    except grpc.RpcError as error:
                        if not forwarding:
                            raise
                        forward(context, error)
                    finally:
                        INCOMING.reset(token)
                    yield response
            finally:
                incoming.end()

        return propagated


class AioContextPropagation(_Propagation, grpc.aio.ServerInterceptor):
    """:class:`ContextPropagation` for ``grpc.aio`` servers, whose handler is cancelled when its call is: the
    calls made for it in other tasks are cancelled with it."""

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return wrapped(self, handler, handler_call_details.method, self._wrap, self._wrap_streaming, aio=True)

    def _wrap(self, behavior: Behavior) -> Behavior:
        forwarding = self.forward

        async def propagated(request: Any, context: Any) -> Any:
            incoming = self._incoming(context, asyncio.current_task())
            token = INCOMING.set(incoming)
            try:
                response = behavior(request, context)
                return await response if inspect.isawaitable(response) else response
            except grpc.RpcError as error:
                if not forwarding:
                    raise
                await aforward(context, error)
            except asyncio.CancelledError:
                incoming.cancel()
                raise
            finally:
                incoming.end()
                INCOMING.reset(token)

        return propagated

    def _wrap_streaming(self, behavior: Behavior) -> Behavior:
        forwarding = self.forward

        async def propagated(request: Any, context: Any) -> AsyncIterator[Any]:
            incoming = self._incoming(context, asyncio.current_task())
            responses: AsyncIterator[Any] | None = None
            try:
                while True:  # the context is set while the handler runs, never across a yield
                    token = INCOMING.set(incoming)
                    try:
                        if responses is None:
                            responses = aio_responses(behavior(request, context))
                        response = await responses.__anext__()
                    except StopAsyncIteration:
                        return
                    except grpc.RpcError as error:
                        if not forwarding:
                            raise
                        await aforward(context, error)
                    finally:
                        INCOMING.reset(token)
                    yield response
            except asyncio.CancelledError:
                incoming.cancel()
                raise
            finally:
                incoming.end()

        return propagated


def incoming_priority() -> Priority | None:
    """The priority of the call the current handler answers, as the server believes it (see
    :class:`ContextPropagation`'s ``priorities``): None outside a handler with context propagation, or for a call
    that claims none (the server's default level applies)."""
    incoming = INCOMING.get()
    return None if incoming is None else incoming.priority


def forward(context: grpc.ServicerContext, error: grpc.RpcError) -> NoReturn:
    """End the call ``context`` answers (sync server) with ``error``'s status: its code, details and pushback
    trailers (see :func:`forwarded`). An error with no status to forward is raised as it is."""
    code, details, trailers = forwarded(error)
    if trailers:
        context.set_trailing_metadata(trailers)
    context.abort(code, details)


async def aforward(context: Any, error: grpc.RpcError) -> NoReturn:
    """:func:`forward` for a ``grpc.aio`` server's context."""
    code, details, trailers = forwarded(error)
    if trailers:
        context.set_trailing_metadata(trailers)
    await context.abort(code, details)
    raise AssertionError("abort returned")  # pragma: no cover


def forwarded(error: grpc.RpcError) -> tuple[grpc.StatusCode, str, Pairs]:
    """The status to answer for a downstream ``error``: its code, details and pushback trailers.

    The delay it asked for (see :mod:`._pushback`), capped at what ``grpc-retry-pushback-ms`` carries (an int32 of
    milliseconds, about 24.8 days), goes on as ``grpc-retry-pushback-ms`` and as a ``google.rpc.RetryInfo``: in the
    error's own ``grpc-status-details-bin`` when it carried one for this very status (same code and message; its
    other details kept, its RetryInfo made to say that delay, or none when there is none to forward; a rich status
    for another status is dropped, as clients refuse one that contradicts the call's), else in one made for the
    forwarded status. A ``retry-after`` goes on as it was, or capped. Raises ``error`` when it has no status other
    than OK.
    """
    call: Any = error
    try:
        code, details, trailing = call.code(), call.details(), call.trailing_metadata()
    except Exception:
        raise error from None
    if not isinstance(code, grpc.StatusCode) or code is OK:
        raise error
    details = details if isinstance(details, str) else ""
    delay = pushback_seconds(error, "a forwarded status")  # capped at MAX_PUSHBACK
    asked = delay if delay is not None and delay >= 0 else None
    trailers: list[tuple[str, str | bytes]] = []
    for k, v in trailing or ():
        if k == RETRY_AFTER:
            trailers.append((k, capped_retry_after(v)))
        elif k == STATUS_DETAILS and is_status_of(v, code.value[0], details):
            trailers.append((k, with_retry_delay(v, asked)))  # bytes: is_status_of says so
    if delay is not None:
        milliseconds = -1 if delay == DO_NOT_RETRY else min(math.ceil(delay * 1000), MAX_PUSHBACK_MS)
        trailers.append((PUSHBACK_MS, str(milliseconds)))
        if asked is not None and not any(k == STATUS_DETAILS for k, _ in trailers):
            trailers.append((STATUS_DETAILS, retry_info_details(code.value[0], details, asked)))
    return code, details, tuple(trailers)
