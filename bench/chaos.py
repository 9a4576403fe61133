"""Chaos scenarios: real network and process faults under load, through the recommended and the composed chains,
for sync and aio clients. The CI runs them small (tests/chaos); ``make chaos`` full size.

Each scenario drives paced calls from worker threads (sync) or tasks (aio) through a :class:`FaultProxy` in front of
a backend, switches faults at set times, and returns every call (start, end, outcome) with the switch times, so
that the figures — latency against the deadline, fast failures once a breaker engages, time to the first real
answer after the fault lifts, exceptions other than ``grpc.RpcError`` — are computed the same way at every size.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

import interceptors.aio
from interceptors import (
    AdaptiveThrottle,
    Backoff,
    CircuitBreaker,
    Fallback,
    RetryBudget,
    RetryPolicy,
    Timeout,
    replaced_by_fallback,
    resilient_channel,
)
from interceptors.engine import Policy


@dataclass(frozen=True)
class Chaos:
    """Sizes and bounds of a run."""

    deadline: float = 0.3
    breaker_delay: float = 0.5
    workers: int = 4
    rate: float = 40.0  # calls a second, all workers together


def recommended(chaos: Chaos) -> tuple[Policy, ...]:
    """The README's recommended chain for a unary backend (no fallback: answers are real or errors)."""
    retry = RetryPolicy(max_attempts=3, delay=Backoff(0.02, 0.1), budget=RetryBudget())
    breaker = CircuitBreaker(failure_rate=0.8, failure_window=20, delay=chaos.breaker_delay, pushback=True)
    return retry, AdaptiveThrottle(k=3), breaker


def composed(chaos: Chaos) -> tuple[Policy, ...]:
    """The article's chain: fallback > retry > breaker > timeout."""
    breaker = CircuitBreaker(failure_threshold=5, delay=chaos.breaker_delay)
    return Fallback(), RetryPolicy(max_attempts=3, delay=Backoff(0.02, 0.1)), breaker, Timeout(chaos.deadline)


CHAINS: dict[str, Callable[[Chaos], tuple[Policy, ...]]] = {"recommended": recommended, "composed": composed}


@dataclass(frozen=True)
class Outcome:
    """One call: when it started and ended (monotonic seconds), and how: "OK", "fallback", a status code's name,
    or "exception:<type>" for anything but a grpc.RpcError reaching the caller."""

    start: float
    end: float
    result: str

    @property
    def latency(self) -> float:
        return self.end - self.start


@dataclass
class Run:
    """A scenario's calls and the times its faults switched."""

    outcomes: list[Outcome] = field(default_factory=list)
    switches: list[tuple[float, str]] = field(default_factory=list)

    def note(self, what: str) -> None:
        self.switches.append((time.monotonic(), what))

    def at(self, what: str) -> float:
        return next(t for t, name in self.switches if name == what)

    def between(self, start: float, end: float) -> list[Outcome]:
        return [o for o in self.outcomes if start <= o.start < end]

    def counts(self) -> Counter[str]:
        return Counter(o.result for o in self.outcomes)

    def exceptions(self) -> list[str]:
        """Outcomes that were neither an answer nor a grpc.RpcError."""
        return [o.result for o in self.outcomes if o.result.startswith("exception:")]

    def engaged(self, since: str, fast: float) -> float | None:
        """When the first call after the switch ``since`` failed in less than ``fast`` seconds (a breaker or
        throttle stopped it), or None."""
        at = self.at(since)
        return next((o.start for o in self.outcomes if o.start >= at and o.result != "OK" and o.latency < fast), None)

    def recovery(self, since: str) -> float | None:
        """Seconds from the switch ``since`` to the first real answer of a call started after it."""
        at = self.at(since)
        ends = [o.end for o in self.outcomes if o.start >= at and o.result == "OK"]
        return min(ends) - at if ends else None


def _result(reply: Any, call: Any) -> str:
    return "fallback" if replaced_by_fallback(call.trailing_metadata()) else "OK"


def _failure(error: BaseException) -> str:
    if isinstance(error, grpc.RpcError):
        return error.code().name if callable(getattr(error, "code", None)) else "RpcError"
    return f"exception:{type(error).__name__}"


