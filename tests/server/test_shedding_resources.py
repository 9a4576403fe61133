"""Load shedding on the server's own resources, on real sync and aio servers: CPU over its bound, an event loop
running late, a worker pool queueing; the less important calls refused first; fake clocks and sources decide."""

from __future__ import annotations

import threading
import time
from concurrent import futures
from typing import Any

import grpc
import pytest
from scripted.v1 import scripted_pb2_grpc as pb_grpc

from interceptors import Priorities, Priority
from interceptors.events import Shed
from interceptors.server import AioLoadShedding, LoadShedding, ServerLoad
from interceptors.testing import FakeClock

from ..support.clients import wait_until
from ..support.server import AIO_LOOP, Request, ScriptedServer

RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.fixture(params=["sync", "aio"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Cpu:
    """A fake process CPU time, and the fake clock it is sampled by (1 CPU, sampled every second)."""

    def __init__(self) -> None:
        self.clock, self.used = FakeClock(), 0.0
        self.load = ServerLoad(clock=self.clock, cpus=1, cpu_seconds=lambda: self.used, memory=None)

    def busy(self, utilization: float) -> None:
        """The next second's sample reads ``utilization``."""
        self.used += utilization
        self.clock.advance(1.0)


def call(target: str, priority: str | None = None) -> tuple[grpc.StatusCode, str, dict[str, Any]]:
    metadata = () if priority is None else (("x-priority", priority),)
    with grpc.insecure_channel(target, options=[("grpc.enable_retries", 0)]) as channel:
        try:
            _, done = pb_grpc.ScriptedStub(channel).Unary.with_call(Request(id="r"), timeout=10, metadata=metadata)
        except grpc.RpcError as error:
            done = error
        return done.code(), done.details() or "", dict(done.trailing_metadata() or ())


def shedding(kind: str, **options: Any) -> Any:
    return (LoadShedding if kind == "sync" else AioLoadShedding)(**options)


def test_calls_are_refused_while_cpu_is_over_its_bound(kind: str) -> None:
    cpu, heard = Cpu(), list[Shed]()
    limiter = shedding(kind, load=cpu.load, max_cpu_utilization=0.8, pushback=0.2, on_shed=heard.append)
    server = ScriptedServer(kind, interceptors=[limiter])
    try:
        cpu.busy(0.5)
        assert call(server.target)[0] is grpc.StatusCode.OK
        cpu.busy(0.9)
        code, details, trailers = call(server.target)
        assert code is RESOURCE_EXHAUSTED and "CPU utilization 0.90 (bound 0.8)" in details
        assert trailers["grpc-retry-pushback-ms"] == "200"
        assert heard == [Shed("cpu", 0, limiter.limit, type(limiter).__name__)]
        cpu.busy(0.7)
        assert call(server.target)[0] is grpc.StatusCode.OK
        assert limiter.refused == 1
    finally:
        server.stop()


def test_the_less_important_calls_are_refused_first(kind: str) -> None:
    cpu = Cpu()
    priorities = Priorities(max_claimed=Priority.CRITICAL)  # shares: sheddable 0.5, normal 0.8, critical 1
    limiter = shedding(kind, load=cpu.load, max_cpu_utilization=0.8, priorities=priorities)
    server = ScriptedServer(kind, interceptors=[limiter])
    try:
        cpu.busy(0.6)  # over 0.8 x 0.5, under 0.8 x 0.8
        assert call(server.target, "sheddable")[0] is RESOURCE_EXHAUSTED
        assert call(server.target, "normal")[0] is grpc.StatusCode.OK
        assert call(server.target, "critical")[0] is grpc.StatusCode.OK
        cpu.busy(0.7)  # over 0.8 x 0.8
        assert call(server.target, "normal")[0] is RESOURCE_EXHAUSTED
        assert call(server.target, "critical")[0] is grpc.StatusCode.OK
    finally:
        server.stop()


def test_a_dry_run_refuses_nothing_and_says_what_it_would(kind: str) -> None:
    cpu, heard = Cpu(), list[Shed]()
    limiter = shedding(kind, load=cpu.load, max_cpu_utilization=0.5, dry_run=True, on_shed=heard.append)
    server = ScriptedServer(kind, interceptors=[limiter])
    try:
        cpu.busy(0.9)
        assert call(server.target)[0] is grpc.StatusCode.OK
        assert [(e.reason, e.dry_run) for e in heard] == [("cpu", True)] and limiter.refused == 1
    finally:
        server.stop()


def test_a_sync_server_refuses_while_its_pool_queues() -> None:
    clock = FakeClock()
    pool = futures.ThreadPoolExecutor(max_workers=2)
    load = ServerLoad(pool=pool, clock=clock, cpu_seconds=None, memory=None, interval=0.5)
    server = ScriptedServer("sync", interceptors=[LoadShedding(load=load, max_lag=0.05)], pool=pool)
    release = threading.Event()
    try:
        assert call(server.target)[0] is grpc.StatusCode.OK  # the probes start: one due every 0.05 s
        busy = [pool.submit(release.wait) for _ in range(2)]  # both workers
        time.sleep(0.1)  # the timer hands the next probe to the pool, where it waits behind them
        clock.advance(0.25)  # it was due 0.05 s after the call: 0.2 s late, by the clock
        release.set()  # the probe runs before the next call
        futures.wait(busy)
        code, details, _ = call(server.target)
        assert code is RESOURCE_EXHAUSTED and "the worker pool runs 200 ms late (bound 0.05s)" in details
    finally:
        release.set()
        load.close()  # its clock stands still: the probes would go on
        server.stop()
        pool.shutdown()


def test_an_aio_server_refuses_while_its_loop_runs_late() -> None:
    clock = FakeClock()
    load = ServerLoad(clock=clock, cpu_seconds=None, memory=None, interval=1.0)
    heard: list[Shed] = []
    server = ScriptedServer("aio", interceptors=[AioLoadShedding(load=load, max_lag=0.05, on_shed=heard.append)])
    try:
        assert call(server.target)[0] is grpc.StatusCode.OK  # the probes start: one due every 0.1 s

        async def stall() -> None:  # as a blocking handler would: the probe due now runs 0.3 s (by the clock) late
            clock.advance(0.3)

        AIO_LOOP.run(stall())
        code, details, _ = call(server.target)
        assert code is RESOURCE_EXHAUSTED and "the event loop runs 200 ms late" in details  # due at 0.1
        assert [e.reason for e in heard] == ["lag"]
        wait_until(lambda: call(server.target)[0] is grpc.StatusCode.OK)  # an interval of probes on time: past
    finally:
        load.close()  # its clock stands still: the probes would go on
        server.stop()


def test_a_new_loop_starts_the_probes_afresh() -> None:
    """A server restarted on another event loop: the probes set on the old one never run, and are not overdue."""
    import asyncio

    clock = FakeClock()
    load = ServerLoad(clock=clock, cpu_seconds=None, memory=None)

    async def ask() -> float | None:
        return load.lateness(aio=True)

    old = asyncio.new_event_loop()
    assert old.run_until_complete(ask()) == 0.0  # a probe set there
    old.close()
    clock.advance(5.0)
    new = asyncio.new_event_loop()
    try:
        assert new.run_until_complete(ask()) == 0.0  # not 5 s overdue
    finally:
        load.close()
        new.close()


def test_bad_bounds_are_named() -> None:
    with pytest.raises(ValueError, match="give a limit, max_lag or max_cpu_utilization"):
        LoadShedding()
    with pytest.raises(ValueError, match="max_lag: a sync server's lag is its worker pool's queue time"):
        LoadShedding(max_lag=0.05)
    with pytest.raises(ValueError, match="max_cpu_utilization"):
        AioLoadShedding(max_cpu_utilization=0)
    with pytest.raises(ValueError, match="max_lag"):
        AioLoadShedding(max_lag=-1)
    with pytest.raises(ValueError, match="load must be a ServerLoad"):
        AioLoadShedding(load=3)  # type: ignore[arg-type]
