"""Fallback: answer something useful in place of a failure."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from . import _options
from .events import FallbackExecuted
from .execution import Execution
from .policy import AsyncLink, Link, Policy

__all__ = ["Fallback"]

_UNSET: Any = object()


class Fallback(Policy):
    """Answers in place of a failure the inner chain raised, when ``handle`` (default: the transport's
    failures) accepts it; other errors pass through.

    The answer is, by what is given: ``fn(request, failure)``, or ``fn(failure)`` for a function that takes one
    argument (either may be async on async chains); ``value``; the transport's response built from ``message``
    (gRPC: the method's response message with these fields); or, with nothing given, the transport's default
    response (gRPC: the response type's default instance).
    """

    __slots__ = ("_takes_request", "fn", "handle", "message", "on_fallback", "value")
    fn: Callable[..., Any] | None
    _takes_request: bool
    value: Any
    message: Mapping[str, Any] | None
    handle: _options.FailurePredicate | None
    on_fallback: Callable[[FallbackExecuted], object] | None

    def __init__(
        self,
        fn: Callable[[Any, BaseException], Any] | Callable[[BaseException], Any] | None = None,
        /,
        *,
        value: Any = _UNSET,
        message: Mapping[str, Any] | None = None,
        handle: _options.Handles | None = None,
        on_fallback: Callable[[FallbackExecuted], object] | None = None,
    ) -> None:
        if sum((fn is not None, value is not _UNSET, message is not None)) > 1:
            raise ValueError("give one of a fallback function, value= or message=")
        if fn is not None and not callable(fn):
            raise ValueError(f"the fallback function must be callable as fn(request, failure), got {fn!r}")
        takes_request = fn is not None and _positional_arity(fn) != 1
        if message is not None and not isinstance(message, Mapping):
            raise ValueError(f"message must be a mapping of response fields, got {message!r}")
        self._init(
            fn=fn,
            value=value,
            message=message,
            handle=_options.handles(handle, "handle"),
            on_fallback=_options.listener(on_fallback, "on_fallback"),
            _takes_request=takes_request,
        )

    def _handles(self, execution: Execution, failure: BaseException) -> bool:
        return (self.handle or execution.semantics.is_failure)(failure)

    def _answer(self, execution: Execution, failure: BaseException) -> Any:
        execution.last_failure = execution.fallback_failure = failure
        if self.fn is not None:
            return self.fn(execution.request, failure) if self._takes_request else self.fn(failure)
        if self.value is not _UNSET:
            return self.value
        if self.message is not None:
            return execution.semantics.response_from_fields(self.message)
        return execution.semantics.default_response()

    def _report(self, failure: BaseException, result: Any) -> Any:
        if self.on_fallback is not None:
            _options.emit(self.on_fallback, FallbackExecuted(failure, result))
        return result

    def wrap(self, inner: Link) -> Link:
        def run(execution: Execution) -> Any:
            try:
                return inner(execution)
            except Exception as failure:
                if not self._handles(execution, failure):
                    raise
                result = self._answer(execution, failure)
                if inspect.isawaitable(result):
                    if inspect.iscoroutine(result):
                        result.close()
                    raise TypeError("a sync call's fallback function returned an awaitable") from failure
                return self._report(failure, result)

        return run

    def wrap_async(self, inner: AsyncLink) -> AsyncLink:
        async def run(execution: Execution) -> Any:
            try:
                return await inner(execution)
            except Exception as failure:
                if not self._handles(execution, failure):
                    raise
                result = self._answer(execution, failure)
                if inspect.isawaitable(result):
                    result = await result
                return self._report(failure, result)

        return run


def _positional_arity(fn: Callable[..., Any]) -> int | None:
    """How many positional arguments ``fn`` takes at most (None: any number, or unknown)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters)
