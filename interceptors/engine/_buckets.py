"""Token buckets by key, in bounded memory: each key may make ``burst`` calls at once, then one every
``interval`` seconds (a quota per client).

A bucket is kept as the moment it is full again (the generic cell rate algorithm's "theoretical arrival time"): a
call finds a token when that moment is at most ``(burst - 1) * interval`` ahead, and pushes it ``interval`` later.
A bucket that is full again holds nothing worth keeping, so it is forgotten (lossless); memory is bounded by the
keys active within the last ``burst * interval`` seconds. At most ``max_keys`` are kept: past that, the calls of
keys not kept share one bucket, :data:`OVERFLOW` (so a flood of new keys cannot grow memory, nor escape the quota
by numbers: together they get one key's share).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Hashable

from ._clock import Clock

__all__ = ["OVERFLOW", "KeyedBuckets"]

OVERFLOW = "<overflow>"
"""The key of the bucket that the keys beyond ``max_keys`` share."""


class KeyedBuckets:
    """Token buckets by key (see the module's doc)."""

    __slots__ = (
        "_full_at",
        "_lock",
        "_overflow_full_at",
        "_sweep_after",
        "burst",
        "clock",
        "interval",
        "max_keys",
        "overflowed",
    )

    def __init__(self, interval: float, burst: int, max_keys: int, clock: Clock) -> None:
        self.interval, self.burst, self.max_keys, self.clock = interval, burst, max_keys, clock
        self._lock = threading.Lock()
        self._full_at: dict[Hashable, float] = {}  # by key: when its bucket is full again
        self._overflow_full_at = -math.inf  # the same, for the bucket of the keys not kept
        self._sweep_after = -math.inf  # no bucket is full again before then (nothing to forget)
        self.overflowed = 0
        """Calls counted in the :data:`OVERFLOW` bucket because ``max_keys`` keys were kept."""

    def __len__(self) -> int:
        """The buckets kept (the :data:`OVERFLOW` one aside)."""
        return len(self._full_at)

    def take(self, key: Hashable) -> tuple[Hashable, float]:
        """Take a token of ``key``'s bucket: (the key counted, :data:`OVERFLOW` past the cap; 0.0) if one was
        there, else (the key counted; seconds until one comes), and none is taken."""
        with self._lock:
            now = self.clock.now()
            full_at = self._full_at
            if key not in full_at and len(full_at) >= self.max_keys and not self._forget_full(now):
                self.overflowed += 1
                wait, self._overflow_full_at = self._token(self._overflow_full_at, now)
                return OVERFLOW, wait
            wait, moment = self._token(full_at.get(key, now), now)
            if not wait:
                if key not in full_at:  # the first bucket full again may be this one
                    self._sweep_after = min(self._sweep_after, moment)
                full_at[key] = moment
            return key, wait

    def _token(self, full_at: float, now: float) -> tuple[float, float]:
        """A token of a bucket full again at ``full_at``: (0.0, when it is full again after) if there is one, else
        (seconds until one comes, ``full_at`` as it was)."""
        due = max(full_at, now)
        wait = due - (self.burst - 1) * self.interval - now
        return (wait, full_at) if wait > 0 else (0.0, due + self.interval)

    def _forget_full(self, now: float) -> bool:
        """Forget the buckets that are full again; returns whether any was. Scans at most once until the first
        kept one fills."""
        if now < self._sweep_after:
            return False
        full_at = self._full_at
        for key in [key for key, moment in full_at.items() if moment <= now]:
            del full_at[key]
        self._sweep_after = min(full_at.values(), default=now)
        return len(full_at) < self.max_keys
