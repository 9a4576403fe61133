"""make bench: every benchmark side by side, written to bench/results/ (JSON, PNG plots, REPORT.md).

1. engine: the policy engine alone;  2. healthy: per-call overhead on a healthy backend;  3. concurrency: 64
threads and 64 tasks through one shared breaker;  4. faults: the article's breaker scenario, an outage and
recovery, a slow backend, propagation through a service in the middle;  5. transparent retries;  6. streams
(bench/streams.py);  7. the tail: hedging (bench/tail.py);  8. fleet: replicas sharing one store
(bench/fleet.py);  9. priorities and tenants under overload (bench/priorities.py);  10. a registry reloaded under
load;  11. load reports and gRPC's weighted round robin (bench/balance.py). The backends run in processes of their
own.
``--quick`` runs the engine and a reduced healthy suite in under a minute and prints the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc
from demo.v1 import service_b_pb2_grpc

import interceptors
from bench import approaches, balance, engine, fleet, priorities, report, streams, tail
from bench.approaches import (
    BARE,
    CHAINS,
    GRPC_BY_HAND,
    HEALTHY,
    NO_RETRIES,
    OURS_STALE,
    REQUEST,
    UNDER_FAULTS,
    Approach,
    Budget,
    Client,
)
from bench.backend import Backend, Hop
from bench.stats import Batch, measure, paired, percentile, quartiles
from interceptors import CircuitBreaker, Registry, RetryPolicy, resilient_channel

RESULTS = Path(__file__).parent / "results"
PACKAGES = ["grpcio", "protobuf", "grpc-resilience-interceptors", "tenacity", "pybreaker", "redress", "matplotlib"]


# -- 2. healthy path --------------------------------------------------------------------------------------------------


def healthy(batches: int = 60, n: int = 100) -> dict[str, Any]:
    budget = Budget(deadline=5.0)
    with Backend() as backend:
        clients = {a.name: a.sync(backend.target, budget) for a in [BARE, *HEALTHY]}

        def calls(client: Client) -> Callable[[], None]:
            def run() -> None:
                for _ in range(n):
                    client.call()

            return run

        sync = _compare(batches, {name: measure(calls(client), n) for name, client in clients.items()})
        for client in clients.values():
            client.close()

        loop = asyncio.new_event_loop()
        aio_clients = {a.name: loop.run_until_complete(_aio(a, backend.target, budget)) for a in [BARE, *HEALTHY]}

        def acalls(client: Client) -> Callable[[], None]:
            async def run() -> None:
                for _ in range(n):
                    await client.call()

            return lambda: loop.run_until_complete(run())

        aio = _compare(batches, {name: measure(acalls(client), n) for name, client in aio_clients.items()})
        for client in aio_clients.values():
            loop.run_until_complete(client.close())
        loop.close()
        profile = _profiles(backend.target, budget, calls=20 * n)
    return {"batches": batches, "calls_per_batch": n, "sync": sync, "aio": aio, "profile": profile}


async def _aio(approach: Approach, target: str, budget: Budget) -> Client:
    assert approach.aio is not None, f"{approach.name} has no asyncio client"
    return await approach.aio(target, budget)


THREAD_PER_CALL = [GRPC_BY_HAND.name]


def _compare(batches: int, runs: dict[str, Callable[[], Batch]]) -> dict[str, Any]:
    """Each contender against the bare channel in paired batches (see :func:`paired`). One that starts a thread per
    call (grpc's sync futures: a channel's polling thread each) is paired apart, afterwards: the aftermath of its
    threads fell on the contender timed right after it (ours: hedge 1.10x beside it, 1.07x without it)."""
    for run in runs.values():
        run()  # connect and warm up
    bare = runs.pop(BARE.name)
    apart = {name: runs.pop(name) for name in THREAD_PER_CALL if name in runs}
    compared = paired(batches, bare, runs)
    if apart:
        compared |= {name: result for name, result in paired(batches, bare, apart).items() if name != BARE.name}
    return compared


def _profile(make_calls: Callable[[], Any], calls: int) -> dict[str, Any]:
    """Where ``calls`` healthy calls (made by ``make_calls``) spend their time in our code, by cProfile."""
    import cProfile
    import pstats

    package = str(Path(interceptors.__file__).parent)
    profiler = cProfile.Profile()
    profiler.enable()
    make_calls()
    profiler.disable()
    entries = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(tottime for (_, _, tottime, _, _) in entries.values())
    ours = {
        f"{Path(file).name}:{line}({name})": tottime
        for (file, line, name), (_, _, tottime, _, _) in entries.items()
        if file.startswith(package)
    }
    top = sorted(ours.items(), key=lambda item: -item[1])[:10]
    return {
        "calls": calls,
        "profiled_us_per_call": total / calls * 1e6,
        "ours_us_per_call": sum(ours.values()) / calls * 1e6,
        "top": [[where, seconds / calls * 1e6] for where, seconds in top],
    }


def _profiles(target: str, budget: Budget, calls: int) -> dict[str, Any]:
    client = approaches.OURS_COMPOSED.sync(target, budget)
    sync = _profile(lambda: [client.call() for _ in range(calls)], calls)
    client.close()
    loop = asyncio.new_event_loop()
    aio_client = loop.run_until_complete(_aio(approaches.OURS_COMPOSED, target, budget))

    async def many() -> None:
        for _ in range(calls):
            await aio_client.call()

    aio = _profile(lambda: loop.run_until_complete(many()), calls)
    loop.run_until_complete(aio_client.close())
    loop.close()
    return {"sync": sync, "aio": aio}


# -- 3. concurrency ---------------------------------------------------------------------------------------------------


CONCURRENT = [BARE, *approaches.PEERS[1:], approaches.OURS_COMPOSED]  # grpc's built-in retry has no breaker


def concurrency(workers: int = 64, calls: int = 10, rounds: int = 3) -> dict[str, Any]:
    budget = Budget(deadline=5.0)
    results: dict[str, Any] = {"workers": workers, "calls_per_worker": calls, "server_delay_s": 0.02, "rounds": rounds}
    with Backend(delay=0.02) as backend:
        clients = {a.name: a.sync(backend.target, budget) for a in CONCURRENT}
        with ThreadPoolExecutor(workers) as pool:

            def threads(client: Client) -> Callable[[], object]:
                return lambda: list(pool.map(lambda _: [client.call() for _ in range(calls)], range(workers)))

            results["threads"] = _throughput(rounds, workers * calls, {n: threads(c) for n, c in clients.items()})
        for client in clients.values():
            client.close()

        loop = asyncio.new_event_loop()
        aio_clients = {a.name: loop.run_until_complete(_aio(a, backend.target, budget)) for a in CONCURRENT}

        def tasks(client: Client) -> Callable[[], None]:
            async def worker() -> None:
                for _ in range(calls):
                    await client.call()

            async def all_workers() -> None:
                await asyncio.gather(*(worker() for _ in range(workers)))

            return lambda: loop.run_until_complete(all_workers())

        results["tasks"] = _throughput(rounds, workers * calls, {n: tasks(c) for n, c in aio_clients.items()})
        for client in aio_clients.values():
            loop.run_until_complete(client.close())
        loop.close()
    return results


def _throughput(rounds: int, calls: int, runs: dict[str, Callable[[], object]]) -> dict[str, Any]:
    """Calls per second of each run, interleaved over ``rounds``, and its ratio to the bare channel's."""
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            rates[name].append(calls / (time.perf_counter() - start))
    return _relative(rates)


