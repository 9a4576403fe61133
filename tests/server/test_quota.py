"""Quotas on real sync and aio servers: each client held to its calls per period, refused at once with when to
come back (pushback and RetryInfo), which our clients and grpc's own retries wait for; who a client is (identity,
peer, or metadata when asked), and bounded memory under a flood of new clients."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from scripted.v1 import scripted_pb2_grpc as pb_grpc

from interceptors import RetryPolicy
from interceptors.events import QuotaExceeded
from interceptors.server import AioLoadShedding, AioQuota, LoadShedding, Quota, by_metadata, by_peer

from ..support.clients import PATHS, Client
from ..support.server import AIO_LOOP, Request, ScriptedServer

RESOURCE_EXHAUSTED, OK = grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.OK
JS_PEERS = Path(__file__).parents[1] / "js"


@pytest.fixture(params=["sync", "aio"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class QuotaServer(ScriptedServer):
    """A scripted server with a quota; ``stub`` calls it without retries."""

    def __init__(self, kind: str, *args: Any, **options: Any) -> None:
        self.quota: Any = (Quota if kind == "sync" else AioQuota)(*args, **options)
        super().__init__(kind, interceptors=[self.quota])
        self.channel = grpc.insecure_channel(self.target, options=[("grpc.enable_retries", 0)])
        self.stub = pb_grpc.ScriptedStub(self.channel)
        grpc.channel_ready_future(self.channel).result(10)

    def ask(self, *pairs: tuple[str, str]) -> Any:
        """A quick call with metadata ``pairs``: its ended call (an error's, when refused)."""
        try:
            return self.stub.Unary.with_call(Request(id="asked"), timeout=10, metadata=pairs)[1]
        except grpc.RpcError as error:
            return error  # an ended call too

    def close(self) -> None:
        self.channel.close()
        self.stop()


def quota(kind: str, *args: Any, **options: Any) -> Iterator[QuotaServer]:
    server = QuotaServer(kind, *args, **options)
    try:
        yield server
    finally:
        server.close()


def test_a_client_past_its_quota_is_refused_at_once_with_when_to_come_back(kind: str) -> None:
    heard: list[QuotaExceeded] = []
    for server in quota(kind, 4, period=60, on_exceeded=heard.append):
        assert [server.ask().code() for _ in range(4)] == [OK] * 4
        started = time.monotonic()
        refused = server.ask()
        assert time.monotonic() - started < 1  # at once
        assert refused.code() is RESOURCE_EXHAUSTED
        assert not refused.initial_metadata()  # Trailers-Only
        trailers = dict(refused.trailing_metadata())
        assert 14_000 <= int(trailers["grpc-retry-pushback-ms"]) <= 15_000  # one call per 15 s
        status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
        info = error_details_pb2.RetryInfo()
        assert status.code == RESOURCE_EXHAUSTED.value[0] and status.message == refused.details()
        assert status.details[0].Unpack(info)
        assert info.retry_delay.ToMilliseconds() == int(trailers["grpc-retry-pushback-ms"])
        assert "quota exceeded: 4 calls per 60s; retry in" in refused.details()
        assert server.quota.refused == 1 and server.quota.clients == 1
        assert [(e.client.startswith("ipv4:127.0.0.1"), e.method) for e in heard] == [
            (True, "/scripted.v1.Scripted/Unary")
        ]


def test_a_quota_in_dry_run_reports_the_calls_it_would_refuse_and_serves_them(kind: str) -> None:
    heard: list[QuotaExceeded] = []
    for server in quota(kind, 2, period=60, dry_run=True, on_exceeded=heard.append):
        assert [server.ask().code() for _ in range(5)] == [OK] * 5
        assert server.quota.refused == 3
        assert len(heard) == 3 and all(e.dry_run for e in heard)


def test_a_client_cycling_through_tenant_ids_is_held_to_its_quota_by_its_address(kind: str) -> None:
    # the default key: the identity, else the address, never metadata; an hour's quota, so that none of it comes
    # back while 1 000 calls are made (two suites at once took over 12 s, the 60 s period's time for one)
    for server in quota(kind, 5, period=3600):
        codes = [server.ask(("x-tenant", f"t{i}")).code() for i in range(1000)]
        assert codes.count(OK) == 5
        assert server.quota.clients == 1


def test_tenants_from_metadata_when_the_server_asks_each_with_its_own_quota(kind: str) -> None:
    for server in quota(kind, 2, period=60, key=by_metadata("x-tenant")):
        codes = {t: [server.ask(("x-tenant", t)).code() for _ in range(3)] for t in ("a", "b")}
        assert codes == {"a": [OK, OK, RESOURCE_EXHAUSTED], "b": [OK, OK, RESOURCE_EXHAUSTED]}
        assert server.ask().code() is OK  # no tenant: its address
        assert server.quota.clients == 3


def test_a_flood_of_new_tenants_cannot_grow_memory_past_the_cap(kind: str) -> None:
    for server in quota(kind, 1, period=3600, key=by_metadata("x-tenant"), max_clients=50):
        codes = [server.ask(("x-tenant", f"t{i}")).code() for i in range(1000)]
        assert server.quota.clients <= 51  # the cap, and the quota the rest share
        assert codes.count(OK) == 51  # 50 tenants kept, then one call for all the others together


def test_a_key_function_that_fails_fails_no_call_and_is_logged_once(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(context: Any) -> str:
        raise KeyError("tenant")

    for server in quota(kind, 2, period=60, key=broken):
        with caplog.at_level(logging.WARNING, logger="interceptors"):
            codes = [server.ask().code() for _ in range(3)]
        assert codes == [OK, OK, RESOURCE_EXHAUSTED]  # the calls whose client cannot be told share one quota
        warnings = [r.getMessage() for r in caplog.records if "key function failed" in r.getMessage()]
        assert len(warnings) == 1 and "KeyError" in warnings[0]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"calls": 0}, "calls"),
        ({"calls": 5, "burst": 0}, "burst"),
        ({"calls": 5, "max_clients": 0}, "max_clients"),
        ({"calls": 5, "period": -1}, "period"),
        ({"calls": 5, "key": "x-tenant"}, "key must be a function"),
        ({"calls": 5, "code": grpc.StatusCode.INTERNAL}, "code"),
    ],
)
def test_bad_options_are_refused_naming_them(options: dict[str, Any], named: str) -> None:
    calls = options.pop("calls")
    for make in (Quota, AioQuota):
        with pytest.raises(ValueError, match=named):
            make(calls, **options)
    with pytest.raises(ValueError, match="lower-case text metadata key"):
        by_metadata("X-Tenant")


