"""Resilience policies for Python gRPC: timeout, retry, circuit breaker and fallback.

Policies are immutable configuration shared by every call; an :class:`Executor` (or a gRPC interceptor) runs
calls through them in order, the first outermost, as failsafe-go does.
"""

from .circuit_breaker import CircuitBreaker, Permit
from .clock import SYSTEM_CLOCK, Clock, SystemClock
from .delays import Backoff, RandomDelay
from .errors import CircuitOpenError, ResilienceError, RetriesExceededError, TimeoutExceededError
from .events import (
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
from .execution import Execution, Semantics
from .fallback import Fallback
from .policy import Executor, Policy
from .retry import RetryPolicy
from .timeout import Timeout

__all__ = [
    "SYSTEM_CLOCK",
    "Backoff",
    "CircuitBreaker",
    "CircuitMetrics",
    "CircuitOpenError",
    "CircuitState",
    "CircuitStateChanged",
    "Clock",
    "Execution",
    "Executor",
    "Fallback",
    "FallbackExecuted",
    "Permit",
    "Policy",
    "RandomDelay",
    "ResilienceError",
    "RetriesExceeded",
    "RetriesExceededError",
    "RetryAborted",
    "RetryPolicy",
    "RetryScheduled",
    "RetryStarted",
    "Semantics",
    "SystemClock",
    "Timeout",
    "TimeoutExceeded",
    "TimeoutExceededError",
]
