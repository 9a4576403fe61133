"""Engine overhead: one successful call through fallback -> retry -> breaker -> timeout, versus calling directly.

Runs the two side by side in interleaved rounds (A B A B ...) so machine drift cancels, and reports the median
cost per call and its spread. Usage: python -m bench.engine [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.stats import quartiles
from interceptors import CircuitBreaker, Executor, Fallback, RetryPolicy, Timeout


def composed() -> Executor:
    return Executor(Fallback(value=None), RetryPolicy(), CircuitBreaker(failure_threshold=5), Timeout(1.0))


def work() -> int:
    return 1


async def async_work() -> int:
    return 1


def time_sync(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


async def time_async(fn: Callable[[], Awaitable[object]], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - start) / n * 1e6


def run(quick: bool = False) -> dict[str, Any]:
    """Measure; returns the results."""
    rounds, n = (5, 20_000) if quick else (15, 50_000)
    executor = composed()
    sync_direct: list[float] = []
    sync_chain: list[float] = []
    for _ in range(rounds):
        sync_direct.append(time_sync(work, n))
        sync_chain.append(time_sync(lambda: executor.call(work), n))

    async def run_async() -> tuple[list[float], list[float]]:
        direct: list[float] = []
        chain: list[float] = []
        for _ in range(rounds):
            direct.append(await time_async(async_work, n))
            chain.append(await time_async(lambda: executor.acall(async_work), n))
        return direct, chain

    async_direct, async_chain = asyncio.run(run_async())
    return {
        "python": sys.version.split()[0],
        "calls_per_round": n,
        "rounds": rounds,
        "sync": {"direct": quartiles(sync_direct), "composed": quartiles(sync_chain)},
        "async": {"direct": quartiles(async_direct), "composed": quartiles(async_chain)},
        "metrics": measured(rounds, n // 4),
    }


def measured(rounds: int, n: int) -> dict[str, Any]:
    """The composed chain with OpenTelemetry metrics (an SDK MeterProvider, in-memory reader): what a call costs
    on its path, and what handing its values to the SDK costs when the reader collects (per call)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from interceptors.otel import WAITING_LIMIT, Metrics

    reader = InMemoryMetricReader()
    metrics = Metrics(MeterProvider(metric_readers=[reader]))
    plain, instrumented = composed(), metrics.instrument(composed(), "/bench.v1.Bench/Call", "localhost:1")
    on_path: list[float] = []
    collecting: list[float] = []
    for _ in range(rounds):
        base = time_sync(lambda: plain.call(work), n)
        on_path.append(time_sync(lambda: instrumented.call(work), n) - base)
        started = time.perf_counter()
        reader.get_metrics_data()
        collecting.append((time.perf_counter() - started) / n * 1e6)
    metrics.close()
    return {
        "calls_per_round": n,
        "on_path": quartiles(on_path),
        "collection": quartiles(collecting),
        "waiting_limit": WAITING_LIMIT,
    }


def report(results: dict[str, Any]) -> None:
    print("Engine overhead, fallback -> retry -> breaker -> timeout, successful call (median of rounds)")
    for kind in ("sync", "async"):
        d, c = results[kind]["direct"], results[kind]["composed"]
        print(
            f"  {kind:5}  direct {d['median']:6.3f} us   composed {c['median']:6.3f} us "
            f"(IQR {c['q1']:.3f}..{c['q3']:.3f})   overhead {c['median'] - d['median']:6.3f} us/call"
        )
    m = results["metrics"]
    print(
        f"  metrics: +{m['on_path']['median']:.2f} us on the call's path, {m['collection']['median']:.2f} us per call "
        "when the reader collects"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    results = run(args.quick)
    report(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
