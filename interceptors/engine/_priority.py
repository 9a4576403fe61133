"""Priorities: how important a call is, the level it carries across hops, and the rule by which a limiter that
knows priorities refuses the less important calls first.

A call's priority is the ambient :data:`PRIORITY` when it starts (set with :func:`prioritized`; on a server with
context propagation, the incoming call's, as far as the server believes it), else its channel's default. A
limiter given :class:`Priorities` keeps the top of its limit for the more important calls (see
:class:`Priorities`); one given none treats every call alike, as before.
"""

from __future__ import annotations

import contextlib
import enum
import math
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._execution import Execution

__all__ = ["DEFAULT_SHARES", "PRIORITY", "Priorities", "Priority", "prioritized"]


class Priority(enum.IntEnum):
    """How important a call is, least first. On the wire (gRPC metadata ``x-priority``) it is its name in lower
    case: ``sheddable``, ``low``, ``normal``, ``high``, ``critical``."""

    SHEDDABLE = 0
    LOW = 1
    NORMAL = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def of(cls, value: object, option: str = "priority") -> Priority:
        """``value`` (a Priority, or one's name in any case) as a Priority; raises ValueError naming ``option`` and
        the names allowed."""
        if isinstance(value, Priority):
            return value
        if isinstance(value, str):
            member = cls.__members__.get(value.strip().upper())
            if member is not None:
                return member
        names = ", ".join(p.name.lower() for p in cls)
        raise ValueError(f"{option} must be a Priority or one of {names}, got {value!r}")


PRIORITY: ContextVar[Priority | None] = ContextVar("interceptors_priority", default=None)
"""The priority of the calls started in this context (None: their channel's default)."""


@contextlib.contextmanager
def prioritized(priority: Priority | str) -> Iterator[Priority]:
    """Calls started inside the block (in this thread or task, and in the tasks and copied contexts it makes) have
    ``priority``; on exit, the priority before it applies again::

        with prioritized(Priority.CRITICAL):
            stub.Checkout(request)
    """
    level = Priority.of(priority)
    token = PRIORITY.set(level)
    try:
        yield level
    finally:
        PRIORITY.reset(token)


DEFAULT_SHARES: Mapping[Priority, float] = {
    Priority.SHEDDABLE: 0.5,
    Priority.LOW: 0.7,
    Priority.NORMAL: 0.8,
    Priority.HIGH: 0.9,
    Priority.CRITICAL: 1.0,
}
"""The part of a limit each level may fill, by default (see :class:`Priorities`)."""

RANKS = 2 * len(Priority)
"""Ranks of the waiting line: ``2 * level + 1`` for first attempts, ``2 * level`` for retries and hedges."""

Claim = Callable[[Any], Priority]
"""The highest priority a server believes of a caller, from the call's ``grpc.ServicerContext``."""