def _relative(throughput: dict[str, list[float]]) -> dict[str, Any]:
    bare = quartiles(throughput[BARE.name])["median"]
    return {
        name: {"calls_per_s": quartiles(values), "ratio": quartiles(values)["median"] / bare}
        for name, values in throughput.items()
    }


# -- 4. under faults --------------------------------------------------------------------------------------------------


def _outcomes(client: Client, count: int, workers: int, rate: float = 0.0) -> list[dict[str, Any]]:
    """``count`` calls from ``workers`` threads, call ``i`` starting at ``i / rate`` seconds (as soon as a
    thread is free when ``rate`` is 0); each call's start, end and result."""
    began = time.monotonic()

    def one(i: int) -> dict[str, Any]:
        if rate:
            time.sleep(max(0.0, began + i / rate - time.monotonic()))
        start = time.monotonic()
        try:
            client.call()
            result = "OK"
        except Exception as error:  # grpc.RpcError, or the approach's own error
            code = getattr(error, "code", None)
            result = code().name if callable(code) else type(error).__name__
        return {"start": start, "end": time.monotonic(), "result": result}

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, range(count)))


def _latency_summary(outcomes: list[dict[str, Any]], backend: Backend) -> dict[str, Any]:
    latencies = [o["end"] - o["start"] for o in outcomes]
    return {
        "calls": len(outcomes),
        "success_rate": sum(o["result"] == "OK" for o in outcomes) / len(outcomes),
        "p50_s": percentile(latencies, 50),
        "p99_s": percentile(latencies, 99),
        "max_s": max(latencies),
        "attempts_per_call": len(backend.calls) / len(outcomes),
        "results": {r: sum(o["result"] == r for o in outcomes) for r in sorted({o["result"] for o in outcomes})},
        "latencies_s": sorted(latencies),
    }


