"""GlobalRateLimiter against a real valkey-server: one limit for several replicas (each its own FleetStore and
client, as separate processes would have), sync and aio, through gRPC calls, with the store down, paused and back,
and through the fleet switch."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import threading
import time
from typing import Any

import grpc
import pytest
import redis
import redis.asyncio

from interceptors import Executor, RateLimitedError
from interceptors.events import FleetModeChanged
from interceptors.fleet import FleetStore, FleetSwitch, FleetWarning, GlobalRateLimiter

from ..support.clients import PATHS, Client, wait_until
from ..support.server import Request, ScriptedServer
from ..support.valkey import Valkey
from .conftest import sync_store


def hammer(executors: list[Executor], seconds: float, threads_each: int = 4) -> tuple[list[int], list[float]]:
    """Calls through each executor from ``threads_each`` threads for ``seconds``: admitted calls per executor, and
    the longest any admission took (a caller must never wait on the store)."""
    admitted = [0] * len(executors)
    slowest = [0.0] * len(executors)
    lock = threading.Lock()
    ends = time.monotonic() + seconds

    def work(index: int) -> None:
        executor = executors[index]
        while time.monotonic() < ends:
            started = time.monotonic()
            try:
                executor.call(lambda: None)
                took = time.monotonic() - started
                with lock:
                    admitted[index] += 1
            except RateLimitedError:
                took = time.monotonic() - started
                time.sleep(0.002)
            with lock:
                slowest[index] = max(slowest[index], took)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(len(executors)) for _ in range(threads_each)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return admitted, slowest


def replicas(url: str, prefix: str, count: int, rate: int, **options: Any) -> list[GlobalRateLimiter]:
    return [GlobalRateLimiter(sync_store(url, prefix), "quota", rate, **options) for _ in range(count)]


def test_replicas_share_one_limit(shared_valkey: str, prefix: str) -> None:
    started = time.monotonic()  # a bucket fills from its first lease on, which may come before the hammer
    limiters = replicas(shared_valkey, prefix, 3, 100)
    separate = GlobalRateLimiter(sync_store(shared_valkey, prefix), "other", 100)  # another key: its own limit
    admitted, _ = hammer([Executor(limiter) for limiter in (*limiters, separate)], 2.0)
    filled = math.ceil(100 * (time.monotonic() - started))
    shared = sum(admitted[:3])
    # burst (10) + 100/s for as long as the bucket filled (2 s and a little) + at most one lease per replica (each
    # at most (burst + 100) / 3 = 36)
    assert 150 <= shared <= 10 + filled + 3 * 37, (admitted, filled)
    assert 150 <= admitted[3] <= 10 + filled + 37, (admitted, filled)
    assert all(n > 20 for n in admitted[:3]), f"every replica gets a share: {admitted}"
    assert all(limiter.mode == "fleet" for limiter in limiters)


def test_a_fresh_replica_admits_its_first_calls(shared_valkey: str, prefix: str) -> None:
    """The first lease is fetched when the limiter is made, and a call before it waits for it (bounded by the
    store's timeout), so a fresh replica does not reject while the fleet is far below its limit."""
    for n in range(5):
        limiter = GlobalRateLimiter(sync_store(shared_valkey, f"{prefix}-{n}"), "quota", 50)
        assert Executor(limiter).call(lambda: "ok") == "ok"


def test_calls_far_apart_never_wait_on_the_store(shared_valkey: str, prefix: str) -> None:
    limiter = GlobalRateLimiter(sync_store(shared_valkey, prefix), "quota", 1000)
    executor = Executor(limiter)
    executor.call(lambda: None)
    wait_until(lambda: limiter._member._ready > 0)
    for _ in range(20):
        started = time.monotonic()
        executor.call(lambda: None)
        assert time.monotonic() - started < 0.005  # a permit in hand: no round trip
        time.sleep(0.01)


def test_max_wait_waits_for_the_next_lease(shared_valkey: str, prefix: str) -> None:
    limiter = GlobalRateLimiter(sync_store(shared_valkey, prefix), "quota", 20, burst=1, max_wait=2.0)
    executor = Executor(limiter)
    started = time.monotonic()
    for _ in range(30):
        executor.call(lambda: None)
    took = time.monotonic() - started
    assert 0.5 <= took <= 2.0, took  # 30 permits at 20/s: the first ~ (burst and a lease) at once, the rest paced


def test_store_down_from_the_start_limits_each_replica_to_its_share(prefix: str) -> None:
    heard: list[FleetModeChanged] = []
    store = FleetStore(redis.Redis(port=1, socket_timeout=0.2, socket_connect_timeout=0.2), prefix=prefix)
    limiter = GlobalRateLimiter(store, "quota", 40, fleet_size=4, on_mode=heard.append)
    admitted, slowest = hammer([Executor(limiter)], 1.0, threads_each=2)
    assert limiter.mode == "local" and heard == [FleetModeChanged("local", "quota", "GlobalRateLimiter")]
    assert 5 <= admitted[0] <= 10 + 2, admitted  # 40/s over 4 replicas: 10/s
    assert slowest[0] < store.timeout + 0.1  # the first calls wait for the first lease, up to the store's timeout


def test_store_killed_and_restarted(valkey: Valkey, prefix: str) -> None:
    """Killed: every replica decides locally within a second, no call fails because of the store, no caller waits
    on it; restarted: the shared limit is back within two seconds."""
    heard: list[FleetModeChanged] = []
    limiters = [
        GlobalRateLimiter(sync_store(valkey.url, prefix, stale_after=0.5), "quota", 100, on_mode=heard.append)
        for _ in range(2)
    ]
    executors = [Executor(limiter) for limiter in limiters]
    hammer(executors, 0.3)
    valkey.kill()
    killed = time.monotonic()
    wait_until(lambda: all(limiter.mode == "local" for limiter in limiters), timeout=3)
    admitted, slowest = hammer(executors, 0.5)  # nothing but RateLimitedError reaches the callers
    assert time.monotonic() - killed < 3
    assert max(slowest) < 0.1 and sum(admitted) > 0
    valkey.start()
    restarted = time.monotonic()
    wait_until(lambda: all(limiter.mode == "fleet" for limiter in limiters), timeout=3)
    assert time.monotonic() - restarted < 2.5
    admitted, _ = hammer(executors, 1.0)
    assert 50 <= sum(admitted) <= 10 + 100 + 2 * 56, admitted
    assert [e.mode for e in heard].count("local") == 2 and [e.mode for e in heard].count("fleet") == 2


def test_a_paused_store_holds_no_caller(valkey: Valkey, prefix: str) -> None:
    limiter = GlobalRateLimiter(sync_store(valkey.url, prefix, stale_after=0.3), "quota", 200)
    executor = Executor(limiter)
    hammer([executor], 0.2)
    valkey.pause()
    try:
        admitted, slowest = hammer([executor], 1.0)
    finally:
        valkey.resume()
    assert slowest[0] < 0.25 and admitted[0] > 0  # the first call after the pause may wait out the store's timeout
    wait_until(lambda: limiter.mode == "fleet", timeout=3)


def test_the_switch_disables_a_limiter_on_every_replica(shared_valkey: str, prefix: str) -> None:
    limiters = replicas(shared_valkey, prefix, 2, 1)
    executors = [Executor(limiter) for limiter in limiters]
    switch = FleetSwitch(sync_store(shared_valkey, prefix))
    switch.disable("quota")
    switched = time.monotonic()
    wait_until(lambda: all(limiter._member.switch == "disabled" for limiter in limiters), timeout=2)
    assert time.monotonic() - switched < 1.2
    assert switch.state("quota") == "disabled"
    for executor in executors:
        for _ in range(20):
            executor.call(lambda: None)  # far past 1/s: the limiter is off
    switch.clear("quota")
    wait_until(lambda: all(limiter._member.switch == "" for limiter in limiters), timeout=2)
    outcomes: list[object] = []
    for _ in range(5):
        try:
            outcomes.append(executors[0].call(lambda: "ok"))
        except RateLimitedError as error:
            outcomes.append(error)
    assert any(isinstance(outcome, RateLimitedError) for outcome in outcomes)


def test_the_switch_from_the_command_line(shared_valkey: str, prefix: str) -> None:
    limiter = GlobalRateLimiter(sync_store(shared_valkey, prefix), "quota", 1)
    command = [sys.executable, "-m", "interceptors.fleet", "--url", shared_valkey, "--prefix", prefix]
    subprocess.run([*command, "disable", "quota", "--ttl", "30"], check=True, timeout=30)
    wait_until(lambda: limiter._member.switch == "disabled", timeout=2)
    shown = subprocess.run([*command, "show", "quota"], check=True, timeout=30, capture_output=True, text=True)
    assert shown.stdout.strip() == "disabled"
    subprocess.run([*command, "clear", "quota"], check=True, timeout=30)
    wait_until(lambda: limiter._member.switch == "", timeout=2)
    bad = subprocess.run([*command, "disable", "no spaces"], timeout=30, capture_output=True, text=True)
    assert bad.returncode == 2 and "key must be" in bad.stderr


async def test_aio_replicas_on_asyncio_clients_share_one_limit(shared_valkey: str, prefix: str) -> None:
    clients = [redis.asyncio.Redis.from_url(shared_valkey) for _ in range(2)]
    limiters = [GlobalRateLimiter(FleetStore(c, prefix=prefix), "quota", 50) for c in clients]
    executors = [Executor(limiter) for limiter in limiters]
    admitted = [0, 0]
    ends = asyncio.get_running_loop().time() + 1.5

    async def work(index: int) -> None:
        while asyncio.get_running_loop().time() < ends:
            try:
                await executors[index].acall(asyncio.sleep, 0)
                admitted[index] += 1
            except RateLimitedError:
                await asyncio.sleep(0.002)

    await asyncio.gather(*(work(i % 2) for i in range(8)))
    assert 50 <= sum(admitted) <= 5 + 75 + 2 * 28, admitted
    assert all(n > 5 for n in admitted) and all(limiter.mode == "fleet" for limiter in limiters)
    for store in (limiter.store for limiter in limiters):
        store.close()
    for client in clients:
        await client.aclose()


@pytest.mark.parametrize("path", PATHS)
def test_through_grpc_every_path(server: ScriptedServer, shared_valkey: str, prefix: str, path: str) -> None:
    limiter = GlobalRateLimiter(sync_store(shared_valkey, prefix), "quota", 5, period=10, burst=2)
    wait_until(lambda: limiter._member.heard)  # its first lease: the burst (before it, its local share: 1 per 2 s)
    with Client(path, server.target, limiter) as client:
        outcomes = [client.unary(Request(id=f"c{i}")) for i in range(12)]
    codes = [o.code for o in outcomes]
    assert codes.count(grpc.StatusCode.OK) in range(2, 8), codes
    refused = [o for o in outcomes if o.code is grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert refused and all(isinstance(o.error, RateLimitedError) for o in refused)
    assert sum(server.attempts(f"c{i}") for i in range(12)) == codes.count(grpc.StatusCode.OK)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("not a store", "quota", 10), "store must be a FleetStore"),
        ((None, "quota", 10), "store must be a FleetStore"),
        ((..., "a key", 10), "key must be"),
        ((..., "{tagged}", 10), "key must be"),
        ((..., "", 10), "key must be"),
        ((..., "quota", 0), "max_calls"),
        ((..., "quota", -5), "max_calls"),
        ((..., "quota", 1.5), "max_calls"),
    ],
)
def test_bad_configuration_is_refused_naming_it(arguments: tuple[Any, ...], message: str) -> None:
    store = FleetStore(redis.Redis(port=1, socket_timeout=0.1), prefix="p")
    arguments = tuple(store if a is ... else a for a in arguments)
    with pytest.raises(ValueError, match=message):
        GlobalRateLimiter(*arguments)
    store.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [({"period": 0}, "period"), ({"burst": 0}, "burst"), ({"horizon": -1}, "horizon"), ({"max_wait": -1}, "max_wait")],
)
def test_bad_options_are_refused_naming_them(options: dict[str, Any], message: str) -> None:
    store = FleetStore(redis.Redis(port=1, socket_timeout=0.1), prefix="p")
    with pytest.raises(ValueError, match=message):
        GlobalRateLimiter(store, "quota", 10, **options)
    store.close()


