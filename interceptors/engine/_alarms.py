"""Cancel asyncio tasks at their deadlines with one loop timer per queue instead of one per call.

A Timeout's deadlines arrive in order (each is "now + the same duration"), so a FIFO queue holds them sorted and
one timer, set for the oldest armed alarm, serves them all. Arming costs an append; a call that finishes in time
just disarms its alarm, and the timer drops disarmed alarms when it next fires. ``loop.call_later`` per call
costs several times more.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import Any

_RESOLUTION = time.get_clock_info("monotonic").resolution


class Alarm:
    """Cancels ``task`` at loop time ``when`` unless disarmed first; ``fired`` tells whether it did."""

    __slots__ = ("armed", "fired", "task", "when")

    def __init__(self, task: asyncio.Task[Any], when: float) -> None:
        self.task, self.when = task, when
        self.armed, self.fired = True, False

    def disarm(self) -> None:
        self.armed = False


NO_ALARM: Alarm = Alarm.__new__(Alarm)
"""Stands in where no alarm is needed: never fires."""
NO_ALARM.armed = NO_ALARM.fired = False


class _Queue:
    __slots__ = ("_alarms", "_timer", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._alarms: deque[Alarm] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def arm(self, task: asyncio.Task[Any], seconds: float) -> Alarm:
        alarms = self._alarms
        when = self.loop.time() + seconds
        if alarms and when < alarms[-1].when:
            when = alarms[-1].when  # clock noise between two reads; keep the queue sorted
        alarm = Alarm(task, when)
        alarms.append(alarm)
        if self._timer is None:
            self._timer = self.loop.call_at(when, self._fire)
        return alarm

    def _fire(self) -> None:
        self._timer = None
        alarms = self._alarms
        now = self.loop.time() + _RESOLUTION
        while alarms:
            alarm = alarms[0]
            if alarm.armed and alarm.when > now:
                self._timer = self.loop.call_at(alarm.when, self._fire)
                return
            alarms.popleft()
            if alarm.armed:
                alarm.armed, alarm.fired = False, True
                alarm.task.cancel()


class Alarms:
    """Alarm queues, one per event loop that uses them (found through the running thread)."""

    __slots__ = ("_local",)

    def __init__(self) -> None:
        self._local = threading.local()

    def arm(self, seconds: float) -> Alarm:
        """Cancel the current task after ``seconds`` unless the returned alarm is disarmed first."""
        loop = asyncio.get_running_loop()
        queue: _Queue | None = getattr(self._local, "queue", None)
        if queue is None or queue.loop is not loop:
            queue = self._local.queue = _Queue(loop)
        task = asyncio.current_task(loop)
        assert task is not None, "an async Timeout runs inside an asyncio task"
        return queue.arm(task, seconds)
