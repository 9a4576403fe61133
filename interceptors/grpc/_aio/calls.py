"""An aio unary or client-streaming call: its policies run in the task that awaits it, or in a task of their own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Generator
from typing import Any

import grpc
from grpc.aio import AioRpcError, Metadata

from .._core import Route, Status, time_left
from .._grpc_shapes import WrittenByGrpc
from .attempts import Attempt, unary_call
from .ended import CANCELLED, retrieve


class ResilientCall(grpc.aio.UnaryUnaryCall):  # type: ignore[type-arg]
    """A unary call of an aio :func:`resilient_channel`.

    Its policies run in the task that awaits it, as a bare call's work would; if nothing awaits it by the loop's
    next turn, or something asks it anything else first, they run in a task of their own. Either way ``_outcome``
    resolves to the call that ended it (the last attempt's, or a fallback's) or to the error. Cancelling a task
    that awaits the call cancels the call, as for grpc's own calls.
    """

    def __init__(self, route: Route, attempt: Attempt, request: Any, timeout: Any) -> None:
        loop = asyncio.get_running_loop()
        self._route, self._attempt, self._request, self._timeout = route, attempt, request, timeout
        self._deadline = route.deadline(timeout)
        self._outcome: asyncio.Future[Any] = loop.create_future()
        self._runner: asyncio.Future[Any] | None = None
        loop.call_soon(self._start)  # a call nobody awaits is still made, as grpc's are

    def _start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.ensure_future(self._execute())
            self._runner.add_done_callback(retrieve)

    def _policies(self) -> Awaitable[Any]:
        """Run the policies: the call the caller gets (raises the failure)."""
        return unary_call(self._route, self._attempt, self._request, self._timeout)

    async def _execute(self, respond: bool = False) -> Any:
        """Run the policies: the call they ended with, or (``respond``, for the task that awaits the call) its
        response."""
        outcome = self._outcome
        try:
            call = await self._policies()
        except asyncio.CancelledError:
            outcome.cancel()
            raise
        except BaseException as error:
            if not outcome.done():  # else cancelled meanwhile
                outcome.set_exception(error)
                outcome.exception()  # retrieved: whoever awaits the call raises it
            raise
        if not outcome.done():
            outcome.set_result(call)
        return (await call) if respond else call

    def __await__(self) -> Generator[Any, None, Any]:
        if self._runner is None and not self._outcome.done():  # first: run the policies in this very task
            self._runner = asyncio.current_task()
            return self._execute(respond=True).__await__()
        return self._respond(self._awaited()).__await__()

    async def _awaited(self) -> Any:
        """The outcome of policies running elsewhere; cancelling the awaiting task cancels them. A cancelled call is
        awaited until its policies have ended, so that they have let go of what they held (a breaker's trial, a
        place) when the awaiting task goes on."""
        try:
            return await asyncio.shield(self._outcome)
        except asyncio.CancelledError:
            self.cancel()
            runner = self._runner
            if runner is not None and not runner.done():
                await asyncio.wait([runner])
            raise

    @staticmethod
    async def _respond(outcome: Awaitable[Any]) -> Any:
        return await (await outcome)

    async def _end(self) -> Any:
        """The finished call, or the RPC error it ended with (its methods report an error's status, as grpc's do)."""
        self._start()
        try:
            return await asyncio.shield(self._outcome)
        except asyncio.CancelledError:
            if self._outcome.cancelled():
                return CANCELLED
            raise
        except AioRpcError as error:
            return error
        except Exception as error:
            status = Status.of(error)
            return AioRpcError(
                status.code, Metadata(*status.initial_metadata), Metadata(*status.trailing_metadata), status.details
            )

    def cancel(self) -> bool:
        if self._outcome.done():
            return False
        if self._runner is None:
            self._outcome.cancel()
            self._runner = self._outcome  # never started, never will be
            return True
        if not self._runner.cancel():
            return False
        self._outcome.cancel()  # cancelled() says so now, as a bare call's does; the policies end on the next turn
        return True

    def cancelled(self) -> bool:
        return self._outcome.cancelled()

    def done(self) -> bool:
        return self._outcome.done()

    def add_done_callback(self, callback: Any) -> None:
        self._start()
        self._outcome.add_done_callback(lambda _: callback(self))

    def time_remaining(self) -> float | None:
        return time_left(self._deadline, self._route.executor.clock)

    async def initial_metadata(self) -> Metadata:
        end = await self._end()
        return end.initial_metadata() if isinstance(end, AioRpcError) else await end.initial_metadata()

    async def trailing_metadata(self) -> Metadata:
        end = await self._end()
        return end.trailing_metadata() if isinstance(end, AioRpcError) else await end.trailing_metadata()

    async def code(self) -> grpc.StatusCode:
        end = await self._end()
        return end.code() if isinstance(end, AioRpcError) else await end.code()

    async def details(self) -> str:
        end = await self._end()
        return (end.details() or "") if isinstance(end, AioRpcError) else await end.details()

    async def debug_error_string(self) -> str:
        end = await self._end()
        return (end.debug_error_string() or "") if isinstance(end, AioRpcError) else await end.debug_error_string()

    async def wait_for_connection(self) -> None:
        await self._end()


class ResilientStreamUnary(WrittenByGrpc, ResilientCall, grpc.aio.StreamUnaryCall):  # type: ignore[type-arg]
    """A client-streaming call: as a unary one, its requests replayed to each attempt (see :func:`replay_of`)."""
