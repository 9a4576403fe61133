"""The types of policy options, and how every option is checked when a policy is built.

The aliases (``Duration``, ``Handles``, ...) are public, re-exported by :mod:`interceptors.typing`. The functions
validate one option each and raise ``ValueError`` naming it, so that a bad value fails at construction, never
at the first call that would use it.
"""

from __future__ import annotations

import inspect
import logging
import math
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeAlias, TypeGuard, TypeVar

from ._clock import SYSTEM_CLOCK, Clock
from ._priority import Priorities

if TYPE_CHECKING:
    from ._execution import Semantics

__all__ = [
    "MAX_CALLS",
    "MAX_SECONDS",
    "MIN_WINDOW",
    "Duration",
    "FailurePredicate",
    "Handles",
    "Listener",
    "PushbackReader",
]

Duration: TypeAlias = float | timedelta
"""Seconds as a number, or a :class:`datetime.timedelta`."""

FailurePredicate: TypeAlias = Callable[[BaseException], bool]
"""Tells whether a policy handles a failure."""

Handles: TypeAlias = type[BaseException] | tuple[type[BaseException], ...] | FailurePredicate
"""Which failures a policy handles: exception types, or a predicate over the failure."""

PushbackReader: TypeAlias = Callable[[BaseException], "float | timedelta | None"]
"""Reads the delay a failure asks for (seconds; negative: do not retry), or None when it asks none."""

E = TypeVar("E")
Listener: TypeAlias = Callable[[E], object]
"""Hears one kind of event; what it returns is ignored, and what it raises is logged."""

MAX_SECONDS = 365 * 24 * 3600.0
"""The longest duration any option accepts (a year): longer ones overflow clocks and timers."""

MIN_WINDOW = 0.001
"""The shortest time window any option accepts (1 ms): a window is cut into slices that divide the clock's time, so
a shorter one counts hardly any call, and one of denormal seconds overflows that division."""

MAX_CALLS = 100_000
"""The largest number of calls a window or a half-open trial may hold (each takes memory up front)."""

_log = logging.getLogger("interceptors")


SHOWN = 80
"""The most characters of a value an error message echoes."""


def shown(value: object, limit: int = SHOWN) -> str:
    """``value`` for an error message: its repr, cut to about ``limit`` characters (an integer of thousands of
    digits has no repr; neither has an object whose ``__repr__`` fails)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
        digits = int(value.bit_length() * math.log10(2)) + 1
        return f"{'a negative' if value < 0 else 'an'} integer of about {digits} digits"
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return cut(text, limit)


def cut(text: str, limit: int = SHOWN) -> str:
    """``text`` cut to about ``limit`` characters."""
    return text if len(text) <= limit else f"{text[: limit - 5]}... ({len(text)} characters)"


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _within(value: float, lowest: float, highest: float, *, above: bool, below: bool) -> bool:
    """Whether ``value`` lies between the bounds (exclusive where ``above``/``below``); compared exactly, so an
    integer too large for a float is outside, never an OverflowError, and NaN is outside every range."""
    return (lowest < value if above else lowest <= value) and (value < highest if below else value <= highest)


def number(
    value: object, option: str, lowest: float, highest: float, *, above: bool = False, below: bool = False
) -> float:
    """``value`` as a float: a finite number (not a bool) between ``lowest`` and ``highest`` (exclusive where
    ``above`` / ``below``); NaN, infinities and integers too large for a float are refused like any number out of
    range."""
    if _is_number(value) and _within(value, lowest, highest, above=above, below=below):
        try:
            result = float(value)
        except OverflowError:
            result = math.inf
        if math.isfinite(result):
            return result
    interval = f"{'(' if above else '['}{lowest:g}, {highest:g}{')' if below else ']'}"
    raise ValueError(f"{option} must be a finite number in {interval}, got {shown(value)}")


def seconds(value: object, option: str, *, positive: bool = False) -> float:
    """``value`` as seconds: a number or a timedelta, finite, >= 0 (> 0 when ``positive``), at most a year."""
    if isinstance(value, timedelta):
        result: float = value.total_seconds()
    elif _is_number(value):
        result = value  # compared before it becomes a float: it may be too large for one
    else:
        raise ValueError(f"{option} must be seconds (a number) or a timedelta, got {shown(value)}")
    if not _within(result, 0, MAX_SECONDS, above=positive, below=False):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{option} must be {bound} and at most {MAX_SECONDS:g} seconds, got {shown(value)}")
    return float(result)


def optional_seconds(value: object, option: str, *, positive: bool = False) -> float | None:
    return None if value is None else seconds(value, option, positive=positive)


def window(value: object, option: str) -> float:
    """``value`` as the length of a time window: seconds (a number or a timedelta) from :data:`MIN_WINDOW` (1 ms)
    to :data:`MAX_SECONDS` (a year)."""
    result = seconds(value, option, positive=True)
    if result < MIN_WINDOW:
        raise ValueError(
            f"{option} must be a time window of at least {MIN_WINDOW:g} seconds (1 ms), got {shown(value)}"
        )
    return result


def optional_window(value: object, option: str) -> float | None:
    return None if value is None else window(value, option)


def count(value: object, option: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """An integer in ``[minimum, maximum]``."""
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bounds = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise ValueError(f"{option} must be an integer {bounds}, got {shown(value)}")
    return value


def ratio(value: object, option: str, *, allow_zero: bool = False) -> float:
    """A number in (0, 1], or [0, 1] when ``allow_zero``."""
    if not _is_number(value) or not _within(value, 0, 1, above=not allow_zero, below=False):
        bounds = "a number in 0..1" if allow_zero else "a number in (0, 1]"
        raise ValueError(f"{option} must be {bounds}, got {shown(value)}")
    return float(value)


def flag(value: object, option: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{option} must be True or False, got {shown(value)}")
    return value


def priorities(value: object) -> Priorities | None:
    if value is not None and not isinstance(value, Priorities):
        raise ValueError(f"priorities must be an interceptors.Priorities or None, got {shown(value)}")
    return value


def clock(value: object) -> Clock:
    if value is None:
        return SYSTEM_CLOCK
    if not isinstance(value, Clock) or not all(callable(getattr(value, m)) for m in ("now", "sleep", "asleep")):
        raise ValueError(f"clock must have now(), sleep() and asleep(), got {shown(value)}")
    return value


def positional_arity(fn: Callable[..., Any]) -> tuple[int, float] | None:
    """How many positional arguments ``fn`` needs and takes at most (inf: any number); None if unknown."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.KEYWORD_ONLY and p.default is p.empty for p in parameters):
        return (0, -1)  # cannot be called with positional arguments alone
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = sum(p.default is p.empty for p in positional)
    most = math.inf if any(p.kind is p.VAR_POSITIONAL for p in parameters) else len(positional)
    return required, most


