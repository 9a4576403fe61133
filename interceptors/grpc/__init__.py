"""The gRPC adapters: client interceptors (sync and aio) over one call core, server interceptors, and how the
policies read gRPC (:class:`GrpcSemantics`). Users import them from :mod:`interceptors`, :mod:`interceptors.aio`
and :mod:`interceptors.server`; what is here is for extending them."""

from ._core import Status, StatusError
from ._status import GrpcSemantics

__all__ = ["GrpcSemantics", "Status", "StatusError"]  # MethodPolicies: in interceptors.typing
