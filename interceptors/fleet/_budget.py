"""FleetRetryBudget: a RetryBudget whose ratio and floor hold for the whole fleet, counts batched to the store."""

from __future__ import annotations

from typing import Any

from ..engine import _options as options
from ..engine._budget import DEFAULT_MIN_PER_SECOND, DEFAULT_RATIO, DEFAULT_WINDOW, RetryBudget
from ..engine._events import BudgetExceeded, FleetModeChanged
from ..engine._tally import SLICES
from ._member import LOCAL, FleetMember
from ._scripts import MEMBERS, TALLY, script
from ._store import FleetStore, checked_name

__all__ = ["FleetRetryBudget"]

# KEYS: the counts (calls "c", retries "r") by slice, the replicas (every one that looked within ``ttl``), the
# switch. ARGV: a slice's seconds, slices in the window, calls and retries to add, this replica's id, ttl.
COUNT = script(
    MEMBERS,
    TALLY,
    """
local span, slices = tonumber(ARGV[1]), tonumber(ARGV[2])
local calls, retries = tonumber(ARGV[3]), tonumber(ARGV[4])
local active = members(KEYS[2], ARGV[5], tonumber(ARGV[6]), true)
local totals = tally(KEYS[1], span, slices, {c = calls, r = retries})
return {totals['c'] or 0, totals['r'] or 0, active, redis.call('GET', KEYS[3]) or ''}
""",
)

DISABLED = "disabled"


class FleetRetryBudget(RetryBudget):
    """A :class:`~interceptors.RetryBudget` for every replica naming ``key``: a retry is allowed while, over the last
    ``window`` seconds and across the fleet::

        retries < ratio * calls + min_per_second * window

    Each replica counts its calls and retries locally and sends them to the store in batches (at most every
    ``sync_interval`` seconds, and only when it has any); the store's totals come back with each batch. Between
    two batches a replica may take as many whole retries as ``headroom / replicas + ratio * its new calls`` holds,
    ``headroom`` being what the fleet's totals left at the last batch and ``replicas`` those that looked at the
    store lately (idle ones too: a busy replica's next batch brings it more), so that replicas deciding at once
    cannot together overrun the budget by more than the calls they have not reported yet allow. While the store
    does not answer, each replica keeps a budget of its own with the floor divided by the replicas last seen
    (``on_mode`` hears :class:`FleetModeChanged`). The fleet switch (``disable KEY``) allows every retry on every
    replica until cleared.

    Give it to RetryPolicy and HedgePolicy as any budget (``RetryPolicy(budget=...)``).

    :param store: the :class:`FleetStore`.
    :param key: the budget's name in the store (letters, digits, ``_.:-``).
    :param ratio: retries per call, fleet-wide (default 0.2).
    :param min_per_second: retries a second the fleet may take whatever its traffic (default 10).
    :param window: seconds over which calls and retries are counted (default 10).
    :param sync_interval: seconds between a replica's batches (default 0.1).
    :param on_exceeded: hears :class:`BudgetExceeded` when a retry is refused.
    :param on_mode: hears :class:`FleetModeChanged`.
    """

    __slots__ = ("_member", "key", "on_mode", "store", "sync_interval")
    store: FleetStore
    key: str
    sync_interval: float
    on_mode: options.Listener[FleetModeChanged] | None
    _member: _Counts

    def __init__(
        self,
        store: FleetStore,
        key: str,
        /,
        *,
        ratio: float = DEFAULT_RATIO,
        min_per_second: float = DEFAULT_MIN_PER_SECOND,
        window: options.Duration = DEFAULT_WINDOW,
        sync_interval: options.Duration = 0.1,
        on_exceeded: options.Listener[BudgetExceeded] | None = None,
        on_mode: options.Listener[FleetModeChanged] | None = None,
    ) -> None:
        if not isinstance(store, FleetStore):
            raise ValueError(f"store must be a FleetStore (FleetStore(client, prefix=...)), got {options.shown(store)}")
        super().__init__(
            ratio=ratio, min_per_second=min_per_second, window=window, on_exceeded=on_exceeded, clock=store.clock
        )
        self._set(
            store=store,
            key=checked_name(key, "key"),
            sync_interval=options.seconds(sync_interval, "sync_interval", positive=True),
            on_mode=options.listener(on_mode, "on_mode"),
        )
        self._set(_member=_Counts(self))
        store.join(self._member)

    @classmethod
    def token_bucket(cls, **options: Any) -> RetryBudget:
        """Not for a fleet: gRPC's ``retryThrottling`` is a bucket per client; use :meth:`RetryBudget.token_bucket`."""
        raise TypeError("a FleetRetryBudget has no token-bucket mode: use RetryBudget.token_bucket(...) per client")

    @property
    def name(self) -> str:
        return "FleetRetryBudget"

    @property
    def mode(self) -> str:
        """``"fleet"`` while the store answers, ``"local"`` while the replica decides alone."""
        return self._member.mode(self.store.clock.now())

    def record_call(self) -> None:
        self._member.record_call()

    def try_retry(self, attempts: int, failure: BaseException | None, method: str | None = None) -> bool:
        allowed = self._member.try_retry(self.store.clock.now())
        if not allowed and (self.on_exceeded is not None or self._observers):
            event = BudgetExceeded(attempts, failure, "FleetRetryBudget", method)
            options.emit(self.on_exceeded, event, self._observers)
        return allowed

    def __repr__(self) -> str:
        return (
            f"FleetRetryBudget({self.key!r}, ratio={self.ratio:g}, min_per_second={self.min_per_second:g}, "
            f"window={self.window:g}, store={self.store!r})"
        )


