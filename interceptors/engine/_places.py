"""Places for calls in flight, at most ``limit`` taken at once, handed to waiters in arrival order (FIFO): the state
machine of the bulkhead, the adaptive limiter and load shedding.

With ranks (see :class:`~interceptors.engine._priority.Priorities`), a call of rank ``r`` and share ``s`` takes a
place only while fewer than ``limit * s`` (its whole part, at least one) are taken, and the line is served highest rank
first, in arrival order within a rank: the first waiter whose share lets it in (a waiter whose share does not holds
back no one). Shares must not fall as ranks rise: a rank none of whose waiters may have a place holds back every
lower rank. So no waiter that could have a place is left waiting, and a newcomer that fits goes in at once.

Threads and asyncio tasks (of any loop) may wait for the same places. A place given back goes straight to the
first waiter who can use it (a thread, or a task whose loop is running), so that nobody arriving later can take it
first. The lock is held only to take or give a place, never while a call runs or a waiter waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections import deque


class _Waiter:
    """Someone waiting for a place. Under the places' lock: ``granted`` when one is handed to them, ``queued``
    while they are in the line."""

    __slots__ = ("event", "future", "granted", "loop", "queued", "rank", "refused", "share")

    def __init__(self, loop: asyncio.AbstractEventLoop | None, rank: int, share: float) -> None:
        self.granted = self.refused = False
        self.queued = True
        self.rank, self.share = rank, share
        self.loop = loop
        self.event = threading.Event() if loop is None else None
        self.future: asyncio.Future[None] | None = None if loop is None else loop.create_future()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Places:
    """Places for calls in flight (see the module's doc).

    A task can use a place only while its event loop runs, so a place is handed to a task (``granted``, counted in
    ``in_flight``) only if its loop is running, and the task *claims* it when it resumes (:meth:`_leave`, under the
    lock). Until then the grant is an offer that can be taken back: whenever a place is asked for or given back,
    offers to tasks whose loop no longer runs (stopped or closed before the task resumed) are withdrawn and the
    places handed on, so none is ever lost. A task whose loop is not running when its turn comes is passed over
    (woken without a place). Either way, if its loop runs again, the task wakes, finds no place granted and lines
    up again, at the back, for the rest of its wait. Giving a place back never raises (a loop closed meanwhile is
    a loop not running).
    """

    __slots__ = ("_lines", "_lock", "_offered", "_top", "in_flight", "limit", "max_waiting")

    def __init__(self, limit: int, max_waiting: int | None = None, ranks: int = 1) -> None:
        self._lock = threading.Lock()
        self._lines: tuple[deque[_Waiter], ...] = tuple(deque() for _ in range(ranks))  # waiters, by rank
        self._top = -1  # the highest rank with waiters (-1: none wait)
        self._offered: set[_Waiter] = set()  # tasks granted a place they have not claimed yet
        self.limit = limit
        self.max_waiting = max_waiting  # None: no bound
        self.in_flight = 0

    @property
    def waiting(self) -> int:
        return sum(len(line) for line in self._lines)

    def _cap(self, share: float) -> int:
        """The calls in flight below which a call of ``share`` takes a place."""
        return self.limit if share >= 1.0 else max(1, math.floor(self.limit * share + 1e-9))

    def _try_take(self, rank: int, share: float) -> bool:
        if self._offered and self.in_flight >= self.limit:
            self._hand_over()  # withdraws the offers to loops that stopped meanwhile
        cap = self.limit if share >= 1.0 else self._cap(share)
        if self.in_flight < cap:  # no waiter it fits beside: one that could have a place has it
            self.in_flight += 1
            return True
        return False

    def _enqueue(self, loop: asyncio.AbstractEventLoop | None, rank: int, share: float) -> _Waiter | None:
        if self.max_waiting is not None and self.waiting >= self.max_waiting and not self._bump(rank):
            return None
        waiter = _Waiter(loop, rank, share)
        self._lines[rank].append(waiter)
        self._top = max(self._top, rank)
        return waiter

    def _bump(self, rank: int) -> bool:
        """The line is full: refuse its newest waiter of the lowest rank, if that rank is below ``rank``."""
        lowest = next((r for r, line in enumerate(self._lines) if line), rank)
        if lowest >= rank:
            return False
        waiter = self._lines[lowest].pop()
        waiter.queued, waiter.refused = False, True
        self._lower_top()
        _wake(waiter)
        return True

    def _lower_top(self) -> None:
        while self._top >= 0 and not self._lines[self._top]:
            self._top -= 1

    def _leave(self, waiter: _Waiter) -> bool:
        """A waiter stops waiting (woken, timed out or cancelled); returns whether it holds a place (claimed)."""
        with self._lock:
            self._offered.discard(waiter)
            if waiter.granted:
                return True
            if waiter.queued:
                waiter.queued = False
                self._lines[waiter.rank].remove(waiter)
                self._lower_top()
            return False

    def take(self, timeout: float, rank: int = 0, share: float = 1.0) -> bool:
        """Take a place for a call of ``rank`` and ``share`` (see the module's doc), waiting up to ``timeout``
        seconds in this thread; returns whether one was taken."""
        with self._lock:
            if self._try_take(rank, share):
                return True
            waiter = self._enqueue(None, rank, share) if timeout > 0 else None
        if waiter is None:
            return False
        assert waiter.event is not None
        waiter.event.wait(timeout)
        return self._leave(waiter)

    async def atake(self, timeout: float, rank: int = 0, share: float = 1.0) -> bool:
        """Take a place for a call of ``rank`` and ``share``, waiting up to ``timeout`` seconds in this task;
        returns whether one was taken. Cancelling the task while it waits leaves no place taken."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            with self._lock:
                if self._try_take(rank, share):
                    return True
                waiter = self._enqueue(loop, rank, share) if timeout > 0 else None
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
            if self._leave(waiter) or waiter.refused:
                return waiter.granted
            timeout = deadline - loop.time()  # passed over while the loop stood still: line up again

    def give(self) -> None:
        """Give a place back; the first waiter who can use it gets it. Never raises."""
        with self._lock:
            self.in_flight -= 1
            self._hand_over()

    def resize(self, limit: int) -> None:
        """Change the limit; waiters get the places a larger one frees (calls beyond a smaller one run on)."""
        with self._lock:
            self.limit = limit
            self._hand_over()

    def _hand_over(self) -> None:
        """Withdraw the offers to tasks whose loop stopped, and hand the free places to the line: highest rank first,
        in order, to each waiter whose share allows."""
        if self._offered:
            for withdrawn in [w for w in self._offered if not _runs(w.loop)]:
                self._offered.discard(withdrawn)
                withdrawn.granted = False
                self.in_flight -= 1
        while self._top >= 0 and self.in_flight < self.limit:
            waiter = self._first_fitting(self._lines[self._top])
            if waiter is None:  # none of the highest rank fits: none of a lower one does
                break
            self._lower_top()
            waiter.queued = False
            if waiter.event is not None:
                waiter.granted = True
                self.in_flight += 1
                waiter.event.set()
                continue
            assert waiter.loop is not None and waiter.future is not None
            running = _runs(waiter.loop)
            try:
                waiter.loop.call_soon_threadsafe(_resolve, waiter.future)
            except RuntimeError:  # closed meanwhile: the task will never resume
                continue
            if running:
                waiter.granted = True
                self.in_flight += 1
                self._offered.add(waiter)

    def _first_fitting(self, line: deque[_Waiter]) -> _Waiter | None:
        """The first waiter of ``line`` whose share lets it have a place now, taken out of the line."""
        for waiter in line:
            if waiter.share >= 1.0 or self.in_flight < self._cap(waiter.share):
                line.remove(waiter)
                return waiter
        return None

    def __repr__(self) -> str:
        return f"Places(limit={self.limit}, in_flight={self.in_flight}, waiting={self.waiting})"


def _wake(waiter: _Waiter) -> None:
    """Wake a waiter without a place (refused)."""
    if waiter.event is not None:
        waiter.event.set()
    elif waiter.loop is not None and waiter.future is not None:
        with contextlib.suppress(RuntimeError):  # its loop closed: the task will never resume
            waiter.loop.call_soon_threadsafe(_resolve, waiter.future)


def _runs(loop: asyncio.AbstractEventLoop | None) -> bool:
    return loop is not None and loop.is_running()


def wait_allowed(max_wait: float, remaining: float | None) -> float:
    """How long a call may wait for a place: ``max_wait``, but never past its deadline."""
    return max_wait if remaining is None else max(min(max_wait, remaining), 0.0)
