"""The types of options, for annotating code that configures policies."""

from .engine._options import Duration, FailurePredicate, Handles, Listener, PushbackReader
from .grpc._clients import ClientKey
from .grpc._core import CallMetrics, MethodPolicies
from .grpc._streams import Resumer

__all__ = [
    "CallMetrics",
    "ClientKey",
    "Duration",
    "FailurePredicate",
    "Handles",
    "Listener",
    "MethodPolicies",
    "PushbackReader",
    "Resumer",
]