class Priorities:
    """The rules by which a limiter (:class:`~interceptors.Bulkhead`, :class:`~interceptors.AdaptiveLimiter`,
    :class:`~interceptors.server.LoadShedding`; :class:`~interceptors.RateLimiter` and
    :class:`~interceptors.AdaptiveThrottle` after their fashion) refuses the less important calls first.

    A call of level ``L`` takes a place only while fewer than ``limit * shares[L]`` calls (its whole part, at least
    one) are in flight; a retry or a hedge of level ``L`` (an attempt after the first: gRPC's
    ``grpc-previous-rpc-attempts`` on a server) is halfway to the level below: ``(shares[L] + shares[L - 1]) / 2``,
    with ``shares[-1] = 0``. So under pressure sheddable work is refused first and critical work last; with the
    default shares, calls of ``default`` level alone fill 80 % of the limit, and the rest is kept for HIGH and
    CRITICAL calls.

    Where a limiter knows who each call is for (a server's ``tenant=``), usage counts too: a tenant holding a
    fraction ``u`` of the calls in flight stands ``u / 2`` of a level lower, so that within a level the tenant
    using the most is refused first, and one flooding a server drops to the standing of others' retries. In all,
    a call stands at ``s = L + 1 - retry / 2 - u / 2`` levels, and its share of the limit is read off the line
    through ``(0, 0), (1, shares[0]), ..., (5, shares[4])`` at ``s``.

    A call waits for a place at most ``max_wait`` times its share. Waiters are served most important first, in
    arrival order within a rank (one whose share does not let it in yet holds back no one); when the waiting line
    is full, a newcomer takes the place in line of the newest, least important waiter, if that one ranks lower (it
    is refused), and is refused otherwise.

    :param shares: the part of the limit each level may fill, in (0, 1], not falling as the level rises; levels not
        given keep :data:`DEFAULT_SHARES`.
    :param default: the level of calls that carry none (default NORMAL); on a server, no higher than what
        ``max_claimed`` believes of the caller (saying nothing gains no more than a claim).
    :param max_claimed: on servers, the highest level believed of a caller's claim (its ``x-priority``): a
        Priority, or a function of the call's ``grpc.ServicerContext`` that returns one (from
        ``context.peer_identities()``, say). Claims above it count as it. Default None: CRITICAL for callers the
        channel authenticated (a TLS client certificate), NORMAL for the others.
    """

    __slots__ = ("_places", "_points", "default", "max_claimed", "shares")
    shares: Mapping[Priority, float]
    _points: tuple[float, ...]  # the share of the limit at each whole standing, 0..5
    _places: dict[tuple[Priority | None, bool], tuple[int, float]]  # place() of the calls without a tenant
    default: Priority
    max_claimed: Priority | Claim | None

    def __init__(
        self,
        *,
        shares: Mapping[Priority | str, float] | None = None,
        default: Priority | str = Priority.NORMAL,
        max_claimed: Priority | str | Claim | None = None,
    ) -> None:
        table = dict(DEFAULT_SHARES)
        if shares is not None:
            if not isinstance(shares, Mapping):
                raise ValueError(f"shares must map priorities to parts of the limit, got {shares!r}")
            for key, share in shares.items():
                level = Priority.of(key, "shares' keys")
                if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
                    raise ValueError(f"shares[{level.name.lower()}] must be a number in (0, 1], got {share!r}")
                table[level] = float(share)
        for lower, higher in zip(list(Priority)[:-1], list(Priority)[1:], strict=True):
            if table[higher] < table[lower]:
                raise ValueError(
                    f"shares must not fall as the level rises: {higher.name.lower()} {table[higher]:g} < "
                    f"{lower.name.lower()} {table[lower]:g}"
                )
        if max_claimed is not None and not callable(max_claimed):
            max_claimed = Priority.of(max_claimed, "max_claimed")
        object.__setattr__(self, "shares", table)
        object.__setattr__(self, "default", Priority.of(default, "default"))
        object.__setattr__(self, "max_claimed", max_claimed)
        object.__setattr__(self, "_points", (0.0, *(table[level] for level in Priority)))
        levels: list[Priority | None] = [None, *Priority]
        object.__setattr__(self, "_places", {(p, r): self.place(p, r) for p in levels for r in (False, True)})

    def place(self, priority: Priority | str | None, retry: bool = False, usage: float = 0.0) -> tuple[int, float]:
        """The rank in line (see :data:`RANKS`) and the share of the limit of a call of ``priority`` (None:
        ``default``), a retry or hedge when ``retry``, whose tenant holds a fraction ``usage`` of the calls in
        flight."""
        level = self.default if priority is None else Priority.of(priority)
        standing = level + 1 - 0.5 * retry - 0.5 * min(max(usage, 0.0), 1.0)
        below = math.floor(standing)
        points = self._points
        share = (
            points[-1]
            if below >= len(points) - 1
            else points[below] + (points[below + 1] - points[below]) * (standing - below)
        )
        return min(max(math.ceil(2 * standing) - 1, 0), RANKS - 1), share

    def place_of(self, execution: Execution) -> tuple[int, float]:
        """The rank and share of an execution's current attempt."""
        return self._places[execution.priority, execution.attempts > 1]

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Priorities is read-only; create a new one instead")

    def __repr__(self) -> str:
        shares = {level.name.lower(): share for level, share in self.shares.items()}
        return f"Priorities(shares={shares}, default={self.default!r}, max_claimed={self.max_claimed!r})"
