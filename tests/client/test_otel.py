"""OpenTelemetry metrics through the in-memory reader: exact counts and attributes for scripted calls, sync and aio,
unary and server-streaming."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import interceptors.aio
from interceptors import (
    Backoff,
    CachePolicy,
    CircuitBreaker,
    Executor,
    HedgePolicy,
    Keyed,
    ResilienceInterceptor,
    RetryPolicy,
)
from interceptors.otel import AioServerMetrics, Metrics, ServerMetrics, _Pending, canonical_target
from interceptors.server import AioLoadShedding, LoadShedding

from ..support.clients import PATHS, STREAM_KINDS, Client, wait_until
from ..support.server import AIO_LOOP, Request, ScriptedServer
from .test_stream_retries import STREAM_PATHS, call

METHOD = "scripted.v1.Scripted/Unary"
FAST = Backoff(0.01, 0.02)


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def metrics(reader: InMemoryMetricReader) -> Iterator[Metrics]:
    recorder = Metrics(MeterProvider(metric_readers=[reader]))
    yield recorder
    recorder.close()


def points(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, Any], Any]]:
    """(attributes, value or count) of every point of the metric ``name``."""
    data = reader.get_metrics_data()
    found = []
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        value = point.value if hasattr(point, "value") else point.count
                        found.append((dict(point.attributes or {}), value))
    return found


def by_status(found: list[tuple[dict[str, Any], Any]]) -> dict[str, Any]:
    return {attributes["grpc.status"]: value for attributes, value in found}


@pytest.mark.parametrize("path", PATHS)
def test_two_failures_then_ok(
    server: ScriptedServer, path: str, reader: InMemoryMetricReader, metrics: Metrics
) -> None:
    retry = RetryPolicy(max_attempts=3, delay=FAST)
    with Client(path, server.target, retry, metrics=metrics) as client:
        assert client.unary(Request(id="m", fail_first=2), timeout=5).error is None
    started = points(reader, "grpc.client.attempt.started")
    assert started == [({"grpc.method": METHOD, "grpc.target": f"dns:///{server.target}"}, 3)]
    assert by_status(points(reader, "grpc.client.attempt.duration")) == {"OK": 1, "UNAVAILABLE": 2}
    assert by_status(points(reader, "grpc.client.call.duration")) == {"OK": 1}
    assert points(reader, "resilience.client.retries") == [
        ({"grpc.method": METHOD, "resilience.policy": "RetryPolicy", "resilience.reason": "UNAVAILABLE"}, 2)
    ]


@pytest.mark.parametrize("path", ["call", "aio", "intercepted-call", "intercepted-aio"])
def test_a_metrics_counts_the_channels_it_was_given_and_no_others(
    server: ScriptedServer, path: str, reader: InMemoryMetricReader, metrics: Metrics
) -> None:
    """Two channels in one process, each with its own retry: only the one given the Metrics is counted; a closed
    Metrics counts nothing more."""
    with (
        Client(path, server.target, RetryPolicy(max_attempts=3, delay=FAST), metrics=metrics) as measured,
        Client(path, server.target, RetryPolicy(max_attempts=3, delay=FAST)) as other,
    ):
        assert other.unary(Request(id="other", fail_first=2), timeout=5).error is None
        assert measured.unary(Request(id="measured", fail_first=1), timeout=5).error is None
        metrics.close()
        assert measured.unary(Request(id="closed", fail_first=1), timeout=5).error is None
    assert points(reader, "resilience.client.retries") == [
        ({"grpc.method": METHOD, "resilience.policy": "RetryPolicy", "resilience.reason": "UNAVAILABLE"}, 1)
    ]


@pytest.mark.parametrize("path", PATHS)
def test_an_open_breaker_counts_its_rejections_and_shows_open(
    server: ScriptedServer, path: str, reader: InMemoryMetricReader, metrics: Metrics
) -> None:
    breaker = CircuitBreaker(name="to-scripted", failure_threshold=1, delay=60)
    with Client(path, server.target, breaker, metrics=metrics) as client:
        assert client.unary(Request(id="o", fail_first=1), timeout=5).code is grpc.StatusCode.UNAVAILABLE
        assert client.unary(Request(id="p"), timeout=5).code is grpc.StatusCode.UNAVAILABLE  # rejected
    assert server.attempts("p") == 0
    assert points(reader, "resilience.client.rejections") == [
        ({"grpc.method": METHOD, "resilience.policy": "to-scripted", "resilience.rejection": "breaker"}, 1)
    ]
    assert points(reader, "resilience.breaker.state") == [({"resilience.policy": "to-scripted"}, 2)]  # open
    assert points(reader, "resilience.breaker.transitions") == [
        ({"resilience.policy": "to-scripted", "resilience.state.old": "closed", "resilience.state.new": "open"}, 1)
    ]
    assert by_status(points(reader, "grpc.client.call.duration")) == {"UNAVAILABLE": 2}


@pytest.mark.parametrize("path", ["call", "aio", "intercepted-call", "intercepted-aio"])
def test_a_breaker_in_dry_run_counts_what_it_would_reject_as_dry_run_and_retries_count_judged_answers(
    server: ScriptedServer, path: str, reader: InMemoryMetricReader, metrics: Metrics
) -> None:
    breaker = CircuitBreaker(name="trial", failure_threshold=1, delay=60, dry_run=True)
    retry = RetryPolicy(max_attempts=2, delay=FAST, handle_result=lambda reply: reply.attempt < 2)
    with Client(path, server.target, retry, breaker, metrics=metrics) as client:
        assert client.unary(Request(id="o", fail_first=1), timeout=5).error is None  # opens it, then goes through
        assert client.unary(Request(id="p"), timeout=5).error is None
    assert server.attempts("p") == 2
    dry = {"resilience.policy": "trial", "resilience.dry_run": True}
    assert points(reader, "resilience.client.rejections") == [
        ({"grpc.method": METHOD, "resilience.rejection": "breaker", **dry}, 3)
    ]
    assert points(reader, "resilience.breaker.transitions") == [
        ({"resilience.state.old": "closed", "resilience.state.new": "open", **dry}, 1)
    ]
    assert sorted(points(reader, "resilience.client.retries"), key=str) == [
        ({"grpc.method": METHOD, "resilience.policy": "RetryPolicy", "resilience.reason": "OK"}, 1),
        ({"grpc.method": METHOD, "resilience.policy": "RetryPolicy", "resilience.reason": "UNAVAILABLE"}, 1),
    ]


@pytest.mark.parametrize("path", ["call", "aio"])
def test_cache_hits_and_misses_are_counted(
    server: ScriptedServer, path: str, reader: InMemoryMetricReader, metrics: Metrics
) -> None:
    with Client(path, server.target, CachePolicy(ttl=60), metrics=metrics) as client:
        for _ in range(3):
            assert client.unary(Request(id="c"), timeout=5).error is None
    attributes = {"grpc.method": METHOD, "resilience.policy": "CachePolicy"}
    assert sorted(points(reader, "resilience.client.cache"), key=str) == [
        ({**attributes, "resilience.result": "hit"}, 2),
        ({**attributes, "resilience.result": "miss"}, 1),
    ]
    assert server.attempts("c") == 1


@pytest.mark.parametrize("path", ["call", "aio"])
def test_the_breakers_of_a_keyed_policy_show_in_the_gauges_and_counters(
    server: ScriptedServer, path: str, reader: InMemoryMetricReader, metrics: Metrics
) -> None:
    keyed = Keyed(lambda method: CircuitBreaker(name=f"breaker {method}", failure_threshold=1, delay=60))
    with Client(path, server.target, keyed, metrics=metrics) as client:
        assert client.unary(Request(id="o", fail_first=1), timeout=5).code is grpc.StatusCode.UNAVAILABLE
        client.stream("server_stream", 1, timeout=5)
    assert sorted(points(reader, "resilience.breaker.state"), key=str) == [
        ({"resilience.policy": "breaker /scripted.v1.Scripted/ServerStream"}, 0),  # closed
        ({"resilience.policy": "breaker /scripted.v1.Scripted/Unary"}, 2),  # open
        ({"resilience.policy": "breaker other"}, 0),
    ]
    assert points(reader, "resilience.breaker.transitions") == [
        (
            {
                "resilience.policy": "breaker /scripted.v1.Scripted/Unary",
                "resilience.state.old": "closed",
                "resilience.state.new": "open",
            },
            1,
        )
    ]


@pytest.mark.parametrize("kind", STREAM_KINDS)
@pytest.mark.parametrize("stream_path", STREAM_PATHS)
def test_a_stream_is_one_call_timed_to_its_end(
    server: ScriptedServer, stream_path: str, kind: str, reader: InMemoryMetricReader, metrics: Metrics
) -> None:
    retry = RetryPolicy(max_attempts=3, delay=FAST)
    with Client(stream_path, server.target, retry, metrics=metrics, warm=False) as client:
        ended = call(client, kind, 4, timeout=5, id="s", fail_first=2)
    assert ended.error is None
    method = stream_method(kind)
    started = points(reader, "grpc.client.attempt.started")
    assert started == [({"grpc.method": method, "grpc.target": f"dns:///{server.target}"}, 3)]
    assert by_status(points(reader, "grpc.client.attempt.duration")) == {"OK": 1, "UNAVAILABLE": 2}
    assert by_status(points(reader, "grpc.client.call.duration")) == {"OK": 1}
    assert points(reader, "resilience.client.retries") == [
        ({"grpc.method": method, "resilience.policy": "RetryPolicy", "resilience.reason": "UNAVAILABLE"}, 2)
    ]


@pytest.mark.parametrize("kind", STREAM_KINDS)
@pytest.mark.parametrize("stream_path", STREAM_PATHS)
def test_an_open_breaker_counts_rejected_streams(
    server: ScriptedServer, stream_path: str, kind: str, reader: InMemoryMetricReader, metrics: Metrics
) -> None:
    breaker = CircuitBreaker(name="streams", failure_threshold=1, delay=60)
    with Client(stream_path, server.target, breaker, metrics=metrics, warm=False) as client:
        assert call(client, kind, 2, timeout=5, id="f", fail_first=1).code is grpc.StatusCode.UNAVAILABLE
        assert call(client, kind, 2, timeout=5, id="r").code is grpc.StatusCode.UNAVAILABLE  # rejected
    assert server.attempts("r") == 0
    method = stream_method(kind)
    assert points(reader, "resilience.client.rejections") == [
        ({"grpc.method": method, "resilience.policy": "streams", "resilience.rejection": "breaker"}, 1)
    ]
    assert points(reader, "resilience.breaker.state") == [({"resilience.policy": "streams"}, 2)]  # open
    assert by_status(points(reader, "grpc.client.attempt.duration")) == {"UNAVAILABLE": 1}
    assert by_status(points(reader, "grpc.client.call.duration")) == {"UNAVAILABLE": 2}


def stream_method(kind: str) -> str:
    return "scripted.v1.Scripted/" + "".join(part.title() for part in kind.split("_"))


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_a_server_records_a66_server_metrics(kind: str, reader: InMemoryMetricReader) -> None:
    provider = MeterProvider(metric_readers=[reader])
    observer = ServerMetrics(provider) if kind == "sync" else AioServerMetrics(provider)
    server = ScriptedServer(kind, interceptors=[observer])
    try:
        with Client("call", server.target) as client:
            assert client.unary(Request(id="ok"), timeout=5).error is None
            assert client.unary(Request(id="no", fail_first=1), timeout=5).code is grpc.StatusCode.UNAVAILABLE
            assert call(client, "bidi_stream", 3, timeout=5, id="b").error is None
            nope = client.channel.unary_unary("/scripted.v1.Scripted/Nope")
            with pytest.raises(grpc.RpcError):
                nope(b"", timeout=5)
    finally:
        server.stop()
    started = {a["grpc.method"]: v for a, v in points(reader, "grpc.server.call.started")}
    bidi = stream_method("bidi_stream")
    assert started == {METHOD: 2, bidi: 1, "other": 1}  # A66: a method the server does not serve is "other"
    durations = {(a["grpc.method"], a["grpc.status"]): v for a, v in points(reader, "grpc.server.call.duration")}
    assert durations == {
        (METHOD, "OK"): 1,
        (METHOD, "UNAVAILABLE"): 1,
        (bidi, "OK"): 1,
        ("other", "UNIMPLEMENTED"): 1,
    }


def traced(client: Client, tracer: Any, request: Any) -> None:
    """Make a unary call inside a span ``caller`` (on the aio client's loop for aio paths)."""
    if client.is_aio:

        async def call() -> None:
            with tracer.start_as_current_span("caller"):
                await client.stub.Unary(request, timeout=5)

        AIO_LOOP.run(call())
    else:
        with tracer.start_as_current_span("caller"):
            assert client.unary(request, timeout=5).error is None


@pytest.mark.parametrize("path", PATHS)
def test_attempts_and_retries_are_events_of_the_callers_span(
    server: ScriptedServer, path: str, metrics: Metrics
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    retry = RetryPolicy(max_attempts=3, delay=FAST)
    with Client(path, server.target, retry, metrics=metrics) as client:
        traced(client, provider.get_tracer("test"), Request(id="t", fail_first=2))
    (span,) = exporter.get_finished_spans()
    named = [(e.name, dict(e.attributes or {})) for e in span.events]
    assert [(name, a.get("grpc.attempt"), a.get("grpc.status")) for name, a in named] == [
        ("grpc.attempt", 1, "UNAVAILABLE"),
        ("resilience.retry", 1, "UNAVAILABLE"),
        ("grpc.attempt", 2, "UNAVAILABLE"),
        ("resilience.retry", 2, "UNAVAILABLE"),
        ("grpc.attempt", 3, "OK"),
    ]


@pytest.mark.parametrize("path", PATHS)
def test_a_hedge_and_its_attempt_are_events_of_the_callers_span(
    server: ScriptedServer, path: str, metrics: Metrics
) -> None:
    """Started when due by another thread (sync) or task, in the caller's context."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with Client(path, server.target, HedgePolicy(delay=0.05), metrics=metrics) as client:
        # the first attempt to reach the server sleeps past the call's whole time: the other answers (on a loaded
        # machine that may be the caller's own, when its hedge overtook it)
        traced(client, provider.get_tracer("test"), Request(id="h", sleep_ms=10_000, sleep_attempts=1))
    (span,) = exporter.get_finished_spans()
    named = [(e.name, dict(e.attributes or {})) for e in span.events]
    assert ("resilience.hedge", 2) in [(name, a.get("grpc.attempt")) for name, a in named], named
    ended = {a.get("grpc.attempt"): a.get("grpc.status") for n, a in named if n == "grpc.attempt"}
    if ended.get(1) != "OK":  # the hedge answered, as it does unless it overtook the caller's own attempt
        assert ended.get(2) == "OK", named
    # else the hedge slept in the place of the caller's attempt, whose answer ends the span (aio may record the
    # hedge's cancellation a turn later)


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_a_shed_call_is_counted(kind: str, reader: InMemoryMetricReader, metrics: Metrics) -> None:
    shedding = LoadShedding(1, metrics=metrics) if kind == "sync" else AioLoadShedding(1, metrics=metrics)
    server = ScriptedServer(kind, interceptors=[shedding])
    try:
        with Client("call", server.target) as client:
            # the slow call holds the one place for as long as the next may take to be shed on a loaded machine
            slow = client.in_thread(Request(id="slow", sleep_ms=2000), timeout=10)
            wait_until(lambda: server.attempts("slow") == 1)
            assert client.unary(Request(id="shed"), timeout=5).code is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert slow().error is None
    finally:
        server.stop()
    policy = type(shedding).__name__
    assert points(reader, "resilience.server.sheds") == [
        ({"resilience.policy": policy, "resilience.reason": "overload"}, 1)
    ]


@pytest.mark.parametrize("path", ["call", "aio"])
def test_the_call_duration_carries_the_callers_trace_as_exemplar(
    server: ScriptedServer, path: str, reader: InMemoryMetricReader, metrics: Metrics
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with Client(path, server.target, RetryPolicy(max_attempts=2, delay=FAST), metrics=metrics) as client:
        traced(client, provider.get_tracer("test"), Request(id="e"))
    (span,) = exporter.get_finished_spans()
    data = reader.get_metrics_data()
    assert data is not None
    (call,) = [m for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics
               if m.name == "grpc.client.call.duration"]  # fmt: skip
    (point,) = call.data.data_points
    assert [e.trace_id for e in point.exemplars] == [span.context.trace_id]


def test_every_reader_sees_every_value_up_to_its_collection(server: ScriptedServer) -> None:
    first, second = InMemoryMetricReader(), InMemoryMetricReader()
    metrics = Metrics(MeterProvider(metric_readers=[first, second]))
    with Client("call", server.target, RetryPolicy(max_attempts=2, delay=FAST), metrics=metrics) as client:
        for n in range(3):
            assert client.unary(Request(id=f"a{n}"), timeout=5).error is None
        assert by_status(points(first, "grpc.client.call.duration")) == {"OK": 3}
        for n in range(2):
            assert client.unary(Request(id=f"b{n}"), timeout=5).error is None
        assert by_status(points(second, "grpc.client.call.duration")) == {"OK": 5}
        assert by_status(points(first, "grpc.client.attempt.duration")) == {"OK": 5}
    metrics.close()


def test_values_past_the_waiting_limit_are_recorded_at_once() -> None:
    reader = InMemoryMetricReader()
    histogram = MeterProvider(metric_readers=[reader]).get_meter("t").create_histogram("h")
    pending = _Pending(limit=2)
    kept = pending.bin(histogram, {"k": "v"})
    for n in range(5):
        pending.record(kept, n / 10, trace.INVALID_SPAN)
    assert points(reader, "h") == [({"k": "v"}, 3)]  # nobody handed the two waiting ones over
    pending.hand_over()
    assert points(reader, "h") == [({"k": "v"}, 5)]
    pending.record(kept, 0.1, trace.INVALID_SPAN)  # room again
    assert points(reader, "h") == [({"k": "v"}, 5)]


@pytest.mark.parametrize(
    ("target", "canonical"),
    [
        ("localhost:50051", "dns:///localhost:50051"),
        ("127.0.0.1:5", "dns:///127.0.0.1:5"),
        ("[::1]:5", "dns:///[::1]:5"),
        ("dns:///example.com:443", "dns:///example.com:443"),
        ("ipv4:127.0.0.1:5", "ipv4:127.0.0.1:5"),
        ("unix:/tmp/socket", "unix:/tmp/socket"),
        ("xds:///service", "xds:///service"),
    ],
)
def test_the_target_is_named_as_grpc_reads_it(target: str, canonical: str) -> None:
    assert canonical_target(target) == canonical


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"metrics": object()}, "metrics must be an interceptors.otel.Metrics"),
        ({"metrics": None, "target": ""}, "target must name the channel's target"),
        ({"metrics": None, "target": 5}, "target must name the channel's target"),
    ],
)
def test_wrong_metrics_options_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ResilienceInterceptor(RetryPolicy(), **options)
    with pytest.raises(ValueError, match=message):
        interceptors.aio.resilience_interceptors(RetryPolicy(), **options)


def test_a_no_op_meter_provider_costs_nothing() -> None:
    executor = Executor(RetryPolicy())
    metrics = Metrics(NoOpMeterProvider())
    assert metrics.instrument(executor, "/a.B/C", "t") is executor
    metrics.close()


def test_without_opentelemetry_the_library_works_and_the_extra_is_named() -> None:
    script = """
import sys
sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
import interceptors, interceptors.aio, interceptors.server
from interceptors import RetryPolicy, resilient_channel
resilient_channel("localhost:1", RetryPolicy()).close()
try:
    import interceptors.otel
except ImportError as error:
    print(error)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert "pip install 'grpc-resilience-interceptors[otel]'" in done.stdout


def test_channels_to_one_target_share_their_counts(server: ScriptedServer) -> None:
    reader = InMemoryMetricReader()
    metrics = Metrics(MeterProvider(metric_readers=[reader]))
    for n in range(3):  # a channel per call, as some applications do
        with Client("call", server.target, RetryPolicy(max_attempts=2, delay=FAST), metrics=metrics) as client:
            assert client.unary(Request(id=f"c{n}"), timeout=5).error is None
    attributes = {"grpc.method": METHOD, "grpc.target": f"dns:///{server.target}"}
    assert points(reader, "grpc.client.attempt.started") == [(attributes, 3)]
    assert points(reader, "grpc.client.call.duration") == [({**attributes, "grpc.status": "OK"}, 3)]
    metrics.close()


@pytest.mark.parametrize("path", PATHS)
def test_hedges_are_counted_by_what_started_them(
    server: ScriptedServer, path: str, reader: InMemoryMetricReader, metrics: Metrics
) -> None:
    hedge = HedgePolicy(delay=0.5, max_attempts=3)
    with Client(path, server.target, hedge, metrics=metrics) as client:
        # the first attempt sleeps past the delay, the second fails at once (non-fatal: its failure comes back well
        # within the next delay, even on a loaded machine), the third answers
        outcome = client.unary(Request(id="h", sleep_ms=5000, sleep_attempts=1, fail_first=2), timeout=10)
    assert outcome.error is None and outcome.elapsed < 4
    reasons = {a["resilience.reason"]: n for a, n in points(reader, "resilience.client.hedges")}
    assert reasons == {"delay": 1, "UNAVAILABLE": 1}
    assert by_status(points(reader, "grpc.client.call.duration")) == {"OK": 1}
