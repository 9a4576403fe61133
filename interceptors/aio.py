"""grpc.aio client interceptors: :func:`resilience_interceptors` for your channels, :func:`resilient_channel` to
make one. The policies are the same objects a sync channel uses."""

from .grpc._aio.client import resilience_interceptors, resilient_channel

__all__ = ["resilience_interceptors", "resilient_channel"]
