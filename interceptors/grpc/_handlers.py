"""What the server interceptors share: wrapping a method handler's behavior, for any of the four kinds of call on
sync and aio servers, and answering a request that cannot be decoded.

A server interceptor sees only a method's name and metadata; to act on a call it wraps the handler's behavior
(GUIDE pitfall 8). Every handler one of ours wraps also gets a guarded request deserializer: a request that
cannot be decoded is answered INVALID_ARGUMENT ("the request could not be decoded: ...") instead of grpcio's
UNKNOWN (aio) or INTERNAL (sync) with a traceback logged for every such request. INVALID_ARGUMENT because the
bytes are the caller's fault and must not be retried or counted against the server by anyone's breaker. The
first such request of a method is logged as a warning, without a traceback.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
from grpc.experimental import wrap_server_method_handler

__all__ = ["Behavior", "aio_responses", "awaited", "wrapped", "wrapped_any"]

Behavior = Callable[..., Any]
Wrapper = Callable[[Behavior], Behavior]

INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
_log = logging.getLogger("interceptors.server")
_warned: set[str] = set()


def wrapped(
    owner: object,
    handler: Any,
    method: str,
    unary: Wrapper,
    streaming: Wrapper,
    *,
    aio: bool,
    refuse_first: bool = True,
) -> Any:
    """``handler`` with its behavior wrapped by ``streaming`` if it answers a stream, else by ``unary``, and its
    undecodable requests refused (see the module's doc): before the wrapper runs (``refuse_first``), or inside
    it, for a wrapper that must see the refusal (an access log).

    grpc asks the interceptors for every call; the wrapped handler is made once per ``owner`` (the interceptor),
    handler and method, as the wrappers keep nothing of a call outside it.
    """
    key = (id(owner), id(handler), method)
    entry = _WRAPPED.get(key)
    if entry is not None and entry[0] is handler:
        return entry[1]
    if len(_WRAPPED) >= MAX_WRAPPED:  # handlers made anew for every call, by someone else's interceptor
        _WRAPPED.clear()
    made = _wrapped(handler, method, unary, streaming, aio, refuse_first)
    _WRAPPED[key] = (handler, made)  # the handler is kept alive, so its id names no other meanwhile
    return made


MAX_WRAPPED = 4096
_WRAPPED: dict[tuple[int, int, str], tuple[Any, Any]] = {}


def _wrapped(handler: Any, method: str, unary: Wrapper, streaming: Wrapper, aio: bool, refuse_first: bool) -> Any:
    handler = _guarded(handler)
    if handler.request_deserializer is None:  # raw bytes: nothing to refuse
        return wrapped_any(handler, unary, streaming)
    check = _check(handler, method, aio)
    if not refuse_first:
        handler = wrapped_any(handler, check, check)
    handler = wrapped_any(handler, unary, streaming)
    return wrapped_any(handler, check, check) if refuse_first else handler


async def awaited(value: Any) -> Any:
    """What an aio behavior answered, awaited if it is awaitable (grpc.aio accepts plain functions too)."""
    return await value if inspect.isawaitable(value) else value


async def aio_responses(responses: Any) -> AsyncIterator[Any]:
    """The messages an aio streaming behavior answered: from an async or plain iterator; none from a coroutine
    (a handler that writes with ``context.write()``)."""
    if hasattr(responses, "__aiter__"):
        async for response in responses:
            yield response
    elif inspect.isawaitable(responses):
        await responses
    else:
        for response in responses:
            yield response


class _Undecodable:
    """What the guarded deserializer answers for bytes the real one refused."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _guarded(handler: Any) -> Any:
    """``handler`` whose request deserializer answers an :class:`_Undecodable` instead of raising."""
    deserialize = handler.request_deserializer
    if deserialize is None or getattr(deserialize, "guarded", False):
        return handler  # raw bytes, or guarded by another of our interceptors

    def guarded(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as error:
            return _Undecodable(str(error)[:200] or type(error).__name__)

    guarded.guarded = True  # type: ignore[attr-defined]
    return handler._replace(request_deserializer=guarded)


def _check(handler: Any, method: str, aio: bool) -> Wrapper:
    """A wrapper that refuses an undecodable request with INVALID_ARGUMENT, for ``handler``'s kind of call."""
    refusal = f"the request could not be decoded ({method})"

    def refuse(request: _Undecodable) -> str:
        if method not in _warned and len(_warned) < 1000:
            _warned.add(method)
            _log.warning("%s: %s; answered INVALID_ARGUMENT", refusal, request.reason)
        return f"{refusal}: {request.reason}"

    if not aio:
        if handler.request_streaming:

            def step(requests: Iterator[Any], context: Any) -> Iterator[Any]:
                for request in requests:
                    if type(request) is _Undecodable:
                        context.abort(INVALID_ARGUMENT, refuse(request))
                    yield request

        else:

            def step(request: Any, context: Any) -> Any:  # type: ignore[misc]
                if type(request) is _Undecodable:
                    context.abort(INVALID_ARGUMENT, refuse(request))
                return request

        return _sync_step(step)

    def wrap(behavior: Behavior) -> Behavior:
        if handler.request_streaming:

            async def decoded(requests: Any, context: Any) -> AsyncIterator[Any]:
                async for request in requests:
                    if type(request) is _Undecodable:
                        await context.abort(INVALID_ARGUMENT, refuse(request))
                    yield request

            if handler.response_streaming:

                async def checked_streams(requests: Any, context: Any) -> AsyncIterator[Any]:
                    reading = _Reading.of(context, refuse)
                    async for response in aio_responses(behavior(decoded(requests, context), reading)):
                        yield response

                return checked_streams

            async def checked_requests(requests: Any, context: Any) -> Any:
                response = behavior(decoded(requests, context), _Reading.of(context, refuse))
                return await response if inspect.isawaitable(response) else response

            return checked_requests

        if handler.response_streaming:

            async def checked_responses(request: Any, context: Any) -> AsyncIterator[Any]:
                if type(request) is _Undecodable:
                    await context.abort(INVALID_ARGUMENT, refuse(request))
                async for response in aio_responses(behavior(request, context)):
                    yield response

            return checked_responses

        async def checked(request: Any, context: Any) -> Any:
            if type(request) is _Undecodable:
                await context.abort(INVALID_ARGUMENT, refuse(request))
            response = behavior(request, context)
            return await response if inspect.isawaitable(response) else response

        return checked

    return wrap


class _Reading:
    """An aio servicer context whose ``read()`` refuses an undecodable request, as iterating the requests does;
    everything else is the context's own."""

    __slots__ = ("_context", "_refuse")

    def __init__(self, context: Any, refuse: Callable[[_Undecodable], str]) -> None:
        self._context, self._refuse = context, refuse

    @classmethod
    def of(cls, context: Any, refuse: Callable[[_Undecodable], str]) -> Any:
        return context if isinstance(context, cls) else cls(context, refuse)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def read(self) -> Any:
        request = await self._context.read()
        if type(request) is _Undecodable:
            await self._context.abort(INVALID_ARGUMENT, self._refuse(request))
        return request


def wrapped_any(handler: Any, unary: Wrapper, streaming: Wrapper) -> Any:
    """``handler`` with its behavior wrapped by ``streaming`` if it answers a stream, else by ``unary``."""
    return wrap_server_method_handler(streaming if handler.response_streaming else unary, handler)  # type: ignore[no-untyped-call]


def _sync_step(step: Callable[[Any, Any], Any]) -> Wrapper:
    """A wrapper that passes what ``step`` makes of the request on to the behavior (sync: any kind of call)."""

    def wrap(behavior: Behavior) -> Behavior:
        def stepped(request: Any, context: Any) -> Any:
            return behavior(step(request, context), context)

        return stepped

    return wrap
