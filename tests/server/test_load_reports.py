"""ORCA load reports from real sync and aio servers: every kind of call carries one that grpc-js decodes with its own
OrcaLoadReport; gRPC's own weighted round robin (grpcio's C-core and grpc-js) moves traffic by them, per call and
out of band; the out-of-band stream keeps the interval asked (never under the server's minimum) and refuses
garbage; a bad recorded value is never sent."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import subprocess
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from scripted.v1 import scripted_pb2_grpc as pb_grpc

from interceptors import LoadReport, LoadWatch, load_report
from interceptors.aio import AioLoadWatch
from interceptors.engine._load import MAX_NAMES, MAX_VALUE
from interceptors.grpc._handlers import wrapped_any
from interceptors.grpc._orca import LOAD_REPORT_METADATA_KEY, OrcaLoadReport, OrcaLoadReportRequest, serialized
from interceptors.server import (
    AioLoadReporting,
    AioLoadShedding,
    LoadRecorder,
    LoadReporting,
    LoadShedding,
    OrcaService,
    ServerLoad,
    call_load,
)
from interceptors.testing import FakeClock

from ..support.clients import wait_until
from ..support.server import AIO_LOOP, Request, ScriptedServer

JS_PEERS = Path(__file__).parents[1] / "js"
needs_grpc_js = pytest.mark.skipif(
    not (JS_PEERS / "node_modules" / "@grpc" / "grpc-js").is_dir(),
    reason="grpc-js is not installed: make test installs it (tests/js) where node and npm are",
)
STREAM = "/xds.service.orca.v3.OpenRcaService/StreamCoreMetrics"


@pytest.fixture(params=["sync", "aio"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class RecordsCost(grpc.ServerInterceptor):
    """Records ``request_cost["rows"] = 7`` in each call's own report, from inside its handler, as a handler would."""

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        return wrapped_any(continuation(details), self._unary, self._streaming)

    @staticmethod
    def _unary(behavior: Any) -> Any:
        def recorded(request: Any, context: Any) -> Any:
            call_load().record(request_cost={"rows": 7})
            return behavior(request, context)

        return recorded

    _streaming = _unary  # the wrapper records before it hands over what the behavior returns


