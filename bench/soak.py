"""Soak: mixed traffic through the composed chain, sync and aio at once, with the client process's threads, file
descriptors, asyncio tasks and RSS sampled; what grows beyond its bound is a leak.

The backend (bench/server.py, a process of its own) fails 10 % of calls (UNAVAILABLE, pushback 0) and holds 2 %
for 0.2 s; the chain is Fallback > RetryPolicy(3) > CircuitBreaker(5) > Timeout(0.05), so calls end OK, retried,
timed out, answered by the fallback, or rejected by an open breaker; one call in 50 is cancelled by its caller (a
``.future()`` or an aio task). Usage: python -m bench.soak [--calls N] [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import resource
import threading
import time
from collections import Counter
from typing import Any

import grpc
from demo.v1 import service_b_pb2, service_b_pb2_grpc

import interceptors.aio
from bench.backend import Backend
from interceptors import (
    Backoff,
    CircuitBreaker,
    Fallback,
    RetryPolicy,
    Timeout,
    replaced_by_fallback,
    resilient_channel,
)
from interceptors.engine import Policy
from interceptors.engine._hedge import HEDGES
from interceptors.engine._workers import FUTURES


class _Counts:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def add(self, result: str) -> None:
        with self.lock:
            self.counts[result] += 1


BOUNDS = {"threads": 8, "fds": 16, "tasks": 2, "rss_mib": 32.0}
"""How much each resource may grow over the second half of the calls: what leaks grows with the calls, while
pools fill up to the peak concurrency in the first half (idle library workers are not counted)."""
REQUEST = service_b_pb2.HelloRequest(name="soak")
CANCEL_EVERY = 50


def composed(heard: _Counts) -> tuple[Policy, ...]:
    """The chain, its retries, timeouts and breaker openings counted in ``heard``."""
    retry = RetryPolicy(max_attempts=3, delay=Backoff(0.005, 0.02), on_retry=lambda e: heard.add("retries"))
    breaker = CircuitBreaker(
        failure_threshold=5, delay=0.2, on_state_change=lambda e: heard.add(f"breaker {e.new.value}")
    )
    timeout = Timeout(0.05, on_timeout_exceeded=lambda e: heard.add("attempt timeouts"))
    return Fallback(), retry, breaker, timeout


def sample(loop: asyncio.AbstractEventLoop) -> dict[str, float]:
    """The process's threads (less the library's idle workers, a pool as large as the most calls it ever ran at
    once, kept 30 s), open fds, the loop's tasks and the resident set (MiB)."""
    tasks = asyncio.run_coroutine_threadsafe(_tasks(), loop).result(10)
    with open("/proc/self/statm") as statm:
        rss = int(statm.read().split()[1]) * resource.getpagesize() / 2**20
    return {
        "threads": threading.active_count() - FUTURES.idle - HEDGES.idle,
        "fds": len(os.listdir("/proc/self/fd")),
        "tasks": tasks,
        "rss_mib": rss,
    }


async def _tasks() -> int:
    return len(asyncio.all_tasks()) - 1  # not this one


def _outcome(reply_call: Any) -> str:
    _, call = reply_call
    return "fallback" if replaced_by_fallback(call.trailing_metadata()) else "OK"


def _failure(error: BaseException) -> str:
    if isinstance(error, (grpc.FutureCancelledError, asyncio.CancelledError)):
        return "cancelled"
    if isinstance(error, grpc.RpcError):
        return error.code().name
    return f"exception:{type(error).__name__}"


def _sync_worker(hello: Any, calls: range, counts: _Counts) -> None:
    for n in calls:
        try:
            if n % CANCEL_EVERY == 0:
                future = hello.future(REQUEST, timeout=1)
                future.cancel()
                future.result()
                result = "OK"
            else:
                result = _outcome(hello.with_call(REQUEST, timeout=1))
        except BaseException as error:
            result = _failure(error)
        counts.add(result)


