"""FleetCircuitBreaker against a real valkey-server: the fleet's evidence opens every replica's breaker, one replica
at a time probes, its trial closes or re-opens them all; local decisions while the store is down; the switch."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import redis
import redis.asyncio

from interceptors import CircuitOpenError, CircuitState, Executor
from interceptors.events import FleetModeChanged
from interceptors.fleet import FleetCircuitBreaker, FleetStore, FleetSwitch

from ..support.clients import Client, wait_until
from ..support.server import Request, ScriptedServer
from .conftest import sync_store

OPEN, CLOSED, HALF_OPEN = CircuitState.OPEN, CircuitState.CLOSED, CircuitState.HALF_OPEN


class Down(Exception):
    pass


def fail() -> None:
    raise Down


def outcome(breaker: FleetCircuitBreaker, fn: object = lambda: "ok") -> object:
    try:
        return Executor(breaker).call(fn)  # type: ignore[arg-type]
    except (Down, CircuitOpenError) as error:
        return type(error)


def fleet(url: str, prefix: str, count: int = 3, **options: object) -> list[FleetCircuitBreaker]:
    breakers = [
        FleetCircuitBreaker(sync_store(url, prefix), "b", handle=Down, **options)  # type: ignore[arg-type]
        for _ in range(count)
    ]
    wait_until(lambda: all(b._member.heard for b in breakers), timeout=3)
    return breakers


def test_the_fleets_evidence_opens_every_breaker(shared_valkey: str, prefix: str) -> None:
    a, b, c = fleet(shared_valkey, prefix, delay=30)
    for breaker in (a, b):  # 3 failures each: under each one's threshold of 5, over the fleet's
        for _ in range(3):
            assert outcome(breaker, fail) is Down
    assert a.state is CLOSED and b.state is CLOSED
    wait_until(lambda: all(x.state is OPEN for x in (a, b, c)), timeout=2)
    assert outcome(c, fail) is CircuitOpenError  # c never failed: the fleet's evidence opened it


def test_failures_in_a_row_across_the_fleet_start_again_at_any_success(shared_valkey: str, prefix: str) -> None:
    a, b, c = fleet(shared_valkey, prefix, delay=30)
    for _ in range(3):
        outcome(a, fail)
    wait_until(lambda: not a._member._calls)  # sent: the fleet has 3 in a row
    assert outcome(c) == "ok"
    wait_until(lambda: not c._member._calls)  # c's success starts them again
    for _ in range(3):
        outcome(b, fail)
    wait_until(lambda: not b._member._calls)
    assert all(x.state is CLOSED for x in (a, b, c))
    for _ in range(2):
        outcome(a, fail)  # 5 in a row now: b's 3 and a's 2
    wait_until(lambda: all(x.state is OPEN for x in (a, b, c)), timeout=2)


def test_a_rate_breakers_fleet_opens_on_the_fleets_rate(shared_valkey: str, prefix: str) -> None:
    breakers = fleet(shared_valkey, prefix, count=2, delay=30, failure_rate=0.5, failure_period=5, minimum_calls=8)
    assert breakers[0].fleet_failure_threshold is None and breakers[0].fleet_failure_rate == 0.5
    for breaker in breakers:
        for n in range(4):  # 4 calls each, half of them failing: each under its minimum of 8, the fleet at 8
            outcome(breaker, fail if n % 2 else (lambda: "ok"))
    wait_until(lambda: all(x.state is OPEN for x in breakers), timeout=2)


def test_one_replica_probes_and_its_success_closes_them_all(shared_valkey: str, prefix: str) -> None:
    breakers = fleet(shared_valkey, prefix, delay=1.5, failure_threshold=2)
    for _ in range(2):
        outcome(breakers[0], fail)
    wait_until(lambda: all(x.state is OPEN for x in breakers), timeout=2)  # idle replicas look every 0.9 s
    calls: list[int] = []

    def probe(index: int) -> object:
        calls.append(index)
        return "ok"

    # past the delay: each asks for the lease; one gets it, the others stay open
    wait_until(lambda: [outcome(x, lambda i=i: probe(i)) for i, x in enumerate(breakers)] and calls, timeout=3)
    assert len(set(calls)) == 1 and len(calls) == 1, calls
    wait_until(lambda: all(x.state is CLOSED for x in breakers), timeout=2)
    assert all(outcome(x) == "ok" for x in breakers)


def test_a_failed_probe_opens_the_fleet_again(shared_valkey: str, prefix: str) -> None:
    breakers = fleet(shared_valkey, prefix, delay=1.5, failure_threshold=2)
    for _ in range(2):
        outcome(breakers[0], fail)
    wait_until(lambda: all(x.state is OPEN for x in breakers), timeout=2)
    failed: list[int] = []

    def failing_probe(index: int) -> None:
        failed.append(index)
        raise Down

    wait_until(lambda: [outcome(x, lambda i=i: failing_probe(i)) for i, x in enumerate(breakers)] and failed, timeout=3)
    assert len(failed) == 1
    wait_until(lambda: all(x._member._fleet_opened for x in breakers), timeout=2)
    assert all(outcome(x) is CircuitOpenError for x in breakers)


def test_a_silent_store_leaves_each_breaker_its_own(prefix: str) -> None:
    modes: list[FleetModeChanged] = []
    store = FleetStore(redis.Redis(port=1, socket_timeout=0.2, socket_connect_timeout=0.2), prefix=prefix)
    breaker = FleetCircuitBreaker(store, "b", handle=Down, failure_threshold=2, delay=0.2, on_mode=modes.append)
    wait_until(lambda: breaker.mode == "local", timeout=3)
    for _ in range(2):
        assert outcome(breaker, fail) is Down
    assert breaker.state is OPEN
    wait_until(lambda: breaker.state is HALF_OPEN, timeout=2)  # no lease to wait for: it probes alone
    assert outcome(breaker) == "ok" and breaker.state is CLOSED
    assert [m.mode for m in modes] == ["local"]


def test_the_switch_forces_every_breaker(shared_valkey: str, prefix: str) -> None:
    breakers = fleet(shared_valkey, prefix, count=2)
    switch = FleetSwitch(sync_store(shared_valkey, prefix))
    switch.force_open("b")
    wait_until(lambda: all(x.state is CircuitState.FORCED_OPEN for x in breakers), timeout=2)
    assert all(outcome(x) is CircuitOpenError for x in breakers)
    switch.force_closed("b")
    wait_until(lambda: all(x.state is CircuitState.DISABLED for x in breakers), timeout=2)
    assert all(outcome(x, fail) is Down for x in breakers for _ in range(10))  # admitted, counted by nobody
    switch.clear("b")
    wait_until(lambda: all(x.state is CLOSED for x in breakers), timeout=2)


async def test_aio_replicas_share_evidence_with_sync_ones(shared_valkey: str, prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(shared_valkey)
    store = FleetStore(client, prefix=prefix)
    aio = FleetCircuitBreaker(store, "b", handle=Down, delay=30)
    sync = FleetCircuitBreaker(sync_store(shared_valkey, prefix), "b", handle=Down, delay=30)
    executor = Executor(aio)

    async def down() -> None:
        raise Down

    for _ in range(5):  # the fleet's evidence (and this breaker's threshold of 5)
        with pytest.raises(Down):
            await executor.acall(down)
    for _ in range(100):
        if sync.state is OPEN:
            break
        await asyncio.sleep(0.02)
    assert sync.state is OPEN and aio.state is OPEN
    store.close()
    await client.aclose()


@pytest.mark.parametrize("path", ["with_call", "aio", "intercepted-call"])
def test_through_grpc(server: ScriptedServer, shared_valkey: str, prefix: str, path: str) -> None:
    first, other = (FleetCircuitBreaker(sync_store(shared_valkey, prefix), "b", delay=30) for _ in range(2))
    with Client(path, server.target, first) as client:
        outcomes = [client.unary(Request(id=f"c{i}", fail_first=1000)) for i in range(5)]
    assert [o.code for o in outcomes] == [grpc.StatusCode.UNAVAILABLE] * 5
    wait_until(lambda: other.state is OPEN, timeout=2)
    with Client(path, server.target, other) as client:
        refused = client.unary(Request(id="after"))
    assert refused.code is grpc.StatusCode.UNAVAILABLE and isinstance(refused.error, CircuitOpenError)
    assert server.attempts("after") == 0


@pytest.mark.parametrize(
    ("arguments", "options", "message"),
    [
        (("x", "b"), {}, "store must be a FleetStore"),
        ((..., "b c"), {}, "key must be"),
        ((..., "b"), {"fleet_failure_rate": 0}, "fleet_failure_rate"),
        ((..., "b"), {"fleet_minimum_calls": 0}, "fleet_minimum_calls"),
        ((..., "b"), {"fleet_failure_threshold": 0}, "fleet_failure_threshold"),
        ((..., "b"), {"fleet_period": 0}, "fleet_period"),
        ((..., "b"), {"probe_timeout": 0}, "probe_timeout"),
        ((..., "b"), {"failure_threshold": 0}, "failure_threshold"),
        ((..., "b"), {"clock": None}, "clock"),
    ],
)
def test_bad_configuration_is_refused_naming_it(
    arguments: tuple[object, ...], options: dict[str, object], message: str
) -> None:
    store = FleetStore(redis.Redis(port=1, socket_timeout=0.1), prefix="p")
    with pytest.raises(ValueError, match=message):
        FleetCircuitBreaker(*(store if a is ... else a for a in arguments), **options)  # type: ignore[arg-type]
    store.close()
