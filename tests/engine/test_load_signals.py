"""The samplers behind a server's load reports and resource-aware shedding, on a fake clock with fake sources."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from interceptors.engine._load_signals import CpuUsage, Lateness, Rate, memory_utilization
from interceptors.testing import FakeClock


class Timers:
    """A ``later`` whose probes run when the test says (the fake clock says how late)."""

    def __init__(self) -> None:
        self.set: list[Callable[[], object]] = []

    def later(self, delay: float, probe: Callable[[], object]) -> None:
        self.set.append(probe)

    def run(self) -> None:
        probes, self.set = self.set, []
        for probe in probes:
            probe()


def test_lateness_is_how_late_the_probes_run() -> None:
    clock, timers = FakeClock(), Timers()
    lateness = Lateness(clock, interval=1.0)  # a probe every 0.1 s; the largest of the last 10
    assert lateness.seconds(timers.later) == 0.0 and len(timers.set) == 1  # started
    clock.advance(0.1)
    timers.run()  # on time
    assert lateness.seconds(timers.later) == 0.0 and len(timers.set) == 1  # the next one is set
    clock.advance(0.35)  # it was due at 0.2: 0.25 overdue, and still waiting
    assert lateness.seconds(timers.later) == pytest.approx(0.25)
    timers.run()  # it runs 0.25 late
    clock.advance(0.1)
    timers.run()  # the next on time
    assert lateness.seconds(None) == pytest.approx(0.25)  # the largest of the last interval
    for _ in range(10):
        clock.advance(0.1)
        lateness.seconds(None)
        timers.run()
    assert lateness.seconds(None) == 0.0  # the stall is more than an interval ago


def test_probes_stop_when_nobody_asks_and_start_again() -> None:
    clock, timers = FakeClock(), Timers()
    lateness = Lateness(clock, interval=1.0)
    lateness.seconds(timers.later)  # asked at 0; the first probe due at 0.1
    clock.advance(0.6)
    timers.run()  # 0.5 late, and measured; the next due at 0.7
    clock.advance(0.5)
    timers.run()  # due within an interval of the last ask: on; the next due at 1.2
    clock.advance(0.2)
    timers.run()  # due more than an interval after the last ask: stopped, and nothing kept
    assert not timers.set
    assert lateness.seconds(None) == 0.0
    assert lateness.seconds(timers.later) == 0.0 and len(timers.set) == 1  # asked: started again


def test_a_stall_longer_than_the_interval_is_measured_whole() -> None:
    clock, timers = FakeClock(), Timers()
    lateness = Lateness(clock, interval=1.0)
    lateness.seconds(timers.later)
    clock.advance(0.1)
    timers.run()  # on time; the next due at 0.2
    lateness.seconds(timers.later)  # the last ask before the stall
    clock.advance(2.5)  # the loop is blocked: nobody can ask
    assert lateness.seconds(None) == pytest.approx(2.4)  # overdue, while it waits
    timers.run()
    assert lateness.seconds(None) == pytest.approx(2.4)  # measured when it ran


def test_a_stopped_chains_probe_does_nothing() -> None:
    clock, timers = FakeClock(), Timers()
    lateness = Lateness(clock, interval=1.0)
    lateness.seconds(timers.later)
    stale = timers.set.pop()  # set on a loop that is gone
    lateness.stop()
    clock.advance(5)
    assert lateness.seconds(timers.later) == 0.0  # started anew: not 5 s overdue
    stale()
    assert lateness.seconds(None) == 0.0 and len(timers.set) == 1


def test_a_later_that_refuses_sets_no_probe() -> None:
    clock = FakeClock()
    lateness = Lateness(clock, interval=0.1)

    def closed(delay: float, probe: Callable[[], object]) -> None:
        raise RuntimeError("Event loop is closed")

    assert lateness.seconds(closed) == 0.0
    clock.advance(1)
    assert lateness.seconds(None) == 0.0  # nothing is due: no overdue time grows


def test_cpu_usage_is_cpu_time_over_wall_time_and_cpus() -> None:
    clock, used = FakeClock(), [0.0]
    cpu = CpuUsage(clock, interval=1.0, cpus=2, cpu_seconds=lambda: used[0])
    used[0] = 1.5
    clock.advance(0.5)
    assert cpu.sample() == 0.0  # not an interval yet: the last sample
    clock.advance(0.5)
    assert cpu.sample() == 0.75  # 1.5 CPU seconds in 1 s of 2 CPUs
    used[0] = 1.5
    clock.advance(2)
    assert cpu.sample() == 0.0


def test_rate_is_events_per_second_and_falls_to_zero() -> None:
    clock = FakeClock()
    rate = Rate(clock, interval=1.0)
    for _ in range(30):
        rate.count((1, 0))
    for _ in range(3):
        rate.count((1, 1))
    clock.advance(1.5)
    assert rate.sample() == (22.0, 2.0)  # 33 and 3 in 1.5 s
    clock.advance(0.5)
    assert rate.sample() == (22.0, 2.0)
    clock.advance(0.5)
    assert rate.sample() == (0.0, 0.0)


def test_memory_utilization_is_a_fraction_here() -> None:
    value = memory_utilization()
    assert value is None or 0.0 < value <= 1.0
