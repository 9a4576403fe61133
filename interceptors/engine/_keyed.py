"""Keyed: one policy per key (a breaker per method, a bulkhead or a rate limiter per tenant), in bounded memory."""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable
from typing import Any

from . import _options as options
from ._clock import Clock
from ._execution import Execution
from ._keys import KeyFunction
from ._policy import AsyncLink, Link, Policy

__all__ = ["DEFAULT_IDLE", "DEFAULT_MAX_KEYS", "OTHER", "Keyed"]

DEFAULT_MAX_KEYS = 1000
DEFAULT_IDLE = 300.0
OTHER = "other"
"""The key of the policy shared by the calls whose key is not kept (past ``max_keys``) or cannot be told."""

KeyOf = Callable[[Execution], "str | None"]


def by_method(execution: Execution) -> str | None:
    """The called method's name (gRPC: ``/package.Service/Method``)."""
    return execution.semantics.method


class _Entry:
    """A key's policy, its calls in flight, and when it was last used."""

    __slots__ = ("__weakref__", "in_flight", "policy", "used")

    def __init__(self, policy: Policy, now: float) -> None:
        self.policy, self.in_flight, self.used = policy, 0, now


class _Steps:
    """One chain's step through each key's policy, made the first time the key is called in it. Keys are held
    weakly (a key forgotten takes its step with it), but for the last one called, kept at hand."""

    __slots__ = ("_by_entry", "_last", "_make")

    def __init__(self, make: Callable[[Policy], Any]) -> None:
        self._make = make
        self._by_entry: weakref.WeakKeyDictionary[_Entry, Any] = weakref.WeakKeyDictionary()
        self._last: tuple[_Entry | None, Any] = (None, None)

    def of(self, entry: _Entry) -> Any:
        last, step = self._last
        if last is entry:
            return step
        step = self._by_entry.get(entry)
        if step is None:
            step = self._by_entry[entry] = self._make(entry.policy)
        self._last = (entry, step)
        return step


