"""Priorities in the engine: the levels and their rules, the call's priority on its execution, and the order in
which ranked places admit, line up and refuse calls (threads and tasks)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections import Counter
from typing import Any

import pytest

from interceptors import (
    AdaptiveLimiter,
    AdaptiveThrottle,
    Bulkhead,
    BulkheadFullError,
    Executor,
    LimitExceededError,
    Priorities,
    Priority,
    RateLimitedError,
    RateLimiter,
    ThrottledError,
    prioritized,
)
from interceptors.engine import Execution
from interceptors.engine._places import Places
from interceptors.engine._priority import RANKS
from interceptors.testing import FakeClock

from ..support.calls import Boom, threads_and_tasks

RULES = Priorities()


def rank(level: Priority, retry: bool = False, usage: float = 0.0) -> tuple[int, float]:
    """Where a call stands in ranked places: its rank in line, and its share of the limit."""
    return RULES.place(level, retry, usage)


def cap(limit: int, level: Priority, retry: bool = False, usage: float = 0.0) -> int:
    """The calls in flight below which such a call takes a place."""
    return Places(limit)._cap(rank(level, retry, usage)[1])


# -- the levels and the rules -----------------------------------------------------------------------------------


def test_a_priority_is_named_in_any_case_and_anything_else_is_refused_naming_the_levels() -> None:
    assert Priority.of("Critical") is Priority.CRITICAL
    assert Priority.of(" sheddable ") is Priority.SHEDDABLE
    assert Priority.of(Priority.LOW) is Priority.LOW
    for bad in ("urgent", 4, None, b"high"):
        with pytest.raises(ValueError, match="sheddable, low, normal, high, critical"):
            Priority.of(bad)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"shares": {"normal": 0}}, r"shares\[normal\]"),
        ({"shares": {"low": 1.5}}, r"shares\[low\]"),
        ({"shares": {"low": True}}, r"shares\[low\]"),
        ({"shares": {"urgent": 0.5}}, "shares' keys"),
        ({"shares": {"high": 0.6}}, "must not fall as the level rises: high 0.6 < normal 0.8"),
        ({"shares": [0.5]}, "shares must map"),
        ({"default": "urgent"}, "default"),
        ({"max_claimed": "top"}, "max_claimed"),
    ],
)
def test_bad_rules_are_refused_naming_the_option(options: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Priorities(**options)


def test_policies_refuse_priorities_of_the_wrong_type() -> None:
    for make in (lambda: Bulkhead(2, priorities="critical"), lambda: AdaptiveLimiter(priorities={})):  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"priorities must be an interceptors\.Priorities"):
            make()


def test_each_rank_may_fill_its_share_of_the_limit_and_a_retry_sits_halfway_to_the_level_below() -> None:
    assert cap(10, Priority.CRITICAL) == 10
    assert cap(10, Priority.NORMAL) == 8
    assert cap(10, Priority.NORMAL, retry=True) == 7  # (0.7 + 0.8) / 2 of 10, its whole part
    assert cap(10, Priority.SHEDDABLE) == 5
    assert cap(10, Priority.SHEDDABLE, retry=True) == 2  # 0.25 of 10
    assert cap(100, Priority.HIGH, retry=True) == 85
    levels = [(level, retry) for level in Priority for retry in (True, False)]
    assert [rank(level, retry)[0] for level, retry in levels] == list(range(RANKS))
    assert [cap(100, level, retry) for level, retry in levels] == sorted(
        cap(100, level, retry) for level, retry in levels
    )
    assert {cap(1, level, retry) for level, retry in levels} == {1}  # every rank may run when nothing else does
    assert Priorities(shares={"normal": 1.0, "high": 1.0}).place(Priority.NORMAL)[1] == 1.0


def test_a_tenants_usage_moves_its_calls_down_within_half_a_level() -> None:
    assert cap(100, Priority.NORMAL, usage=0.0) == 80
    assert cap(100, Priority.NORMAL, usage=0.5) == 77  # a quarter of the way to LOW's 70: 77.5
    assert cap(100, Priority.NORMAL, usage=1.0) == cap(100, Priority.NORMAL, retry=True) == 75
    assert cap(100, Priority.NORMAL, retry=True, usage=1.0) == cap(100, Priority.LOW) == 70
    assert rank(Priority.NORMAL, usage=0.9)[0] == rank(Priority.NORMAL)[0]  # in line with its level's first attempts
    assert rank(Priority.SHEDDABLE, retry=True, usage=1.0) == (0, 0.0)  # the very bottom: at least one place


# -- the priority of a call -------------------------------------------------------------------------------------


def test_an_execution_has_the_priority_of_the_context_it_starts_in_and_its_hedges_share_it() -> None:
    seen: list[Priority | None] = []
    executor = Executor()
    executor.call_with_execution(lambda e: seen.append(e.priority))
    with prioritized("high") as level:
        assert level is Priority.HIGH
        executor.call_with_execution(lambda e: seen.append(e.priority))
        with prioritized(Priority.SHEDDABLE):
            executor.call_with_execution(lambda e: seen.append(e.priority))
        executor.call_with_execution(lambda e: seen.append(e.fork(2).priority))
    executor.call_with_execution(lambda e: seen.append(e.priority))
    assert seen == [None, Priority.HIGH, Priority.SHEDDABLE, Priority.HIGH, None]


def test_tasks_started_inside_the_block_keep_its_priority() -> None:
    async def main() -> list[Priority | None]:
        async def attempt(execution: Execution) -> Priority | None:
            return execution.priority

        with prioritized("critical"):
            task = asyncio.ensure_future(Executor().acall_with_execution(attempt))
        return [await task, await Executor().acall_with_execution(attempt)]

    assert asyncio.run(main()) == [Priority.CRITICAL, None]


# -- ranked places ----------------------------------------------------------------------------------------------


def test_lower_ranks_are_refused_first_as_places_fill() -> None:
    places = Places(10, ranks=RANKS)
    assert [places.take(0, *rank(Priority.SHEDDABLE)) for _ in range(6)] == [True] * 5 + [False]
    assert places.take(0, *rank(Priority.LOW)) and places.take(0, *rank(Priority.LOW))
    assert not places.take(0, *rank(Priority.LOW))  # 7 in flight: its share
    assert places.take(0, *rank(Priority.NORMAL))
    assert not places.take(0, *rank(Priority.NORMAL))  # 8 in flight: its share
    assert not places.take(0, *rank(Priority.NORMAL, retry=True))
    assert not places.take(0, *rank(Priority.HIGH, retry=True))  # a retry of a high call: 8.5 of 10, whole: 8
    assert places.take(0, *rank(Priority.HIGH))
    assert not places.take(0, *rank(Priority.CRITICAL, retry=True))
    assert places.take(0, *rank(Priority.CRITICAL))
    assert not places.take(0, *rank(Priority.CRITICAL))  # the limit: nothing lower is left to refuse
    assert places.in_flight == 10


def test_without_ranks_every_call_may_fill_the_limit() -> None:
    places = Places(3)
    assert [places.take(0) for _ in range(4)] == [True, True, True, False]


def _waiting_thread(places: Places, level: Priority, got: dict[str, bool], name: str) -> threading.Thread:
    thread = threading.Thread(target=lambda: got.__setitem__(name, places.take(10, *rank(level))))
    thread.start()
    return thread


def _wait_for(condition: Any) -> None:
    for _ in range(2000):
        if condition():
            return
        threading.Event().wait(0.005)
    raise AssertionError("condition never held")


def _wait_for_waiting(places: Places, count: int) -> None:
    _wait_for(lambda: places.waiting == count)


def test_waiters_are_served_most_important_first_in_arrival_order_within_a_rank() -> None:
    places = Places(1, ranks=RANKS)
    assert places.take(0, *rank(Priority.CRITICAL))
    got: dict[str, bool] = {}
    order: list[str] = []
    threads = []
    for name, level in [
        ("low", Priority.LOW),
        ("high1", Priority.HIGH),
        ("normal", Priority.NORMAL),
        ("high2", Priority.HIGH),
    ]:
        threads.append(_waiting_thread(places, level, got, name))
        _wait_for_waiting(places, len(threads))
    for _ in range(4):
        places.give()
        _wait_for(lambda: len(got) == len(order) + 1)
        order.append(next(name for name in got if name not in order))
    for thread in threads:
        thread.join(5)
    assert order == ["high1", "high2", "normal", "low"]
    assert all(got.values())


def test_a_full_line_refuses_its_newest_least_important_waiter_for_a_more_important_newcomer() -> None:
    places = Places(1, max_waiting=2, ranks=RANKS)
    assert places.take(0, *rank(Priority.CRITICAL))
    got: dict[str, bool] = {}
    first = _waiting_thread(places, Priority.LOW, got, "low1")
    _wait_for(lambda: places.waiting == 1)
    second = _waiting_thread(places, Priority.LOW, got, "low2")
    _wait_for(lambda: places.waiting == 2)
    assert not places.take(0.01, *rank(Priority.LOW))  # no lower waiter to refuse: the newcomer is
    third = _waiting_thread(places, Priority.CRITICAL, got, "critical")
    second.join(5)
    assert got == {"low2": False}  # refused at once, not at the end of its wait
    assert places.waiting == 2
    places.give()
    third.join(5)
    assert got["critical"]
    places.give()
    first.join(5)
    assert got["low1"]
    assert places.in_flight == 1 and places.waiting == 0


def test_a_task_refused_from_a_full_line_returns_at_once_without_a_place() -> None:
    async def main() -> tuple[bool, bool, int]:
        places = Places(1, max_waiting=1, ranks=RANKS)
        assert await places.atake(0, *rank(Priority.CRITICAL))
        sheddable = asyncio.ensure_future(places.atake(10, *rank(Priority.SHEDDABLE)))
        await asyncio.sleep(0)  # the task lines up
        assert places.waiting == 1
        critical = asyncio.ensure_future(places.atake(10, *rank(Priority.CRITICAL)))
        refused = await asyncio.wait_for(sheddable, 5)
        places.give()
        return refused, await asyncio.wait_for(critical, 5), places.in_flight

    assert asyncio.run(main()) == (False, True, 1)


def test_a_waiter_of_a_low_rank_does_not_hold_back_a_more_important_call_that_fits() -> None:
    places = Places(10, ranks=RANKS)
    for _ in range(5):
        assert places.take(0, *rank(Priority.SHEDDABLE))
    got: dict[str, bool] = {}
    waiter = _waiting_thread(places, Priority.SHEDDABLE, got, "sheddable")
    _wait_for(lambda: places.waiting == 1)
    assert places.take(0, *rank(Priority.NORMAL))  # the sheddable waiter is over its share, not in its way
    places.give()
    places.give()  # 4 sheddable in flight: the waiter's turn
    waiter.join(5)
    assert got == {"sheddable": True}


def test_a_larger_limit_hands_the_places_it_frees_to_the_ranks_it_lets_in() -> None:
    places = Places(2, ranks=RANKS)
    assert places.take(0, *rank(Priority.CRITICAL)) and places.take(0, *rank(Priority.CRITICAL))
    got: dict[str, bool] = {}
    waiter = _waiting_thread(places, Priority.SHEDDABLE, got, "sheddable")
    _wait_for(lambda: places.waiting == 1)
    places.resize(4)  # a sheddable call may fill 2 of 4: still none for it
    assert places.waiting == 1
    places.resize(8)  # 4 of 8
    waiter.join(5)
    assert got == {"sheddable": True}


# -- the policies -----------------------------------------------------------------------------------------------


class _Held:
    """Calls that stay in flight until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Semaphore(0)

    def __call__(self, _: Execution) -> str:
        self.started.release()
        self.release.wait(10)
        return "done"