class _Counts(FleetMember):
    """The replica's side of a :class:`FleetRetryBudget`: its own counts over the window (for local decisions),
    those it has not sent yet, and the fleet's totals as of the last batch."""

    def __init__(self, budget: FleetRetryBudget) -> None:
        super().__init__(budget, budget.store, budget.key, budget.on_mode)
        self._budget = budget
        self._calls = self._retries = 0  # not sent yet
        self._sending = (0, 0)  # in the batch in flight
        self._allowance = budget.min_per_second * budget.window  # retries until the next batch (before any: floor)

    def record_call(self) -> None:
        with self.lock:
            first = not (self._calls or self._retries)
            self._calls += 1
            self._budget._tally.add(first=1)
        if first:  # the pump may be asleep until the next look at the switch: a batch is due sooner
            self.store.wake()

    def try_retry(self, now: float) -> bool:
        budget = self._budget
        with self.lock:
            if self.switch == DISABLED:
                allowed = True
            elif self.follow_mode(now) == LOCAL:
                tally = budget._tally
                tally.roll()
                floor = budget.min_per_second * budget.window / self.active
                allowed = tally.second < budget.ratio * tally.first + floor
            else:
                allowed = self._retries + 1 <= self._allowance + budget.ratio * self._calls + 1e-9  # a whole retry fits
            first = allowed and not (self._calls or self._retries)
            if allowed:
                self._retries += 1
                budget._tally.add(second=1)
        if first:
            self.store.wake()
        return allowed

    def due(self, now: float) -> float:
        with self.lock:
            if self._calls or self._retries:
                return self.exchanged + self._budget.sync_interval
            return self.exchanged + self.CONTROL_EVERY

    def request(self, now: float) -> tuple[str, list[str], list[Any]]:
        budget = self._budget
        with self.lock:
            self._sending = (self._calls, self._retries)
            self.exchanged = now
        span = budget.window / SLICES
        keys = self.keys("counts", "counting", "switch")
        ttl = repr(max(budget.window, 3 * self.CONTROL_EVERY))
        return COUNT, keys, [repr(span), SLICES, self._sending[0], self._sending[1], self.store.id, ttl]

    def settle(self, reply: Any, now: float) -> None:
        calls, retries, active, switch = reply
        budget = self._budget
        with self.lock:
            self.heard_from_store(active, switch)
            sent_calls, sent_retries = self._sending
            self._calls -= sent_calls
            self._retries -= sent_retries
            headroom = budget.ratio * int(calls) + budget.min_per_second * budget.window - int(retries)
            self._allowance = max(headroom, 0.0) / self.active
