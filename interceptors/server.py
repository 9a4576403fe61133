"""Server interceptors (sync and grpc.aio servers): deadline and cancellation propagation with status forwarding,
load shedding, an access log, and fault injection for demos and drills.

Install the access log first (outermost), so that it sees the calls the others refuse:
``grpc.aio.server(interceptors=[AioAccessLog(), AioLoadShedding(64), AioContextPropagation()])``.
"""

from .grpc._access_log import AccessLog, AioAccessLog
from .grpc._faults import AioFaultInjection, FaultInjection, Faults
from .grpc._propagation import DEFAULT_RESERVE, AioContextPropagation, ContextPropagation, aforward, forward
from .grpc._shedding import AioLoadShedding, LoadShedding

__all__ = [
    "DEFAULT_RESERVE",
    "AccessLog",
    "AioAccessLog",
    "AioContextPropagation",
    "AioFaultInjection",
    "AioLoadShedding",
    "ContextPropagation",
    "FaultInjection",
    "Faults",
    "LoadShedding",
    "aforward",
    "forward",
]
