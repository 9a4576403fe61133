"""16 threads and 16 tasks on one channel and one breaker: every call keeps its own deadline and attempt count."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from scripted.v1 import scripted_pb2_grpc as pb_grpc

import interceptors.aio
from interceptors import CircuitBreaker, RetryPolicy, Timeout, resilient_channel

from ..support.server import AIO_LOOP, Request, ScriptedServer, check_deadline

WORKERS, CALLS = 16, 8


def plan(worker: int, call: int) -> tuple[str, int, float]:
    """Each call's id, how many attempts of it fail, and the caller's timeout."""
    return f"w{worker}-c{call}", (worker + call) % 3, 2.0 + worker * 0.25


def shared_policies() -> tuple[CircuitBreaker, tuple[Any, ...]]:
    breaker = CircuitBreaker(failure_threshold=1000, failure_window=1000)
    return breaker, (RetryPolicy(max_attempts=4), breaker, Timeout(4.0))


def check(server: ScriptedServer, breaker: CircuitBreaker, replies: dict[str, Any], started: dict[str, float]) -> None:
    total_failures = 0
    for w in range(WORKERS):
        for c in range(CALLS):
            id, fails, timeout = plan(w, c)
            total_failures += fails
            assert replies[id].attempt == fails + 1, id
            seen = [s for s in server.recorder.seen if s.id == id]
            assert len(seen) == fails + 1, id
            assert [s.metadata.get("grpc-previous-rpc-attempts") for s in seen] == [None] + [
                str(n) for n in range(1, fails + 1)
            ]
            # the caller's own timeout, not a neighbour's (theirs are 250 ms apart)
            check_deadline(seen[0], timeout=min(timeout, 4.0), sent_after=started[id])
    metrics = breaker.metrics
    assert (metrics.executions, metrics.failures) == (WORKERS * CALLS + total_failures, total_failures)


def test_threads_share_one_channel_and_breaker(server: ScriptedServer) -> None:
    breaker, policies = shared_policies()
    channel = resilient_channel(server.target, *policies)
    stub = pb_grpc.ScriptedStub(channel)
    replies: dict[str, Any] = {}
    started: dict[str, float] = {}
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            for c in range(CALLS):
                id, fails, timeout = plan(w, c)
                started[id] = time.monotonic()
                replies[id] = stub.Unary(Request(id=id, fail_first=fails), timeout=timeout)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    channel.close()
    assert errors == []
    check(server, breaker, replies, started)


def test_tasks_share_one_channel_and_breaker(server: ScriptedServer) -> None:
    breaker, policies = shared_policies()
    started: dict[str, float] = {}

    async def main() -> dict[str, Any]:
        async with interceptors.aio.resilient_channel(server.target, *policies) as channel:
            stub = pb_grpc.ScriptedStub(channel)

            async def worker(w: int) -> list[tuple[str, Any]]:
                out = []
                for c in range(CALLS):
                    id, fails, timeout = plan(w, c)
                    started[id] = time.monotonic()
                    out.append((id, await stub.Unary(Request(id=id, fail_first=fails), timeout=timeout)))
                return out

            results = await asyncio.gather(*(worker(w) for w in range(WORKERS)))
        return {id: reply for pairs in results for id, reply in pairs}

    check(server, breaker, AIO_LOOP.run(main(), timeout=60), started)