def article_breaker(calls: int = 150, workers: int = 10, delay: float = 1.0) -> dict[str, Any]:
    """The article's breaker scenario: half the calls UNAVAILABLE with retry-after ``delay`` s, half the rest
    ``delay`` s slower."""
    results = {}
    for approach in UNDER_FAULTS:
        with Backend(fail_rate=0.5, slow_rate=0.5, slow_delay=delay, retry_after=delay, seed=11) as backend:
            client = approach.sync(backend.target, Budget())
            outcomes = _outcomes(client, count=calls, workers=workers)
            client.close()
        results[approach.name] = {**_latency_summary(outcomes, backend), "workers": workers, "delay_s": delay}
    return results


def outage(
    before: float = 2.0, during: float = 3.0, after: float = 3.0, rate: float = 80, workers: int = 32
) -> dict[str, Any]:
    """Healthy ``before`` s, then every call UNAVAILABLE (no pushback) ``during`` s, then healthy ``after`` s;
    calls start at ``rate`` per second, from enough ``workers`` that a slow call never delays the next ones."""
    return {a.name: _outage(a, before, during, after, rate, workers) for a in [*UNDER_FAULTS, OURS_STALE]}


def _outage(
    approach: Approach, before: float, during: float, after: float, rate: float, workers: int
) -> dict[str, Any]:
    with Backend() as backend:
        client = approach.sync(backend.target, Budget())
        client.call()
        sampler = _StateSampler(client)
        t0 = time.monotonic()
        for delay, outage in ((before, True), (before + during, False)):
            threading.Timer(delay, backend.outage, (outage,)).start()
        count = round((before + during + after) * rate)
        outcomes = _outcomes(client, count=count, workers=workers, rate=rate)
        states = sampler.stop()
        client.close()
    on, off = (t for t, _ in backend.switches)
    settled = on + min(1.0, (off - on) / 3)  # by then a breaker tripping on 5 consecutive failures has opened
    first_success = min((o["end"] for o in outcomes if o["result"] == "OK" and o["end"] >= off), default=None)
    return {
        "success_rate": sum(o["result"] == "OK" for o in outcomes) / len(outcomes),
        "outage_s": [on - t0, off - t0],
        "attempts_per_call_during_outage": _attempts_per_call(backend, outcomes, on, off),
        "attempts_per_call_after_first_second": _attempts_per_call(backend, outcomes, settled, off),
        "recovery_to_first_success_s": None if first_success is None else first_success - off,
        "timeline": {
            "backend_calls": [t - t0 for t in backend.calls],
            "client_calls": [[o["start"] - t0, o["end"] - t0, o["result"]] for o in outcomes],
            "breaker_states": [[t - t0, state] for t, state in states],
        },
    }


