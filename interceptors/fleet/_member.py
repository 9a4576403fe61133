"""What every fleet policy's local side shares: its mode (fleet or local), the start, the switch, its exchanges."""

from __future__ import annotations

import threading
from typing import Any

from ..engine import _options as options
from ..engine._events import FleetModeChanged
from ._store import FleetStore

FLEET, LOCAL = "fleet", "local"


class FleetMember:
    """A fleet policy's local side, and a member of its store (see :class:`~interceptors.fleet.FleetStore`).

    Its **mode** is ``"fleet"`` while the store answers, and during the start (the store's ``timeout`` after the
    member was made, unless the store fails meanwhile); else ``"local"``. Callers see a change of mode at their
    next call (:meth:`follow_mode`, under the member's lock), which reports :class:`FleetModeChanged` to the
    policy's ``on_mode`` and observers and calls :meth:`entered`. ``switch`` is the fleet switch's last word (""
    when clear), kept while the store is silent. The member looks at the store at least every ``CONTROL_EVERY`` seconds.
    """

    CONTROL_EVERY = 0.9  # seconds: a switch reaches every replica within a second

    def __init__(self, policy: Any, store: FleetStore, key: str, on_mode: options.Listener[FleetModeChanged] | None):
        self.policy, self.store, self.key, self.on_mode = policy, store, key, on_mode
        self.lock = threading.Lock()
        now = self.born = store.clock.now()
        self.exchanged = now - self.CONTROL_EVERY  # the first exchange at once
        self.heard = False
        self.switch = ""
        self.active = 1  # replicas taking part, as the store last said
        self._mode = FLEET

    def starting(self, now: float) -> float:
        """Seconds left of the start: the store's ``timeout`` after the member was made, unless the store failed
        (0 when over)."""
        return 0.0 if self.store.failures else max(self.born + self.store.timeout - now, 0.0)

    def mode(self, now: float) -> str:
        return FLEET if self.store.answering(now) or self.starting(now) else LOCAL

    def follow_mode(self, now: float) -> str:
        """The mode now, reporting a change (hold the lock)."""
        mode = self.mode(now)
        if mode != self._mode:
            self._mode = mode
            self.entered(mode)
            policy = self.policy
            if self.on_mode is not None or policy._observers:
                options.emit(self.on_mode, FleetModeChanged(mode, self.key, policy.name), policy._observers)
        return mode

    def entered(self, mode: str) -> None:
        """The member turned to ``mode`` (under the lock)."""

    def heard_from_store(self, active: Any, switch: Any) -> None:
        """What every reply says: the replicas taking part, the switch (hold the lock)."""
        self.heard = True
        self.active = max(int(active), 1)
        self.switch = switch.decode() if isinstance(switch, bytes) else str(switch)

    def keys(self, *parts: str) -> list[str]:
        return [self.store.key(self.key, part) for part in parts]
