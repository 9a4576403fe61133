"""Timeout: one deadline for everything inside it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from . import _options
from .clock import Clock
from .errors import TimeoutExceededError
from .events import TimeoutExceeded
from .execution import Execution
from .policy import AsyncLink, Link, Policy

__all__ = ["Timeout"]

T = TypeVar("T")


class _Expired(Exception):
    """The inner work was cancelled because its time ran out."""


if sys.version_info >= (3, 11):

    async def _within(awaitable: Awaitable[T], seconds: float) -> T:
        """Await ``awaitable``, cancelling it after ``seconds``; raises _Expired if that happened."""
        scope = asyncio.timeout(seconds)
        try:
            async with scope:
                return await awaitable
        except TimeoutError:
            if scope.expired():
                raise _Expired from None
            raise

else:  # pragma: no cover - Python 3.10

    async def _within(awaitable: Awaitable[T], seconds: float) -> T:
        try:
            return await asyncio.wait_for(awaitable, seconds)
        except asyncio.TimeoutError:
            raise _Expired from None


class Timeout(Policy):
    """Bounds the time the inner chain may take to ``seconds``.

    The deadline inner policies and the call see (``execution.deadline``) is ``min(now + seconds, outer
    deadline)``. Async work is cancelled at the deadline. A sync call is handed the deadline to honour (the gRPC
    adapter sends it as the call's timeout) and a result that arrives after it is discarded. Either way, when this
    policy's deadline is the one that passed, the caller gets :class:`TimeoutExceededError` (chaining the inner
    failure, if any) and ``on_timeout_exceeded`` hears of it; an outer deadline passing is left to its owner.
    """

    __slots__ = ("on_timeout_exceeded", "seconds")
    seconds: float
    on_timeout_exceeded: Callable[[TimeoutExceeded], object] | None

    def __init__(
        self,
        seconds: _options.Duration,
        /,
        *,
        on_timeout_exceeded: Callable[[TimeoutExceeded], object] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._init(
            seconds=_options.seconds(seconds, "Timeout seconds", positive=True),
            on_timeout_exceeded=_options.listener(on_timeout_exceeded, "on_timeout_exceeded"),
            clock=_options.clock(clock),
        )

    def _enter(self, execution: Execution) -> tuple[float | None, float | None]:
        """Set this policy's deadline; returns (outer deadline, own deadline or None if the outer one binds)."""
        outer = execution.deadline
        own = self.clock.now() + self.seconds
        if outer is not None and outer < own:
            return outer, None
        execution.deadline = own
        return outer, own

    def _exceeded(self, execution: Execution) -> TimeoutExceededError:
        if self.on_timeout_exceeded is not None:
            _options.emit(self.on_timeout_exceeded, TimeoutExceeded(self.seconds, execution.elapsed))
        return TimeoutExceededError(f"timeout of {self.seconds:g}s exceeded", timeout=self.seconds)

    def wrap(self, inner: Link) -> Link:
        now = self.clock.now

        def run(execution: Execution) -> Any:
            outer, own = self._enter(execution)
            if own is None:
                return inner(execution)
            try:
                result = inner(execution)
            except Exception as failure:
                if now() >= own:
                    raise self._exceeded(execution) from failure
                raise
            finally:
                execution.deadline = outer
            if now() >= own:
                raise self._exceeded(execution)
            return result

        return run

    def wrap_async(self, inner: AsyncLink) -> AsyncLink:
        now = self.clock.now

        async def run(execution: Execution) -> Any:
            outer, own = self._enter(execution)
            if own is None:
                return await inner(execution)
            try:
                result = await _within(inner(execution), own - now())
            except _Expired:
                raise self._exceeded(execution) from None
            except Exception as failure:
                if now() >= own:
                    raise self._exceeded(execution) from failure
                raise
            finally:
                execution.deadline = outer
            if now() >= own:
                raise self._exceeded(execution)
            return result

        return run
