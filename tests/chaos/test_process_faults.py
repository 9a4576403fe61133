"""Process faults under load, small: the backend (a process of its own) killed and restarted on its port, frozen
and thawed, stopped gracefully (GOAWAY) — for sync and aio clients through the recommended and composed chains.
No call hangs: each ends by its deadline; nothing but a grpc.RpcError reaches a caller; answers come back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from demo.v1 import service_b_pb2, service_b_pb2_grpc

from bench.backend import Backend
from bench.chaos import CHAINS, Channel, Chaos, Run, during

from ..support.server import AIO_LOOP

CHAOS = Chaos(deadline=0.3, breaker_delay=0.5, workers=4, rate=40)
SLACK = 0.05
HELLO = service_b_pb2.HelloRequest(name="chaos")


@pytest.fixture(params=["sync", "aio"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=sorted(CHAINS))
def chain(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend() -> Iterator[Backend]:
    with Backend(grace=1.0, delay=0.02) as running:
        yield running


@pytest.fixture
def channel(backend: Backend, kind: str, chain: str) -> Iterator[Channel]:
    made = Channel(kind, backend.target, CHAINS[chain](CHAOS), AIO_LOOP.loop if kind == "aio" else None)
    made.ready()
    yield made
    made.close()


def checked(run: Run) -> None:
    """What holds in every process fault: no exception but RpcError, no call past its deadline."""
    assert run.exceptions() == []
    slowest = max(o.latency for o in run.outcomes)
    assert slowest <= CHAOS.deadline + SLACK, f"a call took {slowest:.3f} s"


def load(channel: Channel) -> object:
    return channel.load(service_b_pb2_grpc.ServiceBStub, "Hello", HELLO, CHAOS)


def test_a_killed_backend_restarted_on_its_port_is_called_again(backend: Backend, channel: Channel) -> None:
    run = during(
        load(channel),  # type: ignore[arg-type]
        Run(),
        [
            (0.5, "killed", backend.kill),
            (0.5, "restarting", backend.restart),
            (0.0, "restarted", lambda: None),
            (3.0, "end", lambda: None),
        ],
    )
    checked(run)
    recovery = run.recovery("restarted")
    assert recovery is not None and recovery <= CHAOS.breaker_delay + 2.0, f"recovery {recovery}, {run.counts()}"


def test_a_frozen_backend_costs_deadlines_then_answers_when_thawed(backend: Backend, channel: Channel) -> None:
    run = during(
        load(channel),  # type: ignore[arg-type]
        Run(),
        [
            (0.5, "stopped", lambda: backend.pause(True)),
            (2.0, "continued", lambda: backend.pause(False)),
            (2.5, "end", lambda: None),
        ],
    )
    checked(run)
    recovery = run.recovery("continued")
    assert recovery is not None and recovery <= 2 * CHAOS.breaker_delay + 0.5, f"recovery {recovery}"


def test_a_graceful_stop_under_load_lets_calls_in_flight_finish(backend: Backend, channel: Channel) -> None:
    run = during(
        load(channel),  # type: ignore[arg-type]
        Run(),
        [
            (0.5, "stopping", backend.stop),
            (0.0, "restarting", backend.restart),
            (0.0, "restarted", lambda: None),
            (3.0, "end", lambda: None),
        ],
    )
    checked(run)
    in_flight = [o for o in run.outcomes if o.start < run.at("stopping") - 0.05 and o.end > run.at("stopping") - 0.05]
    assert all(o.result in ("OK", "fallback") for o in in_flight), [o.result for o in in_flight]
    recovery = run.recovery("restarted")
    assert recovery is not None and recovery <= CHAOS.breaker_delay + 2.0, f"recovery {recovery}"
