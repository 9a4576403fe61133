"""The samplers behind a server's load reports and resource-aware shedding, on a fake clock with fake sources."""

from __future__ import annotations

from collections.abc import Callable

from interceptors.engine._load_signals import CpuUsage, Lateness, Rate, memory_utilization
from interceptors.testing import FakeClock


class Queue:
    """Where the probes wait until the test runs them: a loop or a pool, made of a list."""

    def __init__(self) -> None:
        self.waiting: list[Callable[[], object]] = []

    def schedule(self, probe: Callable[[], object]) -> None:
        self.waiting.append(probe)

    def run(self) -> None:
        for probe in self.waiting:
            probe()
        self.waiting.clear()


def test_lateness_is_how_long_a_probe_waits_to_run() -> None:
    clock, queue = FakeClock(), Queue()
    lateness = Lateness(clock, interval=0.1)
    assert lateness.seconds(queue.schedule) == 0.0 and len(queue.waiting) == 1
    clock.advance(0.25)
    assert lateness.seconds(queue.schedule) == 0.25  # its age counts while it waits
    assert len(queue.waiting) == 1  # one probe at a time
    queue.run()
    assert lateness.seconds(queue.schedule) == 0.25  # measured; the next probe is not due yet
    assert not queue.waiting
    clock.advance(0.11)
    assert lateness.seconds(queue.schedule) == 0.25 and len(queue.waiting) == 1  # due: sent
    queue.run()  # at once: no lateness now
    assert lateness.seconds(queue.schedule) == 0.0


def test_a_past_stall_does_not_outlive_two_intervals() -> None:
    clock, queue = FakeClock(), Queue()
    lateness = Lateness(clock, interval=0.1)
    lateness.seconds(queue.schedule)
    clock.advance(0.5)
    queue.run()
    assert lateness.seconds(None) == 0.5
    clock.advance(0.21)  # no call came to probe again
    assert lateness.seconds(None) == 0.0


def test_a_schedule_that_refuses_sends_no_probe() -> None:
    clock = FakeClock()
    lateness = Lateness(clock, interval=0.1)

    def closed(probe: Callable[[], object]) -> None:
        raise RuntimeError("Event loop is closed")

    assert lateness.seconds(closed) == 0.0
    clock.advance(1)
    assert lateness.seconds(None) == 0.0  # nothing waits: no age grows


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
        rate.count(0)
    for _ in range(3):
        rate.count(0, 1)
    clock.advance(1.5)
    assert rate.sample() == (22.0, 2.0)  # 33 and 3 in 1.5 s
    clock.advance(0.5)
    assert rate.sample() == (22.0, 2.0)
    clock.advance(0.5)
    assert rate.sample() == (0.0, 0.0)


def test_memory_utilization_is_a_fraction_here() -> None:
    value = memory_utilization()
    assert value is None or 0.0 < value <= 1.0
