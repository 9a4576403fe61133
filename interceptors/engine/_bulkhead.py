"""Bulkhead: at most so many calls in flight at once, so that one slow dependency cannot take every thread."""

from __future__ import annotations

from typing import Any

from . import _options as options
from ._clock import Clock
from ._errors import BulkheadFullError
from ._events import BulkheadFull
from ._execution import Execution
from ._places import Places, wait_allowed
from ._policy import AsyncLink, Link, Policy
from ._priority import RANKS, Priorities

__all__ = ["Bulkhead"]


class Bulkhead(Policy):
    """At most ``max_concurrent`` calls in flight at once. A call that finds them all taken waits, in arrival order
    (FIFO), up to ``max_wait`` seconds and never past its deadline; one that gets no place in time is rejected with
    :class:`BulkheadFullError` (nothing is sent). Threads and asyncio tasks wait in the same line; the lock is held
    only to take or give back a place, never while a call runs.

    :param max_concurrent: calls in flight at once, positional (1..100 000).
    :param max_wait: seconds a call may wait for a place (default 0: rejected at once).
    :param priorities: refuse the less important calls first (see :class:`~interceptors.Priorities`): the top of
        the limit is kept for the more important calls, a call waits at most ``max_wait`` times its share, and
        waiters are served most important first (default None: every call alike).
    :param dry_run: decide and report, but let every call through (default False): a call that finds no place free
        at once is reported (``dry_run=True``; it would have waited, or been rejected) and runs without one.
    :param on_full: hears :class:`BulkheadFull` when a call is rejected.
    :param name: the policy's name in its events (default: its class's name, "Bulkhead").
    :param clock: the clock of the waits' accounting (default the system clock); waiting itself takes real time.
    """

    __slots__ = ("_places", "clock", "dry_run", "max_concurrent", "max_wait", "on_full", "priorities")
    serves_deferred = True
    clock: Clock
    max_concurrent: int
    max_wait: float
    dry_run: bool
    on_full: options.Listener[BulkheadFull] | None
    priorities: Priorities | None
    _places: Places

    def __init__(
        self,
        max_concurrent: int,
        /,
        *,
        max_wait: options.Duration = 0.0,
        priorities: Priorities | None = None,
        dry_run: bool = False,
        on_full: options.Listener[BulkheadFull] | None = None,
        clock: Clock | None = None,
        name: str | None = None,
    ) -> None:
        limit = options.count(max_concurrent, "max_concurrent", maximum=options.MAX_CALLS)
        ranks = options.priorities(priorities)
        self._init(
            name=options.policy_name(name, self),
            max_concurrent=limit,
            max_wait=options.seconds(max_wait, "max_wait"),
            dry_run=options.flag(dry_run, "dry_run"),
            on_full=options.listener(on_full, "on_full"),
            clock=options.clock(clock),
            priorities=ranks,
            _places=Places(limit, ranks=1 if ranks is None else RANKS),
        )

    @property
    def in_flight(self) -> int:
        return self._places.in_flight

    def inherit(self, old: Policy) -> None:
        """Keep ``old``'s calls in flight and waiting (with priorities on both or neither), now under this one's
        limit."""
        if isinstance(old, Bulkhead) and (old.priorities is None) == (self.priorities is None):
            old._places.resize(self.max_concurrent)
            object.__setattr__(self, "_places", old._places)

    @property
    def waiting(self) -> int:
        return self._places.waiting

    def _full(self, started: float, execution: Execution) -> BulkheadFullError:
        waited = self.clock.now() - started
        if self.on_full is not None or self._observers:
            options.emit(
                self.on_full,
                BulkheadFull(self.max_concurrent, waited, self.name, execution.semantics.method, self.dry_run),
                self._observers,
            )
        return BulkheadFullError(f"bulkhead full: {self.max_concurrent} calls in flight, none done in {waited:.3g}s")

    def wrap(self, inner: Link) -> Link:
        places, now, ranks, dry_run = self._places, self.clock.now, self.priorities, self.dry_run
        max_wait = 0.0 if dry_run else self.max_wait

        def run(execution: Execution) -> Any:
            started = now()
            rank, share = (0, 1.0) if ranks is None else ranks.place_of(execution)
            if not places.take(wait_allowed(max_wait * share, execution.remaining), rank, share):
                rejection = self._full(started, execution)
                if not dry_run:
                    raise rejection
                return inner(execution)  # dry run: it goes without a place
            try:
                result = inner(execution)
            except BaseException:
                places.give()
                raise
            _give_back(places, execution)
            return result

        return run

    def wrap_async(self, inner: AsyncLink) -> AsyncLink:
        places, now, ranks, dry_run = self._places, self.clock.now, self.priorities, self.dry_run
        max_wait = 0.0 if dry_run else self.max_wait

        async def run(execution: Execution) -> Any:
            started = now()
            rank, share = (0, 1.0) if ranks is None else ranks.place_of(execution)
            if not await places.atake(wait_allowed(max_wait * share, execution.remaining), rank, share):
                rejection = self._full(started, execution)
                if not dry_run:
                    raise rejection
                return await inner(execution)  # dry run: it goes without a place
            try:
                result = await inner(execution)
            except BaseException:
                places.give()
                raise
            _give_back(places, execution)
            return result

        return run


def _give_back(places: Places, execution: Execution) -> None:
    """Give a call's place back now, or, for a stream or a deferred attempt (see ``Execution.settle``), when it
    ends."""
    if execution.settle is None:
        places.give()
    else:
        execution.settle.append(lambda _: places.give())