@pytest.mark.parametrize(
    ("client", "prefix", "message"),
    [
        ("redis://127.0.0.1:6379", "p", "client must be a redis-py client"),
        (object(), "p", "client must be a redis-py client"),
        (redis.Redis(port=1, socket_timeout=0.1), "", "prefix must be"),
        (redis.Redis(port=1, socket_timeout=0.1), "a{b}", "prefix must be"),
        (redis.Redis(port=1, socket_timeout=0.1), None, "prefix must be"),
    ],
)
def test_bad_stores_are_refused_naming_what(client: Any, prefix: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FleetStore(client, prefix=prefix)


def test_a_client_without_socket_timeout_is_warned_of() -> None:
    with pytest.warns(FleetWarning, match="socket_timeout"):
        FleetStore(redis.Redis(port=1, socket_timeout=None), prefix="p")


def test_in_a_service_config(server: ScriptedServer, shared_valkey: str, prefix: str) -> None:
    from interceptors import from_service_config

    store = sync_store(shared_valkey, prefix)
    block = {"globalRateLimiter": {"key": "quota", "maxCalls": 3, "period": "10s", "burst": 1}}
    config = from_service_config({"methodConfig": [{"name": [{}], "resilience": block}]}, fleet_store=store)
    (limiter,) = config.policies
    assert isinstance(limiter, GlobalRateLimiter) and limiter.key == "quota" and limiter.max_calls == 3
    assert limiter.period == 10 and limiter.store is store
    with Client("call", server.target, *config.policies) as client:
        codes = [client.unary(Request(id=f"s{i}")).code for i in range(6)]
    assert codes.count(grpc.StatusCode.OK) in range(1, 4) and grpc.StatusCode.RESOURCE_EXHAUSTED in codes


@pytest.mark.parametrize(
    ("block", "store", "message"),
    [
        ({"key": "q", "maxCalls": 3}, False, "needs the fleet's store"),
        ({"maxCalls": 3}, True, "needs the policy's key"),
        ({"key": "a b", "maxCalls": 3}, True, "key must be"),
        ({"key": "q", "maxCalls": 0}, True, "max_calls"),
        ({"key": "q", "maxCalls": 3, "rate": 1}, True, "rate"),
    ],
)
def test_bad_service_config_blocks_are_refused_with_their_path(
    block: dict[str, Any], store: bool, message: str
) -> None:
    from interceptors import from_service_config

    fleet_store = FleetStore(redis.Redis(port=1, socket_timeout=0.1), prefix="p") if store else None
    config = {"methodConfig": [{"name": [{}], "resilience": {"globalRateLimiter": block}}]}
    with pytest.raises(ValueError, match=rf"methodConfig\[0\]\.resilience\.globalRateLimiter.*{message}"):
        from_service_config(config, fleet_store=fleet_store)
