"""The demo pair as real processes on free ports: the article's five scenarios, B killed and restarted, health,
reflection, and bad command lines."""

from __future__ import annotations

import asyncio
import importlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from interceptors.grpc._pushback import _parse_retry_info, _parse_status
from service_a.app import FALLBACK_MESSAGE
from service_a.client import Outcome, drive
from service_a.scenarios import ROOT, Service, scraped

from ..support.ports import free_port

pytestmark = pytest.mark.timeout(120)


def pair(scenario: str, policy: str | None = None, *b_options: str) -> tuple[Service, Service]:
    b = Service("service_b", "--port", "0", "--scenario", scenario, "--seed", "3", *b_options)
    a = Service("service_a", "--port", "0", "--service-b", f"127.0.0.1:{b.port}", "--policy", policy or scenario)
    return b, a


@pytest.fixture
def services(request: pytest.FixtureRequest) -> Iterator[tuple[Service, Service]]:
    b, a = pair(*request.param)
    try:
        yield b, a
    finally:
        a.stop()
        b.stop()


def call(a: Service, requests: int, timeout: float, concurrency: int = 4, interval: float = 0.0) -> list[Outcome]:
    outcomes = asyncio.run(drive(f"127.0.0.1:{a.port}", requests, concurrency, timeout, interval))
    time.sleep(0.2)  # the last log lines
    return outcomes


def b_calls(b: Service) -> int:
    return sum(1 for r in b.access() if r["method"] == "/demo.v1.ServiceB/Hello")


@pytest.mark.parametrize("services", [("timeout",)], indirect=True)
def test_timeout_scenario(services: tuple[Service, Service]) -> None:
    _, a = services
    outcomes = call(a, 4, timeout=3)
    assert {o.result for o in outcomes} == {"DEADLINE_EXCEEDED"}
    assert all(0.95 < o.latency_ms / 1000 < 1.5 for o in outcomes)  # ~1 s, not B's 5 s nor the caller's 3 s
    assert a.events().count("Connection timed out") == 4
    access = a.access()
    assert [r["code"] for r in access] == ["DEADLINE_EXCEEDED"] * 4 and all(r["level"] == "ERROR" for r in access)


@pytest.mark.parametrize("services", [("retry",)], indirect=True)
def test_retry_scenario(services: tuple[Service, Service]) -> None:
    b, a = services
    outcomes = call(a, 12, timeout=10)
    assert sum(o.result == "OK" for o in outcomes) >= 9  # the article's: success, slower
    retries = [e for e in a.events() if e.startswith("Retry ")]
    assert retries and all(e.endswith("after delay of 1s") for e in retries)  # B's retry-after
    assert b_calls(b) == 12 + len(retries)
    retried = [o for o in outcomes if o.result == "OK" and o.latency_ms > 900]
    assert retried  # a retried call waited for the pushback


@pytest.mark.parametrize("services", [("breaker",)], indirect=True)
def test_breaker_scenario(services: tuple[Service, Service]) -> None:
    b, a = services
    outcomes = call(a, 20, timeout=3, concurrency=2, interval=0.15)
    changes = [e for e in a.events() if e.startswith("circuit breaker state changed")]
    assert "circuit breaker state changed from closed to open" in changes
    assert "circuit breaker state changed from open to half-open" in changes
    fast = [o for o in outcomes if o.result == "UNAVAILABLE" and o.latency_ms < 100]
    assert fast and any("circuit breaker is open" in o.detail for o in fast)
    assert b_calls(b) < len(outcomes)  # rejected calls never reached B


@pytest.mark.parametrize("services", [("fallback",)], indirect=True)
def test_fallback_scenario(services: tuple[Service, Service]) -> None:
    _, a = services
    outcomes = call(a, 6, timeout=3)
    assert {o.result for o in outcomes} == {"FALLBACK"}
    assert all(o.detail == f"hello from service A / {FALLBACK_MESSAGE}" for o in outcomes)
    assert a.events().count("Fallback executed result") == 6
    assert {r["code"] for r in a.access()} == {"OK"}


