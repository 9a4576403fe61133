"""One thread that runs callbacks at given times, for sync callers busy with something else (a hedge is due while
the caller's thread waits on its first attempt).

Scheduling takes a heap push under a lock; most timers are cancelled before they are due (a call that answered in
time), which only marks them: the thread drops them when it next wakes. Callbacks run in the timer thread and must
be quick (hand the work to a worker).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable

__all__ = ["TIMERS", "Timer", "Timers"]

_log = logging.getLogger("interceptors")


class Timer:
    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[], object]) -> None:
        self.callback: Callable[[], object] | None = callback

    def cancel(self) -> None:
        self.callback = None  # also lets go of what the callback holds


class Timers:
    """The heap holds (when, order, timer): tuples compare in C, a timer of its own would compare in Python."""

    __slots__ = ("_heap", "_lock", "_name", "_order", "_ready", "_thread")

    def __init__(self, name: str) -> None:
        self._name = name
        self._start_afresh()

    def _start_afresh(self) -> None:
        """No timer, no thread: when made, and in a child forked from this process (whose thread it does not have)."""
        self._heap: list[tuple[float, int, Timer]] = []
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def after(self, seconds: float, callback: Callable[[], object]) -> Timer:
        """Run ``callback`` in the timer thread ``seconds`` from now, unless the returned timer is cancelled."""
        timer = Timer(callback)
        entry = (time.monotonic() + seconds, next(self._order), timer)
        with self._lock:  # the condition's own lock, taken without its Python methods
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                    self._thread.start()
                self._ready.notify()
        return timer

    def _run(self) -> None:
        heap, ready = self._heap, self._ready
        while True:
            with ready:
                while True:
                    while heap and heap[0][2].callback is None:
                        heapq.heappop(heap)
                    if not heap:
                        ready.wait()
                        continue
                    wait = heap[0][0] - time.monotonic()
                    if wait <= 0:
                        callback = heapq.heappop(heap)[2].callback
                        break
                    ready.wait(wait)
            if callback is not None:
                try:
                    callback()
                except Exception:
                    _log.exception("a timer's callback failed")


TIMERS = Timers("interceptors-timer")
if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=TIMERS._start_afresh)
