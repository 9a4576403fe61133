"""Load reports and balancing (report section 11): gRPC's own weighted round robin (grpcio's C-core client) over two
backend processes (bench/balance_server.py), one doing 5x the CPU work per call, with our ORCA reports on and off:
the busy one's share of the calls and the client's latency; and what a report costs the server per call.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections import Counter
from typing import Any

import grpc

from bench.backend import _start
from bench.stats import percentile
from interceptors.grpc._load_reporting import LoadReporting, ServerLoad

WRR = {"loadBalancingConfig": [{"weighted_round_robin": {"blackoutPeriod": "1s", "weightUpdatePeriod": "0.2s"}}]}


def run(quick: bool = False) -> dict[str, Any]:
    seconds, workers = (1.5, 4) if quick else (8.0, 8)
    return {
        "seconds": seconds,
        "workers": workers,
        "balance": {reports: _balanced(reports, seconds, workers) for reports in ("off", "on")},
        "cost": _report_cost(2_000 if quick else 50_000),
    }


def _balanced(reports: str, seconds: float, workers: int) -> dict[str, Any]:
    """``workers`` threads calling for ``seconds`` (after 2 s of warm-up, for the weights to settle) through WRR."""
    with tempfile.TemporaryDirectory() as busy, tempfile.TemporaryDirectory() as idle:
        backends = [
            _start("bench.balance_server", busy, name="busy", work=0.0025, reports=reports),
            _start("bench.balance_server", idle, name="idle", work=0.0005, reports=reports),
        ]
        try:
            targets = ",".join(target for _, target in backends)
            options = [("grpc.service_config", json.dumps(WRR))]
            with grpc.insecure_channel(f"ipv4:{targets}", options=options) as channel:
                call: Any = channel.unary_unary("/bench.Balance/Work")
                _load(call, 2.0, workers)
                return _load(call, seconds, workers)
        finally:
            for process, _ in backends:
                process.terminate()
                process.wait(10)


def _load(call: Any, seconds: float, workers: int) -> dict[str, Any]:
    answered: Counter[str] = Counter()
    latencies: list[float] = []
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
            latencies.extend(latency for _, latency in mine)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = sum(answered.values())
    return {
        "calls": total,
        "busy_share": answered["busy"] / total if total else 0.0,
        "answered": dict(answered),
        "p50_s": percentile(latencies, 50),
        "p99_s": percentile(latencies, 99),
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