def _hold(executor: Executor, held: _Held, level: Priority, count: int) -> list[threading.Thread]:
    def run() -> None:
        with prioritized(level):
            executor.call_with_execution(held)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
        assert held.started.acquire(timeout=5)
    return threads


@pytest.mark.parametrize("policy", ["bulkhead", "limiter"])
def test_a_prioritized_policy_refuses_sheddable_calls_and_admits_critical_ones_under_pressure(policy: str) -> None:
    if policy == "bulkhead":
        limiting: Bulkhead | AdaptiveLimiter = Bulkhead(10, priorities=RULES)
        refused: type[Exception] = BulkheadFullError
    else:
        limiting = AdaptiveLimiter(initial_limit=10, min_limit=10, priorities=RULES)
        refused = LimitExceededError
    executor, held = Executor(limiting), _Held()
    threads = _hold(executor, held, Priority.NORMAL, 5)
    try:
        with prioritized("sheddable"), pytest.raises(refused):
            executor.call(lambda: "sheddable")
        with prioritized("critical"):
            assert executor.call(lambda: "critical") == "critical"
        assert executor.call(lambda: "normal") == "normal"  # no priority: the default level, NORMAL
    finally:
        held.release.set()
        for thread in threads:
            thread.join(5)


def test_a_retry_ranks_below_a_first_attempt_of_its_level() -> None:
    bulkhead = Bulkhead(10, priorities=Priorities(shares={"low": 0.5, "normal": 0.8}))  # a normal retry: 0.65
    executor, held = Executor(bulkhead), _Held()
    threads = _hold(executor, held, Priority.CRITICAL, 7)
    try:
        assert executor.call_with_execution(lambda e: e.attempts) == 1

        def retried(execution: Execution) -> int:
            return execution.attempts

        execution = Execution(retried, executor.clock)
        execution.attempts = 2
        with pytest.raises(BulkheadFullError):
            executor.run_execution(execution)
    finally:
        held.release.set()
        for thread in threads:
            thread.join(5)


