"""Fault injection for demos and drills (sync and aio servers).

Faults are configured in code only: nothing a client sends can turn them on. A failure is answered before any
response metadata goes out (Trailers-Only), with pushback trailers, so clients may retry it.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from typing import Any

import grpc

from ..engine import _options as options
from ._handlers import Behavior, aio_responses, awaited, wrapped
from ._pushback import PUSHBACK_MS, RETRY_AFTER

__all__ = ["AioFaultInjection", "FaultInjection", "Faults"]


@dataclass(frozen=True, kw_only=True)
class Faults:
    """What a server does wrong: every call waits ``delay`` seconds; then it fails with ``code`` (always when
    ``down``, else with probability ``fail_rate``) or, with probability ``slow_rate``, waits ``slow_delay`` more.

    Failures carry ``retry-after`` and ``grpc-retry-pushback-ms`` trailers asking for ``retry_after`` seconds
    (None: no pushback). ``seed`` makes the sequence of choices reproducible.
    """

    delay: float = 0.0
    fail_rate: float = 0.0
    slow_rate: float = 0.0
    slow_delay: float = 0.0
    down: bool = False
    code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    details: str = "injected fault"
    retry_after: float | None = 1.0
    seed: int | None = None
    _random: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "delay", options.seconds(self.delay, "delay"))
        object.__setattr__(self, "slow_delay", options.seconds(self.slow_delay, "slow_delay"))
        object.__setattr__(self, "fail_rate", options.ratio(self.fail_rate, "fail_rate", allow_zero=True))
        object.__setattr__(self, "slow_rate", options.ratio(self.slow_rate, "slow_rate", allow_zero=True))
        if self.retry_after is not None:
            object.__setattr__(self, "retry_after", options.seconds(self.retry_after, "retry_after"))
        if not isinstance(self.code, grpc.StatusCode) or self.code is grpc.StatusCode.OK:
            raise ValueError(f"code must be a grpc.StatusCode other than OK, got {self.code!r}")
        options.flag(self.down, "down")
        if not isinstance(self.details, str):
            raise ValueError(f"details must be a str, got {self.details!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise ValueError(f"seed must be an integer or None, got {self.seed!r}")
        object.__setattr__(self, "_random", random.Random(self.seed))

    def choose(self) -> tuple[float, bool]:
        """For one call: how long to wait, and whether to fail afterwards."""
        if self.down or (self.fail_rate and self._random.random() < self.fail_rate):
            return self.delay, True
        if self.slow_rate and self._random.random() < self.slow_rate:
            return self.delay + self.slow_delay, False
        return self.delay, False

    def trailers(self) -> tuple[tuple[str, str], ...]:
        if self.retry_after is None:
            return ()
        return ((RETRY_AFTER, f"{self.retry_after:g}"), (PUSHBACK_MS, str(round(self.retry_after * 1000))))


class _Injector:
    """The faults of an injector, replaceable while it serves (``injector.faults = Faults(down=True)``)."""

    def __init__(self, faults: Faults, methods: Collection[str] | None) -> None:
        self.faults = faults
        if methods is not None and (
            isinstance(methods, str)
            or not isinstance(methods, Collection)
            or not all(isinstance(m, str) for m in methods)
        ):
            raise ValueError(f"methods must be a collection of full method names, got {methods!r}")
        self._methods = None if methods is None else frozenset(methods)

    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        if not isinstance(faults, Faults):
            raise ValueError(f"faults must be a Faults, got {faults!r}")
        self._faults = faults

    def _applies(self, handler: Any, method: str) -> bool:
        return handler is not None and (self._methods is None or method in self._methods)


class FaultInjection(_Injector, grpc.ServerInterceptor):
    """Injects ``faults`` into the calls of a sync server: all methods, or those named in ``methods``."""

    def __init__(self, faults: Faults, *, methods: Collection[str] | None = None) -> None:
        super().__init__(faults, methods)

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if not self._applies(handler, handler_call_details.method):
            return handler
        return wrapped(self, handler, handler_call_details.method, self._wrap, self._wrap, aio=False)

    def _wrap(self, behavior: Behavior) -> Behavior:
        def faulty(request: Any, context: grpc.ServicerContext) -> Any:
            faults = self._faults
            wait, fail = faults.choose()
            if wait:
                ended = threading.Event()  # stop waiting when the client goes away
                context.add_callback(ended.set)
                ended.wait(wait)
            if fail:
                context.set_trailing_metadata(faults.trailers())
                context.abort(faults.code, faults.details)
            return behavior(request, context)

        return faulty


class AioFaultInjection(_Injector, grpc.aio.ServerInterceptor):
    """Injects ``faults`` into the calls of a ``grpc.aio`` server: all methods, or those named in ``methods``."""

    def __init__(self, faults: Faults, *, methods: Collection[str] | None = None) -> None:
        super().__init__(faults, methods)

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = await continuation(handler_call_details)
        if not self._applies(handler, handler_call_details.method):
            return handler
        return wrapped(self, handler, handler_call_details.method, self._wrap, self._wrap_streaming, aio=True)

    async def _inject(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        faults = self._faults
        wait, fail = faults.choose()
        if wait:
            await asyncio.sleep(wait)
        if fail:
            context.set_trailing_metadata(faults.trailers())
            await context.abort(faults.code, faults.details)

    def _wrap(self, behavior: Behavior) -> Behavior:
        async def faulty(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await self._inject(context)
            return await awaited(behavior(request, context))

        return faulty

    def _wrap_streaming(self, behavior: Behavior) -> Behavior:
        async def faulty(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            await self._inject(context)
            async for response in aio_responses(behavior(request, context)):
                yield response

        return faulty
