"""HedgePolicy on the engine alone: sync attempts deferred (raced from the caller's thread) or in threads, async
ones in tasks, real short delays."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from interceptors import Executor, HedgePolicy, LatencyQuantile, RetryBudget, Timeout, TimeoutExceededError
from interceptors.engine._execution import PLAIN, Execution, Semantics
from interceptors.engine._hedge import METHODS_KEPT
from interceptors.events import HedgeCancelled, HedgeStarted, HedgeWon
from interceptors.testing import FakeClock

SLOW = 5.0  # an attempt that would take this long is one the test expects to be cancelled


class Script:
    """Attempt ``n`` (1-based) takes ``delays[n-1]`` seconds, then answers ``n`` or raises ``failures[n]``."""

    def __init__(self, *delays: float, failures: dict[int, Exception] | None = None) -> None:
        self.delays, self.failures = delays, failures or {}
        self.started: list[int] = []
        self.cancelled: list[int] = []
        self.lock = threading.Lock()

    def sync(self, execution: Execution) -> int:
        n = execution.attempts
        with self.lock:
            self.started.append(n)
        stop = threading.Event()
        execution.on_cancel = stop.set
        if stop.wait(self.delays[n - 1]) or execution.abandoned:
            with self.lock:
                self.cancelled.append(n)
            raise asyncio.CancelledError
        if n in self.failures:
            raise self.failures[n]
        return n

    def deferring(self, execution: Execution) -> Any:
        """The attempt as a transport that defers attempts makes it: the caller's own, as ``sync``; a hedge
        (``execution.deferred``), returned at once, ending later."""
        if not execution.deferred:
            return self.sync(execution)
        assert execution.settle is not None
        n = execution.attempts
        with self.lock:
            self.started.append(n)
        return Timed(self, execution, n)

    async def aio(self, execution: Execution) -> int:
        n = execution.attempts
        self.started.append(n)
        stop = asyncio.Event()
        execution.on_cancel = stop.set  # how a transport that can cancel its attempts ends one
        try:
            await asyncio.wait_for(stop.wait(), self.delays[n - 1])
        except asyncio.TimeoutError:
            pass  # its time is up: it answers
        except asyncio.CancelledError:
            self.cancelled.append(n)
            raise
        else:
            self.cancelled.append(n)
            raise asyncio.CancelledError
        if n in self.failures:
            raise self.failures[n]
        return n


class Timed:
    """A deferred attempt of a :class:`Script`: it ends after its delay (a timer thread stands for the transport's),
    or at once when cancelled through its execution."""

    expires = None  # no deadline of the transport's

    def __init__(self, script: Script, execution: Execution, n: int) -> None:
        self.script, self.n, self.cancelled = script, n, False
        self.callbacks: list[Any] = []
        self.done = False
        self.lock = threading.Lock()
        self.timer = threading.Timer(script.delays[n - 1], self._end)
        execution.on_cancel = self._cancel
        self.timer.start()

    def _cancel(self) -> None:
        self.timer.cancel()
        with self.script.lock:
            self.script.cancelled.append(self.n)
        self.cancelled = True
        self._end()

    def _end(self) -> None:
        with self.lock:
            if self.done:
                return
            self.done, callbacks = True, self.callbacks
        for callback in callbacks:
            callback()

    def when_done(self, callback: Any) -> None:
        with self.lock:
            if not self.done:
                self.callbacks.append(callback)
                return
        callback()

    def outcome(self) -> int:
        if self.cancelled:
            raise asyncio.CancelledError
        if self.n in self.script.failures:
            raise self.script.failures[self.n]
        return self.n


class Cancellable(Semantics):
    cancellable_attempts = True  # the caller runs the first attempt itself; the race cancels it through on_cancel


class Deferring(Cancellable):
    defers_attempts = True  # the caller's thread races deferred attempts (see Execution.deferred)


INLINE, DEFERRING = Cancellable(), Deferring()


def run(mode: str, executor: Executor, script: Script) -> Any:
    if mode == "sync-deferred":
        return executor.call_with_execution(script.deferring, semantics=DEFERRING)
    semantics = INLINE if mode.endswith("inline") else PLAIN
    if mode.startswith("sync"):
        return executor.call_with_execution(script.sync, semantics=semantics)
    return asyncio.run(executor.acall_with_execution(script.aio, semantics=semantics))


MODES = pytest.mark.parametrize("mode", ["sync", "aio", "sync-deferred", "aio-inline"])
"""Attempts each in a thread or task of their own (a transport that cannot cancel them), the first in the caller's
thread and the hedges deferred (a transport that defers them, as gRPC's sync adapter), or the first one in the
caller's task (a transport that can cancel them, as gRPC's aio adapter)."""


def events() -> tuple[list[Any], dict[str, Any]]:
    heard: list[Any] = []
    return heard, {"on_hedge": heard.append, "on_hedge_won": heard.append, "on_hedge_cancelled": heard.append}


@MODES
def test_a_fast_answer_starts_no_hedge(mode: str) -> None:
    heard, listeners = events()
    script = Script(0.0)
    assert run(mode, Executor(HedgePolicy(delay=0.2, **listeners)), script) == 1
    assert script.started == [1] and heard == []


@MODES
def test_a_slow_attempt_is_hedged_and_the_loser_cancelled(mode: str) -> None:
    heard, listeners = events()
    script = Script(SLOW, 0.0)
    assert run(mode, Executor(HedgePolicy(delay=0.03, **listeners)), script) == 2
    assert script.started == [1, 2]
    assert [type(e) for e in heard] == [HedgeStarted, HedgeWon, HedgeCancelled]
    started, won, cancelled = heard
    assert started.attempt == 2 and started.in_flight == 1 and 0.025 <= started.elapsed < 1.0
    assert started.failure is None  # the delay passed
    assert won == HedgeWon(2, 2, "HedgePolicy") and cancelled == HedgeCancelled(1, "HedgePolicy")
    if mode != "sync":
        assert script.cancelled == [1]


def test_a_sync_loser_is_cancelled_through_its_execution() -> None:
    script = Script(SLOW, 0.0)
    assert run("sync", Executor(HedgePolicy(delay=0.03)), script) == 2
    deadline = threading.Event()
    for _ in range(100):
        if script.cancelled:
            break
        deadline.wait(0.01)
    assert script.cancelled == [1]


@MODES
def test_hedges_start_one_delay_apart_up_to_max_attempts(mode: str) -> None:
    script = Script(SLOW, SLOW, 0.0, 0.0)
    assert run(mode, Executor(HedgePolicy(delay=0.02, max_attempts=3)), script) == 3
    assert script.started == [1, 2, 3]


@MODES
def test_a_non_fatal_failure_starts_the_next_attempt_at_once(mode: str) -> None:
    heard, listeners = events()
    flaky = ConnectionError("flaky")
    script = Script(0.0, 0.0, failures={1: flaky})
    executor = Executor(HedgePolicy(delay=SLOW, non_fatal=ConnectionError, **listeners))
    assert run(mode, executor, script) == 2
    (started,) = [e for e in heard if isinstance(e, HedgeStarted)]
    assert started.attempt == 2 and started.failure is flaky  # brought forward by the failure


@MODES
def test_a_fatal_failure_ends_the_call_and_cancels_the_others(mode: str) -> None:
    heard, listeners = events()
    script = Script(SLOW, 0.05, failures={2: ValueError("bad request")})
    executor = Executor(HedgePolicy(delay=0.01, non_fatal=ConnectionError, **listeners))
    with pytest.raises(ValueError, match="bad request"):
        run(mode, executor, script)
    assert HedgeCancelled(1, "HedgePolicy") in heard


@MODES
def test_when_every_attempt_fails_the_last_failure_is_raised(mode: str) -> None:
    failures: dict[int, Exception] = {1: ConnectionError("one"), 2: ConnectionError("two")}
    script = Script(0.0, 0.0, failures=failures)
    with pytest.raises(ConnectionError, match="two"):
        run(mode, Executor(HedgePolicy(delay=SLOW, non_fatal=ConnectionError)), script)
    assert script.started == [1, 2]


@MODES
def test_a_do_not_retry_pushback_stops_hedging(mode: str) -> None:
    script = Script(0.0, 0.0, failures={1: ConnectionError("go away")})
    policy = HedgePolicy(delay=SLOW, non_fatal=ConnectionError, pushback=lambda failure: -1.0)
    with pytest.raises(ConnectionError, match="go away"):
        run(mode, Executor(policy), script)
    assert script.started == [1]


@MODES
def test_a_pushback_delays_the_next_attempt(mode: str) -> None:
    heard, listeners = events()
    script = Script(0.0, 0.0, failures={1: ConnectionError("later")})
    policy = HedgePolicy(delay=SLOW, non_fatal=ConnectionError, pushback=lambda failure: 0.15, **listeners)
    assert run(mode, Executor(policy), script) == 2
    assert heard[0].elapsed >= 0.14


@MODES
def test_an_exhausted_budget_stops_hedging_without_failing_the_call(mode: str) -> None:
    budget = RetryBudget.token_bucket(max_tokens=2, token_ratio=0.1)
    budget.record_outcome(failed=True)  # one token left: not above half
    script = Script(0.1, 0.0)
    assert run(mode, Executor(HedgePolicy(delay=0.01, budget=budget)), script) == 1
    assert script.started == [1]


@MODES
def test_a_failure_with_no_hedge_allowed_after_it_ends_the_call(mode: str) -> None:
    """The first attempt fails (non-fatal) and the budget refuses the hedge that would follow: nothing is left to
    wait for, so the call ends with that failure (it used to wait forever)."""
    budget = RetryBudget.token_bucket(max_tokens=2, token_ratio=0.01)
    budget.record_outcome(failed=True)
    script = Script(0.0, 0.0, failures={1: ConnectionError("refused")})
    policy = HedgePolicy(delay=SLOW, non_fatal=ConnectionError, budget=budget)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            run(mode, Executor(policy), script)
        except BaseException as error:
            outcome.append(error)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    caller.join(5)
    assert [str(e) for e in outcome] == ["refused"] and script.started == [1]


@MODES
def test_no_hedge_starts_past_the_deadline(mode: str) -> None:
    script = Script(0.2, 0.0)
    executor = Executor(Timeout(0.1), HedgePolicy(delay=0.15))
    with pytest.raises(TimeoutExceededError):
        run(mode, executor, script)
    assert script.started == [1]


@MODES
def test_each_hedge_is_an_attempt_of_the_inner_policies(mode: str) -> None:
    seen: list[int] = []

    class Count(Script):
        def sync(self, execution: Execution) -> int:
            seen.append(execution.attempts)
            return super().sync(execution)

        def deferring(self, execution: Execution) -> Any:
            if execution.deferred:  # the first attempt is the caller's own: sync() counts it
                seen.append(execution.attempts)
            return super().deferring(execution)

        async def aio(self, execution: Execution) -> int:
            seen.append(execution.attempts)
            return await super().aio(execution)

    assert run(mode, Executor(HedgePolicy(delay=0.01, max_attempts=3)), Count(SLOW, SLOW, 0.0)) == 3
    assert sorted(seen) == [1, 2, 3]


@pytest.mark.parametrize("semantics", [PLAIN, INLINE], ids=["plain", "inline"])
def test_an_async_caller_cancelled_cancels_every_attempt(semantics: Semantics) -> None:
    script = Script(SLOW, SLOW)

    async def main() -> None:
        executor = Executor(HedgePolicy(delay=0.01))
        task = asyncio.ensure_future(executor.acall_with_execution(script.aio, semantics=semantics))
        for _ in range(200):
            if len(script.started) == 2:
                break
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)

    asyncio.run(main())
    assert sorted(script.cancelled) == [1, 2]


@pytest.mark.parametrize("semantics", [PLAIN, DEFERRING], ids=["plain", "deferred"])
def test_a_sync_execution_cancelled_cancels_every_attempt(semantics: Semantics) -> None:
    script = Script(SLOW, SLOW)
    executor = Executor(HedgePolicy(delay=0.01))
    execution = Execution(script.deferring if semantics is DEFERRING else script.sync, executor.clock, semantics)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            executor.run_execution(execution)
        except BaseException as error:
            outcome.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    for _ in range(200):
        if len(script.started) == 2:
            break
        threading.Event().wait(0.005)
    execution.cancel()
    caller.join(2)
    assert [type(e) for e in outcome] == [asyncio.CancelledError]
    for _ in range(200):
        if len(script.cancelled) == 2:
            break
        threading.Event().wait(0.005)
    assert sorted(script.cancelled) == [1, 2]


class Method(Semantics):
    def __init__(self, name: str) -> None:
        self.method = name


def test_latency_quantile_hedges_only_once_it_has_enough_samples() -> None:
    quantile = LatencyQuantile(0.9, window=10, min_samples=5)
    semantics = Method("/pkg.S/M")
    assert quantile.delay(semantics) is None
    for latency in (0.01, 0.02, 0.03, 0.04):
        quantile.record(semantics, latency)
    assert quantile.delay(semantics) is None
    quantile.record(semantics, 0.05)
    assert quantile.delay(semantics) == 0.05
    assert quantile.delay(Method("/pkg.S/M")) == 0.05  # kept by the method's name, whatever describes it
    for _ in range(10):
        quantile.record(semantics, 0.001)
    assert quantile.delay(semantics) == 0.001


def test_latency_quantile_keeps_a_bounded_number_of_methods() -> None:
    quantile = LatencyQuantile(0.5, window=2, min_samples=1)
    for i in range(METHODS_KEPT + 500):
        quantile.record(Method(f"/pkg.S/M{i}"), 0.01)
    assert len(quantile._windows) == METHODS_KEPT
    assert quantile.delay(Method("/pkg.S/M0")) is None  # the first seen, forgotten first
    assert quantile.delay(Method(f"/pkg.S/M{METHODS_KEPT + 499}")) == 0.01


def test_latency_quantile_learns_from_the_attempts_that_answer() -> None:
    clock = FakeClock()
    quantile = LatencyQuantile(0.5, window=4, min_samples=2, minimum=0.002)
    executor = Executor(HedgePolicy(delay=quantile, clock=clock))

    def answer(execution: Execution) -> str:
        clock.advance(0.001)
        return "ok"

    assert executor.call_with_execution(answer) == "ok"
    assert executor.call_with_execution(answer) == "ok"
    assert quantile.delay(Execution(answer, clock).semantics) == 0.002  # 1 ms measured, raised to the minimum


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"delay": -1}, "delay"),
        ({"delay": 0.1, "max_attempts": 1}, "max_attempts"),
        ({"delay": 0.1, "budget": 3}, "budget"),
        ({"delay": 0.1, "non_fatal": 3}, "non_fatal"),
        ({"delay": 0.1, "on_hedge": 3}, "on_hedge"),
    ],
)
def test_bad_options_are_refused_by_name(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HedgePolicy(**options)


@pytest.mark.parametrize(
    ("args", "options", "message"),
    [((1.5,), {}, "quantile"), ((0.5,), {"window": 0}, "window"), ((0.5,), {"min_samples": 10, "window": 5}, "min")],
)
def test_bad_quantiles_are_refused_by_name(args: tuple[Any, ...], options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LatencyQuantile(*args, **options)