def test_without_priorities_a_policy_treats_every_call_alike() -> None:
    executor, held = Executor(Bulkhead(2)), _Held()
    threads = _hold(executor, held, Priority.SHEDDABLE, 2)
    try:
        with prioritized("critical"), pytest.raises(BulkheadFullError):
            executor.call(lambda: "critical")
    finally:
        held.release.set()
        for thread in threads:
            thread.join(5)


def test_a_limiter_permit_by_hand_takes_the_priority_it_is_given() -> None:
    limiter = AdaptiveLimiter(initial_limit=4, min_limit=4, priorities=RULES)
    permits = [limiter.acquire_permit(Priority.CRITICAL) for _ in range(2)]  # 2 of 4: a sheddable call's share
    with pytest.raises(LimitExceededError):
        limiter.acquire_permit(Priority.SHEDDABLE)
    permits.append(limiter.acquire_permit(Priority.NORMAL, retry=True))  # 0.75 of 4: 3
    with pytest.raises(LimitExceededError):
        limiter.acquire_permit(Priority.NORMAL, retry=True)
    with pytest.raises(LimitExceededError):
        limiter.acquire_permit()  # the default level, NORMAL: 0.8 of 4, its whole part: 3
    with pytest.raises(LimitExceededError):
        limiter.acquire_permit(Priority.HIGH)  # 3.6: 3
    permits.append(limiter.acquire_permit(Priority.CRITICAL))
    for permit in permits:
        permit.drop()
    assert limiter.in_flight == 0


