"""FleetRetryBudget against a real valkey-server: the ratio and floor hold for the fleet, not per replica; local
budgets while the store is down; the switch; through gRPC calls."""

from __future__ import annotations

import grpc
import pytest
import redis

from interceptors import Executor, RetriesExceededError, RetryBudget, RetryPolicy
from interceptors.events import BudgetExceeded, FleetModeChanged
from interceptors.fleet import FleetRetryBudget, FleetStore, FleetSwitch

from ..support.clients import Client, wait_until
from ..support.server import Request, ScriptedServer
from .conftest import sync_store


class Flaky(Exception):
    pass


def failing_calls(budget: RetryBudget, calls: int) -> int:
    """Retries the budget allowed ``calls`` failing calls (two attempts each at most)."""
    attempts = 0

    def fail() -> None:
        nonlocal attempts
        attempts += 1
        raise Flaky

    executor = Executor(RetryPolicy(max_attempts=2, delay=0, handle=Flaky, budget=budget))
    for _ in range(calls):
        with pytest.raises((Flaky, RetriesExceededError)):
            executor.call(fail)
    return attempts - calls


def heard(*budgets: FleetRetryBudget) -> None:
    """Wait until every replica has heard of all the others (a replica cannot count those yet to speak)."""
    wait_until(lambda: all(b._member.heard and b._member.active == len(budgets) for b in budgets), timeout=3)


def test_the_floor_holds_for_the_fleet(shared_valkey: str, prefix: str) -> None:
    budgets = [
        FleetRetryBudget(sync_store(shared_valkey, prefix), "b", ratio=0.01, min_per_second=3, window=2)
        for _ in range(3)
    ]
    heard(*budgets)
    retries = 0
    for _ in range(4):  # in rounds, so that each replica's batches reach the others
        for budget in budgets:
            retries += failing_calls(budget, 5)
        wait_until(lambda: all(not (b._member._calls or b._member._retries) for b in budgets), timeout=3)
    # the fleet's floor: 3/s over 2 s = 6 (per-replica budgets allow 3 x 7 = 21)
    assert 4 <= retries <= 6 + 2, retries
    local = [RetryBudget(ratio=0.01, min_per_second=3, window=2) for _ in range(3)]
    assert sum(failing_calls(budget, 20) for budget in local) == 21  # each: retries < 0.01 * 20 + 6


def test_the_ratio_holds_for_the_fleet(shared_valkey: str, prefix: str) -> None:
    budgets = [
        FleetRetryBudget(sync_store(shared_valkey, prefix), "b", ratio=0.25, min_per_second=0, window=10)
        for _ in range(2)
    ]
    heard(*budgets)
    exceeded: list[BudgetExceeded] = []
    calls = 0
    for _ in range(5):
        for budget in budgets:
            Executor(RetryPolicy(max_attempts=1)).call(lambda: None)
            calls += 40
            for _ in range(40):
                budget.record_call()
        wait_until(lambda: all(not b._member._calls for b in budgets), timeout=3)
    retries = sum(failing_calls(budget, 60) for budget in budgets)  # 120 more calls: 520 in all, 25 % = 130
    assert 100 <= retries <= 130 + 2, retries
    assert not exceeded


def test_a_store_that_is_down_leaves_each_replica_its_share(prefix: str) -> None:
    modes: list[FleetModeChanged] = []
    store = FleetStore(redis.Redis(port=1, socket_timeout=0.2, socket_connect_timeout=0.2), prefix=prefix)
    budget = FleetRetryBudget(store, "b", ratio=0.01, min_per_second=2, window=2, on_mode=modes.append)
    wait_until(lambda: budget.mode == "local", timeout=3)
    # the floor, 2/s over 2 s, for the one replica it knows of: retries < 0.01 * calls + 4 allows a fifth
    assert failing_calls(budget, 10) == 5
    assert modes == [FleetModeChanged("local", "b", "FleetRetryBudget")]


def test_the_switch_lets_every_retry_through(shared_valkey: str, prefix: str) -> None:
    budget = FleetRetryBudget(sync_store(shared_valkey, prefix), "b", ratio=0.01, min_per_second=0, window=2)
    heard(budget)
    assert failing_calls(budget, 5) == 0  # 1 retry > 0.01 * 5 calls
    FleetSwitch(sync_store(shared_valkey, prefix)).disable("b")
    wait_until(lambda: budget._member.switch == "disabled", timeout=2)
    assert failing_calls(budget, 5) == 5


@pytest.mark.parametrize("path", ["call", "aio", "intercepted-future"])
def test_through_grpc(server: ScriptedServer, shared_valkey: str, prefix: str, path: str) -> None:
    budget = FleetRetryBudget(sync_store(shared_valkey, prefix), "b", ratio=0.1, min_per_second=0, window=10)
    heard(budget)
    with Client(path, server.target, RetryPolicy(max_attempts=3, delay=0, budget=budget)) as client:
        outcomes = [client.unary(Request(id=f"c{i}", fail_first=1000)) for i in range(20)]
    assert {o.code for o in outcomes} == {grpc.StatusCode.UNAVAILABLE}
    assert sum(server.attempts(f"c{i}") for i in range(20)) == 22  # 20 calls, 10 % of them retried


@pytest.mark.parametrize(
    ("arguments", "options", "message"),
    [
        (("x", "b"), {}, "store must be a FleetStore"),
        ((..., "b c"), {}, "key must be"),
        ((..., "b"), {"ratio": 0}, "ratio"),
        ((..., "b"), {"min_per_second": -1}, "min_per_second"),
        ((..., "b"), {"window": 0}, "window"),
        ((..., "b"), {"sync_interval": 0}, "sync_interval"),
    ],
)
def test_bad_configuration_is_refused_naming_it(
    arguments: tuple[object, ...], options: dict[str, object], message: str
) -> None:
    store = FleetStore(redis.Redis(port=1, socket_timeout=0.1), prefix="p")
    with pytest.raises(ValueError, match=message):
        FleetRetryBudget(*(store if a is ... else a for a in arguments), **options)  # type: ignore[arg-type]
    store.close()


def test_it_has_no_token_bucket_mode() -> None:
    with pytest.raises(TypeError, match="no token-bucket mode"):
        FleetRetryBudget.token_bucket(max_tokens=10, token_ratio=0.1)
