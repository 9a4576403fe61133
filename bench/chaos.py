"""Chaos scenarios: real network and process faults under load, through the recommended and the composed chains,
for sync and aio clients. The CI runs them small (tests/chaos); ``make chaos`` full size.

Each scenario drives paced calls from worker threads (sync) or tasks (aio) through a :class:`FaultProxy` in front of
a backend, switches faults at set times, and returns every call (start, end, outcome) with the switch times, so
that the figures — latency against the deadline, fast failures once a breaker engages, time to the first real
answer after the fault lifts, exceptions other than ``grpc.RpcError`` — are computed the same way at every size.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

import interceptors.aio
from interceptors import (
    AdaptiveThrottle,
    Backoff,
    CircuitBreaker,
    Fallback,
    HedgePolicy,
    RetryBudget,
    RetryPolicy,
    Timeout,
    replaced_by_fallback,
    resilient_channel,
)
from interceptors.engine import Policy
from interceptors.testing import FaultProxy

from .backend import Backend
from .stats import percentile

SLACK = 0.05
"""Seconds a call may run past its deadline."""
RECONNECT_ALLOWANCE = 1.0
"""Seconds allowed beyond two breaker delays for the first real answer after a fault lifts: a restarted process's
start-up and grpc's reconnect backoff (measured and reported apart in ``make chaos``)."""


@dataclass(frozen=True)
class Chaos:
    """Sizes and bounds of a run."""

    deadline: float = 0.3
    breaker_delay: float = 0.5
    workers: int = 4
    rate: float = 40.0  # calls a second, all workers together
    slack: float = SLACK  # seconds a call may end past its deadline


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

SPIKE = 0.3
"""Seconds a latency spike holds an attempt."""
SPIKE_CHAINS: dict[str, tuple[Callable[[Chaos], tuple[Policy, ...]], float]] = {
    "hedge 50 ms x4": (
        lambda c: (
            HedgePolicy(delay=0.05, max_attempts=4, budget=RetryBudget()),
            AdaptiveThrottle(k=3),
            CircuitBreaker(failure_rate=0.8, failure_window=20, delay=c.breaker_delay),
        ),
        0.05 * 3 + SLACK,  # 0.8 % of calls have three slow attempts: the fourth, three delays in, answers
    ),
    "retry after a 50 ms attempt timeout": (
        lambda c: (
            Fallback(),
            RetryPolicy(max_attempts=3, delay=Backoff(0.01, 0.02)),
            CircuitBreaker(failure_threshold=5, delay=c.breaker_delay),
            Timeout(0.05),
        ),
        0.05 * 3 + 0.02 * 2 + SLACK,  # at worst three attempts cut at 50 ms and two backoffs: the fallback answers
    ),
}
"""Chains against a latency spike, and the p99 each keeps to (seconds) by construction, not by luck: with 20 % of
attempts slow at random, 0.8 % of calls have three slow attempts in a row, too close to 1 % for a p99 bound that
a third slow attempt would break."""


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
    lateness: float = 0.0  # the longest the machine held a caller past the time it was paced to start a call

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


def _requests(request: Any) -> Callable[[], Any]:
    """What makes each call's request: ``request`` itself, or, if it is a function, ``request(n)`` for the n-th."""
    if not callable(request):
        return lambda: request
    numbers = itertools.count()
    return lambda: request(next(numbers))


class SyncLoad:
    """Paced calls of ``method`` from worker threads until :meth:`stop`."""

    def __init__(self, method: Any, request: Any, chaos: Chaos) -> None:
        self._method, self._request, self._chaos = method, _requests(request), chaos
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.outcomes: list[Outcome] = []
        self.lateness = 0.0  # see Run.lateness
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
            start = time.monotonic()
            late, next_at = start - next_at, next_at + interval
            try:
                reply, call = self._method.with_call(self._request(), timeout=self._chaos.deadline)
                result = _result(reply, call)
            except BaseException as error:  # what reaches the caller, whatever it is
                result = _failure(error)
            with self._lock:
                self.outcomes.append(Outcome(start, time.monotonic(), result))
                self.lateness = max(self.lateness, late)

    def stop(self) -> list[Outcome]:
        self._stopping.set()
        for thread in self._threads:
            thread.join(10)
        return sorted(self.outcomes, key=lambda o: o.start)


class AioLoad:
    """Paced calls of ``method`` from tasks on ``loop`` until :meth:`stop`."""

    def __init__(self, method: Any, request: Any, chaos: Chaos, loop: asyncio.AbstractEventLoop) -> None:
        self._method, self._request, self._chaos, self._loop = method, _requests(request), chaos, loop
        self._stopping = False
        self.outcomes: list[Outcome] = []
        self.lateness = 0.0  # see Run.lateness
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
            start = time.monotonic()
            self.lateness, next_at = max(self.lateness, start - next_at), next_at + interval
            try:
                call = self._method(self._request(), timeout=self._chaos.deadline)
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
        self,
        kind: str,
        target: str,
        policies: Sequence[Policy],
        loop: asyncio.AbstractEventLoop | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.kind, self._loop = kind, loop
        self._channel: Any
        if kind == "sync":
            self._channel = resilient_channel(target, *policies, options=options)
        else:
            assert loop is not None, "aio channels run on a loop"

            async def make() -> Any:
                return interceptors.aio.resilient_channel(target, *policies, options=options)

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