def _execution(clock: FakeClock, level: str | None = None) -> Execution:
    with prioritized(level) if level else contextlib.nullcontext():
        return Execution(lambda _: None, clock)


def test_a_prioritized_throttle_rejects_the_lowest_ranks_first(clock: FakeClock) -> None:
    throttle = AdaptiveThrottle(priorities=RULES, clock=clock)
    object.__setattr__(throttle, "_random", random.Random(7).random)
    executor = Executor(throttle)

    def refused(_: Execution) -> None:
        raise Boom  # the dependency refuses everything: the throttle rejects up to 90 % of calls

    rejected = {"sheddable": 0, "critical": 0}
    for i in range(400):
        level = "sheddable" if i % 2 else "critical"
        with prioritized(level):
            try:
                executor.call_with_execution(refused)
            except ThrottledError:
                if i >= 100:  # the window's mix and rate are settled
                    rejected[level] += 1
            except Boom:
                pass
        clock.advance(0.001)
    assert throttle.rejection_rate == pytest.approx(0.9)
    assert rejected["sheddable"] == 150  # all of them: half the calls, below the 90 % to reject
    assert 0.7 * 150 <= rejected["critical"] <= 0.9 * 150  # the other 40 % of all calls: 80 % of the critical ones


def test_a_throttle_whose_calls_are_all_of_one_rank_rejects_them_at_its_rate(clock: FakeClock) -> None:
    throttle = AdaptiveThrottle(priorities=RULES, clock=clock, max_rejection_rate=0.5)
    object.__setattr__(throttle, "_random", random.Random(3).random)
    executor, rejected = Executor(throttle), 0
    for i in range(400):
        try:
            executor.call_with_execution(lambda _: (_ for _ in ()).throw(Boom()))
        except ThrottledError:
            rejected += i >= 100
        except Boom:
            pass
    assert 0.4 * 300 <= rejected <= 0.6 * 300


