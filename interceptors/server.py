"""Server interceptors (sync and grpc.aio servers): deadline and cancellation propagation with status forwarding,
load shedding, quotas per client, an access log, and fault injection for demos and drills.

Install the access log first (outermost), so that it sees the calls the others refuse, then the quota, so that a
client over its quota takes no place from the others:
``grpc.aio.server(interceptors=[AioAccessLog(), AioQuota(100), AioLoadShedding(64), AioContextPropagation()])``.
"""

from .grpc._access_log import AccessLog, AioAccessLog
from .grpc._clients import by_identity, by_metadata, by_peer
from .grpc._faults import AioFaultInjection, FaultInjection, Faults
from .grpc._propagation import (
    DEFAULT_RESERVE,
    AioContextPropagation,
    ContextPropagation,
    aforward,
    forward,
    incoming_priority,
)
from .grpc._quota import DEFAULT_MAX_CLIENTS, AioQuota, Quota
from .grpc._shedding import AioLoadShedding, LoadShedding

__all__ = [
    "DEFAULT_MAX_CLIENTS",
    "DEFAULT_RESERVE",
    "AccessLog",
    "AioAccessLog",
    "AioContextPropagation",
    "AioFaultInjection",
    "AioLoadShedding",
    "AioQuota",
    "ContextPropagation",
    "FaultInjection",
    "Faults",
    "LoadShedding",
    "Quota",
    "by_identity",
    "by_metadata",
    "by_peer",
    "aforward",
    "forward",
    "incoming_priority",
]
