"""Fallback: answer something useful in place of a failure."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any

from . import _options as options
from ._alarms import Alarms
from ._errors import TimeoutExceededError, out_of_time, underlying_failure
from ._events import FallbackExecuted
from ._execution import Execution, Semantics
from ._policy import AsyncLink, Link, Policy
from ._results import Judge, ResultPredicate, judge, passed_over
from ._timeout import Bounds

__all__ = ["Fallback"]

_UNSET: Any = object()
_log = logging.getLogger("interceptors")


DEFAULT_RESERVE = 0.02
"""Seconds of a call's deadline a Fallback keeps to answer in, by default."""


class _Reserve(Bounds):
    """The deadline a Fallback's inner chain sees: the outer one less the reserve (at most half the time left)."""

    __slots__ = ("reserve",)
    late_answers_fail = False  # a real answer just past it is kept: the caller's deadline has not passed
    reserve: float

    def __init__(self, reserve: float) -> None:
        self._init(name="Fallback", reserve=reserve, _alarms=Alarms())

    def _own(self, outer: float | None, now: float) -> float | None:
        return None if outer is None else outer - min(self.reserve, max(outer - now, 0.0) / 2)

    def _exceeded(self, execution: Execution) -> TimeoutExceededError:
        return _InReserve(f"the call's deadline, less the fallback's reserve of {self.reserve:g}s, passed")


class _InReserve(TimeoutExceededError):
    """The caller's deadline, less a Fallback's reserve, passed: the fallback answers it, whatever it handles."""


