"""Every fleet policy, on a sync and on an asyncio client, with its store killed and restarted, or paused (SIGSTOP)
and resumed: it turns to local decisions within a second, no call fails because of the store or waits on it, and
it decides with the fleet again soon after the store is back. Its mode shows in a Metrics gauge."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.asyncio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from interceptors import Executor, ResilienceError, RetryPolicy
from interceptors.fleet import FleetCircuitBreaker, FleetRetryBudget, FleetStore, GlobalRateLimiter
from interceptors.otel import Metrics

from ..support.valkey import Valkey

STALE_AFTER = 0.3
SLOWEST = 0.4  # a call waiting on the store would wait out its socket timeout (0.5 s) or the whole pause


class Flaky(Exception):
    pass


def fleet_policy(kind: str, store: FleetStore) -> tuple[Any, Executor]:
    """The policy of ``kind`` on ``store``, and an executor whose calls exercise it."""
    if kind == "limiter":
        limiter = GlobalRateLimiter(store, "limit", 1000)
        return limiter, Executor(limiter)
    if kind == "budget":
        budget = FleetRetryBudget(store, "budget", min_per_second=1000)
        return budget, Executor(RetryPolicy(max_attempts=2, delay=0, budget=budget, handle=Flaky))
    breaker = FleetCircuitBreaker(store, "breaker", failure_rate=0.9, failure_window=50, delay=0.2)
    return breaker, Executor(breaker)


def sync_call(n: int) -> str:
    if n % 5 == 0:
        raise Flaky  # the budget sees retries, the breaker failures (never enough to open it)
    return "ok"


async def async_call(n: int) -> str:
    return sync_call(n)


class Driver:
    """Calls through the policy until a condition holds, noting the slowest call and any unexpected failure."""

    def __init__(self, policy: Any, executor: Executor, flavour: str) -> None:
        self.policy, self.executor, self.flavour = policy, executor, flavour
        self.loop = asyncio.new_event_loop() if flavour == "aio" else None  # one loop: the store's client lives in it
        self.slowest = 0.0
        self.unexpected: list[BaseException] = []
        self.calls = 0

    def _noted(self, started: float, error: BaseException | None) -> None:
        self.slowest = max(self.slowest, time.monotonic() - started)
        if error is not None and not isinstance(error, (Flaky, ResilienceError)):
            self.unexpected.append(error)

    def until(self, condition: Callable[[], bool], timeout: float) -> float:
        """Drive calls until ``condition`` holds (fails after ``timeout``); returns how long it took."""
        if self.loop is None:
            return self._sync(condition, timeout)
        return self.loop.run_until_complete(self._async(condition, timeout))

    def close(self) -> None:
        if self.loop is not None:
            self.policy.store.close()
            self.loop.run_until_complete(self.policy.store.client.aclose())
            self.loop.close()

    def _sync(self, condition: Callable[[], bool], timeout: float) -> float:
        started = time.monotonic()
        while not condition():
            assert time.monotonic() - started < timeout, f"not within {timeout}s: mode {self.policy.mode}"
            self.calls += 1
            call_started = time.monotonic()
            try:
                self.executor.call(sync_call, self.calls)
                self._noted(call_started, None)
            except Exception as error:
                self._noted(call_started, error)
            time.sleep(0.005)
        return time.monotonic() - started

    async def _async(self, condition: Callable[[], bool], timeout: float) -> float:
        started = time.monotonic()
        while not condition():
            assert time.monotonic() - started < timeout, f"not within {timeout}s: mode {self.policy.mode}"
            self.calls += 1
            call_started = time.monotonic()
            try:
                await self.executor.acall(async_call, self.calls)
                self._noted(call_started, None)
            except Exception as error:
                self._noted(call_started, error)
            await asyncio.sleep(0.005)
        return time.monotonic() - started


def store_of(flavour: str, url: str, prefix: str) -> FleetStore:
    if flavour == "sync":
        client: Any = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    else:
        client = redis.asyncio.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    return FleetStore(client, prefix=prefix, stale_after=STALE_AFTER)


def local_gauge(reader: InMemoryMetricReader) -> list[int]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        int(point.value)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "resilience.fleet.local"
        for point in metric.data.data_points
        if isinstance(point, NumberDataPoint)
    ]


kinds = pytest.mark.parametrize("kind", ["limiter", "budget", "breaker"])
flavours = pytest.mark.parametrize("flavour", ["sync", "aio"])


@kinds
@flavours
def test_killed_then_restarted(valkey: Valkey, prefix: str, kind: str, flavour: str) -> None:
    policy, executor = fleet_policy(kind, store_of(flavour, valkey.url, prefix))
    reader = InMemoryMetricReader()
    metrics = Metrics(MeterProvider(metric_readers=[reader]))
    metrics.watch(executor.policies)
    driver = Driver(policy, executor, flavour)
    driver.until(lambda: policy._member.heard, timeout=3)
    assert policy.mode == "fleet" and local_gauge(reader) == [0]
    valkey.kill()
    assert driver.until(lambda: policy.mode == "local", timeout=3) < 1.0 + 0.2
    assert local_gauge(reader) == [1]
    valkey.start()
    assert driver.until(lambda: policy.mode == "fleet", timeout=4) < 2.5  # the pump's backoff is at most 2 s
    assert local_gauge(reader) == [0]
    driver.close()
    assert driver.unexpected == [] and driver.slowest < SLOWEST, (driver.unexpected, driver.slowest)


@kinds
@flavours
def test_paused_then_resumed(valkey: Valkey, prefix: str, kind: str, flavour: str) -> None:
    policy, executor = fleet_policy(kind, store_of(flavour, valkey.url, prefix))
    driver = Driver(policy, executor, flavour)
    driver.until(lambda: policy._member.heard, timeout=3)
    valkey.pause()
    try:
        assert driver.until(lambda: policy.mode == "local", timeout=3) < 1.0
        paused_until = time.monotonic() + 0.5
        driver.until(lambda: time.monotonic() > paused_until, timeout=2)  # calls go on, locally
    finally:
        valkey.resume()
    driver.until(lambda: policy.mode == "fleet", timeout=4)
    driver.close()
    assert driver.unexpected == [] and driver.slowest < SLOWEST, (driver.unexpected, driver.slowest)
