"""FleetCircuitBreaker: circuit breakers that share their evidence, open together and probe one at a time."""

from __future__ import annotations

from typing import Any

from ..engine import _options as options
from ..engine._circuit_breaker import CircuitBreaker
from ..engine._events import CircuitState, CircuitStateChanged, FleetModeChanged
from ..engine._policy import Policy
from ._member import LOCAL, FleetMember
from ._scripts import MEMBERS, TALLY, script
from ._store import FleetStore, checked_name

__all__ = ["FleetCircuitBreaker"]

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
FORCED_OPEN, DISABLED = CircuitState.FORCED_OPEN, CircuitState.DISABLED
SLICES = 10

# KEYS: the fleet's outcomes (calls "c", failures "f") by slice, when the fleet's open delay ends (store ms; absent:
# closed), the probe lease (who holds it), the switch, the replicas, the fleet's failures in a row. ARGV: a slice's
# seconds, slices in the window, calls and failures to add, the fewest calls that may open and the failure rate
# that opens (rate < 0: no rate rule), the open delay (ms), this replica's id, what it reports ("" | "probe": it
# wants the lease, its breaker opened by the fleet | "own-probe": opened by its own evidence | "closed" /
# "reopened": its probe ended so), the probe lease's time to live (ms), how long a replica counts as taking part,
# the failures in a row that open (0: no such rule), whether a call succeeded since the last batch, the failures
# since then.
# The closed fleet opens when its window holds at least the fewest calls and the failure rate, or when its
# failures in a row (any replica's success starts them again) reach their threshold; the evidence is then used
# up. Once its delay is over, the first replica to ask holds the probe lease (as does, while the fleet is closed,
# a replica whose breaker opened on its own evidence), and its trial closes the fleet (a fresh window) or opens
# it again. Returns the open delay left (ms; 0: over, waiting for a probe; -1: closed), the lease's holder, the
# switch, the replicas.
EVIDENCE = script(
    MEMBERS,
    TALLY,
    """
local span, slices = tonumber(ARGV[1]), tonumber(ARGV[2])
local totals = tally(KEYS[1], span, slices, {c = tonumber(ARGV[3]), f = tonumber(ARGV[4])})
local minimum, rate, delay = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local member, event, lease = ARGV[8], ARGV[9], tonumber(ARGV[10])
local active = members(KEYS[5], member, tonumber(ARGV[11]), true)
local in_a_row, succeeded, trailing = tonumber(ARGV[12]), ARGV[13] == '1', tonumber(ARGV[14])
local streak = trailing
if not succeeded then streak = tonumber(redis.call('GET', KEYS[6]) or '0') + trailing end
redis.call('SET', KEYS[6], streak, 'PX', math.ceil(span * slices * 1000))
local ms = math.floor(now * 1000)
local keep = 2 * delay + 2 * lease + 60000  -- a fleet nobody probes for this long is forgotten (closed)
local function open_fleet()
  redis.call('SET', KEYS[2], ms + delay, 'PX', keep)
end
local holder = redis.call('GET', KEYS[3])
if holder == member and (event == 'closed' or event == 'reopened') then
  redis.call('DEL', KEYS[3])
  holder = false
  if event == 'closed' then
    redis.call('DEL', KEYS[1], KEYS[2], KEYS[6])
    totals, streak = {}, 0
  else
    open_fleet()
  end
end
local ends = tonumber(redis.call('GET', KEYS[2]) or '-1')
if ends < 0 and not holder then
  local calls, failures = totals['c'] or 0, totals['f'] or 0
  if (rate >= 0 and calls >= minimum and failures >= rate * calls) or (in_a_row > 0 and streak >= in_a_row) then
    open_fleet()
    redis.call('DEL', KEYS[1], KEYS[6])
    ends = ms + delay
  end
end
if not holder and ((event == 'probe' and ends >= 0 and ends <= ms) or (event == 'own-probe' and ends < 0)) then
  redis.call('SET', KEYS[3], member, 'PX', lease)
  holder = member
end
local left = -1
if ends >= 0 then left = math.max(ends - ms, 0) end
return {left, holder or '', redis.call('GET', KEYS[4]) or '', active}
""",
)

ASK_AGAIN = 0.05  # seconds a breaker waiting for the probe lease stays open before it asks again


