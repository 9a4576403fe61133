"""aio calls that have ended: a fallback's answer, a call cancelled by its caller."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

import grpc
from grpc.aio import AioRpcError, Metadata

from .._core import Flavour, Status

OK = grpc.StatusCode.OK
CANCELLED = AioRpcError(grpc.StatusCode.CANCELLED, Metadata(), Metadata(), "Locally cancelled by application!")


def retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # the error reaches callers through the call; do not log it as unretrieved


class AnsweredCall(grpc.aio.UnaryUnaryCall):  # type: ignore[type-arg]
    """A fallback's answer as a finished call: code OK, trailing metadata naming the failure it replaced."""

    def __init__(self, response: Any, status: Status) -> None:
        self._response = response
        self._trailing = Metadata(*status.trailing_metadata)

    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return True

    def add_done_callback(self, callback: Any) -> None:
        callback(self)

    def time_remaining(self) -> float | None:
        return None

    async def initial_metadata(self) -> Metadata:
        return Metadata()

    async def trailing_metadata(self) -> Metadata:
        return self._trailing

    async def code(self) -> grpc.StatusCode:
        return OK

    async def details(self) -> str:
        return ""

    async def debug_error_string(self) -> str:
        return ""

    async def wait_for_connection(self) -> None:
        return None

    def __await__(self) -> Generator[Any, None, Any]:
        return self._response
        yield  # a generator that finishes at once


AIO = Flavour(metadata=lambda pairs: Metadata(*pairs), answered=AnsweredCall, awaits=True)
