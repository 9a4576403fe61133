"""A service in the middle: a real server (sync or aio) whose Scripted.Unary calls the same method downstream
through this library's client, on one of the call paths, with context propagation installed. Asked with the text
"time_remaining", it answers what the call it made said of its deadline as it began (paths with a call object).

``spawn`` makes the handler call downstream from a thread that carries its context (sync) or from a task it
shields from its own cancellation (aio), so that only the propagated cancellation can stop that call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from collections.abc import Sequence
from typing import Any

import grpc
from scripted.v1 import scripted_pb2_grpc as pb_grpc

from interceptors import Priorities
from interceptors.engine import Policy
from interceptors.server import DEFAULT_RESERVE, AioContextPropagation, ContextPropagation

from .clients import Client
from .server import AIO_LOOP

RELAYS = [
    ("sync", "call", False),
    ("sync", "future", False),
    ("sync", "intercepted-call", False),
    ("sync", "intercepted-future", False),
    ("sync", "call", True),
    ("aio", "aio", False),
    ("aio", "intercepted-aio", False),
    ("aio", "aio", True),
    ("aio", "intercepted-aio", True),
]
"""(server kind, client path, spawn) of the relays the tests chain."""


def relay_id(relay: tuple[str, str, bool]) -> str:
    kind, path, spawn = relay
    return f"{kind}-{path}" + ("-spawned" if spawn else "")


class RelayServer:
    """Relays Scripted.Unary to ``downstream`` through ``policies``; ``interceptors`` go before the propagation,
    which believes callers' priorities as ``priorities`` says; a sync relay has ``workers`` threads."""

    def __init__(
        self,
        relay: tuple[str, str, bool],
        downstream: str,
        *policies: Policy,
        reserve: float = DEFAULT_RESERVE,
        interceptors: Sequence[Any] = (),
        workers: int = 32,
        priorities: Priorities | None = None,
    ) -> None:
        self.kind, path, spawn = relay
        self.client = Client(path, downstream, *policies, warm=False)
        self.cancelled = 0  # handlers that saw their call cancelled
        if self.kind == "sync":
            chain = [*interceptors, ContextPropagation(reserve=reserve, priorities=priorities)]
            server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=workers), interceptors=chain)
            pb_grpc.add_ScriptedServicer_to_server(_SyncRelay(self, path, spawn), server)
            self.port = server.add_insecure_port("127.0.0.1:0")
            server.start()
            self._stop = lambda: server.stop(None)
        else:
            aio_chain = [*interceptors, AioContextPropagation(reserve=reserve, priorities=priorities)]

            async def start() -> Any:
                server = grpc.aio.server(interceptors=aio_chain)
                pb_grpc.add_ScriptedServicer_to_server(_AioRelay(self, spawn), server)
                self.port = server.add_insecure_port("127.0.0.1:0")
                await server.start()
                return server

            aio_server = AIO_LOOP.run(start())
            self._stop = lambda: AIO_LOOP.run(aio_server.stop(None))
        self.target = f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop()
        self.client.close()


class _SyncRelay(pb_grpc.ScriptedServicer):
    def __init__(self, relay: RelayServer, path: str, spawn: bool) -> None:
        self._relay, self._path, self._spawn = relay, path.removeprefix("intercepted-"), spawn

    def Unary(self, request: Any, context: Any) -> Any:
        if not self._spawn:
            return self._call(request)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(contextvars.copy_context().run, self._call, request).result()

    def _call(self, request: Any) -> Any:
        stub = self._relay.client.stub
        try:
            if self._path == "call":
                return stub.Unary(request)
            future = stub.Unary.future(request)
            asked = request.text == "time_remaining"  # what the call it made says of its deadline, as it begins
            left = future.time_remaining() if asked else None
            reply = future.result()
            if asked:
                reply.text = repr(left)
            return reply
        except grpc.RpcError as error:
            if error.code() is grpc.StatusCode.CANCELLED:
                self._relay.cancelled += 1
            raise
        except grpc.FutureCancelledError:
            self._relay.cancelled += 1
            raise


class _AioRelay(pb_grpc.ScriptedServicer):
    def __init__(self, relay: RelayServer, spawn: bool) -> None:
        self._relay, self._spawn = relay, spawn

    async def Unary(self, request: Any, context: Any) -> Any:
        try:
            if not self._spawn:
                return await self._call(request)
            task = asyncio.ensure_future(self._call(request))
            return await asyncio.shield(task)  # only the propagated cancellation reaches the task
        except asyncio.CancelledError:
            self._relay.cancelled += 1
            raise

    async def _call(self, request: Any) -> Any:
        call = self._relay.client.stub.Unary(request)
        asked = request.text == "time_remaining"  # what the call it made says of its deadline, as it begins
        left = call.time_remaining() if asked else None
        reply = await call
        if asked:
            reply.text = repr(left)
        return reply
