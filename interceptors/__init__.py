"""Resilience policies for Python gRPC: timeout, retry, hedging, circuit breaker, fallback and more.

Policies are immutable configuration shared by every call; an :class:`Executor`, or the gRPC interceptors
(:class:`ResilienceInterceptor`, :func:`interceptors.aio.resilience_interceptors`), run calls through them in
order, the first outermost, as failsafe-go does.

Here is what users type. Events live in :mod:`interceptors.events`, option types in :mod:`interceptors.typing`,
what a new policy or transport extends in :mod:`interceptors.engine`, the asyncio client in
:mod:`interceptors.aio`, server interceptors in :mod:`interceptors.server`, and a fake clock in
:mod:`interceptors.testing`.
"""

from .engine._adaptive_limiter import AdaptiveLimiter
from .engine._budget import RetryBudget
from .engine._bulkhead import Bulkhead
from .engine._cache import CacheEntry, CachePolicy, CacheStore, MemoryCache
from .engine._circuit_breaker import CircuitBreaker
from .engine._delays import Backoff, RandomDelay
from .engine._errors import (
    BulkheadFullError,
    CircuitOpenError,
    LimitExceededError,
    RateLimitedError,
    RejectedError,
    ResilienceError,
    RetriesExceededError,
    ThrottledError,
    TimeoutExceededError,
)
from .engine._events import CircuitState
from .engine._fallback import Fallback
from .engine._hedge import HedgePolicy, LatencyQuantile
from .engine._keyed import Keyed
from .engine._load import LoadReport
from .engine._policy import Executor
from .engine._priority import Priorities, Priority, prioritized
from .engine._rate_limiter import RateLimiter
from .engine._results import ResultFailure
from .engine._retry import RetryPolicy
from .engine._throttle import AdaptiveThrottle
from .engine._timeout import Timeout
from .grpc._channel import StackedRetriesWarning
from .grpc._fit import FallbackMisfitWarning
from .grpc._load_watch import LoadWatch
from .grpc._orca import load_report
from .grpc._registry import Registry
from .grpc._service_config import ServiceConfig, from_service_config
from .grpc._status import (
    CACHE_METADATA_KEY,
    FALLBACK_METADATA_KEY,
    FALLBACK_OUT_OF_TIME_KEY,
    RETRYABLE_CODES,
    on_codes,
    replaced_by_fallback,
    status_code,
)
from .grpc._streams import DEFAULT_REPLAY_BUFFER, StreamResume
from .grpc._sync.client import ResilienceInterceptor, resilient_channel

__version__ = "0.1.0"
"""The version of the distribution (grpc-resilience-interceptors), read by its build from here."""

__all__ = [
    "CACHE_METADATA_KEY",
    "DEFAULT_REPLAY_BUFFER",
    "FALLBACK_METADATA_KEY",
    "FALLBACK_OUT_OF_TIME_KEY",
    "RETRYABLE_CODES",
    "AdaptiveLimiter",
    "AdaptiveThrottle",
    "Backoff",
    "Bulkhead",
    "BulkheadFullError",
    "CacheEntry",
    "CachePolicy",
    "CacheStore",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "Executor",
    "Fallback",
    "FallbackMisfitWarning",
    "HedgePolicy",
    "Keyed",
    "LatencyQuantile",
    "LoadReport",
    "LoadWatch",
    "LimitExceededError",
    "MemoryCache",
    "Priorities",
    "Priority",
    "RandomDelay",
    "RateLimitedError",
    "RateLimiter",
    "Registry",
    "RejectedError",
    "ResilienceError",
    "ResilienceInterceptor",
    "ResultFailure",
    "RetriesExceededError",
    "RetryBudget",
    "RetryPolicy",
    "ServiceConfig",
    "StackedRetriesWarning",
    "StreamResume",
    "ThrottledError",
    "Timeout",
    "TimeoutExceededError",
    "from_service_config",
    "load_report",
    "on_codes",
    "prioritized",
    "replaced_by_fallback",
    "resilient_channel",
    "status_code",
]