def test_service_a_exports_its_counters_for_prometheus() -> None:
    """With --metrics-port, A serves OpenTelemetry metrics for Prometheus: its fallbacks and retries are counted."""
    b = Service("service_b", "--port", "0", "--scenario", "fallback", "--seed", "3")
    a = Service(
        "service_a", "--port", "0", "--service-b", f"127.0.0.1:{b.port}", "--policy", "composed", "--metrics-port", "0"
    )
    try:
        outcomes = call(a, 4, timeout=5)
        assert {o.result for o in outcomes} == {"FALLBACK"}
        counters = scraped(a)
    finally:
        a.stop()
        b.stop()
    assert counters["fallbacks"] == 4
    assert counters["retries"] == sum(1 for e in a.events() if e.startswith("Retry "))  # each one scheduled, started


@pytest.mark.parametrize("services", [("composed",)], indirect=True)
def test_composed_scenario_no_caller_waits_past_the_deadline(services: tuple[Service, Service]) -> None:
    _, a = services
    roomy = call(a, 12, timeout=6)
    assert {o.result for o in roomy} <= {"OK", "FALLBACK"}
    assert max(o.latency_ms for o in roomy) < 6000
    tight = call(a, 12, timeout=1.5)
    assert max(o.latency_ms for o in tight) < 1500 + 250
    assert {o.result for o in tight} <= {"OK", "FALLBACK", "DEADLINE_EXCEEDED"}
    events = a.events()
    assert any(e.startswith("Retry ") for e in events) or "Connection timed out" in events


def test_killing_b_falls_back_then_recovers_after_restart() -> None:
    port = free_port()  # B starts again on it: one no other process takes meanwhile
    b = Service("service_b", "--port", str(port))
    a = Service("service_a", "--port", "0", "--service-b", f"127.0.0.1:{port}", "--policy", "composed")
    try:
        assert {o.result for o in call(a, 4, timeout=3)} == {"OK"}
        b.kill()
        down = call(a, 8, timeout=3, concurrency=2, interval=0.1)
        assert {o.result for o in down} == {"FALLBACK"}  # A keeps answering
        assert max(o.latency_ms for o in down) < 3000
        b = Service("service_b", "--port", str(port))
        restarted = time.monotonic()
        while True:  # one request every 50 ms until B's real answer comes back
            outcome = call(a, 1, timeout=3)[0]
            if outcome.result == "OK":
                break
            assert time.monotonic() - restarted < 10, "A did not recover"
            time.sleep(0.05)
        recovery = time.monotonic() - restarted
        # the breaker's delay (1 s), grpc's reconnect backoff (at most 1 s here) and one probe
        assert recovery < 1.0 + 1.2 + 1.0, recovery
    finally:
        a.stop()
        b.stop()


