"""Load shedding on real sync and aio servers: the excess refused at once with pushback, the accepted calls'
latency flat, retrying clients waiting out the pushback."""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from scripted.v1 import scripted_pb2_grpc as pb_grpc

from interceptors import AdaptiveLimiter, CircuitBreaker, CircuitState, RetryPolicy
from interceptors.events import Shed
from interceptors.server import AccessLog, AioAccessLog, AioLoadShedding, LoadShedding

from ..support.clients import PATHS, Client, wait_until
from ..support.server import Request, ScriptedServer

RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
SERVER_LOG_LAG = 0.025
"""How much later than its refusal a loaded server may log it (what a gap between two logged refusals loses)."""


class Shedding(ScriptedServer):
    """A scripted server with an access log to ``log`` and load shedding; ``stub`` calls it without retries."""

    def __init__(self, kind: str, limit: Any, log: logging.Logger | None = None, **options: Any) -> None:
        self.shedding: Any = (LoadShedding if kind == "sync" else AioLoadShedding)(limit, **options)
        chain: list[Any] = [self.shedding]
        if log is not None:
            chain.insert(0, AccessLog(log) if kind == "sync" else AioAccessLog(log))
        super().__init__(kind, interceptors=chain)
        self.channel = grpc.insecure_channel(self.target, options=[("grpc.enable_retries", 0)])
        self.stub = pb_grpc.ScriptedStub(self.channel)
        self.stub.Unary(Request(id="warm"), timeout=10)

    def close(self) -> None:
        self.channel.close()
        self.stop()


