"""Streams on a healthy backend: messages per second of a 1000-message server stream and a 1000-message client
stream, a bare channel against ours with the composed chain (Fallback > Retry > Breaker > Timeout), sync and aio.

``python -m bench.streams --port-file F`` is the backend: the scripted test service's ServerStream and
ClientStream, in a grpc.aio server of its own process. Each batch times one stream of each client, side by side,
alternating which goes first; its ratio is ours / bare in messages per second.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from scripted.v1 import scripted_pb2 as pb
from scripted.v1 import scripted_pb2_grpc as pb_grpc

import interceptors.aio
from bench.approaches import NO_RETRIES, Budget
from bench.backend import _start
from bench.stats import quartiles
from interceptors import Backoff, CircuitBreaker, Fallback, RetryPolicy, Timeout, resilient_channel

MESSAGES = 1000
REQUEST = pb.Request(text="x" * 64)


class Backend(pb_grpc.ScriptedServicer):
    async def ServerStream(self, request: Any, context: Any) -> AsyncIterator[Any]:
        reply = pb.Reply(text=request.text)
        for _ in range(request.count):
            yield reply

    async def ClientStream(self, request_iterator: AsyncIterator[Any], context: Any) -> Any:
        count = 0
        async for _ in request_iterator:
            count += 1
        return pb.Reply(index=count)


async def serve(port_file: Path) -> None:
    server = grpc.aio.server()
    pb_grpc.add_ScriptedServicer_to_server(Backend(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await asyncio.to_thread(port_file.write_text, str(port))
    await server.wait_for_termination()


def composed(budget: Budget) -> tuple[Any, ...]:
    retry = RetryPolicy(max_attempts=budget.attempts, delay=Backoff(budget.backoff_initial, budget.backoff_max))
    breaker = CircuitBreaker(failure_threshold=budget.breaker_failures, delay=budget.breaker_delay)
    return Fallback(), retry, breaker, Timeout(budget.attempt_timeout)


def _requests(messages: int) -> Iterator[Any]:
    for _ in range(messages):
        yield REQUEST


def _timed_sync(stub: Any, messages: int) -> dict[str, Callable[[], float]]:
    def server_stream() -> float:
        start = time.perf_counter()
        count = sum(1 for _ in stub.ServerStream(pb.Request(count=messages, text=REQUEST.text), timeout=30))
        assert count == messages
        return time.perf_counter() - start

    def client_stream() -> float:
        start = time.perf_counter()
        assert stub.ClientStream(_requests(messages), timeout=30).index == messages
        return time.perf_counter() - start

    return {"server_stream": server_stream, "client_stream": client_stream}


def _timed_aio(stub: Any, loop: asyncio.AbstractEventLoop, messages: int) -> dict[str, Callable[[], float]]:
    async def server_stream() -> float:
        start = time.perf_counter()
        count = 0
        async for _ in stub.ServerStream(pb.Request(count=messages, text=REQUEST.text), timeout=30):
            count += 1
        assert count == messages
        return time.perf_counter() - start

    async def client_stream() -> float:
        start = time.perf_counter()
        assert (await stub.ClientStream(_requests(messages), timeout=30)).index == messages
        return time.perf_counter() - start

    return {
        "server_stream": lambda: loop.run_until_complete(server_stream()),
        "client_stream": lambda: loop.run_until_complete(client_stream()),
    }


def _side_by_side(
    batches: int, messages: int, bare: dict[str, Callable[[], float]], ours: dict[str, Callable[[], float]]
) -> Any:
    result: dict[str, Any] = {}
    for kind in bare:
        for _ in range(3):  # connect and warm up
            bare[kind](), ours[kind]()
        ratios: list[float] = []
        rates: dict[str, list[float]] = {"bare": [], "ours": []}
        for i in range(batches):
            if i % 2:
                ours_s, bare_s = ours[kind](), bare[kind]()
            else:
                bare_s, ours_s = bare[kind](), ours[kind]()
            ratios.append(bare_s / ours_s)  # messages per second, ours / bare
            rates["bare"].append(messages / bare_s)
            rates["ours"].append(messages / ours_s)
        result[kind] = {"ratio": quartiles(ratios), "messages_per_s": {k: quartiles(v) for k, v in rates.items()}}
    return result


def run(batches: int = 200, messages: int = MESSAGES) -> dict[str, Any]:
    """``batches`` of a server stream and a client stream of ``messages`` each, bare and through ours, side by
    side."""
    budget = Budget(deadline=30.0, attempt_timeout=30.0)
    with tempfile.TemporaryDirectory() as directory:
        process, target = _start("bench.streams", directory)
        try:
            bare_channel = grpc.insecure_channel(target, options=NO_RETRIES)
            ours_channel = resilient_channel(target, *composed(budget))
            sync = _side_by_side(
                batches,
                messages,
                _timed_sync(pb_grpc.ScriptedStub(bare_channel), messages),
                _timed_sync(pb_grpc.ScriptedStub(ours_channel), messages),
            )
            bare_channel.close()
            ours_channel.close()
            loop = asyncio.new_event_loop()

            async def channels() -> tuple[Any, Any]:
                return grpc.aio.insecure_channel(target, options=NO_RETRIES), interceptors.aio.resilient_channel(
                    target, *composed(budget)
                )

            bare_aio, ours_aio = loop.run_until_complete(channels())
            aio = _side_by_side(
                batches,
                messages,
                _timed_aio(pb_grpc.ScriptedStub(bare_aio), loop, messages),
                _timed_aio(pb_grpc.ScriptedStub(ours_aio), loop, messages),
            )
            loop.run_until_complete(bare_aio.close())
            loop.run_until_complete(ours_aio.close())
            loop.close()
        finally:
            process.terminate()
            process.wait(20)
    return {"batches": batches, "messages": messages, "sync": sync, "aio": aio}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port-file", type=Path, required=True)
    asyncio.run(serve(parser.parse_args().port_file))
