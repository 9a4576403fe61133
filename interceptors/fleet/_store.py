"""FleetStore: the user's Valkey/Redis client, the prefix of every key, and the one pump that talks to the store.

No caller ever talks to the store. Fleet policies keep their state locally and register with their store as
*members*; the store's pump (a thread for a sync client, a task on the loop for an asyncio one) runs each member's
exchange with the store when the member says it is due, one server-side script per exchange, and hands the reply
back. The store is *answering* while its last exchange succeeded within ``stale_after`` seconds; otherwise every
member decides locally. After a failed exchange the pump waits ``min(2, 0.05 * 2**failures)`` seconds, times a
random factor in [0.5, 1], before it tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import threading
import weakref
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

from ..engine import _options as options
from ..engine._clock import Clock
from ..engine._delays import DRAWS
from ..engine._warn import warn

__all__ = ["FleetStore", "FleetWarning"]

_log = logging.getLogger("interceptors.fleet")

_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
MAX_BACKOFF = 2.0
IDLE_EXIT = 5.0  # seconds a pump without members lives on


class FleetWarning(UserWarning):
    """A fleet store's configuration that may make it slower to notice a hung store (e.g. no socket timeout)."""


class Member(Protocol):
    """What a fleet policy shows its store's pump."""

    def due(self, now: float) -> float:
        """When (on the store's clock) the member next wants an exchange."""
        ...

    def request(self, now: float) -> tuple[str, Sequence[str], Sequence[Any]]:
        """The exchange: a script's source, its keys and its arguments."""
        ...

    def settle(self, reply: Any, now: float) -> None:
        """The script's reply, received at ``now``."""
        ...


