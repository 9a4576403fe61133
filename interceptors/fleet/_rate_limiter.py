"""GlobalRateLimiter: one rate limit for a whole fleet, leased to each replica in chunks from a shared bucket."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections import deque
from typing import Any

from ..engine import _options as options
from ..engine._clock import Clock
from ..engine._errors import RateLimitedError
from ..engine._events import FleetModeChanged, RateLimited
from ..engine._execution import Execution
from ..engine._places import wait_allowed
from ..engine._policy import AsyncLink, Link, Policy
from ..engine._rate_limiter import RateLimiter
from ._member import LOCAL, FleetMember
from ._scripts import MEMBERS, script
from ._store import FleetStore, checked_name

__all__ = ["GlobalRateLimiter"]

# The shared bucket, in one atomic step on the store's clock. KEYS: the bucket's theoretical arrival time (when
# every permit granted so far is paid for), the replicas asking (a sorted set by when they last asked), the
# incident switch. ARGV: seconds per permit, the bucket's capacity, the most permits it may owe (debt), permits
# wanted, this replica's id, how long a replica counts as asking after it last asked, permits it holds.
# Tokens now = min(capacity, (now - tat) / interval), negative while granted permits are still owed; a grant of n
# leaves tokens - n >= -debt. Of a lease, the permits the bucket holds are paid (usable at once), the others one
# every interval from when the bucket has paid for the first of them. A replica gets what it wants up to a fair
# share, (capacity + debt) / replicas asking, less what it holds, and nothing while less than half is free (then
# it is told when it all will be).
LEASE = script(
    MEMBERS,
    """
local interval, capacity, debt = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local active = members(KEYS[2], ARGV[5], tonumber(ARGV[6]), want > 0)
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local tokens = math.min(capacity, (now - tat) / interval)
local need = math.min(want, math.max(1, math.floor((capacity + debt) / active) - tonumber(ARGV[7])))
local free = math.floor(tokens + debt + 1e-9)
local granted = 0
if free >= math.ceil(need / 2) then granted = math.min(need, free) end
local paid, first, retry = 0, 0, 0
if granted > 0 then
  paid = math.min(granted, math.max(0, math.floor(tokens + 1e-9)))
  first = (paid + 1 - tokens) * interval
  tokens = tokens - granted
  tat = now - tokens * interval
  local life = math.ceil((tat - now + capacity * interval) * 1000) + 1000
  redis.call('SET', KEYS[1], string.format('%.6f', tat), 'PX', life)
elseif want > 0 then
  retry = (need - (tokens + debt)) * interval