def _attempts_per_call(backend: Backend, outcomes: list[dict[str, Any]], start: float, end: float) -> float:
    made = sum(1 for o in outcomes if start <= o["start"] < end)
    return backend.calls_between(start, end) / max(made, 1)


class _StateSampler:
    """Reads a client's breaker state every 20 ms on a thread of its own, until stopped."""

    def __init__(self, client: Client) -> None:
        self._client, self._stopped = client, threading.Event()
        self.states: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._sample)
        self._thread.start()

    def _sample(self) -> None:
        read = self._client.breaker_state
        while read is not None and not self._stopped.wait(0.02):
            self.states.append((time.monotonic(), read()))

    def stop(self) -> list[tuple[float, str]]:
        self._stopped.set()
        self._thread.join()
        return self.states


def reload(
    seconds: float = 4.0, workers: int = 16, rate: float = 400, every: float = 0.05, rounds: int = 3
) -> dict[str, Any]:
    """Calls through a Registry's channel, ``rate`` a second from ``workers`` threads for ``seconds``, with no reload
    and with a reload every ``every`` s (alternating retry and breaker options, one breaker's name kept), side by side
    in ``rounds`` rounds (alternating which goes first): latency and failures of each run."""
    runs: dict[str, list[dict[str, Any]]] = {"no reload": [], f"a reload every {every * 1000:.0f} ms": []}
    with Backend() as backend:
        for round_ in range(rounds):
            order = list(runs.items()) if round_ % 2 == 0 else list(runs.items())[::-1]
            for name, measured in order:
                measured.append(_reloading(backend, seconds, workers, rate, None if name == "no reload" else every))
    return {"seconds": seconds, "workers": workers, "rate": rate, "rounds": rounds, "runs": runs}


def _reloading(backend: Backend, seconds: float, workers: int, rate: float, every: float | None) -> dict[str, Any]:
    registry = Registry(_reloaded(0))
    channel = resilient_channel(backend.target, registry=registry)
    client = Client(partial(service_b_pb2_grpc.ServiceBStub(channel).Hello, REQUEST, timeout=2), channel.close)
    client.call()
    stop = threading.Event()

    def reloading() -> None:
        n = 0
        while every is not None and not stop.wait(every):
            n += 1
            registry.reload(_reloaded(n))

    reloader = threading.Thread(target=reloading)
    reloader.start()
    outcomes = _outcomes(client, count=round(seconds * rate), workers=workers, rate=rate)
    stop.set()
    reloader.join()
    client.close()
    summary = _latency_summary(outcomes, backend)
    summary.pop("latencies_s")
    return {**summary, "reloads": registry.version}


def _reloaded(n: int) -> dict[str, Any]:
    """The n-th config of the reload suite: 2 to 4 attempts, a breaker named "b" with a threshold moving with n."""
    retry = {"maxAttempts": 2 + n % 3, "initialBackoff": "0.01s", "maxBackoff": "0.1s", "backoffMultiplier": 2}
    retry["retryableStatusCodes"] = ["UNAVAILABLE"]
    breaker = {"name": "b", "failureRate": 0.5, "failureWindow": 20 + n % 5, "delay": "1s"}
    entry = {"name": [{}], "retryPolicy": retry, "resilience": {"circuitBreaker": breaker}}
    return {"methodConfig": [entry]}


def slow_backend(calls: int = 16, workers: int = 8, delay: float = 5.0, allowed: float = 1.0) -> dict[str, Any]:
    """Every call takes ``delay`` s; each approach has a budget of ``allowed`` s."""
    budget = replace(Budget(), deadline=allowed, attempt_timeout=allowed)
    results = {}
    for approach in UNDER_FAULTS:
        with Backend(delay=delay) as backend:
            client = approach.sync(backend.target, budget)
            outcomes = _outcomes(client, count=calls, workers=workers)
            client.close()
        summary = _latency_summary(outcomes, backend)
        results[approach.name] = {k: v for k, v in summary.items() if k != "latencies_s"}
    return {"budget_s": allowed, "server_delay_s": delay, "approaches": results}