def test_a_bursty_rate_limiter_keeps_the_rest_of_a_period_for_more_important_calls(clock: FakeClock) -> None:
    limiter = RateLimiter(10, period=1.0, bursty=True, max_wait=5.0, priorities=RULES, clock=clock)
    admitted, told = {"sheddable": 0, "critical": 0}, []
    for level in ["sheddable"] * 8 + ["critical"] * 8:
        try:
            limiter._admit(_execution(clock, level))
            admitted[level] += 1
        except RateLimitedError as error:
            told.append((level, error.remaining))
    assert admitted == {"sheddable": 5, "critical": 8}  # critical ones past the period's 10 wait for the next
    assert told == [("sheddable", pytest.approx(1.0))] * 3  # when the next period starts
    clock.advance(2.0)
    assert limiter._admit(_execution(clock, "sheddable")) == 0.0


def test_a_smooth_rate_limiter_lets_less_important_calls_wait_less(clock: FakeClock) -> None:
    limiter = RateLimiter(10, period=1.0, max_wait=1.0, priorities=RULES, clock=clock)
    waits = []
    for _ in range(8):
        try:
            waits.append(limiter._admit(_execution(clock, "sheddable")))
        except RateLimitedError:
            break
    assert waits == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])  # at most half of max_wait
    assert limiter._admit(_execution(clock, "critical")) == pytest.approx(0.6)
    assert limiter._admit(_execution(clock)) == pytest.approx(0.7)  # normal: up to 0.8 s


LATE = 0.05 + 2.0
"""A call admitted or refused later than this after it asked (``max_wait`` 0.05 s) is late: one GIL shared by 64
threads and a loop of 64 tasks, on a machine running two suites, held calls off for over 0.5 s (53 of 2 560, once).
What it catches is a bulkhead that holds a call far past its ``max_wait`` (tests/engine/test_bulkhead.py times the
wait itself)."""