end
local switch = redis.call('GET', KEYS[3]) or ''
return {granted, paid, string.format('%.6f', first), active, string.format('%.6f', retry), switch}
""",
)

DISABLED = "disabled"


class GlobalRateLimiter(Policy):
    """At most ``max_calls`` calls per ``period`` across every replica of a fleet that names the same ``key``.

    Replicas share one token bucket in the store (refilled at ``max_calls / period`` a second, holding at most
    ``burst`` permits) and lease permits from it in chunks sized to their recent demand (``demand * horizon``, at
    most a fair share of ``burst`` plus what the bucket may owe), so a call takes a permit leased beforehand and
    never waits on the network. A lease taken while the bucket is empty is a reservation: it becomes usable when
    the bucket has paid for it. Bound: over any T seconds the fleet admits at most ``burst + max_calls * T /
    period`` calls, plus at most one lease per replica (leased before, spent within).

    As :class:`~interceptors.RateLimiter`, a call waits for a permit up to ``max_wait`` seconds (never past its
    deadline), else is rejected with :class:`RateLimitedError` (``remaining``: when a permit would come). Until its
    first lease, and while the store does not answer (see :class:`FleetStore`: ``on_mode`` hears
    :class:`FleetModeChanged`), each replica limits itself locally to its share, ``max_calls`` divided by the
    replicas last seen asking (``fleet_size`` before it ever heard): no call waits on the store. The bound then
    grows by each such replica's share for as long. The fleet switch (``python -m interceptors.fleet disable KEY``)
    lets every call through on every replica until cleared.

    :param store: the :class:`FleetStore`.
    :param key: the limit's name in the store (letters, digits, ``_.:-``); replicas naming the same key share it.
    :param max_calls: permits per period for the whole fleet, positional (1..100 000).
    :param period: the period, seconds (default 1; at least 1 ms).
    :param burst: the most permits the shared bucket holds (default a tenth of a period's, at least 1).
    :param horizon: seconds of demand a lease covers, and of permits the bucket may owe (default 1).
    :param fleet_size: replicas assumed before the store was ever heard, for the local share (default 1).
    :param max_wait: seconds a call may wait for its permit (default 0).
    :param on_limited: hears :class:`RateLimited` when a call is rejected.
    :param on_mode: hears :class:`FleetModeChanged` when the limiter turns to local decisions or back.
    :param name: the policy's name in its events (default "GlobalRateLimiter").
    """

    __slots__ = (
        "_member", "burst", "clock", "fleet_size", "horizon", "key", "max_calls", "max_wait", "on_limited", "on_mode",
        "period", "store",
    )  # fmt: skip
    serves_deferred = True  # a permit is taken when the call starts; how it ends is nothing to it
    store: FleetStore
    key: str
    max_calls: int
    period: float
    burst: int
    horizon: float
    fleet_size: int
    max_wait: float
    on_limited: options.Listener[RateLimited] | None
    on_mode: options.Listener[FleetModeChanged] | None
    clock: Clock
    _member: _Leases

    def __init__(
        self,
        store: FleetStore,
        key: str,
        max_calls: int,
        /,
        *,
        period: options.Duration = 1.0,
        burst: int | None = None,
        horizon: options.Duration = 1.0,
        fleet_size: int = 1,
        max_wait: options.Duration = 0.0,
        on_limited: options.Listener[RateLimited] | None = None,
        on_mode: options.Listener[FleetModeChanged] | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(store, FleetStore):
            raise ValueError(f"store must be a FleetStore (FleetStore(client, prefix=...)), got {options.shown(store)}")
        max_calls = options.count(max_calls, "max_calls", maximum=options.MAX_CALLS)
        period = options.window(period, "period")
        default_burst = max(1, max_calls // 10)
        self._init(
            name=options.policy_name(name, self),
            store=store,
            key=checked_name(key, "key"),
            max_calls=max_calls,
            period=period,
            burst=default_burst if burst is None else options.count(burst, "burst", maximum=options.MAX_CALLS),
            horizon=options.window(horizon, "horizon"),
            fleet_size=options.count(fleet_size, "fleet_size", maximum=options.MAX_CALLS),
            max_wait=options.seconds(max_wait, "max_wait"),
            on_limited=options.listener(on_limited, "on_limited"),
            on_mode=options.listener(on_mode, "on_mode"),
            clock=store.clock,
        )
        self._init(_member=_Leases(self))
        store.join(self._member)

    @property
    def mode(self) -> str:
        """``"fleet"`` while the store answers, ``"local"`` while the replica decides alone."""
        return self._member.mode(self.clock.now())

    def _rejected(self, execution: Execution) -> RateLimitedError:
        remaining = self._member.remaining(self.clock.now())
        if self.on_limited is not None or self._observers:
            event = RateLimited(remaining, self.name, execution.semantics.method)
            options.emit(self.on_limited, event, self._observers)
        return RateLimitedError(f"rate limited (fleet): the next permit comes in {remaining:.3g}s", remaining=remaining)

    def _waited(self, execution: Execution) -> float:
        """A call with no permit in hand waits up to ``max_wait`` (never past its deadline) for leases to come: the
        wait for the permit it then takes; raises RateLimitedError if none comes in time."""
        now, lease = self.clock.now, self._member
        ends = now() + wait_allowed(self.max_wait, execution.remaining)
        while (left := ends - now()) > 0 and lease.await_lease(left):
            wait = lease.take(now(), execution)
            if wait is not None:
                return wait
        raise self._rejected(execution)

    async def _awaited(self, execution: Execution) -> float:
        """:meth:`_waited`, in this task."""
        now, lease = self.clock.now, self._member
        ends = now() + wait_allowed(self.max_wait, execution.remaining)
        while (left := ends - now()) > 0 and await lease.await_lease_async(left):
            wait = lease.take(now(), execution)
            if wait is not None:
                return wait
        raise self._rejected(execution)

    def wrap(self, inner: Link) -> Link:
        sleep, now, take = self.clock.sleep, self.clock.now, self._member.take

        def run(execution: Execution) -> Any:
            wait = take(now(), execution)
            if wait is None:
                wait = self._waited(execution)
            if wait:
                sleep(wait)
            return inner(execution)

        return run

    def wrap_async(self, inner: AsyncLink) -> AsyncLink:
        sleep, now, take = self.clock.asleep, self.clock.now, self._member.take

        async def run(execution: Execution) -> Any:
            wait = take(now(), execution)
            if wait is None:
                wait = await self._awaited(execution)
            if wait:
                await sleep(wait)
            return await inner(execution)

        return run

    def __repr__(self) -> str:
        return (
            f"GlobalRateLimiter({self.key!r}, {self.max_calls}, period={self.period}, burst={self.burst}, "
            f"store={self.store!r})"
        )


class _Leases(FleetMember):
    """The replica's side of a :class:`GlobalRateLimiter`: permits in hand, leases the bucket still owes, the demand
    that sizes the next lease, and the local limiter used while the store does not answer."""

    def __init__(self, limiter: GlobalRateLimiter) -> None:
        super().__init__(limiter, limiter.store, limiter.key, limiter.on_mode)
        self._limiter = limiter
        self._arrived = threading.Condition(self.lock)
        self._async_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()
        self._generation = 0  # replies settled so far: a waiter waits only if none came since it looked
        self._ready = 0  # permits usable now
        self._owed: deque[list[float]] = deque()  # leased permits not paid yet: [when the next is (local), how many]
        self._owed_count = 0  # permits in _owed
        self._refilling = False  # a caller has woken the pump for the next lease
        self._low = 0.5  # below so many permits held, the next lease is due
        self._interval = limiter.period / limiter.max_calls  # seconds the bucket takes to pay for a permit
        self._asked = 0  # calls that wanted a permit since the last exchange
        self._demand = 0.0  # calls a second wanting permits, over the last horizon (see _measure)
        self._counted, self._counting_since = 0, self.born
        self._retry_at = -math.inf
        self._asking = 1  # permits asked in the exchange in flight
        self.active = limiter.fleet_size
        self._local = self._local_limiter()  # before the first lease, and while the store does not answer

    def _local_limiter(self) -> RateLimiter:
        """A limiter of the replica's share: ``max_calls`` over the replicas last seen asking (smooth: a replica
        that just started admits about one call per share's interval before it hears from the store)."""
        limiter = self._limiter
        return RateLimiter(max(1, limiter.max_calls // self.active), period=limiter.period, clock=limiter.clock)

    def entered(self, mode: str) -> None:
        if mode == LOCAL:  # permits owed by a store we lost may never be paid for (a restart forgets them)
            self._owed.clear()
            self._owed_count = 0
            self._local = self._local_limiter()

    # --- callers ---------------------------------------------------------------------------------------------

    def take(self, now: float, execution: Execution) -> float | None:
        """Take a permit usable within the wait ``execution`` allows (see ``max_wait``): the wait until it is, or
        None."""
        with self.lock:
            self._asked += 1
            if self.switch == DISABLED:
                return 0.0
            limiter = self._limiter
            if self.follow_mode(now) == LOCAL or not self.heard:
                wait, taken = self._local._reserve(1, wait_allowed(limiter.max_wait, execution.remaining))
                refill = not self.heard
            else:
                owed = self._owed
                if owed and owed[0][0] <= now:
                    self._pay(now)
                wait, taken = 0.0, self._ready > 0
                if taken:
                    self._ready -= 1
                elif owed and owed[0][0] - now <= wait_allowed(limiter.max_wait, execution.remaining):
                    first = owed[0]
                    wait, taken = max(first[0] - now, 0.0), True
                    first[0] += self._interval
                    first[1] -= 1
                    self._owed_count -= 1
                    if not first[1]:
                        owed.popleft()
                refill = not self._refilling and self._ready + self._owed_count < self._low
                self._refilling |= refill
        if refill:
            limiter.store.wake()
        return wait if taken else None

    def remaining(self, now: float) -> float:
        with self.lock:
            if self._owed:
                return max(self._owed[0][0] - now, 0.0)
            if self._mode == LOCAL or not self.heard:
                return max(self._local._next - now, 0.0)
            return self._limiter.period / self._limiter.max_calls

    def await_lease(self, timeout: float) -> bool:
        """Wait in this thread up to ``timeout`` seconds for a lease; returns whether one came."""
        with self._arrived:
            generation = self._generation
            self._arrived.wait_for(lambda: self._generation != generation, timeout)
            return self._generation != generation

    async def await_lease_async(self, timeout: float) -> bool:
        """:meth:`await_lease`, in this task."""
        loop = asyncio.get_running_loop()
        waiter = (loop, loop.create_future())
        with self.lock:
            self._async_waiters.add(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter[1]), timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            with self.lock:
                self._async_waiters.discard(waiter)

    def _pay(self, now: float) -> None:
        """Move the permits the bucket has paid for by ``now`` into hand."""
        while self._owed and self._owed[0][0] <= now:
            first = self._owed[0]
            paid = min(int(first[1]), int((now - first[0]) / self._interval) + 1)
            self._ready += paid
            self._owed_count -= paid
            first[0] += paid * self._interval
            first[1] -= paid
            if not first[1]:
                self._owed.popleft()

    # --- the store's pump ------------------------------------------------------------------------------------

    def _want(self) -> int:
        """The next lease's size: the demand of a horizon, at least a fair share of the burst, at most a fair share
        of what the bucket can give."""
        limiter = self._limiter
        share = (limiter.burst + limiter.max_calls / limiter.period * limiter.horizon) // self.active
        least = max(1, limiter.burst // self.active)  # a share of the burst in hand, for calls that come at once
        return int(min(share, max(least, math.ceil(self._demand * limiter.horizon))))

    def _measure(self, now: float) -> None:
        """Count the calls asked since the last exchange into the demand: calls a second over the last horizon
        (the horizon's count so far over the whole horizon, until one has passed: a few calls in a short while are
        not a high rate)."""
        horizon = self._limiter.horizon
        self._counted += self._asked
        elapsed = now - self._counting_since
        if elapsed >= horizon:
            self._demand = self._counted / elapsed
            self._counted, self._counting_since = 0, now
        else:
            self._demand = max(self._demand, self._counted / horizon)

    def due(self, now: float) -> float:
        with self.lock:
            if self._asked and self._ready + self._owed_count < self._low:
                return max(self._retry_at, self.exchanged)  # now, unless the bucket said when to come back
            return self.exchanged + self.CONTROL_EVERY

    def request(self, now: float) -> tuple[str, list[str], list[Any]]:
        limiter = self._limiter
        with self.lock:
            self._measure(now)
            wanted = bool(self._asked) or not self.heard
            self._asked = 0
            self.exchanged = now
            want = self._want()
            self._asking = want if wanted and self._ready + self._owed_count < want else 0
            self._low = want / 2  # a caller wakes the pump when it holds fewer
        interval = limiter.period / limiter.max_calls
        debt = limiter.max_calls / limiter.period * limiter.horizon
        ttl = max(3 * limiter.horizon, 3 * self.CONTROL_EVERY)
        keys = self.keys("bucket", "asking", "switch")
        holding = self._ready + self._owed_count
        arguments = [repr(interval), limiter.burst, repr(debt), self._asking, self.store.id, repr(ttl), holding]
        return LEASE, keys, arguments

    def settle(self, reply: Any, now: float) -> None:
        granted, paid, first, active, retry, switch = reply
        granted, paid = int(granted), int(paid)
        with self.lock:
            self.heard_from_store(active, switch)
            self._refilling = False  # from now on, the next caller to find too few permits wakes the pump
            if granted > 0:
                self._ready += paid
                if granted > paid:
                    self._owed.append([now + float(first), granted - paid])
                    self._owed_count += granted - paid
                self._retry_at = -math.inf
            elif self._asking:
                self._retry_at = now + float(retry)
            self._generation += 1
            self._arrived.notify_all()
            waiters = list(self._async_waiters)
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # its loop closed: nobody waits there any more
                loop.call_soon_threadsafe(_resolve, future)

    def __repr__(self) -> str:
        return f"<leases of {self._limiter.key!r}: {self._ready} ready, {self._owed_count} owed>"


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
