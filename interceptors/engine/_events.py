"""Typed, immutable events the policies report to their ``on_*`` listeners.

Every event has ``policy``, the name of the policy that reported it (its ``name=``, by default its class
name), and ``method``, the call it happened in (gRPC: ``/package.Service/Method``; None for a plain callable, or
for what belongs to no one call: a breaker's change of state, a limiter's new limit), so that one listener can
serve many chains. The decisions of a policy in dry run (``dry_run=True``: it decides and reports, but lets every
call through) say so in their ``dry_run`` field. :class:`LogEvents` logs them through :mod:`logging`.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BudgetExceeded",
    "BulkheadFull",
    "CacheHit",
    "CacheMiss",
    "CircuitMetrics",
    "CircuitRejected",
    "CircuitState",
    "CircuitStateChanged",
    "FallbackExecuted",
    "FleetModeChanged",
    "HedgeCancelled",
    "HedgeStarted",
    "HedgeWon",
    "LimitChanged",
    "LimitExceeded",
    "LogEvents",
    "QuotaExceeded",
    "RateLimited",
    "RetriesExceeded",
    "RetryAborted",
    "RetryScheduled",
    "RetryStarted",
    "Shed",
    "Throttled",
    "TimeoutExceeded",
]


class CircuitState(str, enum.Enum):
    """States of a circuit breaker, equal to their names in lower case with a hyphen (``"closed"``, ``"open"``,
    ``"half-open"``, ``"forced-open"``, ``"disabled"``). FORCED_OPEN and DISABLED are only entered by hand."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"
    FORCED_OPEN = "forced-open"
    DISABLED = "disabled"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class CircuitMetrics:
    """Counts of the breaker's current window: the rolling window when closed, the trial calls when half-open."""

    executions: int
    failures: int
    successes: int
    slow_calls: int

    @property
    def failure_rate(self) -> float:
        """Failures per execution (0 with none)."""
        return self.failures / self.executions if self.executions else 0.0

    @property
    def slow_call_rate(self) -> float:
        """Slow calls per execution (0 with none)."""
        return self.slow_calls / self.executions if self.executions else 0.0


@dataclass(frozen=True, slots=True)
class CircuitStateChanged:
    """The breaker moved from ``old`` to ``new`` (by itself, or by hand); ``metrics``: the counts of the window
    that decided it."""

    old: CircuitState
    new: CircuitState
    metrics: CircuitMetrics
    policy: str | None = None
    method: str | None = None
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class CircuitRejected:
    """The breaker rejected a call: it lets calls through again in ``remaining`` seconds (None: when its trial
    calls have ended); ``forced``: it was held open by hand (``force_open()``). In dry run, the call went through."""

    remaining: float | None
    policy: str | None = None
    method: str | None = None
    dry_run: bool = False
    forced: bool = False


@dataclass(frozen=True, slots=True)
class RetryScheduled:
    """Attempt number ``attempt`` failed with ``failure``; the next one starts after ``delay`` seconds."""

    attempt: int
    delay: float
    failure: BaseException
    policy: str | None = None
    method: str | None = None


@dataclass(frozen=True, slots=True)
class RetryStarted:
    """Attempt number ``attempt`` (2 for the first retry) is starting after ``failure``."""

    attempt: int
    failure: BaseException
    policy: str | None = None
    method: str | None = None


@dataclass(frozen=True, slots=True)
class RetriesExceeded:
    """The retry policy gave up after ``attempts`` attempts; ``failure`` was the last one's."""

    attempts: int
    failure: BaseException
    policy: str | None = None
    method: str | None = None


@dataclass(frozen=True, slots=True)
class RetryAborted:
    """An abort condition, a server's "do not retry" or an open breaker stopped retrying after ``attempts``
    attempts."""

    attempts: int
    failure: BaseException
    policy: str | None = None
    method: str | None = None


@dataclass(frozen=True, slots=True)
class TimeoutExceeded:
    """The Timeout policy's ``timeout`` (seconds) passed; ``elapsed`` is how long the call had run."""

    timeout: float
    elapsed: float
    policy: str | None = None
    method: str | None = None


@dataclass(frozen=True, slots=True)
class FallbackExecuted:
    """The fallback answered ``result`` in place of ``failure``, the last real failure (the last attempt's, when
    retries ran out); ``out_of_time`` tells whether the call's time ran out (a Timeout passed, or no time was left
    for another attempt)."""

    failure: BaseException
    result: Any
    out_of_time: bool = False
    policy: str | None = None
    method: str | None = None


@dataclass(frozen=True, slots=True)
class CacheHit:
    """The cache answered ``result``, kept ``age`` seconds ago: fresh, or ``stale`` in place of ``failure`` (the
    call's, which the stale answer replaced, as a fallback's does)."""

    result: Any
    age: float
    stale: bool = False
    failure: BaseException | None = None
    policy: str | None = None
    method: str | None = None


@dataclass(frozen=True, slots=True)
class CacheMiss:
    """The cache had no fresh answer for a call: it goes on (and its answer is kept)."""

    policy: str | None = None
    method: str | None = None


@dataclass(frozen=True, slots=True)
class BudgetExceeded:
    """The retry budget refused a retry after attempt ``attempts``, which failed with ``failure`` (or a hedge while
    ``attempts`` attempts were in flight or done, ``failure`` the last that failed, if any)."""

    attempts: int
    failure: BaseException | None
    policy: str | None = None
    method: str | None = None


@dataclass(frozen=True, slots=True)
class HedgeStarted:
    """The hedging policy started attempt number ``attempt`` (2 for the first hedge), ``elapsed`` seconds after the
    call's first attempt, with ``in_flight`` attempts still running; ``failure``: the non-fatal failure that brought
    it forward (None: the hedging delay had passed)."""

    attempt: int
    elapsed: float
    in_flight: int
    failure: BaseException | None = None
    policy: str | None = None
    method: str | None = None


