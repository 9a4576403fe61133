"""A latency spike, small: one call in five has its first attempt held 300 ms (a replica pausing, a GC, a slow
disk). Hedging, or a per-attempt timeout with a retry, keeps the p99 far under the spike, for sync and aio clients,
at about 1.2 attempts per call: no more than the chain's budget above the p99 of the same load without the spike."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from scripted.v1 import scripted_pb2_grpc as pb_grpc

from bench.chaos import SPIKE, SPIKE_CHAINS, Channel, Chaos, Run, during
from bench.stats import percentile
from interceptors import HedgePolicy, RetryPolicy

from ..support.server import AIO_LOOP, Request, ScriptedServer

CHAOS = Chaos(deadline=1.0, breaker_delay=0.5, workers=4, rate=40)


def request(n: int) -> Any:
    """Every fifth call's first attempt is held ``SPIKE`` seconds."""
    if n % 5 == 0:
        return Request(id=f"slow{n}", sleep_ms=int(SPIKE * 1000), sleep_attempts=1)
    return Request(id=f"fast{n}")


def steady(n: int) -> Any:
    """The same calls without the spike."""
    return Request(id=f"steady{n}")


def _none() -> None:
    pass


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    running = ScriptedServer("sync")
    yield running
    running.stop()


def attempts_within(latency: float, most: int) -> int:
    """The attempts a call that took ``latency`` s can have made: both chains start the next attempt no sooner than
    ``SPACING`` s after the one before (a hedge's delay; an attempt's timeout, and a backoff), ``most`` in all."""
    return min(1 + int(latency / SPACING), most)


SPACING = 0.05
LOOKS = 3
"""The spike's p99 is judged against the p99 of the same load without the spike, measured just before it; a loaded
machine (two suites at once) may slow one window of calls and not its quiet twin, so up to three looks are taken
and the first that holds counts. Every look's codes and attempts are judged."""


@pytest.mark.parametrize("chain", sorted(SPIKE_CHAINS))
@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_a_latency_spike_stays_out_of_the_p99(server: ScriptedServer, kind: str, chain: str) -> None:
    policies, budget = SPIKE_CHAINS[chain]
    assert budget < SPIKE
    made = policies(CHAOS)
    most = next(p.max_attempts for p in made if isinstance(p, (HedgePolicy, RetryPolicy)))
    assert most is not None
    channel = Channel(kind, server.target, made, AIO_LOOP.loop if kind == "aio" else None)
    channel.ready()
    looks: list[str] = []
    try:
        while len(looks) < LOOKS:
            quiet = during(channel.load(pb_grpc.ScriptedStub, "Unary", steady, CHAOS), Run(), [(1.5, "end", _none)])
            seen_quiet = len(server.recorder.seen)
            run = during(channel.load(pb_grpc.ScriptedStub, "Unary", request, CHAOS), Run(), [(3.0, "end", _none)])
            assert run.exceptions() == []
            latencies = [o.latency for o in run.outcomes]
            attempts = len(server.recorder.seen) - seen_quiet
            # about 1.2 per call; on a loaded machine, calls that took past 50 ms without the spike have more
            scheduled: int = sum(attempts_within(latency, most) for latency in latencies)
            allowed = max(1.3 * len(latencies), scheduled)
            assert attempts <= allowed, f"{attempts} attempts for {len(latencies)} calls (at most {allowed:g})"
            p99, floor = percentile(latencies, 99), percentile([o.latency for o in quiet.outcomes], 99)
            if set(run.counts()) == {"OK"} and p99 <= floor + budget:
                return
            # a loaded machine may also take one call past its 1 s deadline: that look does not count either
            looks.append(f"{dict(run.counts())}, p99 {p99:.3f} s over {floor:.3f} + {budget:.3f} s")
    finally:
        channel.close()
    pytest.fail("; ".join(looks))
