"""The fleet switch: force a named breaker open or closed, or disable a limiter, on every replica at once."""

from __future__ import annotations

from typing import Any

from ..engine import _options as options
from ._store import FleetStore, checked_name

__all__ = ["FleetSwitch"]

STATES = ("open", "closed", "disabled")
"""What a switch may say: a breaker forced open or closed, a limiter disabled (every call goes through)."""


class FleetSwitch:
    """Sets the incident switch of fleet policies: every replica whose policy has this ``key`` follows within a
    second (each looks at its switch every half second), and keeps the last state it saw while the store does not
    answer. A switch stays until cleared, or for ``ttl`` seconds.

    :param store: a :class:`FleetStore` whose client is sync (``redis.Redis`` or ``RedisCluster``), as the
        replicas' stores (same prefix).
    """

    def __init__(self, store: FleetStore) -> None:
        if not isinstance(store, FleetStore) or store.asynchronous:
            raise ValueError(f"store must be a FleetStore with a sync client, got {options.shown(store)}")
        self.store = store

    def _key(self, key: str) -> str:
        return self.store.key(checked_name(key, "key"), "switch")

    def set(self, key: str, state: str, *, ttl: options.Duration | None = None) -> None:
        """Switch ``key`` to ``state`` (``"open"``, ``"closed"`` or ``"disabled"``) for every replica."""
        if state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, got {options.shown(state)}")
        seconds = options.optional_seconds(ttl, "ttl", positive=True)
        self.store.client.set(self._key(key), state, px=None if seconds is None else max(1, round(seconds * 1000)))

    def force_open(self, key: str, *, ttl: options.Duration | None = None) -> None:
        """Open the breaker named ``key`` on every replica: calls fail fast with CircuitOpenError."""
        self.set(key, "open", ttl=ttl)

    def force_closed(self, key: str, *, ttl: options.Duration | None = None) -> None:
        """Close the breaker named ``key`` on every replica whatever its evidence: every call goes through."""
        self.set(key, "closed", ttl=ttl)

    def disable(self, key: str, *, ttl: options.Duration | None = None) -> None:
        """Let every call through the limiter named ``key`` on every replica."""
        self.set(key, "disabled", ttl=ttl)

    def clear(self, key: str) -> None:
        """Hand ``key`` back to its policies' own decisions."""
        self.store.client.delete(self._key(key))

    def state(self, key: str) -> str | None:
        """The switch's state, or None when it is clear."""
        value: Any = self.store.client.get(self._key(key))
        return None if value is None else value.decode() if isinstance(value, bytes) else str(value)

    def __repr__(self) -> str:
        return f"FleetSwitch({self.store!r})"
