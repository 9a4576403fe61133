"""The policy engine: policies, the executor that chains them, and what a policy or a transport extends.

Nothing here imports grpc: the engine runs plain sync callables and coroutines, and the gRPC adapters
(:mod:`interceptors.grpc`) describe gRPC to it through a :class:`Semantics`. Write a policy by subclassing
:class:`Policy`; describe another transport by subclassing :class:`Semantics`.
"""

from .adaptive_limiter import LimiterPermit
from .circuit_breaker import Permit
from .clock import SYSTEM_CLOCK, Clock, SystemClock
from .execution import PLAIN, Execution, Semantics
from .policy import AsyncLink, Executor, Link, Policy

__all__ = [
    "PLAIN",
    "SYSTEM_CLOCK",
    "AsyncLink",
    "Clock",
    "Execution",
    "Executor",
    "LimiterPermit",
    "Link",
    "Permit",
    "Policy",
    "Semantics",
    "SystemClock",
]
