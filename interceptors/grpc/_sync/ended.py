"""Sync calls that have ended: a fallback's answer, a failure that is not a gRPC status."""

from __future__ import annotations

from typing import Any

import grpc

from .._core import EndedCall, Flavour, Status


class AnsweredCall(EndedCall):
    """A fallback's answer as a finished call: code OK, trailing metadata naming the failure it replaced."""

    def __init__(self, response: Any, status: Status) -> None:
        self._response, self._status = response, status

    def result(self, timeout: float | None = None) -> Any:
        return self._response

    def exception(self, timeout: float | None = None) -> Exception | None:
        return None


class SucceededCall(EndedCall):
    """An attempt that succeeded, as grpc's interceptor machinery wants it (a future whose ``result()`` is the
    response): its call, where that is not one (grpcio-testing's), with its ``response``."""

    def __init__(self, response: Any, call: Any) -> None:
        self._response, self._call = response, call

    def result(self, timeout: float | None = None) -> Any:
        return self._response

    def exception(self, timeout: float | None = None) -> Exception | None:
        return None

    def initial_metadata(self) -> Any:
        return self._call.initial_metadata()

    def trailing_metadata(self) -> Any:
        return self._call.trailing_metadata()

    def code(self) -> grpc.StatusCode:
        return self._call.code()  # type: ignore[no-any-return]

    def details(self) -> str:
        return self._call.details()  # type: ignore[no-any-return]

    def debug_error_string(self) -> str | None:
        return getattr(self._call, "debug_error_string", lambda: None)()


class _FailedCall(EndedCall):
    """A call that ended with an error that is not a gRPC status (e.g. a caller's bad timeout)."""

    def __init__(self, error: Exception) -> None:
        self._error = error
        self._status = Status.of(error)

    def result(self, timeout: float | None = None) -> Any:
        raise self._error

    def exception(self, timeout: float | None = None) -> Exception | None:
        return self._error


SYNC = Flavour(metadata=tuple, answered=AnsweredCall, awaits=False)


def ended_call(error: Exception) -> Any:
    """The ended call an interceptor hands grpc for ``error``: grpc's own failed call or our StatusError as they
    are, anything else wrapped so that ``result()`` raises it."""
    if isinstance(error, grpc.RpcError) and isinstance(error, grpc.Future):
        return error
    return _FailedCall(error)


LOCALLY_CANCELLED = Status(grpc.StatusCode.CANCELLED, "Locally cancelled by application!", (), (), None)
DEADLINE_PASSED = Status(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", (), (), None)
