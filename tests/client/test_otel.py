"""OpenTelemetry metrics through the in-memory reader: exact counts and attributes for scripted calls, sync and aio,
unary and server-streaming."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from interceptors import Backoff, CircuitBreaker, RetryPolicy
from interceptors.otel import AioServerMetrics, Metrics, ServerMetrics
from interceptors.server import AioLoadShedding, LoadShedding

from ..support.clients import PATHS, STREAM_KINDS, Client, wait_until
from ..support.server import Request, ScriptedServer
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
    assert started == [({"grpc.method": METHOD, "grpc.target": server.target}, 3)]
    assert by_status(points(reader, "grpc.client.attempt.duration")) == {"OK": 1, "UNAVAILABLE": 2}
    assert by_status(points(reader, "grpc.client.call.duration")) == {"OK": 1}
    assert points(reader, "resilience.client.retries") == [
        ({"grpc.method": METHOD, "resilience.policy": "RetryPolicy", "resilience.reason": "UNAVAILABLE"}, 2)
    ]


@pytest.mark.parametrize("path", ["call", "aio"])
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


@pytest.mark.parametrize("kind", STREAM_KINDS)
@pytest.mark.parametrize("stream_path", STREAM_PATHS)
def test_a_stream_is_one_call_timed_to_its_end(
    server: ScriptedServer, stream_path: str, kind: str, reader: InMemoryMetricReader, metrics: Metrics
) -> None:
    retry = RetryPolicy(max_attempts=3, delay=FAST)
    with Client(stream_path, server.target, retry, metrics=metrics, warm=False) as client:
        ended = call(client, kind, 4, timeout=5, id="s", fail_first=1)
    assert ended.error is None
    method = "scripted.v1.Scripted/" + "".join(part.title() for part in kind.split("_"))
    started = points(reader, "grpc.client.attempt.started")
    assert started == [({"grpc.method": method, "grpc.target": server.target}, 2)]
    assert by_status(points(reader, "grpc.client.attempt.duration")) == {"OK": 1, "UNAVAILABLE": 1}
    assert by_status(points(reader, "grpc.client.call.duration")) == {"OK": 1}


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_a_server_records_a66_server_metrics(kind: str, reader: InMemoryMetricReader) -> None:
    provider = MeterProvider(metric_readers=[reader])
    observer = ServerMetrics(provider) if kind == "sync" else AioServerMetrics(provider)
    server = ScriptedServer(kind, interceptors=[observer])
    try:
        with Client("call", server.target) as client:
            assert client.unary(Request(id="ok"), timeout=5).error is None
            assert client.unary(Request(id="no", fail_first=1), timeout=5).code is grpc.StatusCode.UNAVAILABLE
            nope = client.channel.unary_unary("/scripted.v1.Scripted/Nope")
            with pytest.raises(grpc.RpcError):
                nope(b"", timeout=5)
    finally:
        server.stop()
    started = {a["grpc.method"]: v for a, v in points(reader, "grpc.server.call.started")}
    assert started == {METHOD: 2, "scripted.v1.Scripted/Nope": 1}
    durations = {(a["grpc.method"], a["grpc.status"]): v for a, v in points(reader, "grpc.server.call.duration")}
    assert durations == {
        (METHOD, "OK"): 1,
        (METHOD, "UNAVAILABLE"): 1,
        ("scripted.v1.Scripted/Nope", "UNIMPLEMENTED"): 1,
    }


@pytest.mark.parametrize("path", ["call", "with_call", "future", "intercepted-call"])
def test_attempts_and_retries_are_events_of_the_callers_span(
    server: ScriptedServer, path: str, metrics: Metrics
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    retry = RetryPolicy(max_attempts=3, delay=FAST)
    tracer = provider.get_tracer("test")
    with Client(path, server.target, retry, metrics=metrics) as client, tracer.start_as_current_span("caller"):
        assert client.unary(Request(id="t", fail_first=2), timeout=5).error is None
    (span,) = exporter.get_finished_spans()
    named = [(e.name, dict(e.attributes or {})) for e in span.events]
    assert [(name, a.get("grpc.attempt"), a.get("grpc.status")) for name, a in named] == [
        ("grpc.attempt", 1, "UNAVAILABLE"),
        ("resilience.retry", 1, "UNAVAILABLE"),
        ("grpc.attempt", 2, "UNAVAILABLE"),
        ("resilience.retry", 2, "UNAVAILABLE"),
        ("grpc.attempt", 3, "OK"),
    ]


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_a_shed_call_is_counted(kind: str, reader: InMemoryMetricReader, metrics: Metrics) -> None:
    shedding = LoadShedding(1) if kind == "sync" else AioLoadShedding(1)
    server = ScriptedServer(kind, interceptors=[shedding])
    try:
        with Client("call", server.target) as client:
            slow = client.in_thread(Request(id="slow", sleep_ms=500), timeout=5)
            wait_until(lambda: server.attempts("slow") == 1)
            assert client.unary(Request(id="shed"), timeout=5).code is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert slow().error is None
    finally:
        server.stop()
    policy = type(shedding).__name__
    assert points(reader, "resilience.server.sheds") == [
        ({"resilience.policy": policy, "resilience.reason": "overload"}, 1)
    ]