def test_by_peer_names_a_host_without_its_port() -> None:
    class Context:
        def __init__(self, peer: str) -> None:
            self._peer = peer

        def peer(self) -> str:
            return self._peer

    assert by_peer(Context("ipv4:10.0.0.7:50123")) == "ipv4:10.0.0.7"
    assert by_peer(Context("ipv6:[::1]:50123")) == "ipv6:[::1]"
    assert by_peer(Context("unix:/run/app.sock")) == "unix:/run/app.sock"


@pytest.mark.parametrize("path", PATHS)
def test_our_clients_wait_out_the_pushback_and_get_through(kind: str, path: str) -> None:
    for server in quota(kind, 1, period=0.2):  # one call per 200 ms
        with Client(path, server.target, RetryPolicy(max_attempts=3)) as client:
            first, second = client.unary(Request(id="first")), client.unary(Request(id="second"))
        assert (first.code, second.code) == (OK, OK)
        assert second.elapsed >= 0.1  # it waited for its turn
        assert server.attempts("second") == 1  # refused calls never reach the handler: one attempt got through


def test_grpc_own_retries_honour_the_pushback(kind: str) -> None:
    config = {
        "methodConfig": [
            {
                "name": [{"service": "scripted.v1.Scripted"}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.01s",
                    "maxBackoff": "0.02s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["RESOURCE_EXHAUSTED"],
                },
            }
        ]
    }
    heard: list[QuotaExceeded] = []
    for server in quota(kind, 1, period=PERIOD, on_exceeded=heard.append):
        options = [("grpc.service_config", json.dumps(config)), ("grpc.enable_retries", 1)]
        with grpc.insecure_channel(server.target, options=options) as channel:
            stub = pb_grpc.ScriptedStub(channel)
            stub.Unary(Request(id="first"), timeout=10)
            started = time.monotonic()
            stub.Unary(Request(id="second"), timeout=10)
            waited = time.monotonic() - started
        assert_waited_out(heard, waited)
        assert server.quota.refused == 1


