"""Resilience policies for Python gRPC: timeout, retry, circuit breaker and fallback.

Policies are immutable configuration shared by every call; an :class:`Executor`, or the gRPC interceptors
(:class:`ResilienceInterceptor`, :func:`interceptors.aio.resilience_interceptors`), run calls through them in
order, the first outermost, as failsafe-go does.
"""

from ._routing import StackedRetriesWarning
from .circuit_breaker import CircuitBreaker, Permit
from .client import ResilienceInterceptor, resilient_channel
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
from .status import FALLBACK_METADATA_KEY, RETRYABLE_CODES, GrpcSemantics, on_codes, replaced_by_fallback, status_code
from .timeout import Timeout

__all__ = [
    "FALLBACK_METADATA_KEY",
    "RETRYABLE_CODES",
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
    "GrpcSemantics",
    "Permit",
    "Policy",
    "RandomDelay",
    "ResilienceError",
    "ResilienceInterceptor",
    "RetriesExceeded",
    "RetriesExceededError",
    "RetryAborted",
    "RetryPolicy",
    "RetryScheduled",
    "RetryStarted",
    "Semantics",
    "StackedRetriesWarning",
    "SystemClock",
    "Timeout",
    "TimeoutExceeded",
    "TimeoutExceededError",
    "on_codes",
    "replaced_by_fallback",
    "resilient_channel",
    "status_code",
]
