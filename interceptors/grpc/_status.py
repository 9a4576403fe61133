"""How the policies read gRPC: status codes of failures, server pushback, and the response types of methods."""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Hashable, Iterable, Mapping
from typing import Any

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.message import Message

from ..engine._errors import (
    BulkheadFullError,
    RateLimitedError,
    RejectedError,
    ResilienceError,
    RetriesExceededError,
    TimeoutExceededError,
    underlying_failure,
)
from ..engine._execution import Execution, Semantics
from ..engine._results import ResultFailure
from ._pushback import pushback_seconds

__all__ = [
    "CACHE_METADATA_KEY",
    "FALLBACK_METADATA_KEY",
    "FALLBACK_OUT_OF_TIME_KEY",
    "RETRYABLE_CODES",
    "GrpcSemantics",
    "ResponseStreamSemantics",
    "on_codes",
    "replaced_by_fallback",
    "status_code",
]

StatusCode = grpc.StatusCode

RETRYABLE_CODES = frozenset({StatusCode.UNAVAILABLE, StatusCode.DEADLINE_EXCEEDED})
"""What policies handle by default: a backend that is down (UNAVAILABLE, also an open breaker) or slow
(DEADLINE_EXCEEDED, but only when a Timeout policy's deadline passed: a server that answers DEADLINE_EXCEEDED by
itself, or a caller's own deadline passing, is final), and an overloaded server shedding load (RESOURCE_EXHAUSTED
with a pushback, which retries wait out; without one, RESOURCE_EXHAUSTED is a quota and final). Caller-side errors
(INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, UNAUTHENTICATED, FAILED_PRECONDITION, ...), OK and CANCELLED are
never handled."""

FALLBACK_METADATA_KEY = "resilience-fallback"
"""Trailing metadata on a fallback's answer; its value names the status code of the last real failure."""

CACHE_METADATA_KEY = "resilience-cache"
"""Trailing metadata on an answer a CachePolicy gave: "hit" (fresh), or "stale" (in place of a failure, which
:data:`FALLBACK_METADATA_KEY` names, as for a fallback's answer)."""

FALLBACK_OUT_OF_TIME_KEY = "resilience-fallback-out-of-time"
"""Trailing metadata on a fallback's answer, "true" when the call's time ran out (a Timeout passed, or no time
was left for another attempt)."""


def replaced_by_fallback(trailing_metadata: Any) -> str | None:
    """The status code (its name) a fallback answered in place of, read from a call's trailing metadata; None
    when the response is a real one."""
    return next((value for key, value in trailing_metadata or () if key == FALLBACK_METADATA_KEY), None)


def status_code(failure: BaseException) -> grpc.StatusCode | None:
    """The gRPC status a caller sees for ``failure``, or None for errors that are not gRPC statuses.

    A local rejection is UNAVAILABLE when it says the dependency is in trouble (an open circuit, the throttle, the
    adaptive limit) and RESOURCE_EXHAUSTED when it is the client's own allowance that ran out (a full bulkhead, the
    rate limit); a timeout is DEADLINE_EXCEEDED, and exhausted retries the last attempt's status. An answer a result
    predicate judged a failure (:class:`~interceptors.engine._results.ResultFailure`) came with OK.
    """
    if isinstance(failure, ResultFailure):
        return StatusCode.OK
    if isinstance(failure, ResilienceError):
        if isinstance(failure, RetriesExceededError):
            return status_code(failure.last_failure)
        if isinstance(failure, (BulkheadFullError, RateLimitedError)):
            return StatusCode.RESOURCE_EXHAUSTED
        if isinstance(failure, RejectedError):
            return StatusCode.UNAVAILABLE
        if isinstance(failure, TimeoutExceededError):
            return StatusCode.DEADLINE_EXCEEDED
    if isinstance(failure, grpc.RpcError):
        code = getattr(failure, "code", None)
        return code() if callable(code) else None
    return None