@pytest.mark.parametrize("services", [("retry", "none")], indirect=True)
def test_health_and_reflection(services: tuple[Service, Service]) -> None:
    b, a = services
    for service, name in ((a, "demo.v1.ServiceA"), (b, "demo.v1.ServiceB")):
        with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            health: Any = health_pb2_grpc.HealthStub(channel)
            for asked in ("", name):
                answer = health.Check(health_pb2.HealthCheckRequest(service=asked), timeout=3)
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
            reflection: Any = reflection_pb2_grpc.ServerReflectionStub(channel)
            replies = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            listed = {s.name for reply in replies for s in reply.list_services_response.service}
            assert {name, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= listed


@pytest.mark.parametrize("services", [("fallback", "none")], indirect=True)
def test_without_policies_a_passes_bs_status_and_pushback_on(services: tuple[Service, Service]) -> None:
    _, a = services
    assert {o.result for o in call(a, 3, timeout=3)} == {"UNAVAILABLE"}
    with grpc.insecure_channel(f"127.0.0.1:{a.port}") as channel:
        hello: Any = channel.unary_unary("/demo.v1.ServiceA/Hello")
        with pytest.raises(grpc.RpcError) as raised:
            hello(b"", timeout=3)
    error: Any = raised.value
    assert (error.code(), error.details()) == (grpc.StatusCode.UNAVAILABLE, "injected fault")
    trailers = dict(error.trailing_metadata())
    assert (trailers["grpc-retry-pushback-ms"], trailers["retry-after"]) == ("1000", "1")
    status = _parse_status(trailers["grpc-status-details-bin"])  # RetryInfo, for clients that read only that
    assert (status.code, status.message) == (grpc.StatusCode.UNAVAILABLE.value[0], "injected fault")
    assert _parse_retry_info(status.details[0].value).retry_delay.seconds == 1


@pytest.mark.parametrize("services", [("deadline", "composed")], indirect=True)
def test_a_short_caller_deadline_gets_as_fallback_in_time(services: tuple[Service, Service]) -> None:
    b, a = services
    outcomes = call(a, 8, timeout=0.5)
    # in time: an answer after the caller's 0.5 s would have ended DEADLINE_EXCEEDED in grpc's core (the latency the
    # client measures adds its own scheduling, which a loaded machine stretches past 500 ms). A's reserve (50 ms) is
    # what it keeps to answer; two suites at once on two cores once held one answer longer than that: most calls
    # get the fallback, and a late one can only end DEADLINE_EXCEEDED, never anything else
    results = [o.result for o in outcomes]
    assert results.count("FALLBACK") >= 6 and set(results) <= {"FALLBACK", "DEADLINE_EXCEEDED"}, results
    # B's calls ended as A saw them: at their deadline, or cancelled by A when its fallback answered first (in its
    # reserve, which a loaded machine may reach before the deadline A gave B): none ran on
    codes = [r.get("code") for r in b.access()]
    assert len(codes) == 8 and set(codes) <= {"DEADLINE_EXCEEDED", "CANCELLED"}, codes


@pytest.mark.parametrize("services", [("overload", "pushback", "--max-concurrent", "4")], indirect=True)
def test_an_overloaded_b_sheds_with_pushback_and_a_backs_off(services: tuple[Service, Service]) -> None:
    b, a = services
    outcomes = call(a, 60, timeout=5, concurrency=16)
    assert {o.result for o in outcomes} <= {"OK", "FALLBACK"}
    assert sum(o.result == "OK" for o in outcomes) >= 20
    codes = [r.get("code") for r in b.access()]
    assert codes.count("RESOURCE_EXHAUSTED") > 0 and set(codes) == {"OK", "RESOURCE_EXHAUSTED"}
    served = sorted(r["latency_ms"] for r in b.records() if r.get("code") == "OK")
    assert served[-1] < 300  # B's accepted calls do not queue: ~100 ms each
    assert any(e.startswith("Retry") for e in a.events())


@pytest.mark.parametrize(
    "services", [("priorities", "pushback", "--max-concurrent", "4", "--priorities")], indirect=True
)
def test_under_overload_bs_critical_calls_get_through_and_sheddable_ones_give_way(
    services: tuple[Service, Service],
) -> None:
    b, a = services
    outcomes = asyncio.run(drive(f"127.0.0.1:{a.port}", 60, 8, 5.0, priorities=("critical", "sheddable")))
    time.sleep(0.2)  # the last log lines
    critical = [o for o in outcomes if o.priority == "critical"]
    sheddable = [o for o in outcomes if o.priority == "sheddable"]
    assert len(critical) == len(sheddable) == 30
    assert all(o.result == "OK" for o in critical)  # A passed each call's priority on; B refused others first
    assert sum(o.result == "FALLBACK" for o in sheddable) >= 5
    assert {o.result for o in sheddable} <= {"OK", "FALLBACK"}
    assert "RESOURCE_EXHAUSTED" in [r.get("code") for r in b.access()]


@pytest.mark.parametrize("services", [("composed",)], indirect=True)
def test_bad_requests_get_a_clean_status_and_one_access_line_each(services: tuple[Service, Service]) -> None:
    for service, method in ((services[0], "/demo.v1.ServiceB/Hello"), (services[1], "/demo.v1.ServiceA/Hello")):
        with grpc.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            raw: Any = channel.unary_unary
            for body, code in (
                (b"\xff\xfe garbage", grpc.StatusCode.INVALID_ARGUMENT),
                (b"\x0a" + b"\xff" * (5 * 1024 * 1024), grpc.StatusCode.INVALID_ARGUMENT),  # 5 MB, undecodable
            ):
                with pytest.raises(grpc.RpcError) as raised:
                    raw(method)(body, timeout=5)
                assert raised.value.code() is code
            with pytest.raises(grpc.RpcError) as raised:
                raw(method.replace("Hello", "Nope"))(b"", timeout=5)
            assert raised.value.code() is grpc.StatusCode.UNIMPLEMENTED
            health: Any = health_pb2_grpc.HealthStub(channel)
            assert (
                health.Check(health_pb2.HealthCheckRequest(), timeout=3).status
                == health_pb2.HealthCheckResponse.SERVING
            )
        time.sleep(0.2)
        codes = [r.get("code") for r in service.access() if r["method"] in (method, method.replace("Hello", "Nope"))]
        assert codes == ["INVALID_ARGUMENT", "INVALID_ARGUMENT", "UNIMPLEMENTED"]
        assert not any("Traceback" in line for line in service.lines)


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        ("service_b", ["--delay", "-1"], "--delay: '-1' must be >= 0 seconds"),
        ("service_b", ["--fail-rate", "1.5"], "--fail-rate: '1.5' must be between 0 and 1"),
        ("service_b", ["--slow-rate", "x"], "--slow-rate: 'x' is not a number"),
        ("service_b", ["--scenario", "chaos"], "invalid choice: 'chaos'"),
        ("service_b", ["--port", "70000"], "--port: '70000' is not a port"),
        ("service_a", ["--policy", "magic"], "invalid choice: 'magic'"),
        ("service_a", ["--service-b", ""], "--service-b: '' is not a gRPC target"),
        ("service_a", ["--service-b", "not a target:::"], "--service-b: 'not a target:::' is not a gRPC target"),
        ("service_a", ["--service-b", "127.0.0.1:99999"], "--service-b: '127.0.0.1:99999' is not a gRPC target"),
        ("service_a", ["--service-b", "localhost"], "--service-b: 'localhost' is not a gRPC target"),
        ("service_a", ["--service-b", "::1:3001"], "--service-b: '::1:3001' is not a gRPC target"),
        ("service_a.client", ["-n", "0"], "--requests: '0' is not a whole number in 1..1000000"),
        # Unicode digits (int() and float() read them) and numbers out of range (a traceback and exit 1 before)
        ("service_b", ["--port", "\u0663\u0660\u0660\u0660"], "--port: '\u0663\u0660\u0660\u0660' is not a port"),
        ("service_b", ["--delay", "1e308"], "--delay: '1e308' must be >= 0 seconds and at most 86400"),
        (
            "service_b",
            ["--max-concurrent", "1000000"],
            "--max-concurrent: '1000000' is not a whole number in 1..100000",
        ),
        ("service_a", ["--port", "\u0663\u0660\u0660\u0660"], "--port: '\u0663\u0660\u0660\u0660' is not a port"),
        ("service_a", ["--metrics-port", "\uff19\uff10"], "--metrics-port: '\uff19\uff10' is not a port"),
        ("service_a.client", ["-n", "\u0663"], "--requests: '\u0663' is not a whole number"),
        ("service_a.client", ["--timeout", "1e308"], "--timeout: '1e308' must be >= 0 seconds"),
    ],
)
def test_bad_command_lines_exit_2_with_a_clear_message(
    module: str, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """What ``python -m module`` parses first (each process of its own, below): argparse exits 2 with the message."""
    with pytest.raises(SystemExit) as exited:
        parse_of(module)(args)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        ("service_b", ["--delay", "1e308"], "--delay: '1e308' must be >= 0 seconds and at most 86400"),
        ("service_a", ["--service-b", "localhost"], "--service-b: 'localhost' is not a gRPC target"),
        ("service_a.client", ["--timeout", "1e308"], "--timeout: '1e308' must be >= 0 seconds"),
    ],
)
def test_a_process_given_a_bad_command_line_exits_2_with_no_traceback(
    module: str, args: list[str], message: str
) -> None:
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


