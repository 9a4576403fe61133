"""One way to call the scripted server per client call path: __call__, with_call, future() and aio.

Each ``Client`` holds one channel (through our interceptors) for many calls; the aio client runs its channel on
an event loop of its own thread, so every test can drive all four paths the same way.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from scripted.v1 import scripted_pb2_grpc as pb_grpc

import interceptors.aio
from interceptors import ResilienceInterceptor, resilient_channel
from interceptors.engine import Policy
from interceptors.grpc._channel import channel_options

from ..scripted import AIO_LOOP

PATHS = [
    "call",
    "with_call",
    "future",
    "aio",
    "intercepted-call",
    "intercepted-with_call",
    "intercepted-future",
    "intercepted-aio",
]
"""The resilient_channel helpers' sync ways to call and aio; then the same through grpc's own interceptor hooks
(``grpc.intercept_channel`` with ResilienceInterceptor, ``grpc.aio`` channels with resilience_interceptors)."""


def returns_call(path: str) -> bool:
    """Whether the path gives the caller a call object (``__call__`` gives only the response)."""
    return path.removeprefix("intercepted-") != "call"


@dataclass
class Outcome:
    reply: Any
    error: BaseException | None
    code: grpc.StatusCode
    details: str
    trailing: dict[str, Any]
    elapsed: float


class Client:
    def __init__(
        self, path: str, target: str, *policies: Policy, methods: Any = None, options: Sequence[Any] = ()
    ) -> None:
        self.path = path
        if path == "aio":

            async def make() -> Any:
                return interceptors.aio.resilient_channel(target, *policies, methods=methods, options=options)

            self.channel = AIO_LOOP.run(make())
        elif path == "intercepted-aio":
            self.path = "aio"

            async def make_intercepted() -> Any:
                chain = interceptors.aio.resilience_interceptors(*policies, methods=methods)
                return grpc.aio.insecure_channel(
                    target, options=channel_options(options, retries=True), interceptors=chain
                )

            self.channel = AIO_LOOP.run(make_intercepted())
        elif path.startswith("intercepted-"):
            self.path = path.removeprefix("intercepted-")
            raw = grpc.insecure_channel(target, options=channel_options(options, retries=True))
            self.channel = grpc.intercept_channel(raw, ResilienceInterceptor(*policies, methods=methods))
        else:
            self.channel = resilient_channel(target, *policies, methods=methods, options=options)
        self.stub = pb_grpc.ScriptedStub(self.channel)

    def unary(self, request: Any, timeout: float | None = None, metadata: Any = None) -> Outcome:
        started = time.monotonic()
        reply, error, call = None, None, None
        try:
            if self.path == "call":
                reply = self.stub.Unary(request, timeout=timeout, metadata=metadata)
            elif self.path == "with_call":
                reply, call = self.stub.Unary.with_call(request, timeout=timeout, metadata=metadata)
            elif self.path == "future":
                call = self.stub.Unary.future(request, timeout=timeout, metadata=metadata)
                reply = call.result()
            else:
                reply, call = AIO_LOOP.run(self._aio_unary(request, timeout, metadata))
        except grpc.RpcError as e:
            error, call = e, e
        elapsed = time.monotonic() - started
        if call is None:
            return Outcome(reply, None, grpc.StatusCode.OK, "", {}, elapsed)
        code, details, trailing = call.code(), call.details(), call.trailing_metadata()
        return Outcome(reply, error, code, details or "", {key: value for key, value in trailing or ()}, elapsed)

    async def _aio_unary(self, request: Any, timeout: float | None, metadata: Any) -> tuple[Any, Any]:
        call = self.stub.Unary(request, timeout=timeout, metadata=metadata)
        try:
            reply = await call
        except grpc.aio.AioRpcError:
            raise
        return reply, _AioFinished(await call.code(), await call.details(), await call.trailing_metadata())

    def close(self) -> None:
        if self.path == "aio":
            AIO_LOOP.run(self.channel.close())
        else:
            self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


@dataclass
class _AioFinished:
    _code: grpc.StatusCode
    _details: str
    _trailing: Any

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return self._trailing
