"""Keyed policies on the fake clock: a policy per key (a breaker per method, a bulkhead per tenant), the keys'
memory bounded (idle keys forgotten, a cap past which new keys share one policy), and bad keys or makers."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import threading
import time
import weakref
from collections import Counter
from typing import Any

import pytest

from interceptors import (
    Bulkhead,
    BulkheadFullError,
    CircuitBreaker,
    CircuitOpenError,
    Executor,
    Keyed,
    RateLimiter,
    RetryPolicy,
    Timeout,
)
from interceptors.engine import Execution, Semantics
from interceptors.engine import _options as options
from interceptors.engine._keyed import OTHER
from interceptors.events import CircuitStateChanged
from interceptors.testing import FakeClock

from ..support.calls import Boom, threads_and_tasks

TENANT: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant", default=None)


class Method(Semantics):
    def __init__(self, method: str) -> None:
        self.method = method


def call(executor: Executor, method: str, fn: Any = lambda _: "ok") -> Any:
    return executor.call_with_execution(fn, semantics=Method(method))


def fail(_: Execution) -> None:
    raise Boom


def test_a_breaker_per_method_opens_for_that_method_alone(clock: FakeClock) -> None:
    keyed = Keyed(lambda key: CircuitBreaker(failure_threshold=2, clock=clock, name=f"breaker {key}"))
    executor = Executor(keyed)
    for _ in range(2):
        with pytest.raises(Boom):
            call(executor, "/a/Get", fail)
    with pytest.raises(CircuitOpenError):
        call(executor, "/a/Get")
    assert call(executor, "/b/Get") == "ok"
    assert keyed.keys == 3  # /a/Get, /b/Get and OTHER
    breaker = keyed.policy_for("/a/Get")
    assert isinstance(breaker, CircuitBreaker) and breaker.name == "breaker /a/Get"


def test_a_bulkhead_per_tenant_holds_each_to_its_own_places(clock: FakeClock) -> None:
    keyed = Keyed(lambda _: Bulkhead(1, clock=clock), key=lambda _: TENANT.get())
    executor, release, started = Executor(keyed), threading.Event(), threading.Event()

    def held(_: Execution) -> str:
        started.set()
        release.wait(5)
        return "held"

    def run_as(tenant: str) -> None:
        TENANT.set(tenant)
        executor.call_with_execution(held)

    thread = threading.Thread(target=run_as, args=("acme",))
    thread.start()
    assert started.wait(5)
    try:
        TENANT.set("acme")
        with pytest.raises(BulkheadFullError):
            executor.call(lambda: "second")
        TENANT.set("globex")
        assert executor.call(lambda: "other tenant") == "other tenant"
    finally:
        release.set()
        thread.join(5)
        TENANT.set(None)


def test_past_the_cap_new_keys_share_one_policy_until_idle_keys_are_forgotten(clock: FakeClock) -> None:
    keyed = Keyed(lambda _: RateLimiter(1, period=60, clock=clock), key=lambda _: TENANT.get(), max_keys=2, idle=10)
    executor = Executor(keyed)

    def as_tenant(tenant: str) -> str:
        TENANT.set(tenant)
        return executor.call(lambda: tenant)

    try:
        assert as_tenant("a") == "a" and as_tenant("b") == "b"
        assert as_tenant("c") == "c"  # the shared policy's one permit
        with pytest.raises(Exception, match="rate limited"):
            as_tenant("d")  # shares it: a flood of new keys gets one key's share
        assert (keyed.keys, keyed.overflowed) == (3, 2)
        clock.advance(10)
        assert as_tenant("d") == "d"  # "a" and "b" idle for 10 s: forgotten to make room
        assert keyed.policy_for("a") is None and keyed.keys == 2
        assert as_tenant("b") == "b"  # forgotten, so afresh: its permit again
    finally:
        TENANT.set(None)


def test_a_flood_of_keys_keeps_memory_within_the_cap(clock: FakeClock) -> None:
    keyed = Keyed(lambda _: Bulkhead(5, clock=clock), key=lambda _: TENANT.get(), max_keys=100, idle=1)
    executor = Executor(keyed)
    for i in range(20_000):
        TENANT.set(f"t{i}")
        executor.call(lambda: None)
        clock.advance(0.001)
    TENANT.set(None)
    assert keyed.keys <= 101


def test_a_key_with_calls_in_flight_is_never_forgotten(clock: FakeClock) -> None:
    keyed = Keyed(lambda _: Bulkhead(1, clock=clock), key=lambda _: TENANT.get(), max_keys=1, idle=1)
    executor, release, started = Executor(keyed), threading.Event(), threading.Event()

    def held(_: Execution) -> None:
        started.set()
        release.wait(5)

    def run() -> None:
        TENANT.set("busy")
        executor.call_with_execution(held)

    thread = threading.Thread(target=run)
    thread.start()
    assert started.wait(5)
    try:
        clock.advance(5)
        TENANT.set("busy")
        with pytest.raises(BulkheadFullError):  # still its bulkhead: the call in flight holds its place
            executor.call(lambda: None)
    finally:
        release.set()
        thread.join(5)
        TENANT.set(None)


def test_a_key_function_that_fails_fails_no_call_and_is_logged_once(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_: Execution) -> str:
        raise LookupError("no tenant")

    keyed = Keyed(lambda _: Bulkhead(2, clock=clock), key=broken)
    executor = Executor(keyed)
    with caplog.at_level(logging.WARNING, logger="interceptors"):
        assert [executor.call(lambda: "ok") for _ in range(3)] == ["ok"] * 3
    assert [r.getMessage() for r in caplog.records].count(
        "Keyed: the key function failed (such calls count as one, 'other'): LookupError('no tenant')"
    ) == 1
    assert keyed.keys == 1  # OTHER alone


@pytest.mark.parametrize(
    ("make", "options", "named"),
    [
        ("not callable", {}, "make must be a function"),
        (lambda _: "a policy?", {}, "make must build a policy"),
        (lambda _: Keyed(lambda _: Bulkhead(1)), {}, "not a Keyed one"),
        (lambda _: Bulkhead(1), {"max_keys": 0}, "max_keys"),
        (lambda _: Bulkhead(1), {"idle": 0}, "idle"),
        (lambda _: Bulkhead(1), {"key": "tenant"}, "key must be a function"),
        (lambda _: Bulkhead(0), {}, "max_concurrent"),  # the policy's own check, when the Keyed one is made
    ],
)
def test_bad_makers_and_options_are_refused_at_construction(make: Any, options: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Keyed(make, **options)


def test_keys_policies_must_keep_the_clock_of_the_chain(clock: FakeClock) -> None:
    keyed = Keyed(lambda key: Bulkhead(1, clock=clock if key == OTHER else FakeClock()), key=lambda _: "k")
    with pytest.raises(ValueError, match="on the clock of the others"):
        Executor(keyed).call(lambda: None)


def test_who_hears_the_keyed_policy_hears_each_keys_policy(clock: FakeClock) -> None:
    heard: list[Any] = []
    keyed = Keyed(lambda key: CircuitBreaker(failure_threshold=1, clock=clock, name=key))
    options.observe(keyed, heard.append)
    with pytest.raises(Boom):
        call(Executor(keyed), "/a/Get", fail)
    assert [(type(e), e.policy) for e in heard if isinstance(e, CircuitStateChanged)] == [
        (CircuitStateChanged, "/a/Get")
    ]


def test_a_keyed_policy_serves_async_chains_and_retries_within_a_key(clock: FakeClock) -> None:
    keyed = Keyed(lambda _: CircuitBreaker(failure_threshold=3, clock=clock))
    executor = Executor(RetryPolicy(max_attempts=3, clock=clock), keyed)
    attempts: list[int] = []

    async def flaky(execution: Execution) -> str:
        attempts.append(execution.attempts)
        if execution.attempts < 3:
            raise Boom
        return "third time"

    async def main() -> str:
        result: str = await executor.acall_with_execution(flaky, semantics=Method("/a/Get"))
        return result

    assert asyncio.run(main()) == "third time"
    assert attempts == [1, 2, 3]
    breaker = keyed.policy_for("/a/Get")
    assert isinstance(breaker, CircuitBreaker) and breaker.state.value == "closed"


def test_a_dropped_chain_leaves_nothing_behind_in_the_keys_it_served(clock: FakeClock) -> None:
    keyed = Keyed(lambda _: Bulkhead(10), key=lambda _: "a")
    timeout = Timeout(0.02)
    gone = weakref.ref(timeout)
    timed = Executor(keyed, timeout)
    timed.call(lambda: None)
    del timed, timeout
    gc.collect()
    assert gone() is None  # nor could a chain made later in its memory take its steps for its own
    assert Executor(keyed).call(time.sleep, 0.03) is None  # no Timeout in this chain


def test_64_threads_and_64_tasks_of_many_keys_share_a_keyed_policy() -> None:
    """Keys come and go (idle after 1 ms, at most 10 kept) while 64 threads and 64 tasks call through them: every
    call ends, admitted or refused, no key holds a call in flight at the end, and the cap holds."""
    keyed = Keyed(lambda _: Bulkhead(2), key=lambda _: TENANT.get(), max_keys=10, idle=0.001)
    executor, outcomes, lock = Executor(keyed), Counter[str](), threading.Lock()

    def count(outcome: str) -> None:
        with lock:
            outcomes[outcome] += 1
            outcomes["most keys"] = max(outcomes["most keys"], keyed.keys)

    def one_thread(i: int) -> None:
        for c in range(20):
            TENANT.set(f"tenant-{(i * 20 + c) % 50}")
            try:
                executor.call(time.sleep, 0.0005)
                count("admitted")
            except BulkheadFullError:
                count("refused")

    async def one_task(i: int) -> None:
        for c in range(20):
            TENANT.set(f"tenant-{(i * 20 + c) % 50}")
            try:
                await executor.acall(asyncio.sleep, 0.0005)
                count("admitted")
            except BulkheadFullError:
                count("refused")

    threads_and_tasks(one_thread, one_task)
    assert outcomes["admitted"] + outcomes["refused"] == 2 * 64 * 20
    assert outcomes["most keys"] <= 11  # the cap and OTHER
    assert all(entry.in_flight == 0 for entry in keyed._entries.values())
    assert all(getattr(e.policy, "in_flight", 0) == 0 for e in keyed._entries.values())
