"""The policy engine: policies, the executor that chains them, and what a policy or a transport extends.

Nothing here imports grpc: the engine runs plain sync callables and coroutines, and the gRPC adapters
(:mod:`interceptors.grpc`) describe gRPC to it through a :class:`Semantics`. Write a policy by subclassing
:class:`Policy`; describe another transport by subclassing :class:`Semantics`.
"""

from ._adaptive_limiter import LimiterPermit
from ._circuit_breaker import Permit
from ._clock import SYSTEM_CLOCK, Clock, SystemClock
from ._execution import PLAIN, Execution, Semantics
from ._policy import AsyncLink, Executor, Link, Policy  # noqa: F401  (Executor: at home in interceptors)

__all__ = [
    "PLAIN",
    "SYSTEM_CLOCK",
    "AsyncLink",
    "Clock",
    "Execution",
    "LimiterPermit",
    "Link",
    "Permit",
    "Policy",
    "Semantics",
    "SystemClock",
]
