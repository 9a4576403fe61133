"""Worker threads, one per job in flight (or at most ``limit``, the other jobs waiting their turn), reused while
idle, never joined at exit.

Sync streams run their policies in one until they commit (their first message can only be waited for by a
blocking read); a HedgePolicy runs each sync attempt that cannot be deferred in one. Idle workers wait a while for
more work, then end. They are daemon threads, as grpc's own are: a call still waiting out a backoff does not
keep the interpreter from exiting.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import weakref
from collections.abc import Callable

_log = logging.getLogger("interceptors")

if sys.version_info >= (3, 11):
    Inbox = queue.SimpleQueue
else:  # pragma: no cover
    Inbox = queue.Queue
"""A queue for one thread to wait on with a timeout. Not CPython 3.10's SimpleQueue: its ``get(timeout=...)`` can
wait for ever (it takes its lock as the time runs out, computes a negative time left, and its lock takes that for
no timeout: Modules/_queuemodule.c, rewritten in 3.11); ``queue.Queue`` waits on a Condition, whose lock does not."""

IDLE_SECONDS = 30.0
"""How long an idle worker waits for another call before it ends."""


class Workers:
    """Worker threads for jobs. ``idle`` counts the workers waiting for a job that no submit has promised them yet,
    and ``backlog`` the jobs queued while every worker was busy and ``limit`` reached: the next worker done takes
    one (rather than count itself idle)."""

    __slots__ = ("__weakref__", "_alive", "_backlog", "_idle", "_jobs", "_limit", "_lock", "_name")

    def __init__(self, name: str, limit: int | None = None) -> None:
        self._name, self._limit = name, limit
        self._start_afresh()
        _ALL.add(self)

    def _start_afresh(self) -> None:
        """No worker, no job: when made, and in a child forked from this process (whose workers it does not have)."""
        self._jobs: Inbox[Callable[[], None]] = Inbox()
        self._lock = threading.Lock()
        self._idle = self._backlog = self._alive = 0

    @property
    def idle(self) -> int:
        """Workers waiting for a job (they end after ``IDLE_SECONDS`` without one)."""
        return self._idle

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job`` in a worker thread: an idle one, or a new one when none is idle (and fewer than ``limit`` are
        alive; else the job waits for the first worker done)."""
        with self._lock:
            self._jobs.put(job)
            if self._idle:
                self._idle -= 1  # promised to a waiting worker
                return
            if self._limit is not None and self._alive >= self._limit:
                self._backlog += 1
                return
            self._alive += 1  # a new worker, for this job
        threading.Thread(target=self._work, name=self._name, daemon=True).start()

    def _work(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._jobs.empty():  # nothing was promised to it as its wait ended
                        self._idle -= 1
                        self._alive -= 1
                        return
                continue
            try:
                job()
            except BaseException:  # a worker outlives its jobs: the others queued behind it must run
                _log.exception("a job of %s failed", self._name)
            del job  # an idle worker keeps nothing of the call it ran alive
            with self._lock:
                if self._backlog:
                    self._backlog -= 1  # a queued job is this worker's next
                else:
                    self._idle += 1


_ALL: weakref.WeakSet[Workers] = weakref.WeakSet()


def _forked() -> None:
    for workers in list(_ALL):
        workers._start_afresh()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_forked)

FUTURES = Workers("interceptors-future")
"""The threads sync streams run their policies in until they commit."""
