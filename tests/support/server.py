"""A real gRPC server, sync or aio, on 127.0.0.1 with a free port, whose failures and delays the tests script.

Each request may say how to behave (fail the first N attempts of its id, sleep); the server's ``script`` sets a
default for every request. The server records every attempt it saw: id, attempt number, the deadline it was
given and the metadata it received.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from scripted.v1 import scripted_pb2 as pb
from scripted.v1 import scripted_pb2_grpc as pb_grpc

Request, Reply = pb.Request, pb.Reply


class LoopThread:
    """One event loop on a thread of its own for every grpc.aio object of the test session.

    grpc.aio binds its completion-queue poller to the loops that use it; loops that come and go in other threads
    leave it stuck (grpc/grpc#25364, #23377), so aio servers and aio clients of all tests share this one loop.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name="aio-tests", daemon=True).start()
            return self._loop

    def run(self, coroutine: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)


AIO_LOOP = LoopThread()


@dataclass
class Script:
    """What the server does with every request, beyond what the request itself asks."""

    fail_first: int = 0
    code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    details: str = "scripted failure"
    trailers: tuple[tuple[str, str | bytes], ...] = ()
    sleep: float = 0.0


@dataclass
class Seen:
    id: str
    attempt: int
    time_remaining: float | None
    metadata: dict[str, Any]
    at: float
    fail_after: int = 0


GRPC_CLOCK = 0.15
"""How much later or earlier than the caller's a deadline may reach a server: grpc rounds a timeout up to its
10 ms units, and its cached clock lags the real one by tens of ms when both cores are busy (up to ~0.11 s seen
with two suites of six workers at once; eight, since)."""


def check_deadline(seen: Seen, *, timeout: float, sent_after: float, slack: float = GRPC_CLOCK) -> None:
    """``seen`` came with the deadline ``timeout`` from a moment after ``sent_after`` (``time.monotonic()``): the
    server had at most ``timeout`` left, and its deadline (``at + time_remaining``) is no earlier than
    ``sent_after + timeout``, within grpc's clock (``slack``). Both hold however late a loaded server starts the
    handler."""
    assert seen.time_remaining is not None, seen.id
    assert seen.time_remaining <= timeout + slack, (seen.id, seen.time_remaining, timeout)
    late = seen.at + seen.time_remaining - (sent_after + timeout)
    assert late >= -slack, (seen.id, seen.time_remaining, timeout, f"deadline {-late:.3f} s early")


@dataclass
class Recorder:
    script: Script = field(default_factory=Script)
    seen: list[Seen] = field(default_factory=list)
    cancelled: set[str] = field(default_factory=set)  # ids whose call was cancelled while the server slept
    _counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def arrive(self, request: Any, context: Any) -> tuple[Seen, str | None]:
        """Record an attempt; returns it and the failure it should answer (None: answer normally)."""
        with self._lock:
            self._counts[request.id] += 1
            time_remaining, at = context.time_remaining(), time.monotonic()  # together: at + time_remaining
            seen = Seen(
                request.id, self._counts[request.id], time_remaining, dict(context.invocation_metadata() or ()), at
            )
            self.seen.append(seen)
        fail_first = request.fail_first or self.script.fail_first
        return seen, ("fail" if seen.attempt <= fail_first else None)

    def attempts(self, id: str = "") -> int:
        return sum(1 for s in self.seen if s.id == id)

    def ended_early(self, request: Any, finished: threading.Event) -> None:
        """A pausing server stream's call ended before its handler did: it was cancelled."""
        if request.pause_ms and not finished.is_set():
            self.cancelled.add(request.id)

    def sleep_for(self, request: Any, seen: Seen) -> float:
        if request.sleep_attempts and seen.attempt > request.sleep_attempts:
            return 0.0
        return request.sleep_ms / 1000 if request.sleep_ms else self.script.sleep

    def reply(self, request: Any, seen: Seen, index: int = 0) -> Any:
        return Reply(
            id=request.id,
            attempt=seen.attempt,
            time_remaining=-1 if seen.time_remaining is None else seen.time_remaining,
            text=request.text,
            index=index,
            previous_attempts=str(seen.metadata.get("grpc-previous-rpc-attempts", "")),
        )


class SyncService(pb_grpc.ScriptedServicer):
    def __init__(self, recorder: Recorder) -> None:
        self.r = recorder

    def _begin(self, request: Any, context: Any, streaming: bool = False) -> Seen:
        seen, fail = self.r.arrive(request, context)
        if fail and streaming and request.fail_after:
            seen.fail_after = request.fail_after  # fails after its first replies
            fail = None
        pause = self.r.sleep_for(request, seen)
        if pause:
            self._pause(request, context, pause)
        if fail:
            script = self.r.script
            context.set_trailing_metadata(script.trailers)
            context.abort(script.code, script.details)
        return seen

    def Unary(self, request: Any, context: Any) -> Any:
        return self.r.reply(request, self._begin(request, context))

    def ServerStream(self, request: Any, context: Any) -> Iterator[Any]:
        seen = self._begin(request, context, streaming=True)
        finished = threading.Event()  # cancelled as a reply is sent, grpc drives the handler no further
        context.add_callback(lambda: self.r.ended_early(request, finished))
        for i in range(request.start, request.count):
            if seen.fail_after and i - request.start == seen.fail_after:
                context.abort(self.r.script.code, "scripted failure after replies")
            yield self.r.reply(request, seen, i)
            if i == request.start and request.pause_ms:
                self._pause(request, context, request.pause_ms / 1000)
        finished.set()

    def _pause(self, request: Any, context: Any, seconds: float) -> None:
        """Sleep ``seconds``, or until the call is cancelled (recorded)."""
        ends = time.monotonic() + seconds
        while context.is_active() and time.monotonic() < ends:
            time.sleep(0.005)
        if not context.is_active():
            self.r.cancelled.add(request.id)

    def ClientStream(self, request_iterator: Iterator[Any], context: Any) -> Any:
        requests = list(request_iterator)
        seen = self._begin(requests[0] if requests else Request(), context)
        return Reply(text="".join(r.text for r in requests), index=len(requests), attempt=seen.attempt)

    def BidiStream(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:
        for i, request in enumerate(request_iterator):
            seen = self._begin(request, context) if i == 0 else None
            yield Reply(text=request.text, index=i, attempt=seen.attempt if seen else 0)


class AioService(pb_grpc.ScriptedServicer):
    def __init__(self, recorder: Recorder) -> None:
        self.r = recorder

    async def _begin(self, request: Any, context: Any, streaming: bool = False) -> Seen:
        seen, fail = self.r.arrive(request, context)
        if fail and streaming and request.fail_after:
            seen.fail_after = request.fail_after  # fails after its first replies
            fail = None
        pause = self.r.sleep_for(request, seen)
        if pause:
            await self._pause(request, pause)
        if fail:
            script = self.r.script
            context.set_trailing_metadata(script.trailers)
            await context.abort(script.code, script.details)
        return seen

    async def Unary(self, request: Any, context: Any) -> Any:
        return self.r.reply(request, await self._begin(request, context))

    async def ServerStream(self, request: Any, context: Any) -> AsyncIterator[Any]:
        seen = await self._begin(request, context, streaming=True)
        finished = threading.Event()  # cancelled as a reply is sent, grpc drives the handler no further
        context.add_done_callback(lambda _: self.r.ended_early(request, finished))
        for i in range(request.start, request.count):
            if seen.fail_after and i - request.start == seen.fail_after:
                await context.abort(self.r.script.code, "scripted failure after replies")
            yield self.r.reply(request, seen, i)
            if i == request.start and request.pause_ms:
                await self._pause(request, request.pause_ms / 1000)
        finished.set()

    async def _pause(self, request: Any, seconds: float) -> None:
        """Sleep ``seconds``, or until the call is cancelled (recorded)."""
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.r.cancelled.add(request.id)
            raise

    async def ClientStream(self, request_iterator: AsyncIterator[Any], context: Any) -> Any:
        requests = [r async for r in request_iterator]
        seen = await self._begin(requests[0] if requests else Request(), context)
        return Reply(text="".join(r.text for r in requests), index=len(requests), attempt=seen.attempt)

    async def BidiStream(self, request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        i = 0
        async for request in request_iterator:  # a cancelled call's requests just end, here
            seen = await self._begin(request, context) if i == 0 else None
            yield Reply(text=request.text, index=i, attempt=seen.attempt if seen else 0)
            i += 1


class ScriptedServer:
    """A running server of ``kind`` ("sync" or "aio"); ``target`` to dial, ``recorder`` to script and inspect;
    ``interceptors`` are server interceptors of that kind."""

    def __init__(
        self,
        kind: str,
        interceptors: Sequence[Any] = (),
        options: Sequence[tuple[str, Any]] = (),
        services: Sequence[Callable[[Any], object]] = (),
        pool: futures.ThreadPoolExecutor | None = None,
    ) -> None:
        self.kind = kind
        self.recorder = Recorder()
        self._stop: Any = None
        self._services = services  # each adds a service to the server before it starts
        if kind == "sync":
            self.pool = pool or futures.ThreadPoolExecutor(max_workers=64)
            server = grpc.server(self.pool, interceptors=list(interceptors), options=list(options))
            pb_grpc.add_ScriptedServicer_to_server(SyncService(self.recorder), server)
            for add in services:
                add(server)
            self.port = server.add_insecure_port("127.0.0.1:0")
            server.start()
            self._stop = lambda: server.stop(grace=None)
        else:
            self._start_aio(interceptors, options)
        self.target = f"127.0.0.1:{self.port}"

    def _start_aio(self, interceptors: Sequence[Any], options: Sequence[tuple[str, Any]]) -> None:
        async def start() -> Any:
            server = grpc.aio.server(interceptors=interceptors, options=options)
            pb_grpc.add_ScriptedServicer_to_server(AioService(self.recorder), server)
            for add in self._services:
                add(server)
            self.port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            return server

        server = AIO_LOOP.run(start())
        self._stop = lambda: AIO_LOOP.run(server.stop(None))

    @property
    def script(self) -> Script:
        return self.recorder.script

    def attempts(self, id: str = "") -> int:
        return self.recorder.attempts(id)

    def stop(self) -> None:
        self._stop()
