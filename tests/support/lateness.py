"""How late this process's threads wake, measured beside a timed check: a busy machine (two suites at once) holds
them for tens of milliseconds, and a latency bound then allows that much more."""

from __future__ import annotations

import threading
import time


class WakeLateness:
    """While the ``with`` block runs, a thread of its own sleeps ``interval`` s again and again: ``seconds`` is the
    most it woke past its time (the GIL's queue, the scheduler), 0 until it has woken once."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval, self.seconds = interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._probe, name="wake-lateness", daemon=True)

    def _probe(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            time.sleep(self.interval)
            self.seconds = max(self.seconds, time.monotonic() - started - self.interval)

    def __enter__(self) -> WakeLateness:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
