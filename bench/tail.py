"""The tail scenario: a backend where 10 % of calls take 1 s more than the usual 5 ms. What each approach does to
the latency its callers see (p50, p99, p999) and to the load on the backend (attempts per call that reach it).

Bare channel, grpcio's built-in retry, ours without hedging (the recommended chain; and a retry after a 100 ms
attempt timeout, the usual way to cut a tail without hedging), and ours with hedging: a fixed 50 ms delay, and a
delay that follows the method's p95 latency. ``HEDGE_DELAY`` and the targets are stated in the report.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from demo.v1 import service_b_pb2_grpc

import interceptors.aio
from bench.approaches import BARE, BUILTIN, REQUEST, Budget, Client, recommended
from bench.backend import Backend
from bench.stats import percentile
from interceptors import Backoff, HedgePolicy, LatencyQuantile, RetryBudget, RetryPolicy, Timeout, resilient_channel
from interceptors.engine import Policy

CALLS = 2000
WARM_UP = 200  # calls before the measured ones: connections, and latencies for the adaptive delay
WORKERS = 16
USUAL, SLOW_RATE, SLOW_EXTRA = 0.005, 0.1, 1.0
HEDGE_DELAY = 0.05
MAX_LOAD = 1.15  # attempts per call


def hedged(delay: float | LatencyQuantile) -> Callable[[Budget], tuple[Policy, ...]]:
    return lambda budget: (HedgePolicy(delay=delay, max_attempts=3, budget=RetryBudget()),)


def attempt_timeout(budget: Budget) -> tuple[Policy, ...]:
    retry = RetryPolicy(max_attempts=3, delay=Backoff(0.001, 0.002), budget=RetryBudget())
    return retry, Timeout(0.1)


OURS: dict[str, tuple[str, Callable[[Budget], tuple[Policy, ...]]]] = {
    "ours: recommended (no hedging)": ("retry > throttle > breaker, as in §4", recommended),
    "ours: retry after a 100 ms attempt timeout": (
        "RetryPolicy(3 attempts, 1 ms backoff, RetryBudget()) > Timeout(0.1)",
        attempt_timeout,
    ),
    "ours: hedge at 50 ms": ("HedgePolicy(delay=0.05, max_attempts=3, budget=RetryBudget())", hedged(HEDGE_DELAY)),
    "ours: hedge at p95": (
        "HedgePolicy(delay=LatencyQuantile(0.95, min_samples=100), max_attempts=3, budget=RetryBudget())",
        hedged(LatencyQuantile(0.95, min_samples=100)),
    ),
}
AIO = "ours: hedge at 50 ms"


def _sync(chain: Callable[[Budget], tuple[Policy, ...]], target: str, budget: Budget) -> Client:
    channel = resilient_channel(target, *chain(budget))
    hello = service_b_pb2_grpc.ServiceBStub(channel).Hello
    return Client(lambda: hello(REQUEST, timeout=budget.deadline), channel.close)


def _calls(client: Client, count: int) -> list[tuple[float, bool]]:
    def one(_: int) -> tuple[float, bool]:
        start = time.monotonic()
        try:
            client.call()
            ok = True
        except grpc.RpcError:
            ok = False
        return time.monotonic() - start, ok

    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(one, range(count)))


async def _acalls(call: Callable[[], Awaitable[Any]], count: int) -> list[tuple[float, bool]]:
    results: list[tuple[float, bool]] = []
    left = iter(range(count))

    async def worker() -> None:
        for _ in left:
            start = time.monotonic()
            try:
                await call()
                ok = True
            except grpc.RpcError:
                ok = False
            results.append((time.monotonic() - start, ok))

    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return results


Runner = Callable[[int], list[tuple[float, bool]]]
"""Makes that many calls from ``WORKERS`` threads or tasks; each call's latency and whether it succeeded."""


def _measure(open_client: Callable[[str], tuple[Runner, Callable[[], Any]]]) -> dict[str, Any]:
    """Warm-up calls, then ``CALLS`` measured ones, to a fresh backend that counts the attempts reaching it."""
    with Backend(delay=USUAL, slow_rate=SLOW_RATE, slow_delay=SLOW_EXTRA, seed=7) as backend:
        run, close = open_client(backend.target)
        run(WARM_UP)
        began = time.monotonic()
        outcomes = run(CALLS)
        ended = time.monotonic()
        close()
    latencies = sorted(latency for latency, _ in outcomes)
    return {
        "calls": CALLS,
        "success_rate": sum(ok for _, ok in outcomes) / CALLS,
        "p50_s": percentile(latencies, 50),
        "p99_s": percentile(latencies, 99),
        "p999_s": percentile(latencies, 99.9),
        "max_s": latencies[-1],
        "attempts_per_call": backend.calls_between(began, ended) / CALLS,
        "latencies_s": latencies,
    }


def _threads(client: Client) -> tuple[Runner, Callable[[], Any]]:
    return (lambda count: _calls(client, count)), client.close


def _aio_run(
    chain: Callable[[Budget], tuple[Policy, ...]], target: str, budget: Budget
) -> tuple[Runner, Callable[[], Any]]:
    loop = asyncio.new_event_loop()

    async def open_channel() -> Any:
        return interceptors.aio.resilient_channel(target, *chain(budget))

    channel = loop.run_until_complete(open_channel())
    hello = service_b_pb2_grpc.ServiceBStub(channel).Hello

    def run(count: int) -> list[tuple[float, bool]]:
        return loop.run_until_complete(_acalls(lambda: hello(REQUEST, timeout=budget.deadline), count))

    def close() -> None:
        loop.run_until_complete(channel.close())
        loop.close()

    return run, close


def run() -> dict[str, Any]:
    budget = Budget(deadline=5.0)
    approaches: dict[str, Any] = {}
    for approach in (BARE, BUILTIN):
        sync = approach.sync
        approaches[approach.name] = _measure(lambda target, sync=sync: _threads(sync(target, budget)))  # type: ignore[misc]
        approaches[approach.name]["configuration"] = approach.describe(budget)
    for name, (description, chain) in OURS.items():
        approaches[name] = _measure(lambda target, c=chain: _threads(_sync(c, target, budget)))  # type: ignore[misc]
        approaches[name]["configuration"] = description
    description, chain = OURS[AIO]
    approaches[f"{AIO} (aio)"] = _measure(lambda target: _aio_run(chain, target, budget))
    approaches[f"{AIO} (aio)"]["configuration"] = description
    return {
        "calls": CALLS,
        "workers": WORKERS,
        "usual_s": USUAL,
        "slow_rate": SLOW_RATE,
        "slow_extra_s": SLOW_EXTRA,
        "hedge_delay_s": HEDGE_DELAY,
        "max_load": MAX_LOAD,
        "approaches": approaches,
    }
