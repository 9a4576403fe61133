"""Priorities on real sync and aio servers: load shedding that refuses the less important calls first (and retries
before first attempts), what a server believes of a caller's claim, and a priority carried three hops down."""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from interceptors import Priorities, Priority, prioritized, resilient_channel
from interceptors.grpc import _claims
from interceptors.server import (
    AioContextPropagation,
    ContextPropagation,
    LoadShedding,
    by_metadata,
    incoming_priority,
)

from ..support.clients import wait_until
from ..support.relay import RELAYS, RelayServer, relay_id
from ..support.server import AIO_LOOP, Request, ScriptedServer
from .test_shedding import Shedding

RESOURCE_EXHAUSTED, OK = grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.OK
TRUSTING = Priorities(max_claimed="critical")


@pytest.fixture(params=["sync", "aio"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(autouse=True)
def _fresh_log_once() -> Iterator[None]:
    _claims._warned.clear()  # each test sees what is logged once
    yield
    _claims._warned.clear()


class Held:
    """Calls in flight on ``server`` until released (cancelled: the scripted handler stops at once)."""

    def __init__(self, server: Shedding, count: int, claim: str | None = "critical", tenant: str | None = None) -> None:
        metadata = (() if claim is None else (("x-priority", claim),)) + (
            () if tenant is None else (("x-tenant", tenant),)
        )
        self.before = before = server.shedding.in_flight
        self.calls = [
            server.stub.Unary.future(Request(id=f"held{i}", sleep_ms=10_000), timeout=20, metadata=metadata)
            for i in range(count)
        ]
        self.server = server
        wait_until(lambda: server.shedding.in_flight == before + count)

    def release(self) -> None:
        for call in self.calls:
            call.cancel()
        wait_until(lambda: self.server.shedding.in_flight == self.before)


def ask(server: Shedding, *pairs: tuple[str, str]) -> grpc.StatusCode:
    """The status of a quick call with metadata ``pairs``."""
    try:
        server.stub.Unary(Request(id="asked"), timeout=10, metadata=pairs)
    except grpc.RpcError as error:
        return error.code()
    return OK


def shedding(kind: str, limit: int, priorities: Priorities) -> Iterator[Shedding]:
    server = Shedding(kind, limit, priorities=priorities)
    try:
        yield server
    finally:
        server.close()


def test_sheddable_calls_are_refused_first_and_critical_ones_last(kind: str) -> None:
    for server in shedding(kind, 10, TRUSTING):
        held = Held(server, 5)
        assert ask(server, ("x-priority", "sheddable")) is RESOURCE_EXHAUSTED  # 5 of 10: its share
        assert ask(server, ("x-priority", "low")) is OK
        more = Held(server, 3)  # 8 in flight
        assert ask(server) is RESOURCE_EXHAUSTED  # no claim: the default level, NORMAL, may fill 8 of 10
        assert ask(server, ("x-priority", "high")) is OK
        assert ask(server, ("x-priority", "critical")) is OK
        more.release()
        held.release()


def test_a_retry_is_refused_before_a_first_attempt_of_its_level(kind: str) -> None:
    for server in shedding(kind, 20, TRUSTING):
        held = Held(server, 15)  # a normal call may fill 16 of 20, a normal retry 15
        assert ask(server, ("x-priority", "normal"), ("grpc-previous-rpc-attempts", "1")) is RESOURCE_EXHAUSTED
        assert ask(server, ("x-priority", "normal"), ("grpc-previous-rpc-attempts", "0")) is OK  # a first attempt
        assert ask(server, ("x-priority", "normal")) is OK
        held.release()


def test_a_claim_counts_no_higher_than_the_server_believes_of_the_caller(kind: str) -> None:
    for server in shedding(kind, 10, Priorities()):  # by default, an unauthenticated caller: NORMAL at most
        held = Held(server, 8)  # claimed critical, counted normal: 8 fit
        assert ask(server, ("x-priority", "critical")) is RESOURCE_EXHAUSTED  # a forged claim gains nothing
        held.release()
        held = Held(server, 5, claim="normal")
        assert ask(server, ("x-priority", "sheddable")) is RESOURCE_EXHAUSTED  # a lower claim is believed
        held.release()


def test_a_call_saying_nothing_gains_no_more_than_a_claim(kind: str) -> None:
    for server in shedding(kind, 10, Priorities(default="high", max_claimed="normal")):
        held = Held(server, 8, claim="normal")  # normal calls may fill 8 of 10, high ones 9
        assert ask(server) is RESOURCE_EXHAUSTED  # no claim: the default, high, but believed no more than normal
        assert ask(server, ("x-priority", "high")) is RESOURCE_EXHAUSTED
        held.release()


def test_what_the_server_believes_may_depend_on_the_caller(kind: str) -> None:
    def believed(context: Any) -> Priority:
        return Priority.CRITICAL if context.peer().startswith("ipv4:127.0.0.1:") else Priority.LOW

    for server in shedding(kind, 10, Priorities(max_claimed=believed)):
        held = Held(server, 9)
        assert ask(server, ("x-priority", "critical")) is OK
        held.release()


def test_a_bad_claim_or_a_failing_rule_counts_as_the_default_level_logged_once(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(context: Any) -> Priority:
        raise RuntimeError("no such identity")

    for server in shedding(kind, 10, Priorities(max_claimed=broken)):
        held = Held(server, 7, claim=None)
        with caplog.at_level(logging.WARNING, logger="interceptors"):
            for _ in range(3):
                assert ask(server, ("x-priority", "urgent!")) is OK  # normal: 7 < 8
                assert ask(server, ("x-priority", "critical")) is OK  # counted as the default level, normal
            more = Held(server, 1, claim=None)
            assert ask(server, ("x-priority", "x" * 5000)) is RESOURCE_EXHAUSTED
            assert ask(server, ("x-priority", "critical")) is RESOURCE_EXHAUSTED
        more.release()
        held.release()
        warnings = sorted(r.getMessage() for r in caplog.records if r.name == "interceptors")
        assert len(warnings) == 2, warnings
        assert "x-priority that names no priority: 'urgent!'" in warnings[0]
        assert "max_claimed failed" in warnings[1] and "no such identity" in warnings[1]


def test_within_a_level_the_tenant_using_the_most_is_refused_first(kind: str) -> None:
    server = Shedding(kind, 20, priorities=TRUSTING, tenant=by_metadata("x-tenant"))
    try:
        noisy = Held(server, 15, claim=None, tenant="noisy")  # normal calls may fill 16 of 20
        assert ask(server, ("x-tenant", "noisy")) is RESOURCE_EXHAUSTED  # all 15 in flight are its: it stands lower
        assert ask(server, ("x-tenant", "quiet")) is OK  # none in flight: the whole normal share
        assert ask(server) is OK  # no tenant said: its address, none in flight
        noisy.release()
    finally:
        server.close()
    with pytest.raises(ValueError, match="tenant: give priorities too"):
        Shedding(kind, 20, tenant=by_metadata("x-tenant"))


def test_a_tenant_function_that_fails_fails_no_call_and_is_logged_once(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(context: Any) -> str:
        raise RuntimeError("who?")

    server = Shedding(kind, 10, priorities=TRUSTING, tenant=broken)
    try:
        with caplog.at_level(logging.WARNING, logger="interceptors"):
            assert [ask(server) for _ in range(3)] == [OK] * 3
        warnings = [r.getMessage() for r in caplog.records if "key function failed" in r.getMessage()]
        assert len(warnings) == 1 and "who?" in warnings[0]
    finally:
        server.close()


def test_a_critical_call_is_refused_only_when_nothing_lower_is_left_to_refuse(kind: str) -> None:
    for server in shedding(kind, 2, TRUSTING):
        assert server.shedding.priorities is TRUSTING
        held = Held(server, 1, claim="sheddable")
        assert ask(server, ("x-priority", "sheddable")) is RESOURCE_EXHAUSTED  # 1 of 2: its share
        more = Held(server, 1)
        assert ask(server, ("x-priority", "critical")) is RESOURCE_EXHAUSTED  # the limit, taken
        more.release()
        held.release()


PAIRS = list(zip(RELAYS, RELAYS[3:] + RELAYS[:3], strict=True))


@pytest.mark.parametrize("pair", PAIRS, ids=[f"A={relay_id(a)},B={relay_id(b)}" for a, b in PAIRS])
@pytest.mark.parametrize(
    ("rules", "claim", "third_hop"),
    [
        (TRUSTING, "critical", "critical"),
        (None, "critical", "normal"),  # the first server believes no more of an unauthenticated caller
        (None, "sheddable", "sheddable"),
    ],
)
def test_a_priority_set_by_the_caller_reaches_the_third_hop(
    pair: tuple[Any, Any], rules: Priorities | None, claim: str, third_hop: str
) -> None:
    c = ScriptedServer("aio" if pair[1][0] == "sync" else "sync")
    b = RelayServer(pair[1], c.target, priorities=rules)
    a = RelayServer(pair[0], b.target, priorities=rules)
    try:
        with resilient_channel(a.target) as channel, prioritized(claim):
            channel.unary_unary("/scripted.v1.Scripted/Unary", Request.SerializeToString, lambda b: b)(
                Request(id="hops"), timeout=10
            )
        assert [seen.metadata.get("x-priority") for seen in c.recorder.seen] == [third_hop]
    finally:
        a.close()
        b.close()
        c.stop()


def test_a_tenants_usage_is_read_safely_as_the_server_goes_idle() -> None:
    shedding = LoadShedding(10, priorities=TRUSTING, tenant=by_metadata("x-tenant"))
    shedding._tenants["t"] = 1  # its last call has given its place back, and not yet its count
    end = shedding.admit(None, Priority.NORMAL, False, "t")
    assert callable(end)
    end(None)


def test_load_shedding_bounds_its_waiting_line() -> None:
    assert LoadShedding(4, max_wait=0.1, max_queued=3)._places.max_waiting == 3
    with pytest.raises(ValueError, match="max_queued"):
        LoadShedding(4, max_queued=-1)


@pytest.mark.parametrize("believed", ["critical", "normal"])
def test_a_handler_reads_the_priority_the_server_believes_of_its_call(kind: str, believed: str) -> None:
    rules = Priorities(max_claimed=believed)

    def said() -> bytes:
        level = incoming_priority()
        return b"none" if level is None else level.name.lower().encode()

    if kind == "sync":
        handler: Any = grpc.unary_unary_rpc_method_handler(lambda request, context: said())
        server = grpc.server(
            concurrent.futures.ThreadPoolExecutor(2), interceptors=[ContextPropagation(priorities=rules)]
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", {"Say": handler}),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        stop: Any = lambda: server.stop(None)  # noqa: E731
    else:

        async def aio_said(request: bytes, context: Any) -> bytes:
            return said()

        async def start() -> Any:
            aio_server = grpc.aio.server(interceptors=[AioContextPropagation(priorities=rules)])
            handler: Any = grpc.unary_unary_rpc_method_handler(aio_said)
            aio_server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", {"Say": handler}),))
            bound = aio_server.add_insecure_port("127.0.0.1:0")
            await aio_server.start()
            return aio_server, bound

        aio_server, port = AIO_LOOP.run(start())
        stop = lambda: AIO_LOOP.run(aio_server.stop(None))  # noqa: E731
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            say: Any = channel.unary_unary("/t.T/Say")
            assert say(b"", timeout=10, metadata=(("x-priority", "critical"),)) == believed.encode()
            assert say(b"", timeout=10, metadata=(("x-priority", "low"),)) == b"low"
            assert say(b"", timeout=10) == b"none"
    finally:
        stop()
    assert incoming_priority() is None  # outside a handler