class SyncLoad:
    """Paced calls of ``method`` from worker threads until :meth:`stop`."""

    def __init__(self, method: Any, request: Any, chaos: Chaos) -> None:
        self._method, self._request, self._chaos = method, request, chaos
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.outcomes: list[Outcome] = []
        self._threads = [threading.Thread(target=self._work, args=(i,), daemon=True) for i in range(chaos.workers)]

    def start(self) -> SyncLoad:
        for thread in self._threads:
            thread.start()
        return self

    def _work(self, index: int) -> None:
        interval = self._chaos.workers / self._chaos.rate
        next_at = time.monotonic() + index * interval / self._chaos.workers
        while not self._stopping.is_set():
            self._stopping.wait(max(0.0, next_at - time.monotonic()))
            if self._stopping.is_set():
                return
            next_at += interval
            start = time.monotonic()
            try:
                reply, call = self._method.with_call(self._request, timeout=self._chaos.deadline)
                result = _result(reply, call)
            except BaseException as error:  # what reaches the caller, whatever it is
                result = _failure(error)
            with self._lock:
                self.outcomes.append(Outcome(start, time.monotonic(), result))

    def stop(self) -> list[Outcome]:
        self._stopping.set()
        for thread in self._threads:
            thread.join(10)
        return sorted(self.outcomes, key=lambda o: o.start)


class AioLoad:
    """Paced calls of ``method`` from tasks on ``loop`` until :meth:`stop`."""

    def __init__(self, method: Any, request: Any, chaos: Chaos, loop: asyncio.AbstractEventLoop) -> None:
        self._method, self._request, self._chaos, self._loop = method, request, chaos, loop
        self._stopping = False
        self.outcomes: list[Outcome] = []
        self._tasks: list[Any] = []

    def start(self) -> AioLoad:
        async def spawn() -> list[asyncio.Task[None]]:
            return [asyncio.ensure_future(self._work(i)) for i in range(self._chaos.workers)]

        self._tasks = asyncio.run_coroutine_threadsafe(spawn(), self._loop).result(10)
        return self

    async def _work(self, index: int) -> None:
        interval = self._chaos.workers / self._chaos.rate
        next_at = time.monotonic() + index * interval / self._chaos.workers
        while not self._stopping:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if self._stopping:
                return
            next_at += interval
            start = time.monotonic()
            try:
                call = self._method(self._request, timeout=self._chaos.deadline)
                reply = await call
                result = "fallback" if replaced_by_fallback(await call.trailing_metadata()) else "OK"
                del reply
            except asyncio.CancelledError:
                raise
            except BaseException as error:
                result = _failure(error)
            self.outcomes.append(Outcome(start, time.monotonic(), result))

    def stop(self) -> list[Outcome]:
        self._stopping = True

        async def join() -> None:
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(join(), self._loop).result(30)
        return sorted(self.outcomes, key=lambda o: o.start)


class Channel:
    """A resilient channel of either kind to ``target`` through ``policies``, and a load on one of its methods."""

    def __init__(
        self, kind: str, target: str, policies: Sequence[Policy], loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        self.kind, self._loop = kind, loop
        self._channel: Any
        if kind == "sync":
            self._channel = resilient_channel(target, *policies)
        else:
            assert loop is not None, "aio channels run on a loop"

            async def make() -> Any:
                return interceptors.aio.resilient_channel(target, *policies)

            self._channel = asyncio.run_coroutine_threadsafe(make(), loop).result(10)

    def ready(self, timeout: float = 10) -> None:
        if self.kind == "sync":
            grpc.channel_ready_future(self._channel).result(timeout)
        else:
            assert self._loop is not None
            channel = self._channel
            asyncio.run_coroutine_threadsafe(asyncio.wait_for(channel.channel_ready(), timeout), self._loop).result()

    def load(self, stub: Callable[[Any], Any], method: str, request: Any, chaos: Chaos) -> SyncLoad | AioLoad:
        bound = getattr(stub(self._channel), method)
        if self.kind == "sync":
            return SyncLoad(bound, request, chaos).start()
        assert self._loop is not None
        return AioLoad(bound, request, chaos, self._loop).start()

    def close(self) -> None:
        if self.kind == "sync":
            self._channel.close()
        else:
            assert self._loop is not None
            asyncio.run_coroutine_threadsafe(self._channel.close(), self._loop).result(10)


def during(load: SyncLoad | AioLoad, run: Run, steps: Sequence[tuple[float, str, Callable[[], object]]]) -> Run:
    """Take each step (seconds to wait first, its name, what to do; the switch is noted as the step begins) while
    ``load`` runs; then stop it."""
    for wait, name, act in steps:
        time.sleep(wait)
        run.note(name)
        act()
    run.outcomes = load.stop()
    return run


def waited(awaitable: Awaitable[Any], loop: asyncio.AbstractEventLoop) -> Any:
    async def wrapped() -> Any:
        return await awaitable

    return asyncio.run_coroutine_threadsafe(wrapped(), loop).result(30)
