"""Small callables for engine tests, in the spirit of failsafe-go's testutil."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any


class Boom(Exception):
    """A failure the tests raise."""


class CallerMistake(Exception):
    """A failure the tests tell policies not to handle."""


class Calls:
    """Counts calls; fails the first ``failures`` of them with ``error`` (all of them when None), then returns."""

    def __init__(self, failures: int | None = None, result: Any = "ok", error: Callable[[], Exception] = Boom):
        self.failures, self.result, self.error = failures, result, error
        self.count = 0

    def __call__(self, *_: Any) -> Any:
        self.count += 1
        if self.failures is None or self.count <= self.failures:
            raise self.error()
        return self.result

    async def async_call(self, *_: Any) -> Any:
        return self()


def threads_and_tasks(
    thread: Callable[[int], object], task: Callable[[int], Awaitable[object]], count: int = 64
) -> None:
    """``count`` threads running ``thread(i)`` and, at once, ``count`` asyncio tasks awaiting ``task(i)`` on a loop
    of their own; returns when all have ended (each thread given 30 s)."""

    async def tasks() -> None:
        await asyncio.gather(*(task(i) for i in range(count)))

    threads = [threading.Thread(target=thread, args=(i,)) for i in range(count)]
    for started in threads:
        started.start()
    asyncio.run(tasks())
    for started in threads:
        started.join(30)
    assert not any(t.is_alive() for t in threads), "a thread did not end in 30 s"
