"""Worker threads: every job runs, a bounded pool queues what it cannot start, a failing job stops no other, and
idle workers end and are replaced."""

from __future__ import annotations

import os
import queue
import struct
import threading
import time

import pytest

from interceptors.engine import _workers
from interceptors.engine._delays import DRAWS
from interceptors.engine._timers import TIMERS
from interceptors.engine._workers import Inbox, Workers


def wait_for(condition: object, timeout: float = 5.0) -> None:
    ends = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < ends, "not in time"
        time.sleep(0.002)


def alive(name: str) -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == name)


def test_a_bounded_pool_runs_every_job_with_no_more_threads_than_its_limit() -> None:
    workers = Workers("test-bounded", limit=2)
    gate, done, peak = threading.Event(), [], [0]

    def job(n: int) -> None:
        peak[0] = max(peak[0], alive("test-bounded"))
        gate.wait(5)
        done.append(n)

    for n in range(50):
        workers.submit(lambda n=n: job(n))  # type: ignore[misc]
    gate.set()
    wait_for(lambda: len(done) == 50)
    assert sorted(done) == list(range(50)) and peak[0] <= 2
    wait_for(lambda: workers.idle == 2)  # both wait for more; nothing counted twice
    workers.submit(lambda: done.append(50))
    wait_for(lambda: len(done) == 51)
    assert alive("test-bounded") == 2


def test_an_unbounded_pool_starts_a_worker_for_each_job_in_flight() -> None:
    workers = Workers("test-unbounded")
    gate, started = threading.Event(), threading.Semaphore(0)

    def job() -> None:
        started.release()
        gate.wait(5)

    for _ in range(8):
        workers.submit(job)
    for _ in range(8):
        assert started.acquire(timeout=5)  # all at once: none waits for another
    gate.set()
    wait_for(lambda: workers.idle == 8)


def test_a_failing_job_stops_no_other(caplog: pytest.LogCaptureFixture) -> None:
    workers = Workers("test-failing", limit=1)
    done: list[int] = []

    def boom() -> None:
        raise RuntimeError("boom")

    workers.submit(boom)
    workers.submit(lambda: done.append(1))
    wait_for(lambda: done == [1])
    assert "a job of test-failing failed" in caplog.text


def test_idle_workers_end_and_new_ones_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_workers, "IDLE_SECONDS", 0.05)
    workers = Workers("test-idle", limit=1)
    done: list[int] = []
    workers.submit(lambda: done.append(1))
    wait_for(lambda: done == [1])
    wait_for(lambda: alive("test-idle") == 0 and workers.idle == 0)
    workers.submit(lambda: done.append(2))
    wait_for(lambda: done == [1, 2])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # the test's own fork
def test_a_forked_child_gets_workers_and_timers_of_its_own() -> None:
    """The parent's threads are not in a forked child: its pools and timer start afresh there (a job promised to an
    idle worker of the parent's, or a timer waiting for the parent's timer thread, would never run)."""
    workers, ran = Workers("test-fork", limit=1), threading.Event()
    workers.submit(ran.set)
    wait_for(lambda: workers.idle == 1)  # the parent's worker waits for more
    TIMERS.after(0.001, ran.clear)
    wait_for(lambda: not ran.is_set())  # the parent's timer thread runs
    pid = os.fork()
    if pid == 0:  # the child: exits 0 only if a worker and a timer run for it
        done, fired = threading.Event(), threading.Event()
        workers.submit(done.set)
        TIMERS.after(0.001, fired.set)
        os._exit(0 if done.wait(5) and fired.wait(5) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # the test's own fork
def test_forked_children_draw_jitter_of_their_own() -> None:
    """The library's random numbers are seeded afresh in a forked child, as the ``random`` module's are: workers
    forked from one parent (a pre-fork server) that retried in step would not spread their retries."""
    read, write = os.pipe()
    children = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:  # the child: writes its draw
            os.write(write, struct.pack("d", DRAWS.random()))
            os._exit(0)
        children.append(pid)
    for pid in children:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    draws = struct.unpack("2d", os.read(read, 16))
    os.close(read)
    os.close(write)
    assert draws[0] != draws[1] and DRAWS.random() not in draws


def test_a_timed_wait_on_an_inbox_ends_when_its_time_is_up() -> None:
    """CPython 3.10's SimpleQueue.get(timeout=...) can wait for ever: taking its lock as the time runs out, it
    computes a negative time left, which its lock takes as no timeout at all. A hedged sync call whose attempts all
    failed waited so for an outcome that would never come."""
    inbox: Inbox[int] = Inbox()
    ended: list[int] = []

    def hand_over_then_wait() -> None:
        timed_out, ends = 0, time.monotonic() + 0.3
        while time.monotonic() < ends:
            inbox.put(1)  # put while nobody waits, then taken: what a hedge's outcome does
            inbox.get()
            try:
                inbox.get(timeout=0.0)
            except queue.Empty:
                timed_out += 1
        ended.append(timed_out)

    waiter = threading.Thread(target=hand_over_then_wait, daemon=True)
    waiter.start()
    waiter.join(5)
    assert ended and ended[0] > 0, "a timed wait on an empty inbox never ended"
