"""The events policies report to their ``on_*`` listeners (frozen dataclasses), and a breaker's metrics."""

from .engine.events import (
    CircuitMetrics,
    CircuitState,
    CircuitStateChanged,
    FallbackExecuted,
    RetriesExceeded,
    RetryAborted,
    RetryScheduled,
    RetryStarted,
    TimeoutExceeded,
)

__all__ = [
    "CircuitMetrics",
    "CircuitState",
    "CircuitStateChanged",
    "FallbackExecuted",
    "RetriesExceeded",
    "RetryAborted",
    "RetryScheduled",
    "RetryStarted",
    "TimeoutExceeded",
]
