"""Delay schedules for retries, and jitter."""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass

from . import _options as options

__all__ = ["Backoff", "RandomDelay", "jittered"]

DRAWS = random.Random()
"""The library's own random numbers (retry and breaker jitter, a throttle's rejections, spread pushback, a fleet
store's backoff and member id), apart from the ``random`` module's shared state: a user's seeded code (or a test
framework) relies on that, and the library's threads would move it under its feet. Seeded afresh in a forked child,
as the ``random`` module is: forked workers must not all draw the same jitter."""
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=DRAWS.seed)


@dataclass(frozen=True, slots=True, init=False)
class Backoff:
    """Exponential backoff: the delay after failed attempt ``n`` is ``d = min(initial * multiplier**(n-1),
    maximum)``. A RetryPolicy spreads it with its own jitter, never past ``maximum``, unless the backoff draws it
    itself: with ``jitter_factor``, from ``d * [1 - jitter_factor, 1 + jitter_factor]``, the jitter after the cap
    (gRPC's retry backoff, gRFC A6 as amended in 2024: 0.2, so a delay may pass ``maximum`` by 20 %); with
    ``full_jitter``, from ``[0, d]`` (A6's first formula).

    :param initial: seconds before the first retry (> 0).
    :param maximum: the longest delay before jitter, seconds (>= ``initial``).
    :param multiplier: growth per attempt (> 0, finite; default 2).
    :param full_jitter: draw each delay from ``[0, d]`` (default False).
    :param jitter_factor: draw each delay from ``d * [1 - jitter_factor, 1 + jitter_factor]`` (0..1; default 0:
        the RetryPolicy's jitter). Not with ``full_jitter``.
    """

    initial: float
    maximum: float
    multiplier: float
    full_jitter: bool
    jitter_factor: float

    def __init__(
        self,
        initial: options.Duration,
        maximum: options.Duration,
        *,
        multiplier: float = 2.0,
        full_jitter: bool = False,
        jitter_factor: float = 0.0,
    ) -> None:
        lo = options.seconds(initial, "Backoff initial", positive=True)
        hi = options.seconds(maximum, "Backoff maximum", positive=True)
        if hi < lo:
            raise ValueError(f"Backoff maximum ({maximum!r}) must be >= initial ({initial!r})")
        growth = options.number(multiplier, "Backoff multiplier", 0, math.inf, above=True, below=True)
        full = options.flag(full_jitter, "Backoff full_jitter")
        share = options.ratio(jitter_factor, "Backoff jitter_factor", allow_zero=True)
        if full and share:
            raise ValueError("Backoff: give full_jitter or jitter_factor, not both")
        object.__setattr__(self, "initial", lo)
        object.__setattr__(self, "maximum", hi)
        object.__setattr__(self, "multiplier", growth)
        object.__setattr__(self, "full_jitter", full)
        object.__setattr__(self, "jitter_factor", share)

    def delay(self, attempt: int) -> float:
        """The delay after failed attempt ``attempt``, before jitter (the largest, with ``full_jitter``)."""
        try:
            return min(self.initial * self.multiplier ** (attempt - 1), self.maximum)
        except OverflowError:
            return self.maximum

    def draw(self, attempt: int) -> float | None:
        """The delay after failed attempt ``attempt`` with the backoff's own jitter; None when it has none (the
        RetryPolicy jitters :meth:`delay`)."""
        if self.full_jitter:
            return DRAWS.uniform(0.0, self.delay(attempt))
        if self.jitter_factor:
            return self.delay(attempt) * DRAWS.uniform(1 - self.jitter_factor, 1 + self.jitter_factor)
        return None


@dataclass(frozen=True, slots=True, init=False)
class RandomDelay:
    """A delay drawn uniformly from ``[minimum, maximum]`` seconds for every retry.

    :param minimum: the shortest delay, seconds (>= 0).
    :param maximum: the longest delay, seconds (> ``minimum``).
    """

    minimum: float
    maximum: float

    def __init__(self, minimum: options.Duration, maximum: options.Duration) -> None:
        lo = options.seconds(minimum, "RandomDelay minimum")
        hi = options.seconds(maximum, "RandomDelay maximum", positive=True)
        if hi <= lo:
            raise ValueError(f"RandomDelay maximum ({maximum!r}) must be > minimum ({minimum!r})")
        object.__setattr__(self, "minimum", lo)
        object.__setattr__(self, "maximum", hi)

    def delay(self, attempt: int) -> float:
        return DRAWS.uniform(self.minimum, self.maximum)


def jittered(delay: float, *, factor: float, absolute: float, maximum: float | None) -> float:
    """``delay`` moved by up to ``factor * delay`` (or ``absolute`` seconds) either way: drawn uniformly from
    ``[delay - spread, delay + spread]`` cut to ``[0, maximum]``, so delays at the cap stay spread out too."""
    spread = factor * delay if factor else absolute
    if not spread:
        return delay
    high = delay + spread if maximum is None else min(delay + spread, maximum)
    return DRAWS.uniform(max(delay - spread, 0.0), high)
