"""A Registry through gRPC, on every call path and both server kinds: channels and interceptors take its chains, a
reload applies to the calls after it (stubs made before included) without failing any, keeps the state of the
policies whose name stays (an open breaker stays open), and a bad config changes nothing."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import grpc
import pytest

from interceptors import CircuitBreaker, CircuitState, Registry, RetryPolicy

from ..support.clients import PATHS, Client
from ..support.server import Request, ScriptedServer
from .test_stream_retries import call

SERVICE = {"service": "scripted.v1.Scripted"}


def config(max_attempts: int, threshold: int = 100, **resilience: Any) -> dict[str, Any]:
    retry = {
        "maxAttempts": max_attempts,
        "initialBackoff": "0.01s",
        "maxBackoff": "0.02s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    breaker = {"name": "to-scripted", "failureThreshold": threshold, "delay": "600s"}
    return {"methodConfig": [{"name": [SERVICE], "retryPolicy": retry, "resilience": {"circuitBreaker": breaker}}]}


class RegistryClient(Client):
    """A client of one call path whose channel or interceptors take their chains from ``registry``."""

    def __init__(self, path: str, target: str, registry: Registry) -> None:
        super().__init__(path, target, registry=registry)


paths = pytest.mark.parametrize("path", PATHS)


@paths
def test_a_reload_applies_to_the_calls_after_it(server: ScriptedServer, path: str) -> None:
    registry = Registry(config(max_attempts=2))
    with RegistryClient(path, server.target, registry) as client:
        for turn in range(3):  # a stub's blocking calls are taken over from grpc's hooks by its third
            assert client.unary(Request(id=f"before-{turn}", fail_first=3)).code is grpc.StatusCode.UNAVAILABLE
        registry.reload(config(max_attempts=4))
        after = client.unary(Request(id="after", fail_first=3))
        registry.reload({"methodConfig": []})  # no policies for it: its calls pass untouched
        untouched = client.unary(Request(id="untouched", fail_first=1))
    assert [server.attempts(f"before-{turn}") for turn in range(3)] == [2] * 3
    assert after.error is None and server.attempts("after") == 4
    assert untouched.code is grpc.StatusCode.UNAVAILABLE and server.attempts("untouched") == 1
    assert registry.version == 2


@paths
def test_an_open_breaker_stays_open_across_a_reload(server: ScriptedServer, path: str) -> None:
    registry = Registry(config(max_attempts=2, threshold=1))
    with RegistryClient(path, server.target, registry) as client:
        client.unary(Request(id="trip", fail_first=1))
        assert registry["to-scripted"].state is CircuitState.OPEN  # type: ignore[attr-defined]
        registry.reload(config(max_attempts=3, threshold=50))
        rejected = client.unary(Request(id="rejected"))
    breaker = registry["to-scripted"]
    assert isinstance(breaker, CircuitBreaker) and breaker.config.failure_threshold == 50
    assert breaker.state is CircuitState.OPEN and 590 < breaker.remaining_delay <= 600
    assert rejected.code is grpc.StatusCode.UNAVAILABLE and server.attempts("rejected") == 0


@paths
def test_a_bad_config_is_refused_whole_and_the_running_one_stays(server: ScriptedServer, path: str) -> None:
    registry = Registry(config(max_attempts=3))
    bad = config(max_attempts=3)
    bad["methodConfig"][0]["resilience"]["bulkhead"] = {"maxConcurrent": 0}
    with RegistryClient(path, server.target, registry) as client:
        with pytest.raises(ValueError, match=r"methodConfig\[0\]\.resilience\.bulkhead: max_concurrent must be"):
            registry.reload(bad)
        with pytest.raises(ValueError, match=r"methodConfig\[0\]\.retryPolicy\.maxAttempts"):
            registry.reload(json.dumps(config(max_attempts=1)))
        outcome = client.unary(Request(id="still", fail_first=2))
    assert outcome.error is None and server.attempts("still") == 3
    assert registry.version == 0 and "/scripted.v1.Scripted/* Bulkhead" not in registry.names


def test_a_name_keeps_its_kind() -> None:
    registry = Registry(config(max_attempts=2))
    changed = config(max_attempts=2)
    del changed["methodConfig"][0]["resilience"]["circuitBreaker"]
    changed["methodConfig"][0]["resilience"]["bulkhead"] = {"name": "to-scripted", "maxConcurrent": 4}
    refused = "policy 'to-scripted' is a CircuitBreaker now; the new config makes it a Bulkhead"
    with pytest.raises(ValueError, match=refused):
        registry.reload(changed)
    assert isinstance(registry["to-scripted"], CircuitBreaker)


def test_one_name_is_one_policy_shared_by_the_entries_that_give_it() -> None:
    def shared(threshold: int) -> dict[str, Any]:
        breaker = {"name": "backend-b", "failureThreshold": 3}
        return {
            "methodConfig": [
                {"name": [{"service": "a.A"}], "resilience": {"circuitBreaker": breaker}},
                {
                    "name": [{"service": "b.B"}],
                    "resilience": {"circuitBreaker": {**breaker, "failureThreshold": threshold}},
                },
            ]
        }

    assert Registry(shared(3)).names == ["backend-b"]
    with pytest.raises(ValueError, match="policy 'backend-b' is given twice"):
        Registry(shared(4))


def test_unnamed_policies_are_named_by_their_chain_and_kind() -> None:
    registry = Registry(
        policies=[RetryPolicy()],
        methods={"/a.A/Get": [CircuitBreaker(), CircuitBreaker(failure_threshold=2)], "/a.A/*": []},
    )
    assert registry.names == ["* RetryPolicy", "/a.A/Get CircuitBreaker", "/a.A/Get CircuitBreaker#2"]


def test_a_registry_channel_takes_no_other_chains() -> None:
    registry = Registry(config(max_attempts=2))
    with pytest.raises(ValueError, match="give a registry, or policies and methods"):
        Client("call", "127.0.0.1:1", RetryPolicy(), registry=registry, warm=False)
    with pytest.raises(ValueError, match="give the service config to the registry"):
        Client("call", "127.0.0.1:1", registry=registry, service_config="{}", warm=False)


def test_reloads_under_32_threads_of_traffic_fail_no_call_and_keep_an_open_breaker_open(
    server: ScriptedServer,
) -> None:
    """32 threads call a healthy method while the registry reloads 20 times (new retry and breaker options each
    time); a method whose breaker is open keeps it open, and its calls are rejected without reaching the server."""
    down = {"name": "down", "failureThreshold": 1, "delay": "600s"}

    def version(n: int) -> dict[str, Any]:
        healthy = config(max_attempts=2 + n % 3, threshold=100 + n)
        healthy["methodConfig"].append(
            {
                "name": [{"service": "scripted.v1.Scripted", "method": "ClientStream"}],
                "resilience": {"circuitBreaker": {**down, "failureThreshold": 1 + n % 2}},
            }
        )
        return healthy

    registry = Registry(version(0))
    registry["down"].open()  # type: ignore[attr-defined]
    failures: list[Any] = []
    calls = [0]
    stop = threading.Event()
    with RegistryClient("call", server.target, registry) as client:

        def traffic(worker: int) -> None:
            n = 0
            while not stop.is_set():
                outcome = client.unary(Request(id=f"w{worker}-{n}", fail_first=n % 2), timeout=5)
                if outcome.error is not None:
                    failures.append(outcome.error)
                n += 1
                calls[0] += 1

        threads = [threading.Thread(target=traffic, args=(i,)) for i in range(32)]
        for thread in threads:
            thread.start()
        try:
            for n in range(1, 21):
                time.sleep(0.02)
                registry.reload(version(n))
                assert registry["down"].state is CircuitState.OPEN  # type: ignore[attr-defined]
                rejected = call(client, "client_stream", 1, id="down")
                assert rejected.code is grpc.StatusCode.UNAVAILABLE
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
    assert not any(t.is_alive() for t in threads)
    assert not failures, failures[:3]
    assert calls[0] >= 32 and server.attempts("down") == 0
    assert registry.version == 20


def test_a_policy_that_cannot_take_over_starts_afresh(caplog: pytest.LogCaptureFixture) -> None:
    class Stubborn(CircuitBreaker):
        def inherit(self, old: Any) -> None:
            raise RuntimeError("no")

    registry = Registry(policies=[Stubborn(name="b")])
    registry["b"].open()  # type: ignore[attr-defined]
    with caplog.at_level(logging.ERROR, "interceptors"):
        registry.reload(policies=[Stubborn(name="b")])
    assert registry["b"].state is CircuitState.CLOSED  # type: ignore[attr-defined]
    assert registry.version == 1 and any("could not take over" in r.getMessage() for r in caplog.records)