# -- 4d. retry amplification across hops -----------------------------------------------------------------------------


def amplification(calls: int = 60, rate: float = 20, workers: int = 32) -> dict[str, Any]:
    """Three hops that each retry (the client into A, A into B, B into C), C down: how many attempts reach C per
    call into A, with each hop's chain ``retry`` (3 attempts) or ``recommended``."""
    budget = replace(Budget(), deadline=10.0)  # room for every retry of every hop
    results = {}
    for chain in CHAINS:
        with Backend(down=1) as c, Hop(c.target, chain) as b, Hop(b.target, chain) as a:
            client = approaches.ours_client(CHAINS[chain], a.target, budget)
            outcomes = _outcomes(client, count=calls, workers=workers, rate=rate)
            client.close()
        summary = _latency_summary(outcomes, c)
        results[chain] = {
            "calls": calls,
            "attempts_at_c_per_call": summary["attempts_per_call"],
            "p50_s": summary["p50_s"],
            "p99_s": summary["p99_s"],
            "results": summary["results"],
        }
    return {"rate": rate, "chains": {name: approaches.describe_chain(name) for name in CHAINS}, "hops": results}


def propagation(batches: int = 60, n: int = 100) -> dict[str, Any]:
    """A healthy call through a service in the middle (caller -> A -> B), A calling B through the recommended
    chain: A passing its deadline on by hand, and A with the server's AioContextPropagation (deadline less a
    reserve, cancellation, status forwarding). Calls to the two alternate one by one (which goes first alternates
    too), so that drift in the machine's speed falls on both alike; each batch of ``n`` pairs gives a ratio."""
    with (
        Backend() as b,
        Hop(b.target, "recommended", propagation="manual") as manual,
        Hop(b.target, "recommended") as library,
    ):
        channels = {
            name: grpc.insecure_channel(hop.target, options=NO_RETRIES)
            for name, hop in (("manual", manual), ("library", library))
        }
        hellos = {name: service_b_pb2_grpc.ServiceBStub(channel).Hello for name, channel in channels.items()}
        for _ in range(200):  # connect and warm up
            for hello in hellos.values():
                hello(REQUEST, timeout=5.0)
        ratios: list[float] = []
        times: dict[str, list[float]] = {name: [] for name in hellos}
        for _ in range(batches):
            spent = dict.fromkeys(hellos, 0.0)
            for i in range(n):
                for name in ("manual", "library") if i % 2 else ("library", "manual"):
                    start = time.perf_counter()
                    hellos[name](REQUEST, timeout=5.0)
                    spent[name] += time.perf_counter() - start
            ratios.append(spent["library"] / spent["manual"])
            for name, seconds in spent.items():
                times[name].append(seconds / n * 1e6)
        for channel in channels.values():
            channel.close()
    return {
        "batches": batches,
        "calls_per_batch": n,
        "us_per_call": {name: quartiles(values) for name, values in times.items()},
        "ratio": quartiles(ratios),
    }


# -- 5. transparent retries --------------------------------------------------------------------------------------------


GOAWAY_CLIENTS: dict[str, Callable[[str], grpc.Channel]] = {
    "bare, grpcio's retries on (its default)": lambda target: grpc.insecure_channel(target),
    "bare, grpc.enable_retries=0": lambda target: grpc.insecure_channel(target, options=NO_RETRIES),
    "ours: breaker only (grpcio's retries kept on)": lambda target: resilient_channel(
        target, CircuitBreaker(failure_threshold=5, delay=1.0)
    ),
    "ours: retry (grpcio's retries off)": lambda target: resilient_channel(target, RetryPolicy()),
}


