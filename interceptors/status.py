"""How the policies read gRPC: status codes of failures, server pushback, and the response types of methods."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.message import Message

from ._pushback import PUSHBACK_MS, pushback_seconds
from .errors import CircuitOpenError, ResilienceError, RetriesExceededError, TimeoutExceededError
from .execution import Semantics

__all__ = [
    "FALLBACK_METADATA_KEY",
    "RETRYABLE_CODES",
    "GrpcSemantics",
    "Status",
    "on_codes",
    "replaced_by_fallback",
    "status_code",
]

StatusCode = grpc.StatusCode

RETRYABLE_CODES = frozenset({StatusCode.UNAVAILABLE, StatusCode.DEADLINE_EXCEEDED})
"""What policies handle by default: a backend that is down or slow. Caller-side errors (INVALID_ARGUMENT,
NOT_FOUND, PERMISSION_DENIED, UNAUTHENTICATED, FAILED_PRECONDITION, ...), OK and CANCELLED are never handled."""

FALLBACK_METADATA_KEY = "resilience-fallback"
"""Trailing metadata on a fallback response; its value is the status code of the failure it replaced."""


def replaced_by_fallback(trailing_metadata: Any) -> str | None:
    """The status code (its name) a fallback answered in place of, read from a call's trailing metadata; None
    when the response is a real one."""
    return next((value for key, value in trailing_metadata or () if key == FALLBACK_METADATA_KEY), None)


def status_code(failure: BaseException) -> grpc.StatusCode | None:
    """The gRPC status a caller sees for ``failure``, or None for errors that are not gRPC statuses.

    An open circuit is UNAVAILABLE, a timeout DEADLINE_EXCEEDED, and exhausted retries the last attempt's status.
    """
    if isinstance(failure, ResilienceError):
        if isinstance(failure, RetriesExceededError):
            return status_code(failure.last_failure)
        if isinstance(failure, CircuitOpenError):
            return StatusCode.UNAVAILABLE
        if isinstance(failure, TimeoutExceededError):
            return StatusCode.DEADLINE_EXCEEDED
    if isinstance(failure, grpc.RpcError):
        code = getattr(failure, "code", None)
        return code() if callable(code) else None
    return None


def on_codes(*codes: grpc.StatusCode) -> Callable[[BaseException], bool]:
    """A ``handle=`` predicate: failures whose status is one of ``codes``.

    E.g. ``RetryPolicy(handle=on_codes(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED))``.
    """
    wanted = frozenset(codes)
    for code in wanted:
        if not isinstance(code, grpc.StatusCode):
            raise ValueError(f"on_codes takes grpc.StatusCode values, got {code!r}")
    return lambda failure: status_code(failure) in wanted


class Status(NamedTuple):
    """A final gRPC status."""

    code: grpc.StatusCode
    details: str
    initial_metadata: tuple[Any, ...]
    trailing_metadata: tuple[Any, ...]
    debug_error_string: str | None

    @classmethod
    def of(cls, failure: BaseException) -> Status:
        """The status a caller should see for ``failure`` (a gRPC error, or a policy's error)."""
        if isinstance(failure, RetriesExceededError):
            return cls.of(failure.last_failure)
        cause = failure.__cause__
        if isinstance(failure, TimeoutExceededError) and cause and status_code(cause) is StatusCode.DEADLINE_EXCEEDED:
            return cls.of(cause)  # the call's own deadline status says more
        code = status_code(failure)
        if isinstance(failure, CircuitOpenError) and failure.remaining is not None:
            pushback = ((PUSHBACK_MS, str(math.ceil(failure.remaining * 1000))),)  # as a server would ask
            return cls(StatusCode.UNAVAILABLE, str(failure), (), pushback, None)
        if isinstance(failure, grpc.RpcError) and code is not None:
            call: Any = failure
            return cls(
                code,
                call.details() or "",
                tuple(call.initial_metadata() or ()),
                tuple(call.trailing_metadata() or ()),
                call.debug_error_string(),
            )
        return cls(code or StatusCode.UNKNOWN, str(failure), (), (), None)


class GrpcSemantics(Semantics):
    """The policies' view of one gRPC method: failures by status code, pushback from trailers, protobuf answers."""

    __slots__ = ("_response_type", "method")

    enforces_deadline = True  # every attempt goes out with the execution's deadline as its grpc timeout

    def __init__(self, method: str) -> None:
        self.method = method
        self._response_type: type[Message] | None = None

    def is_failure(self, failure: BaseException) -> bool:
        return status_code(failure) in RETRYABLE_CODES

    def pushback(self, failure: BaseException) -> float | None:
        """What the server asked for in its trailers; for an open breaker, the time until it lets a probe through."""
        if isinstance(failure, CircuitOpenError):
            return failure.remaining
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


def grpc_flavoured(failure: BaseException, flavours: Mapping[type[ResilienceError], type[BaseException]]) -> Any:
    """``failure`` as the gRPC error a caller should get: a policy's error becomes a copy of the matching class of
    ``flavours`` (each both the policy's error and a gRPC error) carrying ``Status.of(failure)``; anything else
    is returned as it is."""
    for base, flavour in flavours.items():
        if isinstance(failure, base):
            error: Any = flavour.__new__(flavour)
            error._set_status(Status.of(failure))
            error.__dict__.update(failure.__dict__)
            error.args = failure.args
            error.__cause__ = failure.__cause__
            error.__suppress_context__ = True
            return error.with_traceback(failure.__traceback__)
    return failure