def checked_name(value: object, option: str) -> str:
    """A key's part: 1 to 200 letters, digits or ``_.:-`` (no braces: the store's hash tags are ours)."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(f"{option} must be 1 to 200 letters, digits or '_.:-', got {options.shown(value)}")
    return value


def _client_kind(client: object) -> str | None:
    """``"sync"`` or ``"async"`` for a redis-py client (plain or cluster), None for anything else."""
    try:
        import redis
        import redis.asyncio
        from redis.asyncio.cluster import RedisCluster as AsyncCluster
        from redis.cluster import RedisCluster
    except ImportError as error:  # pragma: no cover - the fleet extra is missing
        raise ImportError(
            "interceptors.fleet needs redis-py: pip install 'grpc-resilience-interceptors[fleet]'"
        ) from error
    if isinstance(client, (redis.Redis, RedisCluster)):
        return "sync"
    if isinstance(client, (redis.asyncio.Redis, AsyncCluster)):
        return "async"
    return None


def _socket_timeout(client: Any) -> float | None:
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    if kwargs is None:  # a cluster: its nodes' connections share these
        kwargs = getattr(getattr(client, "nodes_manager", None), "connection_kwargs", {}) or {}
    value = kwargs.get("socket_timeout")
    return value if isinstance(value, (int, float)) else None


class FleetStore:
    """The store every fleet policy of a process shares: a redis-py client to Valkey or Redis (``redis.Redis``,
    ``redis.asyncio.Redis``, or either's ``RedisCluster``: authentication, TLS, Sentinel and topology are the
    client's), and the prefix of every key. Keys are ``{prefix}:{{{name}}}:...``: each policy's keys share a hash
    tag, so each script touches one cluster slot.

    :param client: the redis-py client.
    :param prefix: the first part of every key (letters, digits, ``_.:-``).
    :param timeout: the most one exchange may take (default 0.5 s). An asyncio client's exchanges are cut there; a
        sync client's are bounded by its ``socket_timeout`` (set one: :class:`FleetWarning` if it has none).
    :param stale_after: seconds without a successful exchange after which policies decide locally (default 1).
    :param clock: the local clock of the policies' schedules (default the system clock).
    """

    def __init__(
        self,
        client: Any,
        *,
        prefix: str,
        timeout: options.Duration = 0.5,
        stale_after: options.Duration = 1.0,
        clock: Clock | None = None,
    ) -> None:
        kind = _client_kind(client)
        if kind is None:
            raise ValueError(
                "client must be a redis-py client (redis.Redis, redis.asyncio.Redis or a RedisCluster), "
                f"got {options.shown(client)}"
            )
        self.client: Any = client
        self.asynchronous: bool = kind == "async"
        self.prefix: str = checked_name(prefix, "prefix")
        self.timeout: float = options.seconds(timeout, "timeout", positive=True)
        self.stale_after: float = options.seconds(stale_after, "stale_after", positive=True)
        self.clock: Clock = options.clock(clock)
        if not self.asynchronous and _socket_timeout(client) is None:
            warn(
                "the fleet store's client has no socket_timeout: a hung store holds the store's pump (never a "
                "caller) until the connection ends; pass socket_timeout to the client",
                FleetWarning,
            )
        self.id: str = f"{socket.gethostname()}:{os.getpid()}:{DRAWS.getrandbits(32):08x}"
        self._members: weakref.WeakSet[Member] = weakref.WeakSet()
        self._scripts: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None  # the pump of a sync client
        self._task: asyncio.Task[None] | None = None  # the pump of an asyncio client, in ``_loop``
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async_wake: asyncio.Event | None = None
        self._closed = False
        self._idle_since: float | None = None  # since when the pump has had no member
        self.last_ok: float | None = None  # when an exchange last succeeded (None: never)
        self.failures: int = 0  # failed exchanges since the last success
        self._waiting_since: float | None = None  # when the exchange in flight started (None: none is)
        self._retry_at = -float("inf")

    def key(self, name: str, part: str) -> str:
        return f"{self.prefix}:{{{name}}}:{part}"

    def answering(self, now: float) -> bool:
        """Whether the store answers: its last exchange succeeded, and none has been waiting on it for longer
        than ``stale_after`` seconds (policies decide locally while it does not)."""
        since = self._waiting_since
        return self.last_ok is not None and not self.failures and (since is None or now - since <= self.stale_after)

    # --- members and the pump -----------------------------------------------------------------------------------

    def join(self, member: Member) -> None:
        """Serve ``member`` from now on (the store holds it weakly: a policy dropped is forgotten)."""
        with self._lock:
            self._members.add(member)
        self.wake()

    def wake(self) -> None:
        """Ask the pump to look at its members now (cheap; any thread). Starts the pump if it is not running: a
        thread for a sync client; for an asyncio client, a task in the running loop, if this runs in one (the
        members wake it from their callers' first calls)."""
        if not self.asynchronous:
            if self._thread is None:
                self._start_thread()
            self._wake.set()
            return
        loop, event, task = self._loop, self._async_wake, self._task
        if loop is None or loop.is_closed() or task is None or task.done():
            self._start_in_running_loop()
            return
        if event is not None:
            with contextlib.suppress(RuntimeError):  # closed meanwhile: the next running loop starts another pump
                loop.call_soon_threadsafe(event.set)

    def _start_in_running_loop(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop runs here: the next member's wake from a task starts the pump
            return
        with self._lock:
            task = self._task
            if self._closed or (self._loop is loop and task is not None and not task.done()):
                return
            self._loop, self._async_wake = loop, asyncio.Event()
            self._task = loop.create_task(self._run_async())

    def _start_thread(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run_thread, name=f"fleet-store-{self.prefix}", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the pump (policies then decide locally). The client stays the user's to close."""
        self._closed = True
        self.wake()

    def _retired(self, now: float) -> bool:
        """Whether the pump ends: it has had no member for ``IDLE_EXIT`` seconds (their policies were dropped; a
        member joining later starts another). Decided under the lock that ``join`` holds, so none is left unserved."""
        with self._lock:
            if self._members:
                self._idle_since = None
                return False
            if self._idle_since is None:
                self._idle_since = now
            if now - self._idle_since < IDLE_EXIT and not self._closed:
                return False
            self._thread = self._task = None
            self._idle_since = None
            return True

    def _due(self, now: float) -> tuple[list[Member], float]:
        """The members due now, and when the next one is due."""
        with self._lock:
            members = list(self._members)
        due, soonest = [], now + 1.0
        for member in members:
            at = member.due(now)
            if at <= now:
                due.append(member)
            else:
                soonest = min(soonest, at)
        if due and now < self._retry_at:  # backing off
            return [], self._retry_at
        return due, soonest

    def _script(self, source: str) -> Any:
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self.client.register_script(source)
        return script

    def _succeeded(self, member: Member, reply: Any) -> None:
        now = self.clock.now()
        self.last_ok, self.failures = now, 0
        try:
            member.settle(reply, now)
        except Exception:  # a reply we cannot read is the store's fault, never a caller's
            _log.exception("fleet member %r could not read the store's reply %r", member, reply)

    def _failed(self, error: BaseException) -> None:
        self.failures += 1
        delay = min(MAX_BACKOFF, 0.05 * 2 ** min(self.failures, 10)) * DRAWS.uniform(0.5, 1.0)
        self._retry_at = self.clock.now() + delay
        if self.failures == 1:
            _log.warning("fleet store %s failed (%s); members decide locally until it answers", self.prefix, error)

    def _run_thread(self) -> None:
        while not self._closed and not self._retired(self.clock.now()):
            self._wake.clear()  # a wake from now on is seen by the wait below
            at = self._exchange()
            if at is not None:
                self._wake.wait(max(at - self.clock.now(), 0.0))

    def _exchange(self) -> float | None:
        """Run the exchanges of the members due now (stopping at the first failure); None if any were, else when
        the next one is due. (Its own frame: the pump holds no member while it waits.)"""
        due, at = self._due(self.clock.now())
        for member in due:
            try:
                self._waiting_since = now = self.clock.now()
                source, keys, args = member.request(now)
                reply = self._script(source)(keys=list(keys), args=list(args))
            except Exception as error:
                self._failed(error)
                break
            finally:
                self._waiting_since = None
            self._succeeded(member, reply)
        return None if due else at

    async def _run_async(self) -> None:
        event = self._async_wake
        assert event is not None
        while not self._closed and not self._retired(self.clock.now()):
            event.clear()
            at = await self._aexchange()
            if at is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(event.wait(), max(at - self.clock.now(), 0.0))

    async def _aexchange(self) -> float | None:
        """:meth:`_exchange` in the loop, each exchange cut at ``timeout``."""
        due, at = self._due(self.clock.now())
        for member in due:
            try:
                self._waiting_since = now = self.clock.now()
                source, keys, args = member.request(now)
                reply: Awaitable[Any] = self._script(source)(keys=list(keys), args=list(args))
                reply = await asyncio.wait_for(reply, self.timeout)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._failed(error)
                break
            finally:
                self._waiting_since = None
            self._succeeded(member, reply)
        return None if due else at

    def __repr__(self) -> str:
        return f"FleetStore(prefix={self.prefix!r}, {'asyncio' if self.asynchronous else 'sync'} client)"
