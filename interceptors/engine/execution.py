"""Per-call state shared by the policies of one execution, and the transport's rules for reading failures."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .clock import Clock

if TYPE_CHECKING:
    from .events import FallbackExecuted

__all__ = ["Execution", "Semantics"]


class Semantics:
    """How a transport's failures and responses look to the policies.

    Policies defer to it whenever their own option is left unset: which failures count (``handle=None``), what
    delay a server asked for (``pushback=True``), and what a fallback answers (``Fallback()``,
    ``Fallback(message=...)``). This base class describes plain Python calls; the gRPC adapters subclass it.
    """

    __slots__ = ()

    enforces_deadline = False
    """Whether the transport itself ends each attempt at ``execution.deadline`` (gRPC sends it as the call's
    timeout); then an async Timeout need not set an alarm of its own."""

    def is_failure(self, failure: BaseException) -> bool:
        """Whether ``failure`` should be retried, counted by a breaker and answered by a fallback."""
        return isinstance(failure, Exception)

    def caller_error(self, failure: BaseException) -> BaseException:
        """``failure`` as the transport's callers see it (gRPC: a ``grpc.RpcError``), for fallback functions and
        events."""
        return failure

    def pushback(self, failure: BaseException) -> float | None:
        """Delay in seconds the other side asked for before the next try; negative means "do not retry"."""
        return None

    def default_response(self) -> Any:
        """What ``Fallback()`` answers."""
        return None

    def response_from_fields(self, fields: Mapping[str, Any]) -> Any:
        """What ``Fallback(message=fields)`` answers; raises ValueError when the fields do not fit."""
        return dict(fields)

    def check_response(self, response: object) -> None:
        """Raise TypeError when ``response`` cannot be the answer to a call (a fallback's, say)."""


PLAIN = Semantics()


class Execution:
    """State of one call through a chain of policies, visible to every policy and to the call itself.

    ``attempts`` counts attempts started (1 during the first); ``deadline`` is the absolute time (on ``clock``)
    by which the current attempt must finish, or None; ``last_failure`` is the most recent failure;
    ``fallback`` tells what a Fallback answered and in place of what, if one did.
    """

    __slots__ = (
        "_fn",
        "attempt_start_time",
        "attempts",
        "clock",
        "deadline",
        "fallback",
        "last_failure",
        "request",
        "semantics",
        "start_time",
    )

    def __init__(
        self,
        fn: Callable[[Execution], Any],
        clock: Clock,
        semantics: Semantics = PLAIN,
        request: Any = None,
        deadline: float | None = None,
    ) -> None:
        self._fn = fn
        self.clock = clock
        self.semantics = semantics
        self.request = request
        self.deadline = deadline
        self.start_time = self.attempt_start_time = clock.now()
        self.attempts = 1
        self.last_failure: BaseException | None = None
        self.fallback: FallbackExecuted | None = None

    @property
    def elapsed(self) -> float:
        """Seconds since the execution started."""
        return self.clock.now() - self.start_time

    @property
    def remaining(self) -> float | None:
        """Seconds left before ``deadline`` (may be negative), or None without a deadline."""
        return None if self.deadline is None else self.deadline - self.clock.now()

    @property
    def is_retry(self) -> bool:
        return self.attempts > 1

    def __repr__(self) -> str:
        return (
            f"Execution(attempts={self.attempts}, elapsed={self.elapsed:.3f}, remaining={self.remaining}, "
            f"last_failure={self.last_failure!r})"
        )