class AioRecordsCost(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        return wrapped_any(await continuation(details), RecordsCost._unary, RecordsCost._streaming)


def reporting(kind: str, load: ServerLoad, *, records_cost: bool = False, **options: Any) -> ScriptedServer:
    chain: list[Any] = [LoadReporting(load) if kind == "sync" else AioLoadReporting(load)]
    if records_cost:
        chain.append(RecordsCost() if kind == "sync" else AioRecordsCost())
    return ScriptedServer(kind, interceptors=chain, **options)


def quiet_load(**options: Any) -> ServerLoad:
    """A load that samples nothing of the machine, so that a report holds only what the test recorded."""
    return ServerLoad(cpu_seconds=None, memory=None, **options)


@needs_grpc_js
def test_every_kind_of_call_carries_a_report_grpc_js_decodes(kind: str) -> None:
    load = quiet_load()
    load.record(application_utilization=0.25, utilization={"gpu": 0.5}, named_metrics={"queue": -3.0})
    server = reporting(kind, load, records_cost=True)
    try:
        ran = subprocess.run(
            ["node", str(JS_PEERS / "orca_client.js"), "trailers", server.target],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.stop()
    assert ran.returncode == 0, ran.stderr
    reports = json.loads(ran.stdout)
    assert set(reports) == {"unary", "server_stream", "client_stream", "bidi_stream"}
    for call_kind, report in reports.items():
        assert report is not None, call_kind
        assert report["application_utilization"] == 0.25, call_kind
        assert report["utilization"] == {"gpu": 0.5}, call_kind
        assert report["named_metrics"]["queue"] == -3, call_kind  # an aio server adds its event_loop_lag
        assert report["request_cost"] == {"rows": 7}, call_kind  # the call's own, over the server's


class Sees(grpc.ServerInterceptor):
    """Outermost: the trailers grpc is handed at the end of each unary call (sync)."""

    def __init__(self) -> None:
        self.handed: list[dict[str, Any]] = []

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        def seen(behavior: Any) -> Any:
            def run(request: Any, context: Any) -> Any:
                try:
                    return behavior(request, context)
                finally:
                    self.handed.append(dict(context.trailing_metadata() or ()))

            return run

        return wrapped_any(continuation(details), seen, seen)


class AioSees(grpc.aio.ServerInterceptor):
    """:class:`Sees` for aio servers."""

    def __init__(self) -> None:
        self.handed: list[dict[str, Any]] = []

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        def seen(behavior: Any) -> Any:
            async def run(request: Any, context: Any) -> Any:
                try:
                    return await behavior(request, context)
                finally:
                    self.handed.append(dict(context.trailing_metadata() or ()))

            return run

        return wrapped_any(await continuation(details), seen, seen)


def seen_trailers(kind: str, chain: list[Any], calls: list[Any], fail_first: int = 0) -> list[dict[str, Any]]:
    sees = Sees() if kind == "sync" else AioSees()
    server = ScriptedServer(kind, interceptors=[sees, *chain])
    server.script.fail_first = fail_first
    server.script.trailers = (("x-handler-bin", b"kept"),)
    try:
        with grpc.insecure_channel(server.target, options=[("grpc.enable_retries", 0)]) as channel:
            stub = pb_grpc.ScriptedStub(channel)
            for request in calls:
                with contextlib.suppress(grpc.RpcError):
                    stub.Unary(request, timeout=10)
                time.sleep(0.03)  # a sampling interval: the next report has the rates of the calls before it
    finally:
        server.stop()
    return sees.handed


def test_a_failed_call_carries_a_report_and_counts_as_an_error(kind: str) -> None:
    load = quiet_load(interval=0.02)
    reporter = LoadReporting(load) if kind == "sync" else AioLoadReporting(load)
    handed = seen_trailers(kind, [reporter], [Request(id="f"), Request(id="f")], fail_first=1)
    reports = [load_report(trailers) for trailers in handed]
    assert len(reports) == 2 and None not in reports
    assert all(trailers["x-handler-bin"] == b"kept" for trailers in handed[:1])  # the handler's own, kept
    assert any((report.eps or 0) > 0 for report in reports if report is not None)  # the failure, per second


def test_a_refused_call_carries_its_pushback_and_a_report(kind: str) -> None:
    clock, used = FakeClock(), [0.0]
    busy = ServerLoad(clock=clock, cpus=1, cpu_seconds=lambda: used[0], memory=None)
    used[0] += 0.9
    clock.advance(1.0)  # the CPU's next sample reads 0.9
    reporter = LoadReporting(busy) if kind == "sync" else AioLoadReporting(busy)
    shedding = (LoadShedding if kind == "sync" else AioLoadShedding)(load=busy, max_cpu_utilization=0.5)
    refused = seen_trailers(kind, [reporter, shedding], [Request(id="r")])[0]
    assert "grpc-retry-pushback-ms" in refused  # the refusal's, and the report, side by side
    report = load_report(refused)
    assert report is not None and report.cpu_utilization == 0.9


def test_a_cancelled_call_is_no_error(kind: str) -> None:
    load = quiet_load(interval=0.02)
    reporter = LoadReporting(load) if kind == "sync" else AioLoadReporting(load)
    server = ScriptedServer(kind, interceptors=[reporter])
    try:
        with grpc.insecure_channel(server.target) as channel:
            replies = pb_grpc.ScriptedStub(channel).ServerStream(Request(id="c", count=5, pause_ms=5000), timeout=10)
            next(replies)
            replies.cancel()
            wait_until(lambda: (load.report.qps or 0) > 0)  # it ended, and was counted
            assert not load.report.eps
    finally:
        server.stop()


def test_grpcio_takes_the_trailer_for_its_balancers_and_hides_it_from_the_application() -> None:
    """Why our own clients cannot read per-call reports from grpcio: its C-core client channel parses
    ``endpoint-load-metrics-bin`` for its load balancers and leaves it out of the trailers the application sees
    (grpcio 1.85). If this starts failing, grpcio shows the trailer: clients may read it with ``load_report``."""
    server = reporting("sync", quiet_load())
    try:
        with grpc.insecure_channel(server.target) as channel:
            _, call = pb_grpc.ScriptedStub(channel).Unary.with_call(Request(id="h"), timeout=10)
    finally:
        server.stop()
    assert LOAD_REPORT_METADATA_KEY not in dict(call.trailing_metadata() or ())


def test_the_report_is_the_wire_format_of_xds_protos() -> None:
    xds = pytest.importorskip("xds.data.orca.v3.orca_load_report_pb2", reason="xds-protos is in the dev group")
    report = LoadReport(
        cpu_utilization=0.5,
        memory_utilization=0.25,
        application_utilization=1.5,
        qps=120.0,
        eps=2.0,
        utilization={"gpu": 0.75},
        request_cost={"rows": 7.0},
        named_metrics={"queue": -3.0},
    )
    theirs = xds.OrcaLoadReport.FromString(serialized(report))
    assert (theirs.cpu_utilization, theirs.mem_utilization, theirs.application_utilization) == (0.5, 0.25, 1.5)
    assert (theirs.rps_fractional, theirs.eps) == (120.0, 2.0)
    assert dict(theirs.utilization) == {"gpu": 0.75} and dict(theirs.request_cost) == {"rows": 7.0}
    assert dict(theirs.named_metrics) == {"queue": -3.0}
    assert load_report([(LOAD_REPORT_METADATA_KEY, theirs.SerializeToString())]) == report


def test_load_report_reads_none_from_garbage_or_nothing() -> None:
    assert load_report(None) is None
    assert load_report([("other-bin", b"x")]) is None
    assert load_report([(LOAD_REPORT_METADATA_KEY, b"\xff\xff\xff")]) is None
    assert load_report([(LOAD_REPORT_METADATA_KEY, "text")]) is None


# -- gRPC's own weighted round robin ---------------------------------------------------------------------------------


def two_backends(
    kind: str, reports: bool, oob: bool = False, interval: float = 0.05
) -> tuple[ScriptedServer, ScriptedServer]:
    """A busy backend (application utilization 0.9) and an idle one (0.1), reporting per call or out of band (then
    counting calls without per-call reports), or not at all (then with no interceptor); their QPS is measured over
    ``interval``."""
    backends = []
    for utilization in (0.9, 0.1):
        load = quiet_load(interval=interval)
        load.record(application_utilization=utilization)
        if not reports:
            backends.append(ScriptedServer(kind))
        elif oob:
            counting = (LoadReporting if kind == "sync" else AioLoadReporting)(load, per_call=False)
            stream = OrcaService(load, min_report_interval=0.05)
            backends.append(ScriptedServer(kind, interceptors=[counting], services=[stream.add_to]))
        else:
            backends.append(reporting(kind, load))
    return backends[0], backends[1]


def wrr_channel(targets: str, oob: bool) -> grpc.Channel:
    config: dict[str, Any] = {"blackoutPeriod": "0s", "weightUpdatePeriod": "0.1s"}
    if oob:
        config.update(enableOobLoadReport=True, oobReportingPeriod="0.1s")
    service_config = {"loadBalancingConfig": [{"weighted_round_robin": config}]}
    return grpc.insecure_channel(f"ipv4:{targets}", options=[("grpc.service_config", json.dumps(service_config))])


@pytest.mark.parametrize("reports", ["per-call", "out-of-band", "off"])
def test_grpcio_weighted_round_robin_moves_calls_off_the_busy_backend(kind: str, reports: str) -> None:
    busy, idle = two_backends(kind, reports != "off", oob=reports == "out-of-band")
    try:
        with wrr_channel(f"{busy.target},{idle.target}", oob=reports == "out-of-band") as channel:
            stub = pb_grpc.ScriptedStub(channel)

            def busy_share(calls: int = 200) -> float:
                before = busy.attempts("w")
                for _ in range(calls):
                    stub.Unary(Request(id="w"), timeout=10)
                return (busy.attempts("w") - before) / calls

            if reports == "off":
                wait_until(lambda: busy_share(20) not in (0.0, 1.0))  # both connected
                assert 0.4 <= busy_share() <= 0.6  # round robin
            else:  # weight = qps / utilization: the busy one's share falls to about 0.1 once weights are in
                wait_until(lambda: busy_share() < 0.25, timeout=20)
    finally:
        busy.stop()
        idle.stop()


@needs_grpc_js
@pytest.mark.parametrize("oob", [False, True], ids=["per-call", "out-of-band"])
def test_grpc_js_weighted_round_robin_moves_calls_off_the_busy_backend(kind: str, oob: bool) -> None:
    """Per call, grpc-js spends ~15 ms of CPU on each call that carries a report: 200 calls take seconds, time for the
    weights to settle (busy shares of 0.5 to 3.5 % seen). A backend then sees 0 to 3 calls in 50 ms, and a QPS that
    noisy made weights (QPS / utilization) that sent 37 % of the calls to the busy one, once in ~20 runs: its QPS is
    measured over 0.5 s. Out of band, calls are quick and reports come every 0.1 s: 400 calls."""
    calls = 400 if oob else 200
    busy, idle = two_backends(kind, True, oob=oob, interval=0.05 if oob else 0.5)
    try:
        args = ["node", str(JS_PEERS / "orca_client.js"), "wrr", f"{busy.target},{idle.target}", str(calls)]
        ran = subprocess.run([*args, "oob" if oob else "per-call"], capture_output=True, text=True, timeout=60)
    finally:
        busy.stop()
        idle.stop()
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == {"0": calls}
    assert busy.attempts("w") + idle.attempts("w") == calls
    assert busy.attempts("w") < 0.3 * calls


# -- the out-of-band stream -------------------------------------------------------------------------------------------


def orca_server(kind: str, load: ServerLoad, minimum: float) -> tuple[ScriptedServer, OrcaService]:
    service = OrcaService(load, min_report_interval=minimum)
    return ScriptedServer(kind, services=[service.add_to]), service


def stream_reports(target: str, request: Any) -> Any:
    channel = grpc.insecure_channel(target)
    stream: Any = channel.unary_stream(
        STREAM, request_serializer=lambda m: m.SerializeToString(), response_deserializer=OrcaLoadReport.FromString
    )
    return channel, stream(request, timeout=20)


def asking(seconds: float = 0.0, nanos: int = 0) -> Any:
    request = OrcaLoadReportRequest()
    request.report_interval.seconds, request.report_interval.nanos = int(seconds), nanos
    return request


class TimedLoad(ServerLoad):
    """A ServerLoad that notes when each report is taken (an out-of-band stream takes one per message it sends)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.sent: list[float] = []

    @property
    def report(self) -> LoadReport:
        self.sent.append(time.monotonic())
        return super().report


@pytest.mark.parametrize(("asked", "minimum", "expected"), [(0.08, 0.02, 0.08), (0.01, 0.08, 0.08), (0.0, 0.08, 0.08)])
def test_the_stream_keeps_the_interval_asked_never_under_the_minimum(
    kind: str, asked: float, minimum: float, expected: float
) -> None:
    load = TimedLoad(cpu_seconds=None, memory=None)
    load.record(application_utilization=0.3, named_metrics={"queue": 2})
    server, service = orca_server(kind, load, minimum)
    channel, reports = stream_reports(server.target, asking(nanos=int(asked * 1e9)))
    try:
        for count, report in enumerate(reports, 1):
            assert report.application_utilization == 0.3 and report.named_metrics["queue"] == 2
            if count == 4:
                break
        gaps = [b - a for a, b in itertools.pairwise(load.sent[:4])]
        assert min(gaps) >= expected * 0.95, gaps  # when the server made them: never the next report early
        wait_until(lambda: service.streams == 1)
        reports.cancel()
        wait_until(lambda: service.streams == 0)  # the server's side ended with the client's cancel
    finally:
        channel.close()
        server.stop()


def test_the_stream_ends_when_the_server_stops(kind: str) -> None:
    server, service = orca_server(kind, quiet_load(), 0.05)
    channel, reports = stream_reports(server.target, asking(nanos=50_000_000))
    try:
        next(reports)
        server.stop()
        with pytest.raises(grpc.RpcError):
            for _ in reports:
                pass
        wait_until(lambda: service.streams == 0)
    finally:
        channel.close()


def test_close_ends_the_streams_with_ok_and_refuses_new_ones(kind: str) -> None:
    server, service = orca_server(kind, quiet_load(), 0.05)
    channel, reports = stream_reports(server.target, asking(seconds=3600))
    try:
        next(reports)
        service.close()
        assert list(reports) == []  # ended, with OK
        assert reports.code() is grpc.StatusCode.OK
        wait_until(lambda: service.streams == 0)
        _, refused = stream_reports(server.target, asking(nanos=50_000_000))
        with pytest.raises(grpc.RpcError) as raised:
            next(refused)
        assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        channel.close()
        server.stop()


def test_streams_past_the_most_at_once_are_refused(kind: str) -> None:
    service = OrcaService(quiet_load(), min_report_interval=0.05, max_streams=1)
    server = ScriptedServer(kind, services=[service.add_to])
    channel, first = stream_reports(server.target, asking(nanos=50_000_000))
    try:
        next(first)
        _, second = stream_reports(server.target, asking(nanos=50_000_000))
        with pytest.raises(grpc.RpcError) as raised:
            next(second)
        assert raised.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        first.cancel()
        wait_until(lambda: service.streams == 0)
        _, third = stream_reports(server.target, asking(nanos=50_000_000))
        assert next(third) is not None
        third.cancel()
    finally:
        channel.close()
        server.stop()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"\xff\xff\xff",
        b"\x0a\x02\x08\x7f\xff",
        asking(-1).SerializeToString(),
        asking(1, 2_000_000_000).SerializeToString(),
    ],
    ids=["garbage", "truncated", "negative", "nanos-out-of-range"],
)
def test_garbage_to_the_stream_is_invalid_argument(kind: str, request_bytes: bytes) -> None:
    server, service = orca_server(kind, quiet_load(), 0.05)
    try:
        with grpc.insecure_channel(server.target) as channel:
            with pytest.raises(grpc.RpcError) as raised:
                list(channel.unary_stream(STREAM)(request_bytes, timeout=10))  # type: ignore[arg-type]
            assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert service.streams == 0
            # the server is fine: a good request streams
            _, reports = stream_reports(server.target, asking(nanos=50_000_000))
            assert next(reports) is not None
            reports.cancel()
    finally:
        server.stop()


# -- the recorder -----------------------------------------------------------------------------------------------------

BAD = {
    "nan": math.nan,
    "inf": math.inf,
    "-inf": -math.inf,
    "huge": MAX_VALUE * 10,
    "1e300": 1e300,
    "text": "0.5",
    "bool": True,
    "object": object(),
    "an int past floats": 10**400,
}


@pytest.mark.parametrize("value", list(BAD.values()), ids=list(BAD))
def test_a_bad_value_is_refused_never_sent(value: Any, caplog: pytest.LogCaptureFixture) -> None:
    recorder = LoadRecorder()
    recorder.record(cpu_utilization=0.5, qps=10.0, utilization={"gpu": 0.5}, named_metrics={"n": 1.0})
    with caplog.at_level(logging.WARNING, "interceptors.server"):
        recorder.record(cpu_utilization=value, qps=value, eps=value, utilization={"gpu": value, "disk": value})
        recorder.record(named_metrics={"n": value}, request_cost={"c": value}, application_utilization=value)
    report = recorder.report
    assert report.cpu_utilization == 0.5 and report.qps == 10.0 and report.eps is None
    assert report.utilization == {"gpu": 0.5} and report.named_metrics == {"n": 1.0} and report.request_cost == {}
    assert report.application_utilization is None
    assert load_report([(LOAD_REPORT_METADATA_KEY, serialized(report))]) == report  # what is sent


def test_only_named_metrics_and_costs_may_be_negative() -> None:
    recorder = LoadRecorder()
    recorder.record(cpu_utilization=-0.1, qps=-1, eps=-1, utilization={"gpu": -0.1}, application_utilization=-1)
    recorder.record(named_metrics={"delta": -2.5}, request_cost={"refund": -1.0})
    assert recorder.report == LoadReport(named_metrics={"delta": -2.5}, request_cost={"refund": -1.0})


def test_fractions_stay_at_most_one_and_maps_are_bounded() -> None:
    recorder = LoadRecorder()
    recorder.record(memory_utilization=1.5, utilization={"gpu": 1.01}, cpu_utilization=2.0)
    assert recorder.report.memory_utilization is None and recorder.report.utilization == {}
    assert recorder.report.cpu_utilization == 2.0  # above 1 is allowed: A51 leaves its scale to the server
    recorder.record(named_metrics={f"m{i}": float(i) for i in range(MAX_NAMES + 10)})
    recorder.record(named_metrics={"": 1.0, "x" * 1000: 1.0, 7: 1.0, "\ud800": 1.0})  # type: ignore[dict-item]
    assert len(recorder.report.named_metrics) == MAX_NAMES
    recorder.record(named_metrics={"m0": 99.0})  # a name it holds may change
    assert recorder.report.named_metrics["m0"] == 99.0
    recorder.clear("named_metrics")
    assert recorder.report.named_metrics == {}
    with pytest.raises(ValueError, match="no such field 'cpu'"):
        recorder.clear("cpu")


def test_outside_a_reported_call_the_recorder_keeps_nothing() -> None:
    call_load().record(request_cost={"rows": 1})
    assert call_load().report == LoadReport()


def test_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match="interval"):
        ServerLoad(interval=-1)
    with pytest.raises(ValueError, match="cpu_seconds"):
        ServerLoad(cpu_seconds=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pool"):
        ServerLoad(pool=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="load must be a ServerLoad"):
        LoadReporting(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_report_interval"):
        OrcaService(ServerLoad(), min_report_interval=0)


def test_a_sync_servers_lateness_is_its_pools_queue_time() -> None:
    pool = futures.ThreadPoolExecutor(max_workers=1)
    load = ServerLoad(pool=pool, interval=0.1)  # a probe every 10 ms
    release = threading.Event()
    try:
        assert load.lateness(aio=False) == 0.0  # the probes start
        pool.submit(release.wait)  # the one worker is busy: the next probe waits
        wait_until(lambda: (load.lateness(aio=False) or 0) >= 0.03)  # how overdue it is counts while it waits
        release.set()
        wait_until(lambda: load.report.named_metrics.get("pool_queue_time", 0) >= 0.03)
    finally:
        release.set()
        pool.shutdown()


def test_reports_without_calls_fall_to_no_rate() -> None:
    load = quiet_load(interval=0.02)
    load._ended(False, 0.001)
    wait_until(lambda: (load.report.qps or 0) > 0)
    wait_until(lambda: load.report.qps == 0)


# -- our clients listen -----------------------------------------------------------------------------------------------


def test_a_load_watch_keeps_the_latest_out_of_band_report(kind: str) -> None:
    load = quiet_load()
    load.record(application_utilization=0.5)
    server, _ = orca_server(kind, load, 0.02)
    heard: list[LoadReport] = []
    try:
        with (
            grpc.insecure_channel(server.target) as channel,
            LoadWatch(channel, interval=0.02, on_report=heard.append, clock=FakeClock()) as watch,  # never stale
        ):
            wait_until(lambda: watch.utilization() == 0.5)
            load.record(application_utilization=0.95)
            wait_until(lambda: watch.utilization() == 0.95)
            assert watch.report is not None and watch.report.application_utilization == 0.95
            assert len(heard) >= 2
    finally:
        server.stop()
    assert not watch._thread.is_alive()


def test_a_load_watch_opens_the_stream_again_after_the_backend_restarts() -> None:
    load = quiet_load()
    load.record(cpu_utilization=0.3)
    server, _ = orca_server("sync", load, 0.02)
    port = server.port
    with grpc.insecure_channel(server.target) as channel, LoadWatch(channel, interval=0.02) as watch:
        wait_until(lambda: watch.utilization() == 0.3)  # no application utilization: the CPU's (A58)
        server.stop()
        wait_until(lambda: watch.report is None)  # three intervals without a report: not the backend's load
        again = grpc.server(futures.ThreadPoolExecutor(4))
        OrcaService(load, min_report_interval=0.02).add_to(again)
        again.add_insecure_port(f"127.0.0.1:{port}")
        again.start()
        try:
            wait_until(lambda: watch.utilization() == 0.3, timeout=10)
        finally:
            again.stop(None)


def test_a_load_watch_stops_asking_a_backend_without_the_service(caplog: pytest.LogCaptureFixture) -> None:
    server = ScriptedServer("sync")
    try:
        with grpc.insecure_channel(server.target) as channel, LoadWatch(channel, interval=0.02) as watch:
            wait_until(lambda: not watch._thread.is_alive())
            assert watch.report is None and watch.utilization() is None
    finally:
        server.stop()
    assert "serves no ORCA stream" in caplog.text


def test_an_aio_load_watch_keeps_the_latest_report(kind: str) -> None:
    load = quiet_load()
    load.record(application_utilization=0.7)
    server, _ = orca_server(kind, load, 0.02)

    async def watched() -> float | None:
        async with grpc.aio.insecure_channel(server.target) as channel, AioLoadWatch(channel, interval=0.02) as watch:
            for _ in range(500):
                seen = watch.utilization()
                if seen is not None:
                    return seen
                await asyncio.sleep(0.01)
            return None

    try:
        assert AIO_LOOP.run(watched()) == 0.7
    finally:
        server.stop()