def on_codes(*codes: grpc.StatusCode) -> Callable[[BaseException], bool]:
    """A ``handle=`` predicate: failures whose status is one of ``codes`` (whoever set the status).

    E.g. ``RetryPolicy(handle=on_codes(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED))``.
    """
    if not codes:
        raise ValueError("on_codes needs at least one grpc.StatusCode")
    for code in codes:
        if not isinstance(code, grpc.StatusCode):
            raise ValueError(f"on_codes takes grpc.StatusCode values, got {code!r}")
    return _OnCodes(codes)


class _OnCodes:
    """The predicate :func:`on_codes` makes; its repr names the codes."""

    __slots__ = ("_codes", "_wanted")

    def __init__(self, codes: tuple[grpc.StatusCode, ...]) -> None:
        self._codes, self._wanted = codes, frozenset(codes)

    def __call__(self, failure: BaseException) -> bool:
        return status_code(failure) in self._wanted

    def __repr__(self) -> str:
        return f"on_codes({', '.join(code.name for code in self._codes)})"


NO_CODES = _OnCodes(())
"""The predicate of no status code (a service config's empty list of codes)."""


class GrpcSemantics(Semantics):
    """The policies' view of one gRPC method: failures by status code, pushback from trailers, protobuf answers."""

    __slots__ = ("_caller_error", "_response_type", "concurrent_attempts", "method", "unary")
    method: str

    enforces_deadline = True  # every attempt goes out with the execution's deadline as its grpc timeout
    cancellable_attempts = True  # the adapters keep each attempt's grpc call on its execution (see _core.sent)
    defers_attempts = True  # a hedged unary attempt is a grpc future, whose end the sync adapter reports
    streams_responses = False

    def __init__(
        self,
        method: str,
        caller_error: Callable[[Exception], Exception] | None = None,
        *,
        request_stream: bool = False,
    ) -> None:
        self.method = method
        self.concurrent_attempts: bool = not request_stream  # streamed requests are replayed to one attempt at a time
        self.unary: bool = not (request_stream or self.streams_responses)
        self._caller_error = caller_error
        self._response_type: type[Message] | None = None

    def caller_error(self, failure: BaseException) -> BaseException:
        """The policy's error as the ``grpc.RpcError`` the adapter hands callers (gRPC errors stay as they are)."""
        if self._caller_error is None or not isinstance(failure, Exception):
            return failure
        return self._caller_error(failure)

    def is_failure(self, failure: BaseException) -> bool:
        """UNAVAILABLE, DEADLINE_EXCEEDED when a policy's deadline passed, RESOURCE_EXHAUSTED with a pushback (see
        :data:`RETRYABLE_CODES`), and every local rejection."""
        if isinstance(failure, RejectedError):
            return True
        code = status_code(failure)
        if code is StatusCode.UNAVAILABLE:
            return True
        if code is StatusCode.DEADLINE_EXCEEDED:
            return isinstance(failure, ResilienceError)
        if code is StatusCode.RESOURCE_EXHAUSTED:  # shed by an overloaded server, which said when to come back
            delay = self.pushback(underlying_failure(failure))
            return delay is not None and delay >= 0
        return False

    def trips(self, failure: BaseException, overdue: bool = False) -> bool:
        """What :meth:`is_failure` says, and DEADLINE_EXCEEDED at the call's deadline (``overdue``): a dependency
        that does not answer in the time a call has (hung, or behind a network that drops everything) shows as
        nothing else. Final for retries and fallbacks (the caller's own deadline passed), but breakers and
        throttles count it. A server's own DEADLINE_EXCEEDED, sooner, counts for nothing (its downstream ran out
        of time)."""
        return self.is_failure(failure) or (overdue and status_code(failure) is StatusCode.DEADLINE_EXCEEDED)

    def pushback(self, failure: BaseException) -> float | None:
        """What the server asked for in its trailers (never raises: what cannot be read is ignored and logged)."""
        if isinstance(failure, grpc.RpcError) and callable(getattr(failure, "trailing_metadata", None)):
            return pushback_seconds(failure, self.method)
        return None

    @property
    def response_type(self) -> type[Message]:
        """The method's response class, found by name in the default protobuf descriptor pool."""
        if self._response_type is None:
            service, _, name = self.method.lstrip("/").rpartition("/")
            try:
                method = descriptor_pool.Default().FindMethodByName(f"{service}.{name}")
            except KeyError:
                raise ValueError(
                    f"no protobuf descriptor for {self.method}: import its generated _pb2 module, or give the "
                    "Fallback a value or a function"
                ) from None
            self._response_type = message_factory.GetMessageClass(method.output_type)
        return self._response_type

    def default_response(self) -> Any:
        return self.response_type()

    def response_from_fields(self, fields: Mapping[str, Any]) -> Any:
        response = self.response_type()
        try:
            return json_format.ParseDict(dict(fields), response)
        except json_format.ParseError as error:
            raise ValueError(f"Fallback(message=...) for {self.method}: {error}") from None

    def check_response(self, response: object) -> None:
        """A fallback must answer the method's response message (any non-None value for methods without one)."""
        try:
            expected: type[Any] | None = self.response_type
        except ValueError:
            expected = None
        if expected is None and response is not None:
            return
        if expected is None or not isinstance(response, expected):
            name = "a response" if expected is None else expected.DESCRIPTOR.full_name
            raise TypeError(f"{self.method} must be answered with {name}, got {response!r}")

    def request_key(self, request: Any) -> Hashable | None:
        """A unary request's serialized bytes (deterministic: equal messages, equal keys); None for a request that
        cannot be serialized."""
        serialize = getattr(request, "SerializeToString", None)
        if serialize is None:
            return super().request_key(request)
        try:
            data: bytes = serialize(deterministic=True)
        except Exception:
            return None
        return data

    def kept(self, answer: Any) -> tuple[Any, int]:
        """A response message kept serialized (a caller changing its copy changes no other caller's), with its
        size."""
        serialize = getattr(answer, "SerializeToString", None)
        if serialize is None:
            return super().kept(answer)
        data: bytes = serialize()
        return (type(answer), data), len(data)

    def from_kept(self, kept: Any) -> Any:
        if isinstance(kept, tuple) and len(kept) == 2 and isinstance(kept[0], type) and issubclass(kept[0], Message):
            return kept[0].FromString(kept[1])
        return kept

    def response_of(self, result: Any, execution: Execution) -> Any:
        """The response an attempt answered: a unary or client-streaming call's response message, a response
        stream's first message when it committed (None: it ended with none)."""
        first = getattr(type(result), "first_message", None)
        if first is not None:  # a committed stream (see _streams.Committed)
            return result.first_message
        if isinstance(result, tuple):  # grpc's with_call: (response, call)
            return result[0]
        if isinstance(result, grpc.aio.Call):  # finished, its response kept by the attempt that awaited it
            return getattr(execution, "response", None)
        if isinstance(result, grpc.Future):  # a finished sync call
            return result.result()
        return result


class ResponseStreamSemantics(GrpcSemantics):
    """A method with streamed responses: a fallback answers a sequence of response messages (by default none)."""

    __slots__ = ()

    defers_attempts = False  # a stream's attempt ends at its first message, which only a blocking read can tell
    streams_responses = True

    def default_response(self) -> Any:
        return ()

    def response_from_fields(self, fields: Mapping[str, Any]) -> Any:
        return (super().response_from_fields(fields),)

    def check_response(self, response: object) -> None:
        """A list or tuple of response messages, or any other iterable or async iterable of them (its messages
        are checked as they are delivered)."""
        if isinstance(response, (str, bytes, Message)) or not isinstance(response, (Iterable, AsyncIterable)):
            raise TypeError(f"{self.method} streams its responses: answer an iterable of them, got {response!r}")
        if isinstance(response, (list, tuple)):
            for message in response:
                super().check_response(message)
