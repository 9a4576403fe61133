"""Load reports and balancing (report section 11), backends in processes of their own (bench/balance_server.py):

- gRPC's own weighted round robin (grpcio's C-core client) over two backends, one doing 5x the CPU work per call,
  with our ORCA reports on and off: the busy one's share of the calls and the client's latency;
- two aio replicas behind round robin, one whose handler blocks its event loop 100 ms every few calls, with
  lag-based shedding on and off, our clients retrying a refusal on the other replica;
- a CPU-bound backend offered 1.5 times what its CPU can serve, behind our clients' retries alone, with an
  AdaptiveThrottle counting refusals, and with one that also reads the backend's utilization from its
  out-of-band reports;
- what a report costs the server per call, and what an idle out-of-band stream costs it.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import grpc

from bench.backend import _start
from bench.stats import percentile
from interceptors.grpc._load_reporting import LoadReporting, ServerLoad

WRR = {"loadBalancingConfig": [{"weighted_round_robin": {"blackoutPeriod": "1s", "weightUpdatePeriod": "0.2s"}}]}


def run(quick: bool = False) -> dict[str, Any]:
    """Every part; ``quick``: each a fraction of a second, after a warm-up as short (the smoke test: no figure means
    anything)."""
    seconds, warm, workers = (0.4, 0.2, 2) if quick else (8.0, 1.0, 8)
    return {
        "seconds": seconds,
        "workers": workers,
        "balance": {reports: _balanced(reports, seconds, 2 * warm, workers) for reports in ("off", "on")},
        "lag": {shedding: _lagging(shedding, seconds, warm, workers) for shedding in ("off", "on")},
        "listen": {chain: _listening(chain, seconds, warm) for chain in LISTENING},
        "cost": _report_cost(2_000 if quick else 50_000),
        "idle_stream_cpu": _idle_stream_cpu(0.5 if quick else 10.0),
    }


@contextlib.contextmanager
def _backends(*options: dict[str, Any]) -> Iterator[str]:
    """Backend processes (bench/balance_server.py), one for each of ``options``: their targets, as one
    ``ipv4:`` target; they are stopped on exit."""
    with contextlib.ExitStack() as stack:
        targets = []
        for each in options:
            process, target = _start("bench.balance_server", stack.enter_context(tempfile.TemporaryDirectory()), **each)
            stack.callback(process.wait, 10)
            stack.callback(process.terminate)
            targets.append(target)
        yield "ipv4:" + ",".join(targets)


def _balanced(reports: str, seconds: float, warm: float, workers: int) -> dict[str, Any]:
    """``workers`` threads calling for ``seconds`` (after ``warm`` s of warm-up, for the weights to settle) through
    WRR."""
    busy = {"name": "busy", "work": 0.0025, "reports": reports}
    with _backends(busy, {**busy, "name": "idle", "work": 0.0005}) as targets:
        options = [("grpc.service_config", json.dumps(WRR))]
        with grpc.insecure_channel(targets, options=options) as channel:
            call: Any = channel.unary_unary("/bench.Balance/Work")
            _load(call, warm, workers)
            return _load(call, seconds, workers)


STALL_EVERY, STALL, MAX_LAG = 5, 0.1, 0.02
"""The buggy replica blocks its loop STALL seconds every STALL_EVERY calls; shedding refuses past MAX_LAG of lag."""


def _lagging(shedding: str, seconds: float, warm: float, workers: int) -> dict[str, Any]:
    """``workers`` threads calling for ``seconds`` (after ``warm`` s of warm-up) two aio replicas through grpc's round
    robin and our retries (5 attempts; a refusal is retried after its pushback, on the next replica)."""
    from interceptors import Backoff, RetryPolicy, resilient_channel

    sound = {"name": "sound", "kind": "aio", "work": 0.002, "max_lag": MAX_LAG if shedding == "on" else 0.0}
    buggy = {**sound, "name": "buggy", "stall_every": STALL_EVERY, "stall": STALL}
    with _backends(buggy, sound) as targets:
        options = [("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]}))]
        retry = RetryPolicy(max_attempts=5, delay=Backoff(0.005, 0.05))
        with resilient_channel(targets, retry, options=options) as channel:
            call: Any = channel.unary_unary("/bench.Balance/Work")
            _load(call, warm, workers)
            return _load(call, seconds, workers)


LISTENING = ("retries", "retries + throttle", "retries + throttle on utilization")
OFFERED = 1.5
"""The overloaded backend is offered this many times the calls it can serve."""


def _listening(chain: str, seconds: float, warm: float) -> dict[str, Any]:
    """Calls paced at OFFERED times an aio backend's capacity (8 calls at once of 10 ms: 800 a second, the rest
    refused with pushback) for ``seconds`` (after ``warm`` s of warm-up), through ``chain``: success, latency, and the
    attempts that reached the backend per call. The throttle on utilization reads the backend's
    ``utilization["concurrency"]`` (its calls at work over its limit) from its out-of-band reports."""
    from interceptors import AdaptiveThrottle, Backoff, LoadWatch, RetryPolicy, resilient_channel

    limit, work = 8, 0.01
    capacity = limit / work
    with tempfile.TemporaryDirectory() as directory:
        record = f"{directory}/record.json"
        process, target = _start(
            "bench.balance_server",
            directory,
            name="only",
            kind="aio",
            work=work,
            reports="oob",
            limit=limit,
            record_file=record,
        )
        try:
            with grpc.insecure_channel(target) as plain, LoadWatch(plain, interval=0.05) as watch:
                policies: list[Any] = [RetryPolicy(max_attempts=3, delay=Backoff(0.01, 0.1))]
                if chain != "retries":
                    concurrency = partial(watch.utilization, "concurrency") if chain.endswith("utilization") else None
                    policies.append(AdaptiveThrottle(window=2, utilization=concurrency, max_utilization=0.9))
                with resilient_channel(target, *policies) as channel:
                    call: Any = channel.unary_unary("/bench.Balance/Work")
                    warmed = _paced(call, warm, capacity * OFFERED)
                    outcome = _paced(call, seconds, capacity * OFFERED)
        finally:
            process.terminate()
            process.wait(10)
        counted = json.loads(Path(record).read_text())
    made = warmed["calls"] + outcome["calls"]
    reached = counted["served"] + counted["refused"]
    return {**outcome, "capacity_per_s": capacity, "attempts_per_call": reached / made, **counted}


def _paced(call: Any, seconds: float, rate: float) -> dict[str, Any]:
    """Calls started at ``rate`` a second for ``seconds`` (64 threads): success, latency and results."""
    count = max(round(seconds * rate), 1)
    began = time.monotonic()

    def one(i: int) -> tuple[str, float]:
        time.sleep(max(0.0, began + i / rate - time.monotonic()))
        started = time.monotonic()
        try:
            call(b"", timeout=2)
            result = "OK"
        except grpc.RpcError as error:
            result = error.code().name
        return result, time.monotonic() - started

    with ThreadPoolExecutor(64) as pool:
        outcomes = list(pool.map(one, range(count)))
    latencies = [latency for _, latency in outcomes]
    return {
        "calls": count,
        "success": sum(result == "OK" for result, _ in outcomes) / count,
        "results": dict(Counter(result for result, _ in outcomes)),
        "p50_s": percentile(latencies, 50),
        "p99_s": percentile(latencies, 99),
    }


def _load(call: Any, seconds: float, workers: int) -> dict[str, Any]:
    answered: Counter[str] = Counter()
    latencies: list[tuple[str, float]] = []
    lock = threading.Lock()
    ends = time.monotonic() + seconds

    def worker() -> None:
        mine: list[tuple[str, float]] = []
        while time.monotonic() < ends:
            started = time.monotonic()
            try:
                who = call(b"", timeout=5).decode()
            except grpc.RpcError as error:
                who = error.code().name
            mine.append((who, time.monotonic() - started))
        with lock:
            answered.update(who for who, _ in mine)
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = sum(answered.values())
    return {
        "calls": total,
        "busy_share": answered["busy"] / total if total else 0.0,
        "success": sum(answered[name] for name in ("busy", "idle", "buggy", "sound")) / total if total else 0.0,
        "answered": dict(answered),
        "p50_s": percentile([latency for _, latency in latencies], 50),
        "p99_s": percentile([latency for _, latency in latencies], 99),
        "by_replica": {
            name: {
                "p50_s": percentile([latency for who, latency in latencies if who == name], 50),
                "p99_s": percentile([latency for who, latency in latencies if who == name], 99),
            }
            for name in answered
            if name in ("busy", "idle", "buggy", "sound")
        },
    }


class _Context:
    """What LoadReporting touches of a servicer context, as plain attributes."""

    def __init__(self) -> None:
        self.trailers: Any = ()

    def code(self) -> None:
        return None

    def trailing_metadata(self) -> Any:
        return self.trailers

    def set_trailing_metadata(self, trailers: Any) -> None:
        self.trailers = trailers


def _idle_stream_cpu(seconds: float) -> dict[str, float]:
    """CPU seconds per second a server process spends on one out-of-band stream reporting every second (what it
    spends over the same time with none, subtracted), measured in a process of its own (the client's side
    included)."""
    import subprocess
    import sys

    from bench.backend import ROOT

    script = (
        "import sys, time, grpc\n"
        "from concurrent import futures\n"
        "from interceptors.grpc._orca import OrcaLoadReport, OrcaLoadReportRequest\n"
        "from interceptors.server import OrcaService, ServerLoad\n"
        "server = grpc.server(futures.ThreadPoolExecutor(4))\n"
        "OrcaService(ServerLoad(), min_report_interval=1).add_to(server)\n"
        "port = server.add_insecure_port('127.0.0.1:0'); server.start()\n"
        "seconds, streams = float(sys.argv[1]), int(sys.argv[2])\n"
        "channel = grpc.insecure_channel(f'127.0.0.1:{port}')\n"
        "request = OrcaLoadReportRequest(); request.report_interval.seconds = 1\n"
        "method = channel.unary_stream('/xds.service.orca.v3.OpenRcaService/StreamCoreMetrics',\n"
        "    request_serializer=lambda m: m.SerializeToString(), response_deserializer=OrcaLoadReport.FromString)\n"
        "calls = [method(request) for _ in range(streams)]\n"
        "[next(call) for call in calls]\n"
        "start = time.process_time(); time.sleep(seconds); print(time.process_time() - start)\n"
        "[call.cancel() for call in calls]; server.stop(None)\n"
    )
    used = {}
    for streams in (0, 1):
        ran = subprocess.run(
            [sys.executable, "-c", script, str(seconds), str(streams)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60 + seconds,
        )
        used[streams] = float(ran.stdout.strip() or "nan")
    return {"cpu_per_second": max(used[1] - used[0], 0.0) / seconds, "baseline_cpu_per_second": used[0] / seconds}


def _report_cost(n: int) -> dict[str, float]:
    """Microseconds per call of a report in the trailers (admission and end, the CPU sampled every second), with
    and without a per-call value recorded, against counting alone (``per_call=False``)."""
    from interceptors.server import call_load

    figures = {}
    for name, reporting, records in (
        ("count only", LoadReporting(ServerLoad(), per_call=False), False),
        ("report", LoadReporting(ServerLoad()), False),
        ("report + a call's cost", LoadReporting(ServerLoad()), True),
    ):
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(n):
                context = _Context()
                end = reporting._admission(context, "/m")
                if records:
                    call_load().record(request_cost={"rows": 3.0})
                end(None)
            best = min(best, (time.perf_counter() - started) / n)
        figures[name] = best * 1e6
    return figures