class Fallback(Policy):
    """Answers in place of a failure the inner chain raised, when ``handle`` (default: the transport's
    failures) accepts it; other errors pass through.

    The answer is, by what is given (at most one): ``fn(request, failure)``, or ``fn(failure)`` for a function
    that takes one argument (either may be async on async chains); ``value``; the transport's response built from
    ``message`` (gRPC: the method's response message with these fields); or, with nothing given, the transport's
    default response (gRPC: the response type's default instance). ``failure`` is the last real failure: the last
    attempt's when retries ran out or no time was left for another, as the transport's callers see it (gRPC: a
    ``grpc.RpcError``).

    A fallback that cannot answer (its function raises, or answers something the transport cannot send, such as a
    ``str`` for a gRPC method) answers nothing: the error is logged and the caller gets the failure it would have
    got without the fallback, with the fallback's error as its ``__context__``.

    The caller's own deadline is answered too, before it passes: the inner chain runs to the deadline less
    ``reserve`` (at most half the time left when the call starts), and a failure once that has passed is the
    deadline's (a :class:`TimeoutExceededError`), which the fallback answers, out of time, whatever ``handle``
    says. ``reserve=None`` leaves the caller's deadline to the caller: its passing is final, as for a chain without
    a fallback.

    :param fn: the function that answers, positional (default None).
    :param value: the answer itself.
    :param message: the fields of the answer, for the transport to build it from.
    :param handle: which failures are answered (default: the transport's failures, as for retries).
    :param handle_result: a predicate of the call's answer (see :mod:`._results`): True answers in its place (the
        event's ``failure`` is a :class:`ResultFailure`); a fallback that cannot answer leaves the caller that answer.
    :param reserve: seconds of the caller's deadline kept to answer in (default 0.02), or None.
    :param on_fallback: hears :class:`FallbackExecuted` when the fallback answers.
    :param name: the policy's name in its events (default: its class's name, "Fallback").
    """

    __slots__ = (
        "_judge",
        "_reserve",
        "_takes_request",
        "fn",
        "handle",
        "handle_result",
        "message",
        "on_fallback",
        "reserve",
        "value",
    )
    reserve: float | None
    _reserve: _Reserve | None
    fn: Callable[..., Any] | None
    _takes_request: bool
    value: Any
    message: Mapping[str, Any] | None
    handle: options.FailurePredicate | None
    handle_result: ResultPredicate | None
    _judge: Judge | None
    on_fallback: options.Listener[FallbackExecuted] | None

    def __init__(
        self,
        fn: Callable[[Any, BaseException], Any] | Callable[[BaseException], Any] | None = None,
        /,
        *,
        value: Any = _UNSET,
        message: Mapping[str, Any] | None = None,
        handle: options.Handles | None = None,
        handle_result: ResultPredicate | None = None,
        reserve: options.Duration | None = DEFAULT_RESERVE,
        on_fallback: options.Listener[FallbackExecuted] | None = None,
        name: str | None = None,
    ) -> None:
        if sum((fn is not None, value is not _UNSET, message is not None)) > 1:
            raise ValueError("give one of a fallback function, value= or message=")
        takes_request = False
        if fn is not None:
            takes_request = callable(fn) and options.takes(fn, 2)
            if not (takes_request or (callable(fn) and options.takes(fn, 1))):
                raise ValueError(
                    f"the fallback function must take (request, failure) or (failure), got {options.shown(fn)}"
                )
        if message is not None and not (isinstance(message, Mapping) and all(isinstance(k, str) for k in message)):
            raise ValueError(
                f"message must be a mapping of response field names to values, got {options.shown(message)}"
            )
        self._init(
            name=options.policy_name(name, self),
            fn=fn,
            value=value,
            message=message,
            handle=options.handles(handle, "handle"),
            on_fallback=options.listener(on_fallback, "on_fallback"),
            _takes_request=takes_request,
        )
        seconds = options.optional_seconds(reserve, "reserve")
        self._init(reserve=seconds, _reserve=None if not seconds else _Reserve(seconds))
        self._init(handle_result=handle_result, _judge=judge(handle_result, "handle_result", self.name))

    def check(self, semantics: Semantics) -> None:
        """Build the answer once, so that fields, a value or a response type that cannot work fail now."""
        if self.fn is not None:
            return
        try:
            semantics.check_response(self._fixed_answer(semantics))
        except TypeError as error:
            raise ValueError(f"Fallback value: {error}") from None

    def _fixed_answer(self, semantics: Semantics) -> Any:
        if self.value is not _UNSET:
            return self.value
        if self.message is not None:
            return semantics.response_from_fields(self.message)
        return semantics.default_response()

    def _handles(self, execution: Execution, failure: BaseException) -> bool:
        return isinstance(failure, _InReserve) or (self.handle or execution.semantics.is_failure)(failure)

    def _answer(self, execution: Execution, failure: BaseException) -> Any:
        """The answer, or an awaitable of it (from an async function)."""
        if self.fn is None:
            return self._fixed_answer(execution.semantics)
        real = execution.semantics.caller_error(underlying_failure(failure))
        return self.fn(execution.request, real) if self._takes_request else self.fn(real)

    def _answered(self, execution: Execution, failure: BaseException, result: Any) -> Any:
        """Record and report ``result`` as the answer to ``failure``; raises TypeError if it cannot be one."""
        execution.semantics.check_response(result)
        execution.last_failure = real = execution.semantics.caller_error(underlying_failure(failure))
        method = execution.semantics.method
        execution.fallback = event = FallbackExecuted(real, result, out_of_time(failure), self.name, method)
        if self.on_fallback is not None or self._observers:
            options.emit(self.on_fallback, event, self._observers)
        return result

    @staticmethod
    def _unanswered(failure: BaseException) -> BaseException:
        _log.exception("the fallback could not answer; the caller gets %r", failure)
        return failure

    @staticmethod
    def _kept(result: Any) -> Any:
        _log.exception("the fallback could not answer; the caller gets the answer it would replace")
        return result

    def wrap(self, inner: Link) -> Link:
        if self._reserve is not None:
            inner = self._reserve.wrap(inner)
        judged = self._judge

        def sync_answer(execution: Execution, failure: BaseException) -> Any:
            result = self._answer(execution, failure)
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()
                raise TypeError("a sync call's fallback function returned an awaitable")
            return result

        def run(execution: Execution) -> Any:
            try:
                result = inner(execution)
            except Exception as failure:
                if not self._handles(execution, failure):
                    raise
                try:
                    return self._answered(execution, failure, sync_answer(execution, failure))
                except Exception:
                    raise self._unanswered(failure)  # noqa: B904  (keeps its own cause; the error is its context)
            if judged is None or (unwanted := judged(execution, result)) is None:
                return result
            try:
                answered = self._answered(execution, unwanted, sync_answer(execution, unwanted))
            except Exception:
                return self._kept(result)
            passed_over(execution)  # a stream's attempt: cancelled
            return answered

        return run

    def wrap_async(self, inner: AsyncLink) -> AsyncLink:
        if self._reserve is not None:
            inner = self._reserve.wrap_async(inner)
        offloads = self.fn is not None and not inspect.iscoroutinefunction(self.fn)
        judged = self._judge

        async def async_answer(execution: Execution, failure: BaseException) -> Any:
            if offloads and execution.offload is not None:  # a sync function, which may block
                result = await execution.offload(functools.partial(self._answer, execution, failure))
            else:
                result = self._answer(execution, failure)
            return (await result) if inspect.isawaitable(result) else result

        async def run(execution: Execution) -> Any:
            try:
                result = await inner(execution)
            except Exception as failure:
                if not self._handles(execution, failure):
                    raise
                try:
                    return self._answered(execution, failure, await async_answer(execution, failure))
                except Exception:
                    raise self._unanswered(failure)  # noqa: B904  (keeps its own cause; the error is its context)
            if judged is None or (unwanted := judged(execution, result)) is None:
                return result
            try:
                answered = self._answered(execution, unwanted, await async_answer(execution, unwanted))
            except Exception:
                return self._kept(result)
            passed_over(execution)  # a stream's attempt: cancelled
            return answered

        return run
