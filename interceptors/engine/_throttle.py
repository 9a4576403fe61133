"""AdaptiveThrottle: reject calls locally, in proportion to how many the dependency has been refusing lately."""

from __future__ import annotations

import functools
import logging
import math
import threading
from collections.abc import Callable
from typing import Any

from . import _options as options
from ._clock import Clock
from ._delays import DRAWS
from ._errors import RejectedError, ThrottledError
from ._events import Throttled
from ._execution import Execution, overdue
from ._policy import AsyncLink, Link, Policy
from ._priority import RANKS, Priorities
from ._tally import Tally

__all__ = ["DEFAULT_K", "DEFAULT_MAX_REJECTION_RATE", "DEFAULT_MIN_REQUESTS", "DEFAULT_WINDOW", "AdaptiveThrottle"]

DEFAULT_K = 2.0
DEFAULT_MAX_REJECTION_RATE = 0.9
DEFAULT_MIN_REQUESTS = 10
"""Requests in the window before anything is rejected: one a second over the default window."""
DEFAULT_WINDOW = 10.0
DEFAULT_MAX_UTILIZATION = 0.9
LOAD_STEPS = 20
"""Times per window the rejection rate a reported utilization asks for moves."""
_log = logging.getLogger("interceptors")


class AdaptiveThrottle(Policy):
    """Client-side throttling from the Google SRE book: each call is rejected locally, with
    :class:`ThrottledError`, with probability::

        0                                                                           if requests < min_requests
        min(max_rejection_rate, max(0, (requests - k * accepts) / (requests + 1)))  otherwise

    where, over the last ``window`` seconds, ``requests`` counts the calls that went to the dependency and ended,
    and ``accepts`` those it answered without a failure the throttle handles. A call counts when its outcome is
    known, so a burst of calls to a healthy dependency is not mistaken for refusals; and, as in failsafe-go, calls
    the throttle rejected are not requests (the SRE book counts them too, which holds rejections at the maximum for
    a whole window after the dependency recovers). While at least one call in ``k`` is accepted it rejects
    nothing, however many fail at random; when the dependency refuses everything it rejects up to
    ``max_rejection_rate`` of calls, and lets the rest probe. There is no open period: as soon as calls are accepted
    again, rejections fall with the accept rate. Calls cancelled by their caller, or rejected by another policy
    further in, count for nothing. Below ``min_requests`` requests in the window (failsafe-go's execution threshold;
    Envoy's admission control has ``rps_threshold``, per second) nothing is rejected, so a fresh or quiet channel is
    never shed: a few failures are no evidence, and shedding a trickle of calls saves the dependency nothing; a
    dependency refusing everything still sees at least about ``min_requests`` calls per window.

    :param k: how many requests per accept the dependency may see before the throttle sheds (default 2; lower is
        more aggressive), >= 1.
    :param max_rejection_rate: the largest share of calls ever rejected (default 0.9), in (0, 1].
    :param window: seconds over which requests and accepts are counted (default 10; at least 1 ms).
    :param min_requests: requests in the window below which nothing is rejected (default 10; 0: none).
    :param handle: which failures are refusals (default: the transport's failures, as for retries).
    :param priorities: refuse the less important calls first (see :class:`~interceptors.Priorities`): of the calls
        of the window, the rejections fall on the lowest ranks first (retries and hedges below first attempts of
        their level), each rank rejected wholly before the next above it is touched; a rank that is all there is
        is rejected at the rate above (default None: every call alike).
    :param dry_run: decide and report, but let every call through (default False): a call it would reject is
        reported (``dry_run=True``) and goes uncounted, as a rejected call is.
    :param utilization: the dependency's utilization now, as it reports it (a function answering a number, or None
        when it knows none), such as :meth:`interceptors.LoadWatch.utilization` over its ORCA reports. Every
        ``window / 20`` seconds a second rejection rate moves by ``utilization - max_utilization`` (an unknown
        utilization leaves it as it is), within 0 and ``max_rejection_rate``: it rises while the dependency reports more
        than ``max_utilization`` and falls while it reports less, so that the calls let through keep it near
        ``max_utilization``, before it refuses any. The larger of the two rates applies (default None: refusals
        alone).
    :param max_utilization: the utilization the dependency may report before calls are rejected (default 0.9), in
        (0, 1].
    :param on_throttled: hears :class:`Throttled` when a call is rejected.
    :param name: the policy's name in its events (default: its class's name, "AdaptiveThrottle").
    :param clock: the clock of the window (default the system clock).
    """

    __slots__ = (
        "_load",
        "_lock",
        "_mix",
        "_random",
        "_tally",
        "_warned",
        "clock",
        "dry_run",
        "handle",
        "k",
        "max_rejection_rate",
        "max_utilization",
        "min_requests",
        "on_throttled",
        "priorities",
        "utilization",
        "window",
    )
    serves_deferred = True
    clock: Clock
    k: float
    max_rejection_rate: float
    window: float
    min_requests: int
    handle: options.FailurePredicate | None
    dry_run: bool
    priorities: Priorities | None
    utilization: Callable[[], float | None] | None
    max_utilization: float
    on_throttled: options.Listener[Throttled] | None
    _tally: Tally
    _mix: Tally | None  # with priorities: the calls of the window by rank
    _lock: threading.Lock
    _random: Any
    _warned: bool
    _load: tuple[float, float, float | None]  # the utilization's rejection rate, when it moved, what was reported

    def __init__(
        self,
        *,
        k: float = DEFAULT_K,
        max_rejection_rate: float = DEFAULT_MAX_REJECTION_RATE,
        window: options.Duration = DEFAULT_WINDOW,
        min_requests: int = DEFAULT_MIN_REQUESTS,
        handle: options.Handles | None = None,
        priorities: Priorities | None = None,
        dry_run: bool = False,
        utilization: Callable[[], float | None] | None = None,
        max_utilization: float = DEFAULT_MAX_UTILIZATION,
        on_throttled: options.Listener[Throttled] | None = None,
        clock: Clock | None = None,
        name: str | None = None,
    ) -> None:
        requests_per_accept = options.number(k, "k (requests per accept)", 1, options.MAX_CALLS)
        seconds, the_clock = options.window(window, "window"), options.clock(clock)
        ranks = options.priorities(priorities)
        self._init(
            name=options.policy_name(name, self),
            k=requests_per_accept,
            max_rejection_rate=options.ratio(max_rejection_rate, "max_rejection_rate"),
            window=seconds,
            min_requests=options.count(min_requests, "min_requests", minimum=0, maximum=options.MAX_CALLS),
            handle=options.handles(handle, "handle"),
            priorities=ranks,
            dry_run=options.flag(dry_run, "dry_run"),
            utilization=options.optional_function(utilization, "utilization", "", count=0),
            max_utilization=options.ratio(max_utilization, "max_utilization"),
            on_throttled=options.listener(on_throttled, "on_throttled"),
            clock=the_clock,
            _tally=Tally(seconds, the_clock),  # requests, accepts
            _mix=None if ranks is None else Tally(seconds, the_clock, RANKS),
            _lock=threading.Lock(),
            _random=DRAWS.random,
            _warned=False,
            _load=(0.0, -math.inf, None),
        )

    def inherit(self, old: Policy) -> None:
        """Keep ``old``'s window of requests and accepts, and its utilization's rate (of the same window length,
        with priorities on both or neither)."""
        if (
            isinstance(old, AdaptiveThrottle)
            and old.window == self.window
            and (old._mix is None) == (self._mix is None)
        ):
            object.__setattr__(self, "_lock", old._lock)
            object.__setattr__(self, "_tally", old._tally)
            object.__setattr__(self, "_mix", old._mix)
            object.__setattr__(self, "_load", old._load)

    @property
    def rejection_rate(self) -> float:
        """The share of calls rejected at the moment."""
        with self._lock:
            self._tally.roll()
            return max(self._rate(), self._load[0] if self.utilization is not None else 0.0)

    def _loaded(self) -> tuple[float, float | None]:
        """The rejection rate the dependency's reported utilization asks for, and that utilization (see
        ``utilization``): moved every ``window / 20`` by what it reports over ``max_utilization``."""
        read = self.utilization
        if read is None:
            return 0.0, None
        rate, when, reported = self._load
        now = self.clock.now()
        if now - when < self.window / LOAD_STEPS:
            return rate, reported
        try:
            value = read()
        except Exception:
            if not self._warned:
                object.__setattr__(self, "_warned", True)
                _log.exception("%s: utilization() raised; read as unknown (logged once)", self.name)
            value = None
        known = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        with self._lock:
            rate, when, reported = self._load
            if now - when < self.window / LOAD_STEPS:  # moved meanwhile, by another caller
                return rate, reported
            if known:
                reported = float(value)  # type: ignore[arg-type]
                rate = min(max(rate + reported - self.max_utilization, 0.0), self.max_rejection_rate)
            object.__setattr__(self, "_load", (rate, now, reported if known else None))
        return rate, reported if known else None

    def _rate(self) -> float:
        requests, accepts = self._tally.first, self._tally.second
        if requests < self.min_requests:
            return 0.0
        return min(self.max_rejection_rate, max(0.0, (requests - self.k * accepts) / (requests + 1)))

    def _admit(self, execution: Execution) -> bool:
        """Whether the call goes counted; raises ThrottledError if it is to be rejected (in dry run: reports it, and
        returns False: it goes, counted as the rejected call it would have been, for nothing)."""
        loaded, utilization = self._loaded()
        with self._lock:
            self._tally.roll()
            refused = self._rate()
            rate = max(refused, loaded)
            mix, ranks = self._mix, self.priorities
            if mix is not None and ranks is not None:
                rank = ranks.place_of(execution)[0]
                mix.count(rank)
                if rate:
                    rate = _lowest_first(rate, rank, mix.totals)
        if rate and self._random() < rate:
            if self.on_throttled is not None or self._observers:
                event = Throttled(rate, self.name, execution.semantics.method, self.dry_run)
                options.emit(self.on_throttled, event, self._observers)
            if self.dry_run:
                return False
            if loaded > refused:
                reported = f"throttled: the dependency reports utilization {utilization or 0:.2f} ({rate:.0%} rejected)"
                raise ThrottledError(reported)
            raise ThrottledError(f"throttled: the dependency refused too many calls lately ({rate:.0%} rejected)")
        return True

    def _record(self, execution: Execution, failure: BaseException | None) -> None:
        """Count a call that ended (one rejected further in, with nothing sent, counts for nothing)."""
        if isinstance(failure, RejectedError):
            return
        if failure is None:
            accepted = True
        elif self.handle is not None:
            accepted = not self.handle(failure)
        else:
            late = overdue(execution.deadline, self.clock.now())
            accepted = not execution.semantics.trips(failure, late)
        with self._lock:
            self._tally.add(first=1, second=int(accepted))

    def _settled(self, execution: Execution, outcome: BaseException | None) -> None:
        if not Execution.cancelled(outcome):
            self._record(execution, outcome)

    def wrap(self, inner: Link) -> Link:
        admit, record = self._admit, self._record

        def run(execution: Execution) -> Any:
            if not admit(execution):
                return inner(execution)  # dry run
            try:
                result = inner(execution)
            except Exception as failure:
                record(execution, failure)
                raise
            if execution.deferred:  # counted when it ends (a stream counts as accepted once it commits)
                execution.settle.append(functools.partial(self._settled, execution))  # type: ignore[union-attr]
            else:
                record(execution, None)
            return result

        return run

    def wrap_async(self, inner: AsyncLink) -> AsyncLink:
        admit, record = self._admit, self._record

        async def run(execution: Execution) -> Any:
            if not admit(execution):
                return await inner(execution)  # dry run
            try:
                result = await inner(execution)
            except Exception as failure:
                record(execution, failure)
                raise
            record(execution, None)
            return result

        return run


def _lowest_first(rate: float, rank: int, counts: list[int]) -> float:
    """The probability of rejecting a call of ``rank`` when ``rate`` of all calls are to be rejected, lowest ranks
    first, the window's calls being ``counts`` by rank."""
    total = sum(counts)
    below = sum(counts[:rank]) / total
    mine = counts[rank] / total
    if rate <= below:
        return 0.0
    return 1.0 if rate >= below + mine else (rate - below) / mine
