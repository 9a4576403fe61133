"""Priorities and tenants under overload (make bench, suite "priorities"): a server in a process of its own
(bench/priority_server.py, one method taking 50 ms, at most 10 at once: 200 calls a second), called from this
process at fixed rates, open loop.

1. Overload by priority: 3x (and 2.5x) the server's capacity, equal parts critical, normal and sheddable: success
   and p99 by priority, with priority-blind shedding and with priorities, beside the critical calls' p99 alone.
2. A noisy tenant: one tenant at 10x its quota, three at their quota, against a server that can serve 6 quotas:
   each tenant's success, with and without a quota per tenant.
3. Retries under overload: callers that retry (RetryPolicy, 3 attempts) at 2x capacity: the share of the
   server's work spent on retries, with priority-blind shedding and with priorities.
4. The healthy path: a call with a priority and a keyed limiter beside a bare one (paired batches).
"""

from __future__ import annotations

import asyncio
import json
import signal
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from demo.v1 import service_b_pb2_grpc

import interceptors.aio
from bench.approaches import REQUEST
from bench.backend import Backend, _start
from bench.stats import measure, paired, percentile
from interceptors import Bulkhead, Keyed, Priority, RetryPolicy, prioritized, resilient_channel

METHOD = "/bench.Priorities/Work"
LIMIT, SERVICE = 10, 0.05
CAPACITY = LIMIT / SERVICE  # calls a second
SECONDS = 4.0
DEADLINE = 1.0
MAX_WAIT = 0.02
"""Seconds a call may wait for a place at the server (times its share of the limit)."""


class Server:
    """A running bench/priority_server.py; ``served`` (what its handler served) once left."""

    def __init__(self, **options: object) -> None:
        self._dir = tempfile.TemporaryDirectory()
        self._record = Path(self._dir.name, "record.json")
        self._process, self.target = _start(
            "bench.priority_server", self._dir.name, record_file=self._record, **options
        )
        self.served: Counter[str] = Counter()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self._process.send_signal(signal.SIGTERM)
        self._process.wait(20)
        self.served = Counter(json.loads(self._record.read_text()))
        self._dir.cleanup()


Call = tuple[str, tuple[tuple[str, str], ...]]
"""A call's class (how the results group it) and its metadata."""


async def _open_loop(channel: Any, calls: Sequence[Call], rate: float) -> dict[str, list[tuple[bool, float]]]:
    """Send ``calls`` at ``rate`` a second, evenly spaced, each with a deadline of DEADLINE: (ok, seconds) of each
    call, by class."""
    work = channel.unary_unary(METHOD)
    outcomes: dict[str, list[tuple[bool, float]]] = defaultdict(list)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05

    async def one(at: float, kind: str, metadata: tuple[tuple[str, str], ...]) -> None:
        await asyncio.sleep(max(at - loop.time(), 0))
        began = loop.time()
        try:
            await work(b"", timeout=DEADLINE, metadata=metadata)
            ok = True
        except grpc.RpcError:
            ok = False
        outcomes[kind].append((ok, loop.time() - began))

    await asyncio.gather(*(one(start + i / rate, kind, metadata) for i, (kind, metadata) in enumerate(calls)))
    return outcomes


def _summary(outcomes: list[tuple[bool, float]]) -> dict[str, Any]:
    ok = [seconds for good, seconds in outcomes if good]
    return {
        "calls": len(outcomes),
        "success": len(ok) / len(outcomes) if outcomes else 0.0,
        "p50_ms": percentile(ok, 50) * 1000,
        "p99_ms": percentile(ok, 99) * 1000,
    }


def _run(channel_of: Callable[[str], Any], target: str, calls: Sequence[Call], rate: float) -> dict[str, Any]:
    async def main() -> dict[str, list[tuple[bool, float]]]:
        channel = channel_of(target)
        try:
            await channel.unary_unary(METHOD)(b"", timeout=5)  # connected
            return await _open_loop(channel, calls, rate)
        finally:
            await channel.close()

    outcomes = asyncio.run(main())
    return {kind: _summary(results) for kind, results in sorted(outcomes.items())}


def _plain(target: str) -> Any:
    return grpc.aio.insecure_channel(target)


LEVELS = ["critical", "normal", "sheddable"]


