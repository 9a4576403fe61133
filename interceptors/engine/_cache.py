"""CachePolicy: answer a call from a cache when it can, and from a stale answer when the dependency fails."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol

from . import _options as options
from ._clock import Clock
from ._errors import underlying_failure
from ._events import CacheHit, CacheMiss
from ._execution import Execution
from ._policy import AsyncLink, Link, Policy

__all__ = ["CacheEntry", "CachePolicy", "CacheStore", "MemoryCache"]

_log = logging.getLogger("interceptors")

DEFAULT_MAX_ENTRIES = 1000
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_ENTRY_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """An answer a cache keeps: ``value`` as the transport keeps it (gRPC: the serialized response), its ``size`` in
    bytes, and when it was stored (on the policy's clock)."""

    value: Any
    size: int
    stored: float


class CacheStore(Protocol):
    """Where a :class:`CachePolicy` keeps its answers: the in-process :class:`MemoryCache` by default, or your own
    (say, on a shared store). Keys are tuples of the method's name and the request's key (hashable; gRPC: bytes).
    Methods are called from any thread, and on the event loop of async calls: keep them fast (a networked store
    answers from a local copy). A store that raises, or gives what is not a :class:`CacheEntry`, is logged, and the
    call goes on uncached. Entries' ``stored`` times are on the policy's clock: processes that share a store need a
    clock they share (a ``clock=`` whose ``now()`` is wall time); an entry from the future is never served."""

    def get(self, key: Hashable) -> CacheEntry | None:
        """The entry kept for ``key``, or None."""

    def put(self, key: Hashable, entry: CacheEntry) -> None:
        """Keep ``entry`` for ``key`` (in place of any other)."""

    def remove(self, key: Hashable) -> None:
        """Forget ``key``'s entry, if any."""


class MemoryCache:
    """A thread-safe in-process store, least recently used first out: at most ``max_entries`` entries and
    ``max_bytes`` bytes of them."""

    __slots__ = ("_bytes", "_entries", "_lock", "max_bytes", "max_entries")
    max_entries: int
    max_bytes: int

    def __init__(self, *, max_entries: int = DEFAULT_MAX_ENTRIES, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_entries = options.count(max_entries, "max_entries", maximum=10_000_000)
        self.max_bytes = options.count(max_bytes, "max_bytes", maximum=1 << 40)
        self._entries: OrderedDict[Hashable, CacheEntry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> CacheEntry | None:
        """The entry kept for ``key`` (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: Hashable, entry: CacheEntry) -> None:
        """Keep ``entry`` for ``key``, letting the least recently used go past the bounds (none larger than
        ``max_bytes``)."""
        if entry.size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.size
            self._entries[key] = entry
            self._bytes += entry.size
            self._trim()

    def resize(self, *, max_entries: int, max_bytes: int) -> None:
        """New bounds; the least recently used entries past them go."""
        with self._lock:
            self.max_entries, self.max_bytes = max_entries, max_bytes
            self._trim()

    def _trim(self) -> None:
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= dropped.size

    def remove(self, key: Hashable) -> None:
        """Forget ``key``'s entry, if any."""
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.size

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """The bytes of the entries kept."""
        return self._bytes

    def __repr__(self) -> str:
        return f"MemoryCache(max_entries={self.max_entries}, max_bytes={self.max_bytes})"


RequestKey = Callable[[Any], Hashable | None]
"""Tells a request's key in the cache (None: the call is not cached)."""


class CachePolicy(Policy):
    """Answers a call from the cache while a fresh answer is kept for it, and keeps each answer the call gets
    (failsafe-go's cache policy), so that a hit makes no call at all. Its answers are kept ``ttl`` seconds; with
    ``stale_if_error``, for that many seconds more an expired answer still answers a call that fails (as HTTP's
    ``stale-if-error``): the stale answer stands in for the failure, as a fallback's does (gRPC: trailing metadata
    ``resilience-cache: stale`` and the fallback's marker; a fresh hit carries ``resilience-cache: hit``).

    The key is the method's name with the request's key: by default what the transport tells of the request (gRPC:
    the serialized request; plain calls: the request itself if hashable), or ``key(request)``. A call whose key
    is None, or whose key function raises (logged once), goes uncached. The request alone decides: every caller of
    the channel shares the answers, so a method whose answer depends on who asks (credentials, a tenant in the
    metadata) needs no cache, or a channel per caller. Failures and fallbacks' answers are never
    kept, nor an answer of more than ``max_entry_bytes``; only calls of one request and one answer are cached (gRPC:
    unary calls; streams go through untouched). Memory is bounded: the default store keeps at most
    ``max_entries`` entries and ``max_bytes`` bytes, least recently used first out.

    :param ttl: seconds an answer is fresh.
    :param stale_if_error: seconds past ``ttl`` an answer still answers a failure (default None: never).
    :param key: a function of the request giving its key (default: the transport's).
    :param handle: which failures a stale answer replaces (default: the transport's failures, as for retries and
        fallbacks; rejections by policies inside included).
    :param max_entries: the default store's entries at most (default 1000).
    :param max_bytes: the default store's bytes at most (default 16 MiB).
    :param max_entry_bytes: the largest answer kept, bytes (default 1 MiB).
    :param store: where answers are kept (default a :class:`MemoryCache` of ``max_entries`` and ``max_bytes``).
    :param on_hit: hears :class:`CacheHit` for each call the cache answered.
    :param on_miss: hears :class:`CacheMiss` for each call it could not.
    :param name: the policy's name in its events (default: its class's name, "CachePolicy").
    :param clock: the clock of the answers' ages (default the system clock).
    """

    __slots__ = (
        "_key",
        "_logged",
        "clock",
        "handle",
        "key",
        "max_entry_bytes",
        "on_hit",
        "on_miss",
        "stale_if_error",
        "store",
        "ttl",
    )
    ttl: float
    stale_if_error: float | None
    key: RequestKey | None
    handle: options.FailurePredicate | None
    max_entry_bytes: int
    store: CacheStore
    on_hit: options.Listener[CacheHit] | None
    on_miss: options.Listener[CacheMiss] | None
    clock: Clock
    _logged: set[str]

    def __init__(
        self,
        *,
        ttl: options.Duration,
        stale_if_error: options.Duration | None = None,
        key: RequestKey | None = None,
        handle: options.Handles | None = None,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
        store: CacheStore | None = None,
        on_hit: options.Listener[CacheHit] | None = None,
        on_miss: options.Listener[CacheMiss] | None = None,
        clock: Clock | None = None,
        name: str | None = None,
    ) -> None:
        if store is None:
            store = MemoryCache(max_entries=max_entries, max_bytes=max_bytes)
        elif not all(callable(getattr(store, m, None)) for m in ("get", "put", "remove")):
            raise ValueError(f"store must have get(key), put(key, entry) and remove(key), got {options.shown(store)}")
        self._init(
            name=options.policy_name(name, self),
            ttl=options.seconds(ttl, "ttl", positive=True),
            stale_if_error=options.optional_seconds(stale_if_error, "stale_if_error", positive=True),
            key=options.optional_function(key, "key", "request"),
            handle=options.handles(handle, "handle"),
            max_entry_bytes=options.count(max_entry_bytes, "max_entry_bytes", maximum=1 << 40),
            store=store,
            on_hit=options.listener(on_hit, "on_hit"),
            on_miss=options.listener(on_miss, "on_miss"),
            clock=options.clock(clock),
            _logged=set(),
        )

    def inherit(self, old: Policy) -> None:
        """Keep ``old``'s answers, when both keep them in a :class:`MemoryCache` (now of this one's bounds)."""
        if isinstance(old, CachePolicy) and isinstance(old.store, MemoryCache) and isinstance(self.store, MemoryCache):
            old.store.resize(max_entries=self.store.max_entries, max_bytes=self.store.max_bytes)
            object.__setattr__(self, "store", old.store)

    def _log_once(self, what: str, error: BaseException) -> None:
        if what not in self._logged:
            self._logged.add(what)
            _log.error("%s: the %s failed (calls go on uncached): %r", self.name, what, error)

    def _key_of(self, execution: Execution) -> Hashable | None:
        semantics = execution.semantics
        if not semantics.unary:
            return None
        try:
            found = semantics.request_key(execution.request) if self.key is None else self.key(execution.request)
            if found is None:
                return None
            hash(found)
        except Exception as error:
            self._log_once("key function" if self.key is not None else "request key", error)
            return None
        return (semantics.method, found)

    def _get(self, key: Hashable) -> CacheEntry | None:
        try:
            entry = self.store.get(key)
        except Exception as error:
            self._log_once("store's get", error)
            return None
        if entry is not None and not isinstance(entry, CacheEntry):
            self._log_once("store's get", TypeError(f"a store must give a CacheEntry or None, got {entry!r}"))
            return None
        return entry

    def _fresh(self, execution: Execution, key: Hashable) -> tuple[CacheEntry | None, Any]:
        """The entry kept for ``key`` (None: none, or too old to serve even stale, then forgotten), and the fresh
        answer to give (:data:`_MISS` when it is not fresh)."""
        entry = self._get(key)
        if entry is not None:
            age = self.clock.now() - entry.stored
            if 0.0 <= age < self.ttl:
                answer = self._answer(execution, entry, age, None)
                if answer is not _MISS:
                    return entry, answer
                entry = None  # it gives no answer
            elif age < 0.0 or self.stale_if_error is None or age >= self.ttl + self.stale_if_error:
                entry = None  # kept on another clock, or too old even to stand in for a failure
            if entry is None:
                self._remove(key)
        self._missed(execution)
        return entry, _MISS

    def _remove(self, key: Hashable) -> None:
        try:
            self.store.remove(key)
        except Exception as error:
            self._log_once("store's remove", error)

    def _missed(self, execution: Execution) -> None:
        if self.on_miss is not None or self._observers:
            options.emit(self.on_miss, CacheMiss(self.name, execution.semantics.method), self._observers)

    def _answer(self, execution: Execution, entry: CacheEntry, age: float, failure: BaseException | None) -> Any:
        """The kept answer, recorded as the one the call gets in place of its attempts (see ``Execution.fallback``);
        :data:`_MISS` when what was kept gives no answer (logged once)."""
        try:
            answer = execution.semantics.from_kept(entry.value)
        except Exception as error:
            self._log_once("kept answer's reading", error)
            return _MISS
        real = None if failure is None else execution.semantics.caller_error(underlying_failure(failure))
        event = CacheHit(answer, age, failure is not None, real, self.name, execution.semantics.method)
        execution.fallback = event
        if self.on_hit is not None or self._observers:
            options.emit(self.on_hit, event, self._observers)
        return answer

    def _stale(self, execution: Execution, entry: CacheEntry | None, failure: BaseException) -> Any:
        """The stale answer in place of ``failure``, or :data:`_MISS` when there is none to give."""
        if entry is None or not (self.handle or execution.semantics.is_failure)(failure):
            return _MISS
        age = self.clock.now() - entry.stored
        assert self.stale_if_error is not None
        if age >= self.ttl + self.stale_if_error:
            return _MISS
        return self._answer(execution, entry, age, failure)

    def _keep(self, execution: Execution, key: Hashable, result: Any) -> None:
        """Keep the answer ``result`` carries, unless it is a fallback's, one judged a failure (see
        ``Execution.unwanted``) or too large."""
        if execution.fallback is not None or execution.unwanted is not None:
            return
        semantics = execution.semantics
        try:
            value, size = semantics.kept(semantics.response_of(result, execution))
        except Exception as error:
            self._log_once("answer's serialization", error)
            return
        if size > self.max_entry_bytes:
            return
        try:
            self.store.put(key, CacheEntry(value, size, self.clock.now()))
        except Exception as error:
            self._log_once("store's put", error)

    def wrap(self, inner: Link) -> Link:
        def run(execution: Execution) -> Any:
            key = self._key_of(execution)
            if key is None:
                return inner(execution)
            entry, fresh = self._fresh(execution, key)
            if fresh is not _MISS:
                return fresh
            try:
                result = inner(execution)
            except Exception as failure:
                stale = self._stale(execution, entry, failure)
                if stale is _MISS:
                    raise
                return stale
            self._keep(execution, key, result)
            return result

        return run

    def wrap_async(self, inner: AsyncLink) -> AsyncLink:
        async def run(execution: Execution) -> Any:
            key = self._key_of(execution)
            if key is None:
                return await inner(execution)
            entry, fresh = self._fresh(execution, key)
            if fresh is not _MISS:
                return fresh
            try:
                result = await inner(execution)
            except Exception as failure:
                stale = self._stale(execution, entry, failure)
                if stale is _MISS:
                    raise
                return stale
            self._keep(execution, key, result)
            return result

        return run


_MISS: Any = object()
"""No answer from the cache."""
