"""32 threads and 32 tasks through one breaker and one retry: exact counts, no deadlock, real overlap."""

from __future__ import annotations

import asyncio
import threading

from interceptors import CircuitBreaker, Executor, RetryPolicy, Timeout
from interceptors.engine import Execution

from ..support.calls import Boom

WORKERS, CALLS = 32, 50


def shared_policies() -> tuple[CircuitBreaker, Executor]:
    # A window big enough to hold every outcome, so the counts can be checked exactly; it never trips.
    breaker = CircuitBreaker(failure_threshold=5000, failure_window=5000)
    return breaker, Executor(RetryPolicy(max_attempts=2), breaker, Timeout(10))


def fails_first_attempt(worker: int, call: int) -> bool:
    return (worker + call) % 2 == 0


def test_threads_share_one_breaker_and_retry() -> None:
    breaker, executor = shared_policies()
    inside = threading.Barrier(WORKERS, timeout=10)  # trips only if all workers are inside the breaker at once
    results: list[tuple[int, int, int]] = []
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            for c in range(CALLS):

                def fn(execution: Execution, c: int = c) -> tuple[int, int, int]:
                    if c == 0 and execution.attempts == 1:
                        inside.wait()
                    if execution.attempts == 1 and fails_first_attempt(w, c):
                        raise Boom
                    return (w, c, execution.attempts)

                results.append(executor.call_with_execution(fn))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "deadlock"
    assert errors == []
    assert sorted((w, c) for w, c, _ in results) == [(w, c) for w in range(WORKERS) for c in range(CALLS)]
    assert all(attempts == (2 if fails_first_attempt(w, c) else 1) for w, c, attempts in results)
    failures = sum(fails_first_attempt(w, c) for w in range(WORKERS) for c in range(CALLS))
    metrics = breaker.metrics
    assert (metrics.executions, metrics.failures) == (WORKERS * CALLS + failures, failures)


async def test_tasks_share_one_breaker_and_retry() -> None:
    breaker, executor = shared_policies()
    arrived = 0
    all_inside = asyncio.Event()

    async def worker(w: int) -> list[tuple[int, int, int]]:
        done = []
        for c in range(CALLS):

            async def fn(execution: Execution, c: int = c) -> tuple[int, int, int]:
                nonlocal arrived
                if c == 0 and execution.attempts == 1:
                    arrived += 1
                    if arrived == WORKERS:
                        all_inside.set()
                    await asyncio.wait_for(all_inside.wait(), 10)
                if execution.attempts == 1 and fails_first_attempt(w, c):
                    raise Boom
                return (w, c, execution.attempts)

            done.append(await executor.acall_with_execution(fn))
        return done

    results = [r for rs in await asyncio.wait_for(asyncio.gather(*map(worker, range(WORKERS))), 30) for r in rs]
    assert len(results) == WORKERS * CALLS
    assert all(attempts == (2 if fails_first_attempt(w, c) else 1) for w, c, attempts in results)
    failures = sum(fails_first_attempt(w, c) for w in range(WORKERS) for c in range(CALLS))
    metrics = breaker.metrics
    assert (metrics.executions, metrics.failures) == (WORKERS * CALLS + failures, failures)


def test_threads_and_tasks_together_on_one_breaker() -> None:
    breaker, executor = shared_policies()

    async def task_calls() -> None:
        async def ok() -> int:
            await asyncio.sleep(0)
            return 1

        await asyncio.gather(*(executor.acall(ok) for _ in range(WORKERS * CALLS)))

    def thread_calls() -> None:
        for _ in range(CALLS):
            executor.call(lambda: 1)

    threads = [threading.Thread(target=thread_calls) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    asyncio.run(task_calls())
    for t in threads:
        t.join(timeout=30)
    assert breaker.metrics.executions == 2 * WORKERS * CALLS
