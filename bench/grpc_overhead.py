"""Healthy-path overhead of the interceptors on unary calls, against a server in another process.

Contenders, each with the composed fallback -> retry -> breaker -> timeout unless said otherwise:
- sync: ``resilient_channel``; ``grpc.intercept_channel`` + ``ResilienceInterceptor``; and, to show what grpc's own
  interceptor layer costs, ``grpc.intercept_channel`` with an interceptor that does nothing;
- aio: ``interceptors.aio.resilient_channel``, and the do-nothing aio interceptor.

Each contender is timed in short batches right next to a bare channel, alternating which goes first, and the
per-batch ratio ours/bare is kept: adjacent batches see the same machine, so drift cancels. Reported: the median
ratio with its quartiles, and the median µs/call.
Usage: python bench/grpc_overhead.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from scripted.v1 import scripted_pb2 as pb
from scripted.v1 import scripted_pb2_grpc as pb_grpc

import interceptors.aio
from interceptors import CircuitBreaker, Fallback, ResilienceInterceptor, RetryPolicy, Timeout, resilient_channel

HERE = Path(__file__).parent
NO_RETRIES = [("grpc.enable_retries", 0)]
REQUEST = pb.Request(text="x")


@contextmanager
def server_process() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "protos" / "gen"), str(HERE.parent)])}
        process = subprocess.Popen([sys.executable, str(HERE / "server.py"), str(port_file)], env=env)
        try:
            deadline = time.monotonic() + 20
            while not port_file.exists() or not port_file.read_text():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("benchmark server did not start")
                time.sleep(0.02)
            yield f"127.0.0.1:{port_file.read_text()}"
        finally:
            process.terminate()
            process.wait(10)


def composed() -> tuple[Any, ...]:
    return (Fallback(), RetryPolicy(), CircuitBreaker(failure_threshold=5), Timeout(1.0))


class DoNothing(grpc.UnaryUnaryClientInterceptor):
    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(details, request)


class AioDoNothing(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(details, request)


def paired(batches: int, bare: Callable[[], float], contenders: dict[str, Callable[[], float]]) -> dict[str, Any]:
    ratios: dict[str, list[float]] = {name: [] for name in contenders}
    times: dict[str, list[float]] = {name: [] for name in ["bare", *contenders]}
    for i in range(batches):
        for name, run in contenders.items():
            if i % 2:
                base, ours = bare(), run()
            else:
                ours, base = run(), bare()
            ratios[name].append(ours / base)
            times[name].append(ours)
            times["bare"].append(base)
    result: dict[str, Any] = {"bare": {"median_us": statistics.median(times["bare"])}}
    for name, values in ratios.items():
        q = statistics.quantiles(values, n=4)
        result[name] = {
            "median_us": statistics.median(times[name]),
            "ratio": statistics.median(values),
            "ratio_q1": q[0],
            "ratio_q3": q[2],
        }
    return result


def sync_suite(target: str, batches: int, n: int) -> dict[str, Any]:
    def timed(channel: grpc.Channel) -> Callable[[], float]:
        call = pb_grpc.ScriptedStub(channel).Unary

        def run() -> float:
            start = time.perf_counter()
            for _ in range(n):
                call(REQUEST, timeout=5)
            return (time.perf_counter() - start) / n * 1e6

        run()  # connect and warm up
        return run

    channels = {
        "bare": grpc.insecure_channel(target, options=NO_RETRIES),
        "resilient_channel": resilient_channel(target, *composed()),
        "intercept_channel": grpc.intercept_channel(
            grpc.insecure_channel(target, options=NO_RETRIES), ResilienceInterceptor(*composed())
        ),
        "do-nothing interceptor": grpc.intercept_channel(
            grpc.insecure_channel(target, options=NO_RETRIES), DoNothing()
        ),
    }
    try:
        runs = {name: timed(channel) for name, channel in channels.items()}
        return paired(batches, runs.pop("bare"), runs)
    finally:
        for channel in channels.values():
            channel.close()


def aio_suite(target: str, batches: int, n: int) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        channels = {
            "bare": grpc.aio.insecure_channel(target, options=NO_RETRIES),
            "resilient_channel": interceptors.aio.resilient_channel(target, *composed()),
            "do-nothing interceptor": grpc.aio.insecure_channel(
                target, options=NO_RETRIES, interceptors=[AioDoNothing()]
            ),
        }

        def timed(channel: Any) -> Callable[[], Awaitable[float]]:
            call = pb_grpc.ScriptedStub(channel).Unary

            async def run() -> float:
                start = time.perf_counter()
                for _ in range(n):
                    await call(REQUEST, timeout=5)
                return (time.perf_counter() - start) / n * 1e6

            return run

        runs = {name: timed(channel) for name, channel in channels.items()}
        for run in runs.values():
            await run()
        samples: dict[str, list[float]] = {}
        bare = runs.pop("bare")
        # the same pairing as the sync suite, on the loop
        ratios: dict[str, list[float]] = {name: [] for name in runs}
        times: dict[str, list[float]] = {name: [] for name in ["bare", *runs]}
        for i in range(batches):
            for name, run in runs.items():
                if i % 2:
                    base, ours = await bare(), await run()
                else:
                    ours, base = await run(), await bare()
                ratios[name].append(ours / base)
                times[name].append(ours)
                times["bare"].append(base)
        for channel in channels.values():
            await channel.close()
        del samples
        result: dict[str, Any] = {"bare": {"median_us": statistics.median(times["bare"])}}
        for name, values in ratios.items():
            q = statistics.quantiles(values, n=4)
            result[name] = {
                "median_us": statistics.median(times[name]),
                "ratio": statistics.median(values),
                "ratio_q1": q[0],
                "ratio_q3": q[2],
            }
        return result

    return asyncio.run(main())


def report(kind: str, results: dict[str, Any]) -> None:
    print(f"  {kind}: bare {results['bare']['median_us']:.1f} us/call")
    for name, r in results.items():
        if name != "bare":
            print(
                f"    {name:24} {r['median_us']:7.1f} us/call   ratio {r['ratio']:.3f}x "
                f"(quartiles {r['ratio_q1']:.3f}..{r['ratio_q3']:.3f})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer batches")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    batches, n = (20, 100) if args.quick else (100, 100)
    with server_process() as target:
        results = {"sync": sync_suite(target, batches, n), "aio": aio_suite(target, batches, n)}
    print("gRPC healthy-path overhead, unary, server in another process (paired batches, median ratio to bare)")
    for kind in ("sync", "aio"):
        report(kind, results[kind])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"batches": batches, "calls_per_batch": n, **results}, indent=2))


if __name__ == "__main__":
    main()
