"""Delay schedules for retries, and jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass

from . import _options

__all__ = ["Backoff", "RandomDelay", "jittered"]


@dataclass(frozen=True, slots=True, init=False)
class Backoff:
    """Exponential backoff: the delay after failed attempt ``n`` is ``min(initial * multiplier**(n-1), maximum)``."""

    initial: float
    maximum: float
    multiplier: float

    def __init__(self, initial: _options.Duration, maximum: _options.Duration, *, multiplier: float = 2.0) -> None:
        lo = _options.seconds(initial, "Backoff initial", positive=True)
        hi = _options.seconds(maximum, "Backoff maximum", positive=True)
        if hi < lo:
            raise ValueError(f"Backoff maximum ({maximum!r}) must be >= initial ({initial!r})")
        if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)) or not multiplier >= 1:
            raise ValueError(f"Backoff multiplier must be a number >= 1, got {multiplier!r}")
        object.__setattr__(self, "initial", lo)
        object.__setattr__(self, "maximum", hi)
        object.__setattr__(self, "multiplier", float(multiplier))

    def delay(self, attempt: int) -> float:
        try:
            return min(self.initial * self.multiplier ** (attempt - 1), self.maximum)
        except OverflowError:
            return self.maximum


@dataclass(frozen=True, slots=True, init=False)
class RandomDelay:
    """A delay drawn uniformly from ``[minimum, maximum]`` seconds for every retry."""

    minimum: float
    maximum: float

    def __init__(self, minimum: _options.Duration, maximum: _options.Duration) -> None:
        lo = _options.seconds(minimum, "RandomDelay minimum")
        hi = _options.seconds(maximum, "RandomDelay maximum", positive=True)
        if hi <= lo:
            raise ValueError(f"RandomDelay maximum ({maximum!r}) must be > minimum ({minimum!r})")
        object.__setattr__(self, "minimum", lo)
        object.__setattr__(self, "maximum", hi)

    def delay(self, attempt: int) -> float:
        return random.uniform(self.minimum, self.maximum)


def jittered(delay: float, *, factor: float, absolute: float, maximum: float | None) -> float:
    """``delay`` moved by up to ``±factor * delay`` or ``±absolute`` seconds, kept within ``[0, maximum]``."""
    spread = factor * delay if factor else absolute
    if spread:
        delay += random.uniform(-spread, spread)
    if maximum is not None and delay > maximum:
        return maximum
    return max(delay, 0.0)
