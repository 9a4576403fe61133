"""Server interceptors (sync and grpc.aio servers): deadline and cancellation propagation with status forwarding,
load shedding (on calls at once and on the server's own resources), quotas per client, ORCA load reports, an access
log, and fault injection for demos and drills.

Install the access log first (outermost), so that it sees the calls the others refuse, then the quota, so that a
client over its quota takes no place from the others:
``grpc.aio.server(interceptors=[AioAccessLog(), AioQuota(100), AioLoadShedding(64), AioContextPropagation()])``.
"""

from .engine._load import LoadRecorder
from .grpc._access_log import AccessLog, AioAccessLog
from .grpc._clients import by_identity, by_metadata, by_peer
from .grpc._faults import AioFaultInjection, FaultInjection, Faults
from .grpc._load_reporting import AioLoadReporting, LoadReporting, OrcaService, ServerLoad, call_load
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
    "AioLoadReporting",
    "AioLoadShedding",
    "AioQuota",
    "ContextPropagation",
    "FaultInjection",
    "Faults",
    "LoadRecorder",
    "LoadReporting",
    "LoadShedding",
    "OrcaService",
    "Quota",
    "ServerLoad",
    "by_identity",
    "by_metadata",
    "by_peer",
    "aforward",
    "call_load",
    "forward",
    "incoming_priority",
]
