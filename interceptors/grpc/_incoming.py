"""The incoming call a server handler is answering, as the ambient context of everything the handler does.

:class:`~interceptors.server.ContextPropagation` puts it in a context variable for the handler's duration; the
client core reads it when a call starts, so that an outgoing call made on the incoming call's behalf (in the
handler, or in a thread or task that carries its context) ends by the incoming deadline less a reserve, and is
cancelled when the incoming call is.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from ..engine._priority import Priority

__all__ = ["INCOMING", "IncomingCall", "cancel_task", "time_left", "wire_unit"]

NO_DEADLINE = 1e9
"""Seconds beyond which a time remaining means "no deadline" (grpc's sync server reports about 9e18 then)."""

_log = logging.getLogger("interceptors")
_LOCK = threading.Lock()
"""Guards every incoming call's state: each holds it only to read or change a few fields."""

Cancel = Callable[[], object]


class IncomingCall:
    """A call being answered: when it must end, how long its server keeps for itself, and who to tell when it is
    cancelled.

    ``deadline`` is on ``time.monotonic()`` (None: no deadline), one wire unit (see :func:`wire_unit`) before what
    grpc reports, as the caller's grpc may have rounded its timeout up by as much. Outgoing calls made on its
    behalf get at most ``deadline - reserve``. It is cancelled when its caller cancels it or its deadline passes
    while the handler runs; once the handler has ended (``end()``), nothing cancels it any more.
    """

    __slots__ = ("_cancels", "cancelled", "deadline", "ended", "priority", "reserve", "task")

    def __init__(
        self,
        time_remaining: float | None,
        reserve: float,
        task: asyncio.Task[Any] | None = None,
        priority: Priority | None = None,
    ) -> None:
        time_remaining = time_left(time_remaining)
        if time_remaining is None:
            self.deadline: float | None = None
        else:  # grpc may have rounded the caller's timeout up by a unit on the wire: count on the unit less
            self.deadline = time.monotonic() + time_remaining - wire_unit(time_remaining)
        self.reserve, self.priority = reserve, priority
        """``priority``: what the server believes of the call's (None: it claims none); outgoing calls made on its
        behalf have it, unless their context says otherwise (see :func:`~interceptors.prioritized`)."""
        self.cancelled = self.ended = False
        self.task = task
        """The aio handler's task (None for a sync handler): grpc cancels it with the call, and what it awaits."""
        self._cancels: dict[int, Cancel] | None = None

    def outgoing_remaining(self) -> float | None:
        """Seconds an outgoing call may take from now (may be <= 0), or None without a deadline."""
        return None if self.deadline is None else self.deadline - self.reserve - time.monotonic()

    def on_cancel(self, cancel: Cancel) -> Callable[[], None]:
        """Call ``cancel`` when this call is cancelled (at once if it has been); returns a function that forgets it."""
        with _LOCK:
            if not self.cancelled:
                key = id(cancel)
                if self._cancels is None:
                    self._cancels = {}
                self._cancels[key] = cancel
                return lambda: self._forget(key)
        _call(cancel)
        return _nothing

    def _forget(self, key: int) -> None:
        with _LOCK:
            if self._cancels is not None:
                self._cancels.pop(key, None)

    def cancel(self) -> None:
        """The call was cancelled (caller gone, deadline passed): cancel what was registered, unless it has ended."""
        with _LOCK:
            if self.cancelled or self.ended:
                return
            self.cancelled = True
            cancels, self._cancels = list((self._cancels or {}).values()), None
        for cancel in cancels:
            _call(cancel)

    def end(self) -> None:
        """The handler has ended: its call's end cancels nothing."""
        self.ended = True  # read under the lock by cancel(), which then cancels nothing


def time_left(time_remaining: float | None) -> float | None:
    """A servicer context's ``time_remaining()`` in seconds, None without a deadline (sync servers then say ~9e18)."""
    return None if time_remaining is None or time_remaining > NO_DEADLINE else float(time_remaining)


def wire_unit(seconds: float) -> float:
    """The unit in which grpc sends a timeout of ``seconds`` (it keeps three significant figures of milliseconds):
    1 ms below a second, 10 ms below 10 s, 100 ms below 100 s, ..."""
    unit = 0.001
    while seconds >= unit * 1000:
        unit *= 10
    return unit


def _call(cancel: Cancel) -> None:
    try:
        cancel()
    except Exception:
        _log.exception("cancelling an outgoing call failed")


def _nothing() -> None:
    return None


INCOMING: ContextVar[IncomingCall | None] = ContextVar("interceptors_incoming_call", default=None)
"""The incoming call the current handler answers (None outside a handler with context propagation)."""


def cancel_task(task: asyncio.Task[object]) -> Cancel:
    """A function that cancels ``task``, from any thread (on its loop's thread: at once)."""
    loop = task.get_loop()

    def cancel() -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            task.cancel()
        else:
            loop.call_soon_threadsafe(task.cancel)

    return cancel
