"""Network faults under load, small: a blackhole mid-run and a reset of every connection, for sync and aio clients
through the recommended and the composed chains (bench/chaos.py runs them; ``make chaos`` full size)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from scripted.v1 import scripted_pb2_grpc as pb_grpc

from bench.chaos import CHAINS, Channel, Chaos, Run, during
from interceptors.testing import FaultProxy

from ..support.server import AIO_LOOP, Request, ScriptedServer

CHAOS = Chaos(deadline=0.3, breaker_delay=0.5, workers=4, rate=40)
SLACK = 0.05  # a call ends by its deadline and this much


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    """One sync server: the faults are the network's, the clients are what varies."""
    running = ScriptedServer("sync")
    yield running
    running.stop()


@pytest.fixture(params=["sync", "aio"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=sorted(CHAINS))
def chain(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def proxied(server: ScriptedServer, kind: str, chain: str) -> Iterator[tuple[FaultProxy, Channel]]:
    with FaultProxy(server.target) as proxy:
        channel = Channel(kind, proxy.address, CHAINS[chain](CHAOS), AIO_LOOP.loop if kind == "aio" else None)
        channel.ready()
        yield proxy, channel
        channel.close()


def test_a_blackhole_costs_each_call_its_deadline_then_calls_fail_fast_then_answers_return(
    server: ScriptedServer, proxied: tuple[FaultProxy, Channel], chain: str
) -> None:
    proxy, channel = proxied
    load = channel.load(pb_grpc.ScriptedStub, "Unary", Request(id="chaos"), CHAOS)
    steps = [(0.5, "blackhole", proxy.blackhole), (3.0, "lifted", proxy.pass_through), (2.0, "end", lambda: None)]
    run = during(load, Run(), steps)
    assert run.exceptions() == []
    slowest = max(o.latency for o in run.outcomes)
    assert slowest <= CHAOS.deadline + SLACK, f"a call took {slowest:.3f} s"
    # the breaker engages (the recommended one after 20 calls, 4 callers waiting 0.3 s each) ...
    engaged, lifted = run.engaged("blackhole", fast=CHAOS.deadline / 2), run.at("lifted")
    assert engaged is not None and engaged - run.at("blackhole") <= 2.0, f"engaged {engaged}: {run.counts()}"
    # ... then calls fail fast, but for one probe each time the breaker half-opens
    slow = [o for o in run.between(engaged, lifted) if o.latency >= CHAOS.deadline / 2]
    assert len(slow) <= (lifted - engaged) / CHAOS.breaker_delay + 1, [round(o.start - engaged, 2) for o in slow]
    recovery = run.recovery("lifted")
    assert recovery is not None and recovery <= 2 * CHAOS.breaker_delay + 1.0, f"recovery {recovery}"
    healthy = run.between(lifted + recovery + 0.6, run.at("end"))
    assert healthy and all(o.result == "OK" for o in healthy), run.counts()


def test_a_reset_of_every_connection_reaches_callers_as_rpc_errors_and_retries_recover(
    server: ScriptedServer, proxied: tuple[FaultProxy, Channel], chain: str
) -> None:
    proxy, channel = proxied
    server.script.sleep = 0.05  # calls are in flight when the connections go
    load = channel.load(pb_grpc.ScriptedStub, "Unary", Request(id="chaos"), CHAOS)
    steps = [(0.4, f"reset {n}", proxy.reset) for n in range(5)]
    run = during(load, Run(), [*steps, (0.5, "end", lambda: None)])
    assert run.exceptions() == []
    counts = run.counts()
    answered = counts["OK"] + counts["fallback"]
    assert answered >= 0.9 * len(run.outcomes), counts  # retries carry the calls in flight to a new connection