@pytest.fixture(params=["sync", "aio"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make(kind: str, limit: Any, **options: Any) -> Iterator[Shedding]:
    server = Shedding(kind, limit, **options)
    try:
        yield server
    finally:
        server.close()


def concurrent_calls(server: Shedding, n: int, sleep_ms: int) -> list[tuple[grpc.StatusCode, float, dict[str, Any]]]:
    """``n`` calls at once, each asking the server to take ``sleep_ms``: (code, latency, trailers) of each."""

    def one(i: int) -> tuple[grpc.StatusCode, float, dict[str, Any]]:
        started = time.monotonic()
        try:
            _, call = server.stub.Unary.with_call(Request(id=f"c{i}", sleep_ms=sleep_ms), timeout=10)
        except grpc.RpcError as error:
            call = error
        assert not (call.code() is RESOURCE_EXHAUSTED and call.initial_metadata())  # Trailers-Only
        return call.code(), time.monotonic() - started, dict(call.trailing_metadata() or ())

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_the_excess_is_refused_at_once_with_pushback(kind: str) -> None:
    # calls slow enough that what "at once" and "flat" tell apart, half of one, is more than a loaded machine's
    # delays (two suites at once held a refusal 0.3 s when the slow calls took 0.4 s)
    for server in make(kind, 4, pushback=0.25):
        outcomes = concurrent_calls(server, 16, sleep_ms=2000)
        accepted = [o for o in outcomes if o[0] is grpc.StatusCode.OK]
        refused = [o for o in outcomes if o[0] is RESOURCE_EXHAUSTED]
        assert (len(accepted), len(refused)) == (4, 12)
        assert all(latency < 1.0 for _, latency, _ in refused)  # at once, not after the slow calls
        assert all(2.0 <= latency < 3.0 for _, latency, _ in accepted)  # flat: none queued behind another (4 s)
        assert {trailers["grpc-retry-pushback-ms"] for _, _, trailers in refused} == {"250"}
        assert server.shedding.refused == 12 and server.shedding.in_flight == 0


def test_shedding_in_dry_run_serves_every_call_and_reports_what_it_would_refuse(kind: str) -> None:
    heard: list[Shed] = []
    for server in make(kind, 4, min_remaining=1.0, dry_run=True, on_shed=heard.append):
        outcomes = concurrent_calls(server, 12, sleep_ms=300)
        assert [code for code, _, _ in outcomes] == [grpc.StatusCode.OK] * 12
        assert all(latency < 1.5 for _, latency, _ in outcomes)  # none waited for a place either
        late = server.stub.Unary(Request(id="late"), timeout=0.5)  # too little time left: served all the same
        assert late.id == "late"
        assert server.shedding.refused == len(heard)
        assert {e.reason for e in heard} == {"overload", "deadline"} and all(e.dry_run for e in heard)
        assert server.shedding.in_flight == 0


def test_default_pushback_follows_recent_latency(kind: str) -> None:
    for server in make(kind, 1):
        for i in range(6):
            server.stub.Unary(Request(id=f"w{i}", sleep_ms=250))  # the average moves from 100 ms to ~200 ms
        outcomes = concurrent_calls(server, 2, sleep_ms=300)
        (_, _, trailers) = next(o for o in outcomes if o[0] is RESOURCE_EXHAUSTED)
        assert 140 <= int(trailers["grpc-retry-pushback-ms"]) <= 400  # not the first 100 ms (±20 %)


def test_a_retrying_client_waits_out_the_pushback(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger(f"test.shed.{kind}")
    with caplog.at_level(logging.INFO, logger=log.name):
        for server in make(kind, 1, log=log, pushback=0.15):
            with Client("call", server.target, RetryPolicy(max_attempts=4)) as client:
                hog = client.in_thread(Request(id="hog", sleep_ms=800))
                wait_until(lambda s=server: s.attempts("hog") == 1)  # type: ignore[misc]
                result = client.unary(Request(id="patient"), timeout=5)
                hog()
    assert result.code is RESOURCE_EXHAUSTED  # 4 attempts, all refused while the hog held the only place
    refused = [r.created for r in caplog.records if r.name == log.name and r.code == "RESOURCE_EXHAUSTED"]  # type: ignore[attr-defined]
    assert len(refused) == 4
    gaps = [b - a for a, b in itertools.pairwise(refused)]
    # the server logs each refusal when its loop gets to it: a late record shortens the gap after it (a gap of 145 ms
    # was seen beside two suites); without the pushback the first retry would come 80 to 120 ms after the first try
    assert all(gap >= 0.15 - SERVER_LOG_LAG for gap in gaps), gaps


def test_a_call_with_too_little_time_left_is_refused(kind: str) -> None:
    for server in make(kind, 10, min_remaining=0.5):
        with pytest.raises(grpc.RpcError) as raised:
            server.stub.Unary(Request(id="short"), timeout=0.3)
        error: Any = raised.value
        assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED and "refused" in error.details()
        assert "grpc-retry-pushback-ms" not in dict(error.trailing_metadata() or ())
        assert server.attempts("short") == 0
        assert server.stub.Unary(Request(id="long"), timeout=5).attempt == 1


def test_an_adaptive_limit(kind: str) -> None:
    for server in make(
        kind, AdaptiveLimiter(initial_limit=2, min_limit=2, max_limit=2), code=grpc.StatusCode.UNAVAILABLE
    ):
        codes = sorted(code.name for code, _, _ in concurrent_calls(server, 3, sleep_ms=300))
        assert codes == ["OK", "OK", "UNAVAILABLE"]


def test_streams_are_shed_too(kind: str) -> None:
    for server in make(kind, 1):
        hog = server.stub.Unary.future(Request(id="hog", sleep_ms=500))
        wait_until(lambda s=server: s.attempts("hog") == 1)  # type: ignore[misc]
        with pytest.raises(grpc.RpcError) as raised:
            list(server.stub.ServerStream(Request(count=2)))
        assert raised.value.code() is RESOURCE_EXHAUSTED
        hog.result()
        assert len(list(server.stub.ServerStream(Request(count=2)))) == 2


@pytest.mark.parametrize("path", PATHS)
def test_clients_retry_a_shed_call_after_its_pushback_and_not_a_quota(path: str, server: ScriptedServer) -> None:
    """RESOURCE_EXHAUSTED with a pushback is an overloaded server asking to come back: retried after it. Without
    one it is a quota: final."""
    server.script.code, server.script.trailers = RESOURCE_EXHAUSTED, (("grpc-retry-pushback-ms", "30"),)
    with Client(path, server.target, RetryPolicy(max_attempts=3)) as client:
        assert client.unary(Request(id="shed", fail_first=2)).code is grpc.StatusCode.OK
        assert server.attempts("shed") == 3
        server.script.trailers = ()
        assert client.unary(Request(id="quota", fail_first=2)).code is RESOURCE_EXHAUSTED
        assert server.attempts("quota") == 1


@pytest.mark.parametrize("path", PATHS)
def test_breakers_count_a_shed_call_as_overload(path: str, server: ScriptedServer) -> None:
    server.script.code, server.script.trailers = RESOURCE_EXHAUSTED, (("grpc-retry-pushback-ms", "30"),)
    breaker = CircuitBreaker(failure_threshold=2, delay=10.0)
    with Client(path, server.target, breaker) as client:
        for i in range(2):
            assert client.unary(Request(id=f"s{i}", fail_first=1)).code is RESOURCE_EXHAUSTED
        assert breaker.state is CircuitState.OPEN
        server.script.trailers = ()  # a quota says nothing about the server's health
        breaker.close()
        for i in range(3):
            assert client.unary(Request(id=f"q{i}", fail_first=1)).code is RESOURCE_EXHAUSTED
        assert breaker.state is CircuitState.CLOSED


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": "10"}, "limit"),
        ({"limit": 4, "code": grpc.StatusCode.INTERNAL}, "code"),
        ({"limit": 4, "pushback": -1}, "pushback"),
        ({"limit": 4, "min_remaining": "x"}, "min_remaining"),
    ],
)
def test_bad_options(options: dict[str, Any], name: str) -> None:
    for shedding in (LoadShedding, AioLoadShedding):
        with pytest.raises(ValueError, match=name):
            shedding(**options)
