"""The library's one background event loop, in a daemon thread of its own.

Sync calls whose policies run while their caller goes on (``.future()``) run them there as tasks, on the async
chain: their attempts are the transport's futures, which wake the loop when they end, and backoffs, hedges and
waits are the loop's timers. So calls in flight cost tasks, not threads: the library starts this one thread
whatever the load. What runs there must not block (as on any event loop): the policies' own work does not.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["BACKGROUND", "Background", "Spawned"]


class Spawned:
    """A coroutine started on the background loop; :meth:`cancel` from any thread."""

    __slots__ = ("_cancelled", "_loop", "_task")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._task: asyncio.Task[Any] | None = None
        self._cancelled = False

    def cancel(self) -> None:
        """Cancel the coroutine (before it starts, it never does)."""
        self._cancelled = True
        self._loop.call_soon_threadsafe(self._cancel)

    def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def _start(self, coroutine: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        if not self._cancelled:
            self._task = self._loop.create_task(coroutine())
            self._task.add_done_callback(_retrieve)


class Background:
    """An event loop run by a daemon thread, started when first needed (and again in a forked child)."""

    __slots__ = ("_lock", "_loop", "_name", "_pid")

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None and self._pid == os.getpid():
            return loop
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name=self._name, daemon=True).start()
                self._pid = os.getpid()
            return self._loop

    def spawn(self, coroutine: Callable[[], Coroutine[Any, Any, Any]], context: contextvars.Context) -> Spawned:
        """Run ``coroutine()`` as a task of the loop, in a copy of ``context`` (the caller's context variables)."""
        loop = self.loop
        spawned = Spawned(loop)
        loop.call_soon_threadsafe(spawned._start, coroutine, context=context)
        return spawned


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:  # a bug of ours: the coroutines report their errors
        loop = task.get_loop()
        loop.call_exception_handler({"message": "a background call failed", "exception": task.exception()})


BACKGROUND = Background("interceptors-loop")
