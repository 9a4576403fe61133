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

    Streams (an attempt that returns when it *commits*, and ends later) also use:

    - ``settle``: None for calls whose outcome is known when the attempt returns. Otherwise a list: policies that
      record an outcome or hold a place for the call's duration (breakers, bulkheads, limiters, throttles) append,
      when the attempt returns, a function that does so; the transport calls each once with how the call ended
      (None: success; an Exception: that failure; any other BaseException: cancelled, release without recording).
    - ``committed``: set by the transport when the call can no longer be retried (e.g. a stream sent more than it
      can replay); a RetryPolicy then raises the attempt's failure as it is.
    - ``resuming``: a failure that ended the call after it returned (a stream that failed after commit), set
      before running the chain again to resume it: the RetryPolicy treats it as the last attempt's failure (its
      classification, delay, attempt count and budget) before it starts the next attempt.
    """

    __slots__ = (
        "_fn",
        "attempt_start_time",
        "attempts",
        "clock",
        "committed",
        "deadline",
        "fallback",
        "last_failure",
        "request",
        "resuming",
        "semantics",
        "settle",
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
        self.settle: list[Callable[[BaseException | None], None]] | None = None
        self.committed = False
        self.resuming: BaseException | None = None

    @staticmethod
    def cancelled(outcome: BaseException | None) -> bool:
        """Whether a ``settle`` outcome says the call was cancelled (not a success, not a failure)."""
        return outcome is not None and not isinstance(outcome, Exception)

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
