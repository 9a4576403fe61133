"""One client for every call path: ``call``, ``with_call``, ``future()`` and aio, each through the helpers and
through grpc's own interceptor hooks; unary and streaming calls alike.

Each ``Client`` holds one channel for many calls; the aio client runs its channel on the shared test loop, so
every test drives all paths the same way, from its own thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from scripted.v1 import scripted_pb2_grpc as pb_grpc

import interceptors.aio
from interceptors import ResilienceInterceptor, resilient_channel
from interceptors.engine import Policy
from interceptors.grpc._channel import channel_options

from .server import AIO_LOOP, Request

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

AIO_PATHS = ["aio", "intercepted-aio"]
STREAM_KINDS = ["server_stream", "client_stream", "bidi_stream"]


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
    """A channel for one call path, connected before it is handed out (``warm=False`` for targets that nobody
    serves), so that no timed check pays for connecting."""

    def __init__(
        self,
        path: str,
        target: str,
        *policies: Policy,
        methods: Any = None,
        options: Sequence[Any] = (),
        warm: bool = True,
        **helper_options: Any,
    ) -> None:
        self.path = path.removeprefix("intercepted-")
        more = helper_options  # e.g. replay_buffer
        named = {**more, "target": target} if "metrics" in more else more  # the interceptors' grpc.target
        if path == "aio":

            async def make() -> Any:
                return interceptors.aio.resilient_channel(target, *policies, methods=methods, options=options, **more)

            self.channel = AIO_LOOP.run(make())
        elif path == "intercepted-aio":

            async def make_intercepted() -> Any:
                chain = interceptors.aio.resilience_interceptors(*policies, methods=methods, **named)
                opts = channel_options(options, retries=True)
                return grpc.aio.insecure_channel(target, options=opts, interceptors=chain)

            self.channel = AIO_LOOP.run(make_intercepted())
        elif path.startswith("intercepted-"):
            raw = grpc.insecure_channel(target, options=channel_options(options, retries=True))
            self.channel = grpc.intercept_channel(raw, ResilienceInterceptor(*policies, methods=methods, **named))
        else:
            self.channel = resilient_channel(target, *policies, methods=methods, options=options, **more)
        self.stub = pb_grpc.ScriptedStub(self.channel)
        if warm:
            self.warm()

    def warm(self, timeout: float = 10) -> None:
        """Wait until the channel is connected."""
        if self.is_aio:
            AIO_LOOP.run(asyncio.wait_for(self.channel.channel_ready(), timeout))
        else:
            grpc.channel_ready_future(self.channel).result(timeout)

    @property
    def is_aio(self) -> bool:
        return self.path == "aio"

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
        try:
            return Outcome(reply, error, code, details or "", {key: value for key, value in trailing or ()}, elapsed)
        finally:
            del error, call  # a failure's traceback holds this frame: no cycle (see test_reference_cycles)

    async def _aio_unary(self, request: Any, timeout: float | None, metadata: Any) -> tuple[Any, Any]:
        call = self.stub.Unary(request, timeout=timeout, metadata=metadata)
        reply = await call
        return reply, _AioEnded(await call.code(), await call.details(), await call.trailing_metadata())

    def in_thread(self, request: Any, timeout: float | None = None) -> Callable[[], Outcome]:
        """Start a unary call in a thread of its own; returns how to wait for its outcome."""
        pool = concurrent.futures.ThreadPoolExecutor(1)
        future = pool.submit(self.unary, request, timeout)
        pool.shutdown(wait=False)
        return lambda: future.result(10)

    def stream(self, kind: str, n: int, timeout: float | None = None, **fields: Any) -> list[Any]:
        """The replies of a streaming call of ``kind`` with ``n`` requests (or replies, for server streams)."""
        if self.is_aio:
            replies: list[Any] = AIO_LOOP.run(_aio_stream(self.stub, kind, n, timeout, **fields))
            return replies
        if kind == "server_stream":
            return list(self.stub.ServerStream(Request(count=n, **fields), timeout=timeout))
        if kind == "client_stream":
            return [self.stub.ClientStream(requests(n, **fields), timeout=timeout)]
        return list(self.stub.BidiStream(requests(n, **fields), timeout=timeout))

    def close(self) -> None:
        if self.is_aio:
            AIO_LOOP.run(self.channel.close())
        else:
            self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def requests(n: int, **fields: Any) -> Iterator[Any]:
    for i in range(n):
        yield Request(text=f"r{i}", **fields)


async def arequests(n: int, **fields: Any) -> AsyncIterator[Any]:
    for item in requests(n, **fields):
        yield item


async def _aio_stream(stub: Any, kind: str, n: int, timeout: float | None, **fields: Any) -> list[Any]:
    if kind == "server_stream":
        return [r async for r in stub.ServerStream(Request(count=n, **fields), timeout=timeout)]
    if kind == "client_stream":
        return [await stub.ClientStream(arequests(n, **fields), timeout=timeout)]
    return [r async for r in stub.BidiStream(arequests(n, **fields), timeout=timeout)]


@dataclass
class _AioEnded:
    _code: grpc.StatusCode
    _details: str
    _trailing: Any

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return self._trailing


def wait_until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Wait for ``condition`` to hold, polling; fails after ``timeout`` seconds."""
    ends = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > ends:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)
