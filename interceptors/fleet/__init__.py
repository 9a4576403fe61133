"""Resilience for a fleet of replicas, on the Valkey or Redis the fleet already runs (the ``fleet`` extra).

Hand a redis-py client to a :class:`FleetStore`, and give the store to fleet policies: :class:`GlobalRateLimiter`
(one rate limit for every replica), :class:`FleetRetryBudget` (one retry budget), :class:`FleetCircuitBreaker`
(breakers that share their evidence). Calls never wait on the store: each replica keeps what it needs locally, a
pump exchanges it with the store in the background, and when the store does not answer every policy decides
locally until it does (each says so: :class:`~interceptors.events.FleetModeChanged`). :class:`FleetSwitch` (and
``python -m interceptors.fleet``) flips a policy on every replica at once.
"""

from ._breaker import FleetCircuitBreaker
from ._budget import FleetRetryBudget
from ._rate_limiter import GlobalRateLimiter
from ._store import FleetStore, FleetWarning
from ._switch import FleetSwitch

__all__ = ["FleetCircuitBreaker", "FleetRetryBudget", "FleetStore", "FleetSwitch", "FleetWarning", "GlobalRateLimiter"]