PERIOD = 2.0
"""One call per PERIOD: the second call's pushback is what is left of it (the machine's pace between two calls
takes some), far longer than the client's own backoff (10..20 ms)."""


def assert_waited_out(heard: list[QuotaExceeded], waited: float) -> None:
    """The retry waited the pushback the server sent (``heard``: its one refusal), however long it was."""
    assert len(heard) == 1 and heard[0].wait > 0.1, f"the machine held the client {PERIOD} s between two calls"
    assert waited >= heard[0].wait - 0.002  # the trailer rounds up to a millisecond; the timers are this precise


@pytest.mark.skipif(
    not (JS_PEERS / "node_modules" / "@grpc" / "grpc-js").is_dir(),
    reason="grpc-js is not installed: make test installs it (tests/js) where node and npm are",
)
def test_a_grpc_js_client_waits_out_the_pushback(kind: str) -> None:
    heard: list[QuotaExceeded] = []
    for server in quota(kind, 1, period=PERIOD, on_exceeded=heard.append):
        script = str(JS_PEERS / "quota_client.js")
        ran = subprocess.run(["node", script, server.target, "2"], capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr
        outcomes = json.loads(ran.stdout)
        assert [o["code"] for o in outcomes] == [0, 0]  # both OK: the second after grpc-js's retry
        assert_waited_out(heard, outcomes[1]["ms"] / 1000)
        assert server.quota.refused == 1


def _health_and_scripted(kind: str, interceptor: Any) -> tuple[Any, str]:
    """A server with the health service and ``interceptor``: (how to stop it, its target)."""
    servicer = health.HealthServicer() if kind == "sync" else health.aio.HealthServicer()
    if kind == "sync":
        server = grpc.server(concurrent.futures.ThreadPoolExecutor(4), interceptors=[interceptor])
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        return (lambda: server.stop(None)), f"127.0.0.1:{port}"

    async def start() -> Any:
        aio_server = grpc.aio.server(interceptors=[interceptor])
        health_pb2_grpc.add_HealthServicer_to_server(servicer, aio_server)
        bound = aio_server.add_insecure_port("127.0.0.1:0")
        await aio_server.start()
        return aio_server, bound

    aio_server, port = AIO_LOOP.run(start())
    return (lambda: AIO_LOOP.run(aio_server.stop(None))), f"127.0.0.1:{port}"


@pytest.mark.parametrize("interceptor", ["quota", "shedding"])
def test_health_checks_are_never_refused(kind: str, interceptor: str) -> None:
    if interceptor == "quota":
        made: Any = (Quota if kind == "sync" else AioQuota)(1, period=60)
    else:
        made = (LoadShedding if kind == "sync" else AioLoadShedding)(1)
        made._places.take(0.0)  # the only place taken
    stop, target = _health_and_scripted(kind, made)
    try:
        with grpc.insecure_channel(target) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check  # type: ignore[attr-defined]
            for _ in range(5):
                assert (
                    check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
                )
    finally:
        stop()