async def _aio_worker(hello: Any, calls: range, counts: _Counts) -> None:
    for n in calls:
        try:
            call = hello(REQUEST, timeout=1)
            if n % CANCEL_EVERY == 0:
                task = asyncio.ensure_future(_answer(call))
                await asyncio.sleep(0)
                task.cancel()
                result = await task
            else:
                result = await _answer(call)
        except asyncio.CancelledError:
            result = "cancelled"
        except BaseException as error:
            result = _failure(error)
        counts.add(result)


async def _answer(call: Any) -> str:
    await call
    return "fallback" if replaced_by_fallback(await call.trailing_metadata()) else "OK"


def run(calls: int = 20_000, workers: int = 4, warm: int = 1000) -> dict[str, Any]:
    """Soak ``calls`` calls (half sync from ``workers`` threads, half aio from as many tasks) after ``warm``; the
    outcomes, and the resources halfway (``before``), at their peak and at the end (``after``)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="soak-aio", daemon=True)
    thread.start()
    heard = _Counts()
    with Backend(fail_rate=0.1, slow_rate=0.02, slow_delay=0.2, retry_after=0.0, seed=7) as backend:
        sync_channel = resilient_channel(backend.target, *composed(heard))
        aio_channel = asyncio.run_coroutine_threadsafe(_aio_channel(backend.target, heard), loop).result(10)
        sync_hello = service_b_pb2_grpc.ServiceBStub(sync_channel).Hello
        aio_hello = service_b_pb2_grpc.ServiceBStub(aio_channel).Hello
        counts = _Counts()

        def phase(total: int) -> None:
            half, each = total // 2, max(1, total // 2 // workers)
            chunks = [range(i * each, min((i + 1) * each, half)) for i in range(workers)]
            threads = [threading.Thread(target=_sync_worker, args=(sync_hello, c, counts)) for c in chunks]
            for t in threads:
                t.start()

            async def tasks() -> None:
                await asyncio.gather(*(_aio_worker(aio_hello, c, counts) for c in chunks))

            asyncio.run_coroutine_threadsafe(tasks(), loop).result()
            for t in threads:
                t.join()

        phase(warm)
        counts.counts, heard.counts = Counter(), Counter()
        peak = sample(loop)
        stop = threading.Event()

        def sampler() -> None:
            while not stop.wait(1.0):
                for key, value in sample(loop).items():
                    peak[key] = max(peak[key], value)

        watcher = threading.Thread(target=sampler, daemon=True)
        started = time.monotonic()
        watcher.start()
        phase(calls // 2)  # the first half fills the pools: not a leak
        gc.collect()
        before = sample(loop)
        phase(calls - calls // 2)
        seconds = time.monotonic() - started
        stop.set()
        watcher.join()
        time.sleep(0.5)  # let cancelled calls settle
        gc.collect()
        after = sample(loop)
        sync_channel.close()
        asyncio.run_coroutine_threadsafe(aio_channel.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    with contextlib.suppress(RuntimeError):
        loop.close()
    growth = {key: after[key] - before[key] for key in before}
    return {
        "calls": sum(counts.counts.values()),
        "seconds": seconds,
        "outcomes": dict(counts.counts),
        "events": dict(heard.counts),
        "before": before,
        "peak": peak,
        "after": after,
        "growth": growth,
        "bounds": BOUNDS,
        "within_bounds": all(growth[key] <= bound for key, bound in BOUNDS.items()),
    }


async def _aio_channel(target: str, heard: _Counts) -> Any:
    return interceptors.aio.resilient_channel(target, *composed(heard))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    result = run(args.calls, args.workers)
    print(json.dumps(result, indent=2))
    if not result["within_bounds"] or any(k.startswith("exception:") for k in result["outcomes"]):
        raise SystemExit("soak: a resource grew beyond its bound, or an exception other than RpcError escaped")


if __name__ == "__main__":
    main()