class FleetCircuitBreaker(CircuitBreaker):
    """A :class:`~interceptors.CircuitBreaker` whose replicas (every one naming ``key``) share their evidence.

    Each replica's breaker decides as a CircuitBreaker does, from its own calls, and also sends the outcomes of its
    closed-state calls to the store in batches (every ``sync_interval`` seconds at most). The fleet opens for
    ``delay`` by the same kind of rule as the breaker's, over the fleet's calls: with a failure rate, when its
    outcomes of the last ``fleet_period`` seconds hold at least ``fleet_minimum_calls`` calls and a failure share of
    at least ``fleet_failure_rate``; with a failure threshold, when the fleet's failures in a row (any replica's
    success starts them again) reach ``fleet_failure_threshold``. Every replica's breaker then opens at its next
    exchange, replicas that have not failed yet included. When a breaker's delay is over (opened by the fleet or by its
    own evidence), it turns half-open only if it holds the fleet's probe lease, which one replica at a time holds
    (for at most ``probe_timeout`` seconds); the others stay open. The prober's trial closes every replica's
    breaker (it succeeded) or opens the fleet again. While the store does not answer, each breaker decides alone
    (``on_mode`` hears :class:`FleetModeChanged`). The fleet switch forces every replica's breaker open
    (``open KEY``: FORCED_OPEN) or closed (``closed KEY``: DISABLED, every call admitted) until cleared.

    :param store: the :class:`FleetStore`.
    :param key: the breaker's name in the store (letters, digits, ``_.:-``).
    :param fleet_failure_rate: failure share of the fleet's calls that opens it (default the breaker's
        ``failure_rate``; None for a breaker with a threshold: no rate rule).
    :param fleet_minimum_calls: the fewest fleet calls the rate rule needs (default ``minimum_calls``).
    :param fleet_period: seconds of the fleet's window (default ``failure_period``, else 10).
    :param fleet_failure_threshold: the fleet's failures in a row that open it (default the breaker's
        ``failure_threshold``; None for a breaker with a rate: no such rule).
    :param probe_timeout: the longest one replica holds the probe lease (default 5 s).
    :param sync_interval: seconds between a replica's batches (default 0.1).
    :param on_mode: hears :class:`FleetModeChanged`.
    :param breaker_options: every :class:`~interceptors.CircuitBreaker` option but ``clock`` (the store's).
    """

    __slots__ = (
        "_member",
        "fleet_failure_rate",
        "fleet_failure_threshold",
        "fleet_minimum_calls",
        "fleet_period",
        "key",
        "on_mode",
        "probe_timeout",
        "store",
        "sync_interval",
    )
    store: FleetStore
    key: str
    fleet_failure_rate: float | None
    fleet_failure_threshold: int | None
    fleet_minimum_calls: int
    fleet_period: float
    probe_timeout: float
    sync_interval: float
    on_mode: options.Listener[FleetModeChanged] | None
    _member: _Evidence

    def __init__(
        self,
        store: FleetStore,
        key: str,
        /,
        *,
        fleet_failure_rate: float | None = None,
        fleet_minimum_calls: int | None = None,
        fleet_period: options.Duration | None = None,
        fleet_failure_threshold: int | None = None,
        probe_timeout: options.Duration = 5.0,
        sync_interval: options.Duration = 0.1,
        on_mode: options.Listener[FleetModeChanged] | None = None,
        **breaker_options: Any,
    ) -> None:
        if not isinstance(store, FleetStore):
            raise ValueError(f"store must be a FleetStore (FleetStore(client, prefix=...)), got {options.shown(store)}")
        if "clock" in breaker_options:
            raise ValueError("a FleetCircuitBreaker keeps its store's clock: give clock= to the FleetStore")
        super().__init__(clock=store.clock, **breaker_options)
        config = self.config
        rate = config.failure_rate if fleet_failure_rate is None else fleet_failure_rate
        in_a_row = config.failure_threshold if fleet_failure_threshold is None else fleet_failure_threshold
        minimum = config.minimum_calls if fleet_minimum_calls is None else fleet_minimum_calls
        self._init(
            store=store,
            key=checked_name(key, "key"),
            fleet_failure_rate=None if rate is None else options.ratio(rate, "fleet_failure_rate"),
            fleet_failure_threshold=None
            if in_a_row is None
            else options.count(in_a_row, "fleet_failure_threshold", maximum=options.MAX_CALLS),
            fleet_minimum_calls=options.count(minimum, "fleet_minimum_calls", maximum=options.MAX_CALLS),
            fleet_period=options.window(
                config.failure_period or 10.0 if fleet_period is None else fleet_period, "fleet_period"
            ),
            probe_timeout=options.seconds(probe_timeout, "probe_timeout", positive=True),
            sync_interval=options.seconds(sync_interval, "sync_interval", positive=True),
            on_mode=options.listener(on_mode, "on_mode"),
        )
        member = _Evidence(self)
        self._init(_member=member)
        self._machine.tap, self._machine.gate = member.tap, member.gate
        options.observe(self, member.changed)
        store.join(member)

    @property
    def mode(self) -> str:
        """``"fleet"`` while the store answers, ``"local"`` while the replica decides alone."""
        return self._member.mode(self.clock.now())

    def __repr__(self) -> str:
        return f"FleetCircuitBreaker({self.key!r}, store={self.store!r}, {super().__repr__()})"

    def inherit(self, old: Policy) -> None:
        """Nothing: a fleet breaker's state is the fleet's, which the new one hears at its first exchange (the one it
        replaces leaves the store when it is dropped)."""


