"""Network faults under load, small: a blackhole mid-run and a reset of every connection, for sync and aio clients
through the recommended and the composed chains (bench/chaos.py runs them; ``make chaos`` full size)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from scripted.v1 import scripted_pb2_grpc as pb_grpc

from bench.chaos import CHAINS, Channel, Run, blackhole_steps, during, engagement, figures, reset_steps
from interceptors.testing import FaultProxy

from ..support.server import AIO_LOOP, Request, ScriptedServer
from . import CHAOS


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    """One sync server: the faults are the network's, the clients are what varies."""
    running = ScriptedServer("sync")
    yield running
    running.stop()


@pytest.fixture
def proxied(server: ScriptedServer, kind: str, chain: str) -> Iterator[tuple[FaultProxy, Channel]]:
    with FaultProxy(server.target) as proxy:
        channel = Channel(kind, proxy.address, CHAINS[chain](CHAOS), AIO_LOOP.loop if kind == "aio" else None)
        channel.ready()
        yield proxy, channel
        channel.close()


def test_a_blackhole_costs_each_call_its_deadline_then_calls_fail_fast_then_answers_return(
    proxied: tuple[FaultProxy, Channel],
) -> None:
    proxy, channel = proxied
    load = channel.load(pb_grpc.ScriptedStub, "Unary", Request(id="chaos"), CHAOS)
    run = during(load, Run(), blackhole_steps(proxy))
    found = {**figures(run, CHAOS, lifted="lifted"), **engagement(run, CHAOS, "blackhole", "lifted")}
    assert found["exceptions"] == []
    assert found["within_deadline"], found
    # the recommended breaker needs 20 calls (4 callers waiting 0.3 s each); then only its probes are slow
    assert found["engaged_ms"] is not None and found["engaged_ms"] <= 2000, found
    assert found["fails_fast"], found
    assert found["recovered"] and found["answers_after_recovery"], found


def test_a_reset_of_every_connection_reaches_callers_as_rpc_errors_and_retries_recover(
    server: ScriptedServer, proxied: tuple[FaultProxy, Channel]
) -> None:
    proxy, channel = proxied
    server.script.sleep = 0.05  # calls are in flight when the connections go
    run = during(channel.load(pb_grpc.ScriptedStub, "Unary", Request(id="chaos"), CHAOS), Run(), reset_steps(proxy))
    found = figures(run, CHAOS, lifted=None)
    assert found["exceptions"] == [] and found["within_deadline"], found
    answered = found["outcomes"].get("OK", 0) + found["outcomes"].get("fallback", 0)
    assert answered >= 0.9 * found["calls"], found  # retries carry the calls in flight to a new connection
