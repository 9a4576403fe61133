"""Every fleet policy on a three-node Valkey cluster (the same binary in cluster mode, started by the test): each
policy's keys share a hash tag, so each script touches one slot, whichever node holds it."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import pytest
from redis.cluster import RedisCluster

from interceptors import CircuitState, Executor
from interceptors.fleet import FleetCircuitBreaker, FleetRetryBudget, FleetStore, FleetSwitch, GlobalRateLimiter

from ..support.clients import wait_until
from ..support.valkey import EXTERNAL, start_cluster
from .test_fleet_breaker import Down, fail, outcome
from .test_fleet_budget import failing_calls
from .test_global_rate_limiter import hammer


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    if EXTERNAL:
        pytest.skip("REDIS_URL names one server: the cluster case starts its own")
    nodes = start_cluster()
    yield nodes[0].url
    for made in STORES:
        made.close()  # before the nodes go: their clients would look for the cluster again
    for node in nodes:
        node.stop()


STORES: list[FleetStore] = []


def store(url: str, prefix: str) -> FleetStore:
    made = FleetStore(RedisCluster.from_url(url, socket_timeout=0.5), prefix=prefix)
    STORES.append(made)
    return made


def test_global_rate_limiters(cluster_url: str, prefix: str) -> None:
    started = time.monotonic()  # each key's bucket fills from its first lease on, which may come before the hammer
    limiters = [GlobalRateLimiter(store(cluster_url, prefix), key, 50) for key in ("a", "b", "c") for _ in range(2)]
    admitted, _ = hammer([Executor(limiter) for limiter in limiters], 1.5, threads_each=2)
    elapsed = time.monotonic() - started
    for pair in (admitted[0:2], admitted[2:4], admitted[4:6]):  # three keys, most likely on three nodes
        # burst (5) + 50/s for as long as the bucket has been filling + at most one lease per replica (28 each)
        assert 40 <= sum(pair) <= 5 + math.ceil(50 * elapsed) + 2 * 28, (admitted, elapsed)
    assert all(limiter.mode == "fleet" for limiter in limiters)


def test_a_retry_budget(cluster_url: str, prefix: str) -> None:
    budgets = [
        FleetRetryBudget(store(cluster_url, prefix), "b", ratio=0.01, min_per_second=2, window=2) for _ in (1, 2)
    ]
    wait_until(lambda: all(b._member.heard and b._member.active == 2 for b in budgets), timeout=3)
    retries = sum(failing_calls(budget, 10) for budget in budgets)
    assert 2 <= retries <= 4 + 1, retries  # the fleet's floor, 2/s over 2 s


def test_breakers_and_the_switch(cluster_url: str, prefix: str) -> None:
    first, second = (
        FleetCircuitBreaker(store(cluster_url, prefix), "b", handle=Down, delay=30, failure_threshold=3) for _ in (1, 2)
    )
    wait_until(lambda: first._member.heard and second._member.heard, timeout=3)
    for _ in range(3):
        outcome(first, fail)
    wait_until(lambda: second.state is CircuitState.OPEN, timeout=2)
    switch = FleetSwitch(store(cluster_url, prefix))
    switch.force_closed("b")
    wait_until(lambda: first.state is CircuitState.DISABLED and second.state is CircuitState.DISABLED, timeout=2)
    switch.clear("b")
    assert switch.state("b") is None