class _Evidence(FleetMember):
    """The replica's side of a :class:`FleetCircuitBreaker`: outcomes not sent yet, the probe it wants or holds,
    what its probe ended with, and what the fleet last said."""

    def __init__(self, breaker: FleetCircuitBreaker) -> None:
        super().__init__(breaker, breaker.store, breaker.key, breaker.on_mode)
        self._breaker = breaker
        self._calls = self._failures = 0  # not sent yet
        self._succeeded, self._in_a_row = False, 0  # a success not sent yet; the failures since the last one
        self._sending = (0, 0)
        self._report = ""  # "probe", "closed" or "reopened"
        self._probing = False  # holds the probe lease
        self._fleet_opened = False  # the breaker is open because the fleet is
        self._forced = ""  # the switch the breaker follows ("" none)

    # --- the breaker (under its machine's lock: never call it back from here) ----------------------------------

    def tap(self, failed: bool) -> None:
        with self.lock:
            first = not (self._calls or self._report)
            self._calls += 1
            self._failures += failed
            if failed:
                self._in_a_row += 1
            else:
                self._succeeded, self._in_a_row = True, 0
        if first:
            self.store.wake()

    def gate(self, now: float) -> float | None:
        with self.lock:
            if self.follow_mode(now) == LOCAL or self._probing:
                return None
            self._report = self._report or ("probe" if self._fleet_opened else "own-probe")
        self.store.wake()
        return ASK_AGAIN

    def changed(self, event: object) -> None:
        """The breaker changed state (it reports to its observers outside its lock)."""
        if not isinstance(event, CircuitStateChanged) or event.old is not HALF_OPEN:
            if isinstance(event, CircuitStateChanged) and event.new is CLOSED:
                with self.lock:
                    self._fleet_opened = False
            return
        with self.lock:
            if not self._probing:
                return
            self._probing = False
            self._report = "closed" if event.new is CLOSED else "reopened"
            self._fleet_opened = False
        self.store.wake()

    # --- the store's pump ----------------------------------------------------------------------------------------

    def due(self, now: float) -> float:
        with self.lock:
            if self._report:
                return now
            if self._calls:
                return self.exchanged + self._breaker.sync_interval
            return self.exchanged + self.CONTROL_EVERY

    def request(self, now: float) -> tuple[str, list[str], list[Any]]:
        breaker = self._breaker
        with self.lock:
            self._sending = (self._calls, self._failures)
            succeeded, trailing = self._succeeded, self._in_a_row
            self._succeeded, self._in_a_row = False, 0
            report, self.exchanged = self._report, now
        span = breaker.fleet_period / SLICES
        rate = -1.0 if breaker.fleet_failure_rate is None else breaker.fleet_failure_rate
        arguments = [repr(span), SLICES, *self._sending, breaker.fleet_minimum_calls, repr(rate)]
        arguments += [max(1, round(breaker.config.delay * 1000)), self.store.id, report]
        arguments += [max(1, round(breaker.probe_timeout * 1000)), repr(max(breaker.fleet_period, 3))]
        arguments += [breaker.fleet_failure_threshold or 0, int(succeeded), trailing]
        keys = self.keys("outcomes", "open", "probe", "switch", "replicas", "in-a-row")
        return EVIDENCE, keys, arguments

    def settle(self, reply: Any, now: float) -> None:
        open_ms, holder, switch, active = reply
        holder = holder.decode() if isinstance(holder, bytes) else str(holder)
        breaker, machine = self._breaker, self._breaker._machine
        with self.lock:
            self.heard_from_store(active, switch)
            sent_calls, sent_failures = self._sending
            self._calls -= sent_calls
            self._failures -= sent_failures
            if self._report:
                self._report = ""  # sent: a probe not granted is asked for again by the gate
            self._probing = holder == self.store.id
            switch, forced = self.switch, self._forced
            self._forced = switch if switch in ("open", "closed") else ""
            fleet_opened = self._fleet_opened
            if int(open_ms) >= 0 and not switch and holder != self.store.id:
                self._fleet_opened = True
        state, left = machine.state, int(open_ms)
        if switch == "open":
            if state is not FORCED_OPEN:
                breaker.force_open()
        elif switch == "closed":
            if state is not DISABLED:
                breaker.disable()
        elif forced:
            breaker.close()  # the switch was cleared: the breaker's own decisions again
        elif holder == self.store.id:
            if state is OPEN:
                breaker.half_open()
        elif left > 0:  # the fleet is open
            if state is CLOSED or state is HALF_OPEN or not fleet_opened:
                machine.open_for(left / 1000)
        elif left == 0:  # the fleet waits for a probe: this breaker, open, asks for the lease when its delay ends
            if state is CLOSED or state is HALF_OPEN:
                machine.open_for(0.0)
        elif state is OPEN and fleet_opened:
            breaker.close()  # another replica's probe closed the fleet