def test_64_threads_and_64_tasks_with_every_priority_share_a_prioritized_bulkhead() -> None:
    """Threads and tasks of every level and retries, waiting for 8 places: never more than 8 in flight, every call
    admitted or refused within LATE, and no place lost; at the end, none in flight and none waiting."""
    bulkhead = Bulkhead(8, max_wait=0.05, priorities=RULES)
    executor = Executor(bulkhead)
    peak, lock, outcomes = 0, threading.Lock(), Counter[str]()
    levels = list(Priority)

    def inside() -> None:
        nonlocal peak
        with lock:
            peak = max(peak, bulkhead.in_flight)

    def held() -> None:
        inside()
        time.sleep(0.001)

    def one_thread(i: int) -> None:
        with prioritized(levels[i % 5]):
            for _ in range(20):
                started = time.monotonic()
                try:
                    executor.call(held)
                    outcome = "admitted"
                except BulkheadFullError:
                    outcome = "refused"
                took = time.monotonic() - started
                with lock:
                    outcomes[outcome] += 1
                    outcomes["late"] += took > LATE

    async def one_task(i: int) -> None:
        with prioritized(levels[i % 5]):
            for _ in range(20):
                started = time.monotonic()

                async def call() -> None:
                    inside()
                    await asyncio.sleep(0.001)

                try:
                    await executor.acall(call)
                    outcome = "admitted"
                except BulkheadFullError:
                    outcome = "refused"
                took = time.monotonic() - started
                with lock:
                    outcomes[outcome] += 1
                    outcomes["late"] += took > LATE

    threads_and_tasks(one_thread, one_task)
    assert outcomes["admitted"] + outcomes["refused"] == 2 * 64 * 20
    assert outcomes["admitted"] > 0 and outcomes["late"] == 0
    assert peak <= 8
    assert (bulkhead.in_flight, bulkhead.waiting) == (0, 0)


def test_a_heavy_tenants_waiter_holds_back_no_lighter_one_of_its_rank() -> None:
    places = Places(10, ranks=RANKS)
    for _ in range(7):
        assert places.take(0, *rank(Priority.CRITICAL))
    got: dict[str, bool] = {}
    heavy = threading.Thread(
        target=lambda: got.__setitem__("heavy", places.take(10, *rank(Priority.NORMAL, usage=0.9)))
    )
    heavy.start()  # 0.755 of 10: 7, all taken; in line with the first attempts of its level
    _wait_for_waiting(places, 1)
    assert rank(Priority.NORMAL, usage=0.9)[0] == rank(Priority.NORMAL)[0]
    assert places.take(0, *rank(Priority.NORMAL))  # a light call of the same rank fits: 7 < 8, it goes ahead
    light = threading.Thread(target=lambda: got.__setitem__("light", places.take(10, *rank(Priority.NORMAL))))
    light.start()  # 8 taken: it waits behind the heavy one
    _wait_for_waiting(places, 2)
    places.give()  # 7: the light one fits, the heavy one still does not
    light.join(5)
    assert got == {"light": True}
    places.give()
    places.give()  # 6: now the heavy one fits
    heavy.join(5)
    assert got == {"light": True, "heavy": True}


def test_a_bursty_rate_limiter_keeps_its_share_rule_in_periods_reserved_ahead(clock: FakeClock) -> None:
    limiter = RateLimiter(10, period=1.0, bursty=True, max_wait=2.0, priorities=RULES, clock=clock)
    for _ in range(11):  # this period's 10 permits and one of the next
        limiter._admit(_execution(clock, "critical"))
    admitted = 0
    for _ in range(12):
        with contextlib.suppress(RateLimitedError):
            limiter._admit(_execution(clock, "sheddable"))
            admitted += 1
    assert admitted == 4  # half of the next period's 10, less the critical call already there
    assert limiter._admit(_execution(clock, "critical")) == pytest.approx(1.0)  # the next period still has room


def test_a_limiter_permit_takes_a_priority_by_name() -> None:
    limiter = AdaptiveLimiter(initial_limit=2, min_limit=2, priorities=RULES)
    permit = limiter.acquire_permit("critical")
    with pytest.raises(LimitExceededError):
        limiter.acquire_permit("sheddable")
    permit.drop()
