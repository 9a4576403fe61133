"""Dry runs of the limiters and the throttle, side by side with the real policy on the same calls (fake clock): the
dry run refuses nothing, and reports a refusal for exactly the calls the real one refuses."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import pytest

from interceptors import (
    AdaptiveLimiter,
    AdaptiveThrottle,
    Bulkhead,
    Executor,
    RateLimiter,
    RejectedError,
)
from interceptors.engine import Policy
from interceptors.testing import FakeClock

from ..support.calls import Boom


def script(seed: int, steps: int) -> list[tuple[str, float]]:
    """Random steps: ("start", pause) starts a call that stays in flight; ("end", pick) ends one of those."""
    draw = random.Random(seed)
    return [(draw.choice(["start", "start", "end"]), draw.random()) for _ in range(steps)]


async def replay(make: Callable[..., Policy], steps: list[tuple[str, float]], clock: FakeClock) -> dict[str, Any]:
    """Run the same steps through a real policy and its dry run, on one fake clock: the indices of the calls each
    refused (the real one by raising, the dry run by reporting), and how many calls the dry run ran."""
    heard: dict[str, list[int]] = {"real": [], "dry": []}
    index = 0

    def listener(which: str) -> Callable[[Any], None]:
        def hear(event: Any) -> None:
            assert event.dry_run is (which == "dry")
            heard[which].append(index)

        return hear

    executors = {which: Executor(make(which == "dry", listener(which))) for which in ("real", "dry")}
    started: list[int] = []  # the calls in flight, as the script sees them (the real one may have rejected some)
    held: dict[tuple[str, int], tuple[asyncio.Event, asyncio.Task[Any]]] = {}
    ran = 0

    async def hold(event: asyncio.Event) -> str:
        nonlocal ran
        ran += 1
        await event.wait()
        return "ok"

    async def end(key: tuple[str, int]) -> None:
        if key in held:
            release, task = held.pop(key)
            release.set()
            await task

    for index, (step, value) in enumerate(steps):
        clock.advance(value / 10)
        if step == "end" and started:
            call = started.pop(int(value * len(started)))
            for which in executors:
                await end((which, call))
            continue
        if step != "start":
            continue
        started.append(index)
        for which, executor in executors.items():
            release = asyncio.Event()
            task = asyncio.ensure_future(executor.acall(hold, release))
            await asyncio.sleep(0)
            if task.done():
                assert isinstance(task.exception(), RejectedError) and which == "real"
            else:
                held[(which, index)] = (release, task)
    for key in list(held):
        await end(key)
    return {"real": heard["real"], "dry": heard["dry"], "ran": ran}


LIMITERS: dict[str, Callable[[FakeClock], Callable[[bool, Any], Policy]]] = {
    "bulkhead": lambda clock: lambda dry, hear: Bulkhead(3, dry_run=dry, on_full=hear, clock=clock),
    "adaptive limiter": lambda clock: (
        lambda dry, hear: AdaptiveLimiter(
            initial_limit=3, min_limit=2, max_limit=6, window=0.2, dry_run=dry, on_rejected=hear, clock=clock
        )
    ),
}


@pytest.mark.parametrize("limiter", LIMITERS.values(), ids=LIMITERS.keys())
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_limiter_in_dry_run_reports_exactly_the_calls_the_real_one_rejects(limiter: Any, seed: int) -> None:
    clock = FakeClock()
    steps = script(seed, 200)
    outcome = asyncio.run(replay(limiter(clock), steps, clock))
    assert outcome["real"], "the script never filled the limiter: it proves nothing"
    assert outcome["dry"] == outcome["real"]
    # the real one ran every call it did not reject, the dry run every call (each run counted once per executor)
    assert outcome["ran"] == 2 * sum(step == "start" for step, _ in steps) - len(outcome["real"])


def test_a_rate_limiter_in_dry_run_reports_exactly_the_calls_the_real_one_rejects(clock: FakeClock) -> None:
    heard: dict[bool, list[int]] = {False: [], True: []}
    draw = random.Random(5)
    limiters = {dry: RateLimiter(5, period=1, dry_run=dry, clock=clock) for dry in (False, True)}
    rejected: list[int] = []
    for index in range(300):
        clock.advance(draw.choice([0.0, 0.05, 0.3]))
        for dry, limiter in limiters.items():
            object.__setattr__(limiter, "on_limited", lambda e, dry=dry, index=index: heard[dry].append(index))
            try:
                assert Executor(limiter).call(lambda: "ok") == "ok"
            except RejectedError:
                assert not dry
                rejected.append(index)
    assert rejected and heard[True] == heard[False] == rejected
    assert clock.sleeps == []  # a dry run never waits either


def test_a_rate_limiter_in_dry_run_takes_the_permit_of_a_call_it_would_delay(clock: FakeClock) -> None:
    limiter = RateLimiter(1, period=1, max_wait=5, dry_run=True, clock=clock)
    executor = Executor(limiter)
    for _ in range(3):
        executor.call(lambda: "ok")
    assert clock.sleeps == []
    assert not limiter.try_acquire()  # the permits of the next two seconds are taken, as the real one would


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_throttle_in_dry_run_reports_exactly_the_calls_the_real_one_throttles(clock: FakeClock, seed: int) -> None:
    heard: dict[bool, list[int]] = {False: [], True: []}
    throttles = {}
    for dry in (False, True):
        throttle = AdaptiveThrottle(k=1.2, min_requests=5, dry_run=dry, clock=clock)
        object.__setattr__(throttle, "_random", random.Random(seed).random)  # the same draws for both
        throttles[dry] = throttle
    draw, index = random.Random(seed), 0
    for index in range(400):
        clock.advance(0.05)
        fails = draw.random() < (0.8 if 100 <= index < 250 else 0.05)

        def call(fails: bool = fails) -> str:
            if fails:
                raise Boom
            return "ok"

        for dry, throttle in throttles.items():
            object.__setattr__(throttle, "on_throttled", lambda e, dry=dry, index=index: heard[dry].append(index))
            try:
                Executor(throttle).call(call)
            except Boom:
                pass
            except RejectedError:
                assert not dry
    assert heard[False], "the sequence never throttled: it proves nothing"
    assert heard[True] == heard[False]