def goaway(seconds: float = 3.0, workers: int = 16, rounds: int = 2, age_ms: int = 100) -> dict[str, Any]:
    """Calls a backend that ages out every connection after ``age_ms`` (a graceful GOAWAY each time), from
    ``workers`` threads for ``seconds``, per client: what grpcio's transparent retries save its callers."""
    totals: dict[str, Counter[str]] = {name: Counter() for name in GOAWAY_CLIENTS}
    windows: dict[str, list[tuple[float, float]]] = {name: [] for name in GOAWAY_CLIENTS}
    with Backend(max_connection_age_ms=age_ms) as backend:
        for _ in range(rounds):
            for name, make in GOAWAY_CLIENTS.items():
                channel = make(backend.target)
                hello = service_b_pb2_grpc.ServiceBStub(channel).Hello
                hello(REQUEST, timeout=5)  # connected
                started = time.monotonic()
                totals[name] += _load(partial(hello, REQUEST, timeout=5), workers, seconds)
                windows[name].append((started, time.monotonic()))
                channel.close()
    clients = {}
    for name, counts in totals.items():
        calls = sum(counts.values())
        reached = sum(backend.calls_between(start, end) for start, end in windows[name])
        clients[name] = {
            "calls": calls,
            "outcomes": dict(counts),
            "failed_per_10k": (calls - counts["OK"]) / calls * 10_000,
            "backend_calls_per_call": reached / calls,
        }
    return {
        "seconds": seconds,
        "workers": workers,
        "rounds": rounds,
        "max_connection_age_ms": age_ms,
        "clients": clients,
    }


def _load(call: Callable[[], object], workers: int, seconds: float) -> Counter[str]:
    """Outcomes by status of calls made back to back by ``workers`` threads for ``seconds``."""
    ends = time.monotonic() + seconds
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def worker() -> None:
        while time.monotonic() < ends:
            try:
                call()
                code = "OK"
            except grpc.RpcError as error:
                code = error.code().name
            with lock:
                counts[code] += 1

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts


# -- the run ----------------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines() if "model name" in line),
        platform.processor() or "unknown",
    )
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "cpu": cpu,
        "cores": __import__("os").cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


SUITES: dict[str, Callable[[], dict[str, Any]]] = {
    "engine": engine.run,
    "healthy": healthy,
    "concurrency": concurrency,
    "article_breaker": article_breaker,
    "outage": outage,
    "slow_backend": slow_backend,
    "amplification": amplification,
    "propagation": propagation,
    "goaway": goaway,
    "streams": streams.run,
    "tail": tail.run,
    "fleet": fleet.run,
    "priorities": priorities.run,
    "reload": reload,
    "balance": balance.run,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="engine and a reduced healthy suite, under a minute")
    parser.add_argument(
        "--only",
        nargs="*",
        choices=sorted(SUITES),
        help="rerun just these suites (none: only rewrite the report); the others come from bench/results/",
    )
    args = parser.parse_args()
    if args.only is not None:
        suites = {name: SUITES[name] for name in args.only}
    elif args.quick:
        suites = {"engine": lambda: engine.run(quick=True), "healthy": lambda: healthy(batches=15)}
    else:
        suites = SUITES
    results = run(suites, None if args.quick else RESULTS)  # a quick run only prints
    print(report.console(results))


def run(suites: dict[str, Callable[[], dict[str, Any]]], directory: Path | None) -> dict[str, Any]:
    """Run ``suites``; with a ``directory``, write each one's JSON there, then the report and plots (taking the
    results of suites not run now from their earlier JSON)."""
    results: dict[str, Any] = {"machine": machine(), "budget": asdict(Budget())}
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        for name in SUITES.keys() - suites.keys():
            if (directory / f"{name}.json").exists():
                results[name] = json.loads((directory / f"{name}.json").read_text())
    for name, suite in suites.items():
        started = time.monotonic()
        print(f"running {name} ...", flush=True)
        results[name] = suite()
        if directory is not None:
            (directory / f"{name}.json").write_text(json.dumps(results[name], indent=2))
        print(f"  done in {time.monotonic() - started:.0f} s", flush=True)
    if directory is not None:
        report.write(results, directory)
        print(f"wrote {directory / 'REPORT.md'}")
    return results


if __name__ == "__main__":
    main()
