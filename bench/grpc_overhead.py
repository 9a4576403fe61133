"""Healthy-path overhead of the interceptors: bare channel vs fallback -> retry -> breaker -> timeout.

The server runs in another process; sync and aio clients call it side by side in interleaved rounds
(bare, ours, bare, ours, ...) so machine drift cancels; medians and quartiles are reported.
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from scripted.v1 import scripted_pb2 as pb
from scripted.v1 import scripted_pb2_grpc as pb_grpc

import interceptors.aio
from interceptors import CircuitBreaker, Fallback, RetryPolicy, Timeout, resilient_channel

HERE = Path(__file__).parent


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


def summary(samples: list[float]) -> dict[str, float]:
    q = statistics.quantiles(samples, n=4)
    return {"median_us": statistics.median(samples), "q1_us": q[0], "q3_us": q[2]}


def interleave(rounds: int, contenders: dict[str, Callable[[], float]]) -> dict[str, dict[str, float]]:
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            samples[name].append(run())
    return {name: summary(values) for name, values in samples.items()}


def sync_suite(target: str, rounds: int, n: int) -> dict[str, dict[str, float]]:
    bare = grpc.insecure_channel(target, options=[("grpc.enable_retries", 0)])
    ours = resilient_channel(target, *composed())
    request = pb.Request(text="x")

    def timed(channel: grpc.Channel) -> Callable[[], float]:
        call = pb_grpc.ScriptedStub(channel).Unary

        def run() -> float:
            start = time.perf_counter()
            for _ in range(n):
                call(request, timeout=5)
            return (time.perf_counter() - start) / n * 1e6

        return run

    for channel in (bare, ours):
        timed(channel)()  # connect and warm up
    try:
        return interleave(rounds, {"bare": timed(bare), "composed": timed(ours)})
    finally:
        bare.close()
        ours.close()


def aio_suite(target: str, rounds: int, n: int) -> dict[str, dict[str, float]]:
    async def main() -> dict[str, dict[str, float]]:
        bare = grpc.aio.insecure_channel(target, options=[("grpc.enable_retries", 0)])
        ours = interceptors.aio.resilient_channel(target, *composed())
        request = pb.Request(text="x")
        samples: dict[str, list[float]] = {"bare": [], "composed": []}

        async def timed(channel: Any) -> float:
            call = pb_grpc.ScriptedStub(channel).Unary
            start = time.perf_counter()
            for _ in range(n):
                await call(request, timeout=5)
            return (time.perf_counter() - start) / n * 1e6

        for channel in (bare, ours):
            await timed(channel)
        for _ in range(rounds):
            samples["bare"].append(await timed(bare))
            samples["composed"].append(await timed(ours))
        await bare.close()
        await ours.close()
        return {name: summary(values) for name, values in samples.items()}

    return asyncio.run(main())


def report(kind: str, results: dict[str, dict[str, float]]) -> float:
    bare, ours = results["bare"]["median_us"], results["composed"]["median_us"]
    ratio = ours / bare
    print(
        f"  {kind:5} bare {bare:7.1f} us/call   composed {ours:7.1f} us/call "
        f"(IQR {results['composed']['q1_us']:.1f}..{results['composed']['q3_us']:.1f})   ratio {ratio:.3f}x"
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    rounds, n = (10, 250) if args.quick else (60, 500)
    with server_process() as target:
        results = {"sync": sync_suite(target, rounds, n), "aio": aio_suite(target, rounds, n)}
    print("gRPC healthy-path overhead, unary, server in another process (median of interleaved rounds)")
    ratios = {kind: report(kind, results[kind]) for kind in ("sync", "aio")}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"rounds": rounds, "calls_per_round": n, "results": results, "ratios": ratios}
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
