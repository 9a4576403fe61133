"""Which policies apply to which gRPC method, and the per-method state the adapters share (sync and aio)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .circuit_breaker import CircuitBreaker, Permit
from .execution import Execution
from .policy import Executor, Policy
from .status import GrpcSemantics
from .timeout import Timeout

PREVIOUS_ATTEMPTS = "grpc-previous-rpc-attempts"

MethodPolicies = Mapping[str, Sequence[Policy]]
"""Policies by full method name (``/pkg.Service/Method``) or service (``/pkg.Service/*``)."""


class Route:
    """Everything the adapters need for one method: its executor, semantics, and what applies to its streams."""

    __slots__ = ("breakers", "executor", "semantics", "stream_timeout")

    def __init__(self, method: str, policies: Sequence[Policy]) -> None:
        self.executor = Executor(*policies)
        self.semantics = GrpcSemantics(method)
        self.stream_timeout = min((p.seconds for p in policies if isinstance(p, Timeout)), default=None)
        self.breakers = tuple(p for p in policies if isinstance(p, CircuitBreaker))

    def execution(self, attempt: Callable[[Execution], Any], request: Any, timeout: float | None) -> Execution:
        """A new execution of ``attempt``, with the caller's ``timeout`` as its absolute deadline."""
        clock = self.executor.clock
        deadline = None if timeout is None else clock.now() + timeout
        return Execution(attempt, clock, self.semantics, request, deadline)

    def attempt_timeout(self, execution: Execution) -> float | None:
        """The grpc timeout for the current attempt: what is left of the execution's deadline."""
        if execution.deadline is None:
            return None
        return max(execution.deadline - execution.clock.now(), 0.0)

    def stream_timeout_for(self, timeout: float | None) -> float | None:
        """A stream's grpc timeout: the caller's, bounded by the chain's tightest Timeout."""
        if self.stream_timeout is None:
            return timeout
        return self.stream_timeout if timeout is None else min(timeout, self.stream_timeout)

    def admit_stream(self) -> list[Permit]:
        """Permits from every breaker of the chain, in order; raises CircuitOpenError if one is open."""
        permits: list[Permit] = []
        try:
            for breaker in self.breakers:
                permits.append(breaker.acquire_permit())
        except BaseException:
            for permit in permits:
                permit.release()
            raise
        return permits

    def record_stream(self, permits: Sequence[Permit], failure: BaseException | None, cancelled: bool) -> None:
        """Report how a stream ended to the breakers that admitted it (a cancelled stream says nothing)."""
        for permit in permits:
            if cancelled:
                permit.release()
            else:
                permit.record(failure, semantics=self.semantics)


def attempt_metadata(metadata: Any, execution: Execution) -> Any:
    """The caller's metadata, plus ``grpc-previous-rpc-attempts`` on retries, as gRPC's own retries send."""
    if execution.attempts == 1:
        return metadata
    return (*(metadata or ()), (PREVIOUS_ATTEMPTS, str(execution.attempts - 1)))


class Router:
    """Finds the route of a method: exact name first, then its service's wildcard, then the default policies."""

    __slots__ = ("_by_method", "_by_service", "_default", "_routes")

    def __init__(self, policies: Sequence[Policy], methods: MethodPolicies | None) -> None:
        self._default = tuple(policies)
        self._by_method: dict[str, tuple[Policy, ...]] = {}
        self._by_service: dict[str, tuple[Policy, ...]] = {}
        for key, chain in (methods or {}).items():
            service, slash, name = key[1:].partition("/") if isinstance(key, str) else ("", "", "")
            if not (key.startswith("/") and service and slash and name and "/" not in name):
                raise ValueError(f"methods keys are '/package.Service/Method' or '/package.Service/*', got {key!r}")
            if isinstance(chain, Policy) or not all(isinstance(p, Policy) for p in chain):
                raise ValueError(f"methods[{key!r}] must be a sequence of policies, got {chain!r}")
            (self._by_service if name == "*" else self._by_method)[key if name != "*" else service] = tuple(chain)
        for policy in self._default:
            if not isinstance(policy, Policy):
                raise ValueError(f"policies must be Policy instances, got {policy!r}")
        Executor(*self._default)  # fail now, not on the first call, if the policies cannot run together
        self._routes: dict[str | bytes, Route | None] = {}

    def route(self, method: str | bytes) -> Route | None:
        """The route for ``method``, or None when no policy applies to it."""
        try:
            return self._routes[method]
        except KeyError:
            pass
        name = method.decode() if isinstance(method, bytes) else method
        chain = self._by_method.get(name)
        if chain is None:
            chain = self._by_service.get(name[1:].partition("/")[0], self._default)
        route = Route(name, chain) if chain else None
        self._routes[method] = route
        return route


class StackedRetriesWarning(UserWarning):
    """grpcio's built-in retries would run under ours, multiplying attempts."""


def channel_options(options: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """``options`` with grpcio's built-in retries turned off, warning when the caller's own config asks for them."""
    result = list(options)
    keys = {key for key, _ in result}
    for key, value in result:
        if key == "grpc.enable_retries" and value:
            warnings.warn(
                "grpc.enable_retries is on: grpcio's built-in retries will run under the RetryPolicy and "
                "multiply attempts",
                StackedRetriesWarning,
                stacklevel=3,
            )
        if key == "grpc.service_config" and _has_retry_policy(value):
            warnings.warn(
                "the channel's service config has a retryPolicy: grpcio would retry under the RetryPolicy and "
                "multiply attempts; built-in retries are turned off (grpc.enable_retries=0) on this channel",
                StackedRetriesWarning,
                stacklevel=3,
            )
    if "grpc.enable_retries" not in keys:
        result.append(("grpc.enable_retries", 0))
    return result


def _has_retry_policy(service_config: Any) -> bool:
    try:
        config = json.loads(service_config)
    except (TypeError, ValueError):
        return False
    return any("retryPolicy" in m or "hedgingPolicy" in m for m in config.get("methodConfig", ()) or ())


__all__ = ["MethodPolicies", "Route", "Router", "StackedRetriesWarning", "channel_options"]