NUMERIC_OPTIONS = [
    ("service_b", "--port"),
    ("service_b", "--delay"),
    ("service_b", "--fail-rate"),
    ("service_b", "--slow-rate"),
    ("service_b", "--slow-delay"),
    ("service_b", "--retry-after"),
    ("service_b", "--seed"),
    ("service_b", "--max-concurrent"),
    ("service_a", "--port"),
    ("service_a", "--metrics-port"),
    ("service_a.client", "--requests"),
    ("service_a.client", "--concurrency"),
    ("service_a.client", "--timeout"),
    ("service_a.client", "--interval"),
]
BAD_NUMBERS = [
    "\u0663",  # ARABIC-INDIC DIGIT THREE
    "\uff13",  # FULLWIDTH DIGIT THREE
    "\u00b2",  # SUPERSCRIPT TWO (str.isdigit() says yes)
    "1e308",
    "1" * 400,
    "nan",
    "inf",
    "-inf",
    "-1",
    "1_0",
    " 1",
    "0x10",
    "",
]


@pytest.mark.parametrize(("module", "option"), NUMERIC_OPTIONS)
@pytest.mark.parametrize("value", BAD_NUMBERS)
def test_every_numeric_option_refuses_what_is_not_an_ascii_number_in_range(
    module: str, option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse itself refuses it: exit 2 with its usage line and the option named, before anything starts."""
    with pytest.raises(SystemExit) as exited:
        parse_of(module)([f"{option}={value}"])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert re.search(rf"error: argument (-\w/)?{option}: ", error) and error.startswith("usage:"), error


@pytest.mark.parametrize(
    ("module", "argv", "expected"),
    [
        ("service_b", "--port 0 --delay 0.5 --fail-rate 1 --seed 42", {"port": 0, "delay": 0.5, "seed": 42}),
        ("service_b", "--retry-after 86400 --max-concurrent 100000", {"retry_after": 86400, "max_concurrent": 100000}),
        ("service_a", "--port 65535 --metrics-port 0", {"port": 65535, "metrics_port": 0}),
        ("service_a.client", "-n 1000000 -c 1000 --timeout 2.5e1", {"requests": 1000000, "concurrency": 1000}),
        ("service_a.client", "--timeout 2.5e1 --interval .5", {"timeout": 25.0, "interval": 0.5}),
    ],
)
def test_numeric_options_in_range_are_taken(module: str, argv: str, expected: dict[str, object]) -> None:
    args = vars(parse_of(module)(argv.split()))
    assert {name: args[name] for name in expected} == expected


@pytest.mark.parametrize(("module", "option"), [("service_a", "--service-b"), ("service_a.client", "--target")])
@pytest.mark.parametrize("value", ["127.0.0.1:\u0663\u0660\u0660\u0661", "127.0.0.1:+3001", "http://127.0.0.1:80"])
def test_targets_need_an_ascii_port(module: str, option: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_of(module)([option, value])
    assert exited.value.code == 2
    assert f"argument {option}: {value!r} is not a gRPC target" in capsys.readouterr().err


def parse_of(module: str) -> Any:
    """The command line parser of ``python -m module``."""
    return importlib.import_module(module if "." in module else f"{module}.__main__").parse


@pytest.mark.parametrize("good", ["127.0.0.1:3001", "[::1]:3001", "service-b.internal:443", "unix:/tmp/b.sock"])
def test_service_b_targets_that_are_fine(good: str) -> None:
    from service_a.__main__ import parse

    assert parse(["--service-b", good]).service_b == good


def test_a_service_that_cannot_start_is_reported() -> None:
    with Service("service_b", "--port", "0") as b, pytest.raises(RuntimeError, match="did not start"):
        Service("service_b", "--port", str(b.port))  # taken


def test_client_prints_outcomes_and_summary() -> None:
    b, a = pair("fallback")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "service_a.client", "--target", f"127.0.0.1:{a.port}", "-n", "3"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        a.stop()
        b.stop()
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and len(lines) == 4
    assert all("FALLBACK" in line for line in lines[:3])
    assert lines[3].startswith("3 requests: 0 OK, 3 fallback, errors: none; latency p50")


def _services_of(parent: int) -> set[int]:
    """The process ids of the services ``parent`` (the demo) has started and that still run."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            command = Path(stat.parent, "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z" and b"service_" in command:
            found.add(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_demo_exits_nonzero_when_a_service_fails_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from service_a import scenarios as demo

    monkeypatch.setattr(demo, "SCENARIOS", [demo.Scenario("no-such-scenario", 1, 1, 1.0, 0.0, "-")])
    assert demo.main() == 1


def test_demo_stops_its_services_on_ctrl_c() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "service_a.scenarios"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == ""
    assert process.stdout.readline().startswith("=== timeout")
    deadline = time.monotonic() + 20
    while not (services := _services_of(process.pid)):  # B (and then A) starting
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 130
    assert "interrupted" in process.stderr.read()  # type: ignore[union-attr]
    assert [pid for pid in services if _running(pid)] == []


def test_the_fleet_scenario_shares_bs_quota(valkey_url: str) -> None:
    from service_a import scenarios as demo
    from service_a.app import QUOTA

    rates = demo.run_fleet(valkey_url)
    assert QUOTA * 0.5 <= rates["fleet-quota"] <= QUOTA * 1.3, rates  # the quota, its burst and each lease
    # three replicas with a quota each: about three times as much, as far as a loaded machine lets the drive offer
    assert rates["quota"] >= 1.5 * rates["fleet-quota"], rates


@pytest.fixture
def valkey_url() -> Iterator[str]:
    from ..support.valkey import Valkey

    server = Valkey().start()
    yield server.url
    server.stop()