def overload_by_priority(seconds: float = SECONDS) -> dict[str, Any]:
    """Equal parts critical, normal and sheddable at 3x capacity (the critical part alone is all the server can
    do) and at 2.5x (the critical part is 83 % of it); the critical calls alone at a quarter of capacity first."""
    alone = [("critical", (("x-priority", "critical"),))] * int(CAPACITY / 4 * seconds)
    result: dict[str, Any] = {"capacity_per_second": CAPACITY, "max_wait": MAX_WAIT}
    with Server(limit=LIMIT, service=SERVICE, shedding="priorities") as server:
        result["critical alone, a quarter of capacity"] = _run(_plain, server.target, alone, CAPACITY / 4)
    for factor in (3.0, 2.5):
        rate = factor * CAPACITY
        mixed = [(level, (("x-priority", level),)) for _ in range(int(rate * seconds / 3)) for level in LEVELS]
        for shedding in ("blind", "priorities"):
            with Server(limit=LIMIT, service=SERVICE, shedding=shedding, max_wait=MAX_WAIT) as server:
                result[f"{factor:g}x capacity, {shedding}"] = _run(_plain, server.target, mixed, rate)
    return result


def noisy_tenant(seconds: float = SECONDS, quota: int = 20) -> dict[str, Any]:
    """Capacity 6 quotas (limit 6, 50 ms: 120 a second); the noisy tenant offers 10 quotas, three others 1 each."""
    tenants = {"noisy": 10, "quiet-1": 1, "quiet-2": 1, "quiet-3": 1}
    per_round = [name for name, share in tenants.items() for _ in range(share)]
    rounds = int(quota * seconds)
    calls = [(name, (("x-tenant", name),)) for _ in range(rounds) for name in per_round]
    rate = quota * len(per_round)
    result: dict[str, Any] = {"quota_per_second": quota, "offered_per_second": rate, "capacity_per_second": 6 / SERVICE}
    for label, options in (("no quota", {}), ("quota per tenant", {"quota": quota, "burst": 2})):
        with Server(limit=6, service=SERVICE, shedding="blind", **options) as server:
            result[label] = _run(_plain, server.target, calls, rate)
    return result


def retries_under_overload(seconds: float = SECONDS) -> dict[str, Any]:
    rate = 2 * CAPACITY
    calls = [("calls", ())] * int(rate * seconds)

    def retrying(target: str) -> Any:
        return interceptors.aio.resilient_channel(target, RetryPolicy(max_attempts=3))

    result: dict[str, Any] = {"offered_per_second": rate, "capacity_per_second": CAPACITY}
    for shedding in ("blind", "priorities"):  # normal calls may fill the limit: only their retries stand lower
        with Server(limit=LIMIT, service=SERVICE, shedding=shedding, normal_share=1.0) as server:
            outcome = _run(retrying, server.target, calls, rate)
        retries, first = server.served["retries"], server.served["first attempts"]
        outcome["served"] = {"first attempts": first, "retries": retries}
        outcome["share of work on retries"] = retries / max(first + retries, 1)
        result[shedding] = outcome
    return result


def healthy_path(batches: int = 40, n: int = 100) -> dict[str, Any]:
    """A call with a priority (its context's) through a keyed limiter per tenant, beside a bare call."""
    with Backend() as backend:
        bare = grpc.insecure_channel(backend.target)
        keyed = Keyed(lambda _: Bulkhead(100), key=lambda _: "tenant")
        ours = resilient_channel(backend.target, keyed, priority=Priority.NORMAL)
        hello_bare = service_b_pb2_grpc.ServiceBStub(bare).Hello
        hello_ours = service_b_pb2_grpc.ServiceBStub(ours).Hello

        def bare_calls() -> None:
            for _ in range(n):
                hello_bare(REQUEST, timeout=5)

        def our_calls() -> None:
            with prioritized(Priority.HIGH):
                for _ in range(n):
                    hello_ours(REQUEST, timeout=5)

        bare_calls()  # connected, warm
        our_calls()
        compared = paired(batches, measure(bare_calls, n), {"priority + keyed bulkhead": measure(our_calls, n)})
        bare.close()
        ours.close()
    return {"batches": batches, "calls_per_batch": n, "sync": compared}


def run(quick: bool = False) -> dict[str, Any]:
    """Every scenario; ``quick``: a fraction of a second each, to check the code (no figure means anything)."""
    started = time.monotonic()
    seconds = 0.3 if quick else SECONDS
    result: dict[str, Any] = {
        "overload_by_priority": overload_by_priority(seconds),
        "noisy_tenant": noisy_tenant(seconds),
        "retries_under_overload": retries_under_overload(seconds),
        "healthy_path": healthy_path(batches=2, n=5) if quick else healthy_path(),
    }
    result["seconds"] = time.monotonic() - started
    return result


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
