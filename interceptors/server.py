"""Server interceptors (sync and grpc.aio servers): fault injection for demos and drills, and an access log."""

from .grpc.server import AccessLog, AioAccessLog, AioFaultInjection, FaultInjection, Faults

__all__ = ["AccessLog", "AioAccessLog", "AioFaultInjection", "FaultInjection", "Faults"]
