"""Validation of policy options: every bad value raises ValueError naming the option."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, TypeAlias, TypeVar

from .clock import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    from .execution import Semantics

Duration: TypeAlias = float | timedelta
"""Seconds as a number, or a :class:`datetime.timedelta`."""

FailurePredicate: TypeAlias = Callable[[BaseException], bool]
Handles: TypeAlias = type[BaseException] | tuple[type[BaseException], ...] | FailurePredicate
"""Which failures a policy handles: exception types, or a predicate over the failure."""

Pushback: TypeAlias = Callable[[BaseException], "float | timedelta | None"]
"""Reads the delay a failure asks for (seconds; negative: do not retry), or None when it asks none."""

E = TypeVar("E")
_log = logging.getLogger("interceptors")


def seconds(value: object, option: str, *, positive: bool = False) -> float:
    """``value`` as seconds: a finite number >= 0 (> 0 when ``positive``) or a timedelta."""
    if isinstance(value, timedelta):
        result = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        result = float(value)
    else:
        raise ValueError(f"{option} must be seconds (a number) or a timedelta, got {value!r}")
    if not math.isfinite(result) or result < 0 or (positive and result == 0):
        raise ValueError(f"{option} must be {'> 0' if positive else '>= 0'} seconds, got {value!r}")
    return result


def optional_seconds(value: object, option: str, *, positive: bool = False) -> float | None:
    return None if value is None else seconds(value, option, positive=positive)


def count(value: object, option: str, *, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{option} must be an integer >= {minimum}, got {value!r}")
    return value


def ratio(value: object, option: str, *, allow_zero: bool = False) -> float:
    """A number in (0, 1], or [0, 1] when ``allow_zero``."""
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not (0 <= value <= 1)
        or (value == 0 and not allow_zero)
    ):
        bounds = "0..1" if allow_zero else "a number in (0, 1]"
        raise ValueError(f"{option} must be {bounds}, got {value!r}")
    return float(value)


def clock(value: object) -> Clock:
    if value is None:
        return SYSTEM_CLOCK
    if not isinstance(value, Clock):
        raise ValueError(f"clock must have now(), sleep() and asleep(), got {value!r}")
    return value


def handles(value: object, option: str) -> FailurePredicate | None:
    """Turn exception types or a predicate into a predicate; None stays None (the transport decides)."""
    if value is None:
        return None
    if isinstance(value, type) and issubclass(value, BaseException):
        types: tuple[type[BaseException], ...] = (value,)
    elif (
        isinstance(value, tuple) and value and all(isinstance(t, type) and issubclass(t, BaseException) for t in value)
    ):
        types = value
    elif callable(value):
        return value
    else:
        raise ValueError(f"{option} must be an exception type, a tuple of them, or a predicate, got {value!r}")
    return lambda failure: isinstance(failure, types)


def listener(value: object, option: str) -> Callable[[E], object] | None:
    if value is not None and not callable(value):
        raise ValueError(f"{option} must be callable, got {value!r}")
    return value


def emit(listen: Callable[[E], object], event: E) -> None:
    """Report ``event``; a failing listener is logged and never breaks the call."""
    try:
        listen(event)
    except Exception:
        _log.exception("event listener %r failed on %r", listen, event)


def pushback(value: object) -> Pushback | bool:
    if not (isinstance(value, bool) or callable(value)):
        raise ValueError(f"pushback must be True, False or a callable, got {value!r}")
    return value


def pushback_delay(source: Pushback | bool, failure: BaseException, semantics: Semantics, cap: float) -> float | None:
    """The delay ``failure`` asks for, capped at ``cap``: read by ``semantics`` when ``source`` is True, by
    ``source`` itself when callable; None when it asks none, negative when it says "do not retry"."""
    if source is False:
        return None
    if source is True:
        asked = semantics.pushback(failure)
    else:
        raw = source(failure)
        if raw is None:
            return None
        negative = isinstance(raw, (int, float)) and not isinstance(raw, bool) and raw < 0
        asked = -1.0 if negative else seconds(raw, "pushback result")
    return asked if asked is None or asked < 0 else min(asked, cap)