@dataclass(frozen=True, slots=True)
class HedgeWon:
    """Attempt number ``attempt`` answered first, out of ``attempts`` started (only reported when it was a race:
    ``attempts`` > 1)."""

    attempt: int
    attempts: int
    policy: str | None = None
    method: str | None = None


@dataclass(frozen=True, slots=True)
class HedgeCancelled:
    """Attempt number ``attempt`` was still running when the call ended (another one answered, or one failed with a
    fatal status) and was cancelled."""

    attempt: int
    policy: str | None = None
    method: str | None = None


@dataclass(frozen=True, slots=True)
class Throttled:
    """The adaptive throttle rejected a call; it rejects a share ``rejection_rate`` of calls at the moment."""

    rejection_rate: float
    policy: str | None = None
    method: str | None = None
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class BulkheadFull:
    """The bulkhead rejected a call after ``waited`` seconds: its ``max_concurrent`` calls were all in flight."""

    max_concurrent: int
    waited: float
    policy: str | None = None
    method: str | None = None
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class Shed:
    """A server refused a call: ``reason`` "overload" (``in_flight`` calls at its ``limit``), "deadline" (too
    little time left to serve it), "lag" (its work starts too late) or "cpu" (its CPU utilization too high)."""

    reason: str
    in_flight: int
    limit: int
    policy: str | None = None
    method: str | None = None
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class QuotaExceeded:
    """A server refused a call: its ``client`` (as the quota's key function names it) had used its quota; its next
    call is admitted in ``wait`` seconds."""

    client: str
    wait: float
    policy: str | None = None
    method: str | None = None
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class RateLimited:
    """The rate limiter rejected a call: its next permit comes in ``wait`` seconds, later than allowed."""

    wait: float
    policy: str | None = None
    method: str | None = None
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class FleetModeChanged:
    """A fleet policy turned to ``mode``: ``"local"`` (its store has not answered for a while: it decides alone)
    or ``"fleet"`` (the store answers again). ``key`` is its name in the store."""

    mode: str
    key: str
    policy: str | None = None
    method: str | None = None


@dataclass(frozen=True, slots=True)
class LimitChanged:
    """The adaptive limiter moved its concurrency limit from ``old`` to ``new``, having seen calls take ``latency``
    seconds (averaged) against a baseline of ``baseline``."""

    old: int
    new: int
    latency: float
    baseline: float
    policy: str | None = None
    method: str | None = None


@dataclass(frozen=True, slots=True)
class LimitExceeded:
    """The adaptive limiter rejected a call: ``in_flight`` calls at its ``limit``, ``queued`` more waiting."""

    limit: int
    in_flight: int
    queued: int
    policy: str | None = None
    method: str | None = None
    dry_run: bool = False


Message = Callable[[Any], str]
"""Words for one kind of event."""


class LogEvents:
    """A listener for every kind of event that logs each through :mod:`logging`: a message in words, and the
    event's fields as structured extras — ``event`` (its kind in snake case, e.g. ``retry_scheduled``),
    ``policy``, ``method`` and the event's own (failures as their status and details, states as their names), so
    that JSON formatters (python-json-logger, structlog's stdlib integration) render them as fields.

    Pass the one instance to every ``on_*`` option of every policy. ``messages`` gives some kinds their own words
    (``{RetryScheduled: lambda e: f"Retry {e.attempt} after {e.delay:.3g}s"}``); others read as
    ``"retry_scheduled attempt=1 delay=0.1 ..."``.

    :param logger: a logger or its name (default ``"interceptors.events"``).
    :param level: the level to log at (default INFO).
    :param messages: words by kind of event (default none).
    """

    __slots__ = ("_logger", "_messages", "level")

    def __init__(
        self,
        logger: logging.Logger | str = "interceptors.events",
        *,
        level: int = logging.INFO,
        messages: Mapping[type, Message] | None = None,
    ) -> None:
        if isinstance(logger, str):
            logger = logging.getLogger(logger)
        if not isinstance(logger, logging.Logger):
            raise ValueError(f"logger must be a logging.Logger or a logger's name, got {logger!r}")
        if isinstance(level, bool) or not isinstance(level, int):
            raise ValueError(f"level must be a logging level (an int), got {level!r}")
        if messages is not None and not (
            isinstance(messages, Mapping) and all(isinstance(k, type) and callable(v) for k, v in messages.items())
        ):
            raise ValueError(f"messages must map event types to functions of the event, got {messages!r}")
        self._logger, self._messages = logger, dict(messages or {})
        self.level: int = level

    def __call__(self, event: Any) -> None:
        logger = self._logger
        if not logger.isEnabledFor(self.level):
            return
        kind = re.sub(r"(?<!^)([A-Z])", r"_\1", type(event).__name__).lower()
        fields = {f.name: _plain(getattr(event, f.name)) for f in dataclasses.fields(event)}
        words = self._messages.get(type(event))
        if words is None:
            shown = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
            message = f"{kind} {shown}"
        else:
            message = words(event)
        logger.log(self.level, "%s", message, extra={"event": kind, **fields})

    def __repr__(self) -> str:
        return f"LogEvents({self._logger.name!r}, level={logging.getLevelName(self.level)})"


def _plain(value: Any) -> Any:
    """A field's value as a logging extra: numbers, strings and None as they are, failures as "CODE: details"."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, BaseException):
        code, details = getattr(value, "code", None), getattr(value, "details", None)
        if callable(code) and callable(details):
            try:
                return f"{getattr(code(), 'name', code())}: {details()}"
            except Exception:
                pass
        return f"{type(value).__name__}: {value}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."
