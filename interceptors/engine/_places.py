"""Places for calls in flight, at most ``limit`` taken at once, handed to waiters in arrival order (FIFO): the state
machine of the bulkhead and the adaptive limiter.

Threads and asyncio tasks (of any loop) may wait for the same places. A place given back goes straight to the
first waiter, so that nobody arriving later can take it first. The lock is held only to take or give a place,
never while a call runs or a waiter waits.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque


class _Waiter:
    """Someone waiting for a place: ``granted`` is set (under the places' lock) when one is handed to them."""

    __slots__ = ("event", "future", "granted", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.granted = False
        self.loop = loop
        self.event = threading.Event() if loop is None else None
        self.future: asyncio.Future[None] | None = None if loop is None else loop.create_future()

    def wake(self) -> None:
        if self.event is not None:
            self.event.set()
        else:
            assert self.loop is not None and self.future is not None
            self.loop.call_soon_threadsafe(_resolve, self.future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Places:
    __slots__ = ("_lock", "_waiters", "in_flight", "limit", "max_waiting")

    def __init__(self, limit: int, max_waiting: int | None = None) -> None:
        self._lock = threading.Lock()
        self._waiters: deque[_Waiter] = deque()
        self.limit = limit
        self.max_waiting = max_waiting  # None: no bound
        self.in_flight = 0

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _try_take(self) -> bool:
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return True
        return False

    def _enqueue(self, loop: asyncio.AbstractEventLoop | None) -> _Waiter | None:
        if self.max_waiting is not None and len(self._waiters) >= self.max_waiting:
            return None
        waiter = _Waiter(loop)
        self._waiters.append(waiter)
        return waiter

    def _leave(self, waiter: _Waiter) -> bool:
        """A waiter stops waiting; returns whether it holds a place after all (handed to it meanwhile)."""
        with self._lock:
            if waiter.granted:
                return True
            self._waiters.remove(waiter)
            return False

    def take(self, timeout: float) -> bool:
        """Take a place, waiting up to ``timeout`` seconds in this thread; returns whether one was taken."""
        with self._lock:
            if self._try_take():
                return True
            waiter = self._enqueue(None) if timeout > 0 else None
        if waiter is None:
            return False
        assert waiter.event is not None
        waiter.event.wait(timeout)
        return self._leave(waiter)

    async def atake(self, timeout: float) -> bool:
        """Take a place, waiting up to ``timeout`` seconds in this task; returns whether one was taken. Cancelling
        the task while it waits leaves no place taken."""
        with self._lock:
            if self._try_take():
                return True
            waiter = self._enqueue(asyncio.get_running_loop()) if timeout > 0 else None
        if waiter is None:
            return False
        assert waiter.future is not None
        try:
            await asyncio.wait_for(waiter.future, timeout)
        except asyncio.TimeoutError:
            return self._leave(waiter)
        except asyncio.CancelledError:
            if self._leave(waiter):
                self.give()  # handed over as the task was cancelled: pass it on
            raise
        return True

    def give(self) -> None:
        """Give a place back; the first waiter gets it."""
        with self._lock:
            self.in_flight -= 1
            self._hand_over()

    def resize(self, limit: int) -> None:
        """Change the limit; waiters get the places a larger one frees (calls beyond a smaller one run on)."""
        with self._lock:
            self.limit = limit
            self._hand_over()

    def _hand_over(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            waiter = self._waiters.popleft()
            waiter.granted = True
            self.in_flight += 1
            waiter.wake()

    def __repr__(self) -> str:
        return f"Places(limit={self.limit}, in_flight={self.in_flight}, waiting={self.waiting})"


def wait_allowed(max_wait: float, remaining: float | None) -> float:
    """How long a call may wait for a place: ``max_wait``, but never past its deadline."""
    return max_wait if remaining is None else max(min(max_wait, remaining), 0.0)
