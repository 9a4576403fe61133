"""grpc.aio client interceptors: :func:`resilience_interceptors` for your channels, :func:`resilient_channel` to
make one, and :class:`AioLoadWatch` to read a backend's load reports. The policies are the same objects a sync
channel uses."""

from .grpc._aio.client import resilience_interceptors, resilient_channel
from .grpc._load_watch import AioLoadWatch

__all__ = ["AioLoadWatch", "resilience_interceptors", "resilient_channel"]