def takes(fn: Callable[..., Any], arguments: int) -> bool:
    """Whether ``fn`` can be called with ``arguments`` positional arguments (True when that cannot be told)."""
    arity = positional_arity(fn)
    return arity is None or arity[0] <= arguments <= arity[1]


def function(value: object, option: str, arguments: str, count: int = 1) -> Callable[..., Any]:
    """A callable taking ``count`` positional arguments; ``arguments`` names them in the error."""
    if not callable(value) or not takes(value, count):
        raise ValueError(f"{option} must be a function of ({arguments}), got {shown(value)}")
    return value


def optional_function(value: object, option: str, arguments: str, count: int = 1) -> Callable[..., Any] | None:
    return None if value is None else function(value, option, arguments, count)


def handles(value: object, option: str) -> FailurePredicate | None:
    """Turn exception types or a predicate into a predicate; None stays None (the transport decides)."""
    if value is None:
        return None
    if isinstance(value, tuple) and value and all(isinstance(t, type) for t in value):
        types: tuple[type, ...] = value
    elif isinstance(value, type):
        types = (value,)
    elif callable(value) and takes(value, 1):
        return value
    else:
        types = ()
    if not types or not all(issubclass(t, BaseException) for t in types):
        raise ValueError(
            f"{option} must be an exception type, a tuple of them, or a predicate of (failure), got {shown(value)}"
        )
    return lambda failure: isinstance(failure, types)


def policy_name(value: object, policy: object) -> str:
    """A policy's ``name``: a non-empty string, or None for its class's name."""
    if value is None:
        return type(policy).__name__
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"name must be a non-empty string or None, got {shown(value)}")
    return value


def listener(value: object, option: str) -> Listener[E] | None:
    return None if value is None else function(value, option, "event")


_OBSERVING = threading.Lock()


def observe(source: object, listener: Callable[[Any], object]) -> None:
    """Make ``listener`` hear every event ``source`` reports (a policy, a :class:`RetryBudget`, a shedding
    interceptor), besides its own ``on_*`` listeners: how a ``Metrics`` hears the policies of the channels it was
    given, and only those. Observing twice is observing once."""
    with _OBSERVING:
        observers = getattr(source, "_observers", ())
        if listener not in observers:
            object.__setattr__(source, "_observers", (*observers, listener))


def unobserve(source: object, listener: Callable[[Any], object]) -> None:
    """Undo :func:`observe`."""
    with _OBSERVING:
        observers = getattr(source, "_observers", ())
        object.__setattr__(source, "_observers", tuple(o for o in observers if o != listener))


def emit(listen: Listener[E] | None, event: E, observers: tuple[Callable[[Any], object], ...] = ()) -> None:
    """Report ``event`` to ``listen`` (if any) and to ``observers`` (the reporting object's: see :func:`observe`);
    a failing listener is logged and never breaks the call."""
    for listener in (listen, *observers) if observers else (listen,):
        if listener is None:
            continue
        try:
            listener(event)
        except Exception:
            _log.exception("event listener %r failed on %r", listener, event)


def pushback(value: object) -> PushbackReader | bool:
    if isinstance(value, bool):
        return value
    return function(value, "pushback", "failure")


def pushback_delay(
    source: PushbackReader | bool, failure: BaseException, semantics: Semantics, cap: float
) -> float | None:
    """The delay ``failure`` asks for, capped at ``cap``: read by ``semantics`` when ``source`` is True, by
    ``source`` itself when callable; None when it asks none (or the reader failed, which is logged), negative when
    it says "do not retry"."""
    if source is False:
        return None
    try:
        if source is True:
            asked = semantics.pushback(failure)
        else:
            raw = source(failure)
            if raw is None:
                return None
            if isinstance(raw, timedelta):
                raw = raw.total_seconds()
            if not _is_number(raw) or raw != raw:  # NaN
                raise ValueError(f"a pushback reader must return seconds or None, got {shown(raw)}")
            asked = -1.0 if raw < 0 else float(min(raw, cap))  # an integer too large for a float is the cap
    except Exception:
        _log.exception("pushback reader %r failed on %r; going on without pushback", source, failure)
        return None
    return asked if asked is None or asked < 0 else min(asked, cap)