Step = tuple[float, str, Callable[[], object]]
"""Seconds to wait, the switch's name, what to do."""


def during(load: SyncLoad | AioLoad, run: Run, steps: Sequence[Step]) -> Run:
    """Take each step (seconds to wait first, its name, what to do; the switch is noted as the step begins) while
    ``load`` runs; then stop it."""
    for wait, name, act in steps:
        time.sleep(wait)
        run.note(name)
        act()
    run.outcomes = load.stop()
    run.lateness = load.lateness
    return run


def _noop() -> None:
    pass


def blackhole_steps(proxy: FaultProxy, scale: float = 1.0) -> list[Step]:
    """Healthy, then the network drops everything for 3 s (x ``scale``), then healthy again."""
    return [
        (0.5, "blackhole", proxy.blackhole),
        (3.0 * scale, "lifted", proxy.pass_through),
        (2.0 * scale, "end", _noop),
    ]


def reset_steps(proxy: FaultProxy, scale: float = 1.0) -> list[Step]:
    """Every open connection reset, five times 0.4 s apart (x ``scale`` as many)."""
    return [*((0.4, f"reset {n}", proxy.reset) for n in range(round(5 * scale))), (0.5, "end", _noop)]


def kill_steps(backend: Backend, scale: float = 1.0) -> list[Step]:
    """The backend killed (SIGKILL), restarted on its port 0.5 s later."""
    return [
        (0.5, "killed", backend.kill),
        (0.5, "restarting", backend.restart),
        (0.0, "restarted", _noop),
        (3.0 * scale, "end", _noop),
    ]


def freeze_steps(backend: Backend, scale: float = 1.0) -> list[Step]:
    """The backend frozen (SIGSTOP) for 2 s (x ``scale``), then thawed (SIGCONT)."""
    return [
        (0.5, "stopped", lambda: backend.pause(True)),
        (2.0 * scale, "continued", lambda: backend.pause(False)),
        (2.5 * scale, "end", _noop),
    ]


def graceful_steps(backend: Backend, scale: float = 1.0) -> list[Step]:
    """The backend stopped gracefully (GOAWAY, its grace for calls in flight), then restarted on its port."""
    return [
        (0.5, "stopping", backend.stop),
        (0.0, "restarting", backend.restart),
        (0.0, "restarted", _noop),
        (3.0 * scale, "end", _noop),
    ]


def figures(run: Run, chaos: Chaos, *, lifted: str | None) -> dict[str, Any]:
    """A run's figures, each beside its target: no exception but RpcError; every call ended by its deadline,
    ``chaos.slack`` and the longest the machine held a caller late (``Run.lateness``: a machine that holds the
    load's own threads or loop that long holds a call's end as long; a hung call waits seconds); after ``lifted``,
    the time to the first real answer, and nothing but answers once recovered (see :func:`engagement` for what
    happens after ``fault``)."""
    latencies = [o.latency for o in run.outcomes]
    found: dict[str, Any] = {
        "calls": len(run.outcomes),
        "outcomes": dict(run.counts()),
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies, default=0.0) * 1000,
        "exceptions": run.exceptions(),
        "lateness_ms": run.lateness * 1000,
        "deadline_ms": (chaos.deadline + chaos.slack + run.lateness) * 1000,
    }
    found["within_deadline"] = found["max_ms"] <= found["deadline_ms"]
    if lifted is not None:
        recovery = run.recovery(lifted)
        found["recovery_ms"] = None if recovery is None else recovery * 1000
        found["recovery_bound_ms"] = (2 * chaos.breaker_delay + RECONNECT_ALLOWANCE) * 1000
        found["recovered"] = recovery is not None and recovery <= 2 * chaos.breaker_delay + RECONNECT_ALLOWANCE
        if recovery is not None:
            settled = run.between(run.at(lifted) + recovery + 0.6, run.at("end"))
            found["answers_after_recovery"] = bool(settled) and all(o.result == "OK" for o in settled)
    return found


def engagement(run: Run, chaos: Chaos, fault: str, until: str) -> dict[str, Any]:
    """When the breaker or throttle engaged after ``fault`` (its first fast failure), and how many calls were slow
    from then until ``until`` against the probes the breaker allows (one each time it half-opens)."""
    fast = chaos.deadline / 2
    engaged = run.engaged(fault, fast=fast)
    if engaged is None:
        return {"engaged_ms": None, "slow_after": None, "probes_allowed": None, "fails_fast": False}
    end = run.at(until)
    slow = [o for o in run.between(engaged, end) if o.latency >= fast]
    allowed = (end - engaged) / chaos.breaker_delay + 1
    return {
        "engaged_ms": (engaged - run.at(fault)) * 1000,
        "slow_after": len(slow),
        "probes_allowed": allowed,
        "fails_fast": len(slow) <= allowed,
    }
