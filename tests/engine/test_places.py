"""Places (the state machine of Bulkhead and AdaptiveLimiter): a place handed to an asyncio task whose event loop
stopped, or closed, is never lost, and giving a place back never raises; real loops on threads of their own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from interceptors import AdaptiveLimiter, Bulkhead, Executor

from ..support.clients import wait_until

Limited = Bulkhead | AdaptiveLimiter

POLICIES: dict[str, Callable[[], Limited]] = {
    "bulkhead": lambda: Bulkhead(1, max_wait=5),
    "limiter": lambda: AdaptiveLimiter(min_limit=1, initial_limit=1, max_limit=1, max_wait=5, max_queued=10),
}


@pytest.fixture(params=list(POLICIES))
def policy(request: pytest.FixtureRequest) -> Limited:
    return POLICIES[request.param]()


def waiting(policy: Limited) -> int:
    return policy.waiting if isinstance(policy, Bulkhead) else policy.queued


class Loop:
    """An event loop running on a thread of its own, that a test stops, runs again, and closes."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread: threading.Thread | None = None
        self.start()

    def start(self) -> None:
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        wait_until(self.loop.is_running)

    def stop(self) -> None:
        assert self.thread is not None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        assert not self.loop.is_running()

    def submit(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)


class Caller:
    """A sync call through ``policy`` on a thread of its own; ``hold`` keeps its place until ``release``."""

    def __init__(self, policy: Limited, hold: bool = False, run: Callable[[], Any] = lambda: None) -> None:
        self.gate, self.running = threading.Event(), threading.Event()
        self.outcome: list[object] = []

        def call() -> object:
            self.running.set()
            if hold:
                self.gate.wait(5)
            return run()

        def work() -> None:
            try:
                self.outcome.append(Executor(policy).call(call))
            except BaseException as error:  # kept for the test to look at
                self.outcome.append(error)

        self.thread = threading.Thread(target=work, daemon=True)
        self.thread.start()

    def release(self) -> object:
        self.gate.set()
        self.thread.join(10)
        assert self.outcome, "the call did not end"
        return self.outcome[0]


def later_call(policy: Limited) -> object:
    """A later caller: returns how many places were taken while it ran (its own included)."""
    return Executor(policy).call(lambda: policy.in_flight)


async def in_task(policy: Limited, ran: list[str]) -> None:
    async def run() -> None:
        ran.append(f"task with {policy.in_flight} in flight")

    await Executor(policy).acall(run)


def test_a_place_given_while_the_waiters_loop_is_stopped_goes_to_the_next_waiter(policy: Limited) -> None:
    holder = Caller(policy, hold=True)
    assert holder.running.wait(5)
    loop, ran = Loop(), list[str]()
    task = loop.submit(in_task(policy, ran))
    wait_until(lambda: waiting(policy) == 1)
    loop.stop()  # stopped, not closed: its task cannot take a place until the loop runs again
    behind = Caller(policy, run=lambda: ran.append("thread"))
    wait_until(lambda: waiting(policy) == 2)
    assert holder.release() is None
    behind.release()
    assert ran == ["thread"], behind.outcome  # the thread behind it got the place
    assert policy.in_flight == 0 and waiting(policy) == 0  # the stopped loop's task holds nothing
    assert later_call(policy) == 1
    loop.start()  # its loop runs again: the task lines up again and gets a place as anyone would
    task.result(5)
    assert ran == ["thread", "task with 1 in flight"]
    assert policy.in_flight == 0 and waiting(policy) == 0
    loop.stop()
    loop.loop.close()


def test_a_task_whose_loop_ran_again_waits_for_a_place_it_never_received(policy: Limited) -> None:
    holder = Caller(policy, hold=True)
    assert holder.running.wait(5)
    loop, ran = Loop(), list[str]()
    task = loop.submit(in_task(policy, ran))
    wait_until(lambda: waiting(policy) == 1)
    loop.stop()
    holder.release()
    assert policy.in_flight == 0 and waiting(policy) == 0  # back to the pool
    lines_up_again_behind_another_caller(policy, loop, task, ran)


def lines_up_again_behind_another_caller(policy: Limited, loop: Loop, task: Any, ran: list[str]) -> None:
    """Another caller takes the place while the task's loop stands still: the task, its loop started again, waits
    for the place once more, then runs."""
    second = Caller(policy, hold=True)
    assert second.running.wait(5), second.outcome
    assert policy.in_flight == 1
    loop.start()
    wait_until(lambda: waiting(policy) == 1)  # the task waits again: the place is the second caller's
    assert ran == [] and policy.in_flight == 1
    second.release()
    task.result(5)
    assert ran == ["task with 1 in flight"] and policy.in_flight == 0 and waiting(policy) == 0
    loop.stop()
    loop.loop.close()


def test_giving_a_place_back_when_the_waiters_loop_is_closed_neither_raises_nor_loses_it(policy: Limited) -> None:
    holder = Caller(policy, hold=True)
    assert holder.running.wait(5)
    loop = Loop()
    loop.submit(in_task(policy, []))
    wait_until(lambda: waiting(policy) == 1)
    loop.stop()
    loop.loop.close()
    assert holder.release() is None  # giving the place back did not raise
    assert policy.in_flight == 0 and waiting(policy) == 0
    assert later_call(policy) == 1


def handed_over_as_the_loop_stops(policy: Limited) -> tuple[Loop, Any, list[str]]:
    """The race: the place is handed to the task while its loop runs (busy in a callback), and the loop stops
    before the task resumes. Returns the stopped loop, the task's future, and what the task ran."""
    holder = Caller(policy, hold=True)
    assert holder.running.wait(5)
    loop, ran = Loop(), list[str]()
    task = loop.submit(in_task(policy, ran))
    wait_until(lambda: waiting(policy) == 1)
    busy, proceed = threading.Event(), threading.Event()

    def block_then_stop() -> None:
        busy.set()
        proceed.wait(5)
        loop.loop.stop()  # this turn ends the loop: the task's wake-up, scheduled meanwhile, does not run

    loop.loop.call_soon_threadsafe(block_then_stop)
    assert busy.wait(5)
    assert holder.release() is None  # handed to the task, its loop running
    assert waiting(policy) == 0 and ran == []
    proceed.set()
    assert loop.thread is not None
    loop.thread.join(5)
    assert not loop.loop.is_running() and ran == []
    return loop, task, ran


def test_a_place_handed_over_as_the_loop_stops_comes_back_when_the_loop_is_closed(policy: Limited) -> None:
    loop, _, ran = handed_over_as_the_loop_stops(policy)
    loop.loop.close()
    assert later_call(policy) == 1  # the next caller takes the place back
    assert policy.in_flight == 0 and waiting(policy) == 0 and ran == []


def test_a_place_handed_over_as_the_loop_stops_serves_one_caller_at_a_time(policy: Limited) -> None:
    loop, task, ran = handed_over_as_the_loop_stops(policy)
    lines_up_again_behind_another_caller(policy, loop, task, ran)  # the place was taken back: it lines up again


def test_a_place_handed_over_as_the_loop_stops_is_the_tasks_when_its_loop_runs_again(policy: Limited) -> None:
    loop, task, ran = handed_over_as_the_loop_stops(policy)
    loop.start()  # nobody needed the place meanwhile: the task takes it
    task.result(5)
    assert ran == ["task with 1 in flight"] and policy.in_flight == 0 and waiting(policy) == 0
    loop.stop()
    loop.loop.close()