class Keyed(Policy):
    """One policy per key: ``make(key)`` builds the policy of each key the first time a call has it, and every call
    of that key runs through it, as through a policy of the chain. A breaker per method opens for that method
    alone; a bulkhead or a rate limiter per tenant holds each tenant to its own share.

    Memory is bounded: a key's policy is forgotten once it has had no call for ``idle`` seconds and none is in
    flight (it starts afresh if the key comes back; idle ones are let go when room is needed), and at most
    ``max_keys`` are kept. Past that, the calls of new
    keys share one policy, that of the key :data:`OTHER`, until kept ones are forgotten; so do calls whose key
    cannot be told (``key`` raised, which is logged once, or gave no str), which are never failed for it. Name the
    policies ``make`` builds by key for events and metrics by key: at most ``max_keys`` + 1 names.

    :param make: builds a key's policy (called with :data:`OTHER` when the policy is made, to check it).
    :param key: the key of a call, from its execution (default: its method's name).
    :param max_keys: keys kept at once (default 1000).
    :param idle: seconds without calls after which a key's policy is forgotten (default 300).
    :param name: the policy's name (default: its class's name, "Keyed").
    """

    __slots__ = (
        "_entries",
        "_key_of",
        "_lock",
        "_sweep_after",
        "clock",
        "idle",
        "key",
        "make",
        "max_keys",
        "overflowed",
    )
    clock: Clock
    make: Callable[[str], Policy]
    key: KeyOf
    max_keys: int
    idle: float
    overflowed: int
    """Calls of keys not kept, that the :data:`OTHER` policy served."""
    _key_of: KeyFunction
    _sweep_after: float  # no key is idle long enough to be forgotten before then
    _entries: dict[str, _Entry]
    _lock: threading.Lock

    def __init__(
        self,
        make: Callable[[str], Policy],
        /,
        *,
        key: KeyOf = by_method,
        max_keys: int = DEFAULT_MAX_KEYS,
        idle: options.Duration = DEFAULT_IDLE,
        name: str | None = None,
    ) -> None:
        build = options.function(make, "make", "a key")
        other = build(OTHER)
        if not isinstance(other, Policy) or isinstance(other, Keyed):
            raise ValueError(f"make must build a policy (not a Keyed one) for each key, got {other!r}")
        clock = options.clock(getattr(other, "clock", None))
        self._init(
            name=options.policy_name(name, self),
            make=build,
            key=key,
            _key_of=KeyFunction(key, "key", "the call's execution", OTHER, options.policy_name(name, self)),
            max_keys=options.count(max_keys, "max_keys", maximum=10_000_000),
            idle=options.seconds(idle, "idle", positive=True),
            clock=clock,
            overflowed=0,
            _entries={OTHER: _Entry(other, clock.now())},
            _lock=threading.Lock(),
            _sweep_after=-math.inf,
        )

    @property
    def keys(self) -> int:
        """Keys whose policy is kept at the moment (:data:`OTHER` included)."""
        return len(self._entries)

    @property
    def kept(self) -> tuple[Policy, ...]:
        """The policies kept at the moment, one per key (:data:`OTHER`'s included)."""
        with self._lock:
            return tuple(entry.policy for entry in self._entries.values())

    def policy_for(self, key: str) -> Policy | None:
        """The policy kept for ``key``, if any."""
        entry = self._entries.get(key)
        return None if entry is None else entry.policy

    def _enter(self, execution: Execution) -> _Entry:
        """The entry of the call's key, its call counted in flight."""
        key = self._key_of(execution)
        with self._lock:
            now, entries = self.clock.now(), self._entries
            entry = entries.get(key)
            if entry is not None and not entry.in_flight and now - entry.used >= self.idle and key != OTHER:
                entry = None  # forgotten: it starts afresh
            if entry is None:
                if len(entries) > self.max_keys and now >= self._sweep_after:  # OTHER is kept beyond the cap
                    self._forget_idle(now)
                if len(entries) > self.max_keys:
                    entry = entries[OTHER]
                    object.__setattr__(self, "overflowed", self.overflowed + 1)
                else:
                    entry = entries[key] = _Entry(self._made(key), now)
            entry.in_flight += 1
            entry.used = now
            if entry.policy._observers is not self._observers:  # who hears this policy hears its keys' too
                object.__setattr__(entry.policy, "_observers", self._observers)
        return entry

    def _made(self, key: str) -> Policy:
        policy = self.make(key)
        if not isinstance(policy, Policy) or getattr(policy, "clock", self.clock) is not self.clock:
            raise ValueError(f"{self.name}: make({key!r}) must build a policy on the clock of the others")
        return policy

    def _forget_idle(self, now: float) -> None:
        """Forget the keys idle for ``idle`` seconds; none is idle so long before the moment it notes (a key in
        flight now is idle that long no sooner than ``idle`` from now), so no scan is made before then."""
        entries, idle = self._entries, self.idle
        for key in [k for k, e in entries.items() if k != OTHER and not e.in_flight and now - e.used >= idle]:
            del entries[key]
        idle_since = (e.used for k, e in entries.items() if k != OTHER and not e.in_flight)
        object.__setattr__(self, "_sweep_after", min(min(idle_since, default=now), now) + idle)

    def _leave(self, entry: _Entry) -> None:
        with self._lock:
            entry.in_flight -= 1
            entry.used = self.clock.now()

    def _left(self, entry: _Entry, execution: Execution) -> None:
        """The call's attempt returned: it leaves its key now, or, if it is still running (a stream, a deferred
        attempt: see ``Execution.settle``), when it ends."""
        if execution.settle is None:
            self._leave(entry)
        else:
            execution.settle.append(lambda _: self._leave(entry))

    def wrap(self, inner: Link) -> Link:
        steps = _Steps(lambda policy: policy.wrap(inner))

        def run(execution: Execution) -> Any:
            entry = self._enter(execution)
            try:
                result = steps.of(entry)(execution)
            except BaseException:
                self._leave(entry)
                raise
            self._left(entry, execution)
            return result

        return run

    def wrap_async(self, inner: AsyncLink) -> AsyncLink:
        steps = _Steps(lambda policy: policy.wrap_async(inner))

        async def run(execution: Execution) -> Any:
            entry = self._enter(execution)
            try:
                result = await steps.of(entry)(execution)
            except BaseException:
                self._leave(entry)
                raise
            self._left(entry, execution)
            return result

        return run

    def check(self, semantics: Any) -> None:
        self._entries[OTHER].policy.check(semantics)
