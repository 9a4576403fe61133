"""How an aio call's attempts are sent and awaited: the policies in the task that awaits the call."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from grpc.aio import ClientCallDetails, Metadata

from ...engine._execution import Execution
from .._core import CallExecution, Route, Router, attempt_metadata, rpc_error
from .._incoming import cancel_task
from .ended import AIO

Attempt = Callable[[Execution], Awaitable[Any]]
"""Makes one attempt of a unary call: its finished call, or raises its failure."""


def unary_call(route: Route, attempt: Attempt, request: Any, timeout: Any) -> Awaitable[Any]:
    """Run a unary call's attempts through the route's policies: awaited, the finished call the caller gets (the
    last attempt's, or a fallback's answer as one), or raises the failure the caller gets."""
    try:
        execution = route.execution(attempt, request, timeout)
    except Exception as failure:
        raise rpc_error(failure, AIO)  # noqa: B904  (its own cause is kept; the failure is its context)
    return run_policies(route, execution, over=True)


async def run_policies(route: Route, execution: CallExecution, over: bool = False) -> Any:
    """Run an execution through the route's policies (see :func:`unary_call`); ``over``: the call is over then
    (a unary one), and the execution lets go of what its attempts left behind, which their tracebacks would keep
    in a cycle (see ``Execution.release``)."""
    try:
        task: asyncio.Task[Any] | None
        if execution.incoming is None or (task := asyncio.current_task()) is execution.incoming.task:
            result = await route.async_chain(execution)  # grpc cancels it
            return result if execution.fallback is None else route.ended(execution, result, AIO)
        assert task is not None
        forget = execution.incoming.on_cancel(cancel_task(task))  # the incoming call's cancellation cancels this
        try:
            result = await route.async_chain(execution)
            return result if execution.fallback is None else route.ended(execution, result, AIO)
        finally:
            forget()
    except Exception as failure:
        raise rpc_error(failure, AIO)  # noqa: B904  (its own cause is kept; the failure is its context)
    finally:
        if over:
            execution.release()


def attempt_details(details: Any, timeout: float | None, execution: Execution, router: Router) -> ClientCallDetails:
    metadata = aio_attempt_metadata(details.metadata, execution, router)
    return ClientCallDetails(details.method, timeout, metadata, details.credentials, details.wait_for_ready)


def aio_attempt_metadata(metadata: Any, execution: Execution, router: Router | None = None) -> Any:
    metadata = attempt_metadata(metadata, execution, router)
    return metadata if metadata is None or isinstance(metadata, Metadata) else Metadata(*metadata)
