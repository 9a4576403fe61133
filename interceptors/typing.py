"""The types of options, for annotating code that configures policies."""

from .engine._cache import RequestKey
from .engine._options import Duration, FailurePredicate, Handles, Listener, PushbackReader
from .engine._results import ResultPredicate
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
    "RequestKey",
    "Resumer",
    "ResultPredicate",
]
