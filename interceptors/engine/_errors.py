"""Errors the policies raise; all derive from :class:`ResilienceError`."""

from __future__ import annotations

__all__ = [
    "BulkheadFullError",
    "CircuitOpenError",
    "LimitExceededError",
    "RateLimitedError",
    "RejectedError",
    "ResilienceError",
    "RetriesExceededError",
    "ThrottledError",
    "TimeoutExceededError",
    "out_of_time",
    "underlying_failure",
]


class ResilienceError(Exception):
    """Base class of every error raised by a policy (not by the protected call itself)."""


class RejectedError(ResilienceError):
    """A policy refused to run the call: nothing was sent. Breakers never count it (it says nothing about the
    dependency's health); fallbacks answer it; a retry waits for it only when ``remaining`` says when to come back
    and that is within the retry's own delay.

    ``remaining`` is how long until the policy would admit a call (seconds), or None when that is not known.
    """

    def __init__(self, message: str, *, remaining: float | None = None) -> None:
        super().__init__(message)
        self.remaining = remaining


class CircuitOpenError(RejectedError):
    """The circuit breaker rejected the call without running it.

    ``remaining`` is how long the breaker stays open (seconds): ``math.inf`` when it is held open by hand, None when
    it is half-open and its trial calls are all in flight (they decide soon); ``from_pushback`` tells whether that
    open time is what a server asked for.
    """

    def __init__(
        self, message: str = "circuit breaker is open", *, remaining: float | None = None, from_pushback: bool = False
    ) -> None:
        super().__init__(message, remaining=remaining)
        self.from_pushback = from_pushback


class ThrottledError(RejectedError):
    """The adaptive throttle rejected the call, as the dependency has been refusing a share of calls lately."""


class BulkheadFullError(RejectedError):
    """The bulkhead's calls were all in flight, and no place came free within the wait allowed."""


class RateLimitedError(RejectedError):
    """The rate limiter had no permit within the wait allowed; ``remaining`` is when the next one comes."""


class LimitExceededError(RejectedError):
    """The adaptive concurrency limit was reached, and its queue was full or no place came free in time."""


class RetriesExceededError(ResilienceError):
    """The retry policy gave up; ``last_failure`` (also ``__cause__``) is the failure of the last attempt."""

    def __init__(self, attempts: int, last_failure: BaseException) -> None:
        super().__init__(attempts, last_failure)
        self.attempts = attempts
        self.last_failure = last_failure

    def __str__(self) -> str:
        return f"retries exceeded after {self.attempts} attempt(s); last failure: {self.last_failure!r}"


class TimeoutExceededError(ResilienceError, TimeoutError):
    """A deadline passed before the call completed, or left no time for the next attempt.

    ``timeout`` is the Timeout policy's duration in seconds when its deadline passed; ``last_failure`` is the
    last attempt's failure when a retry stopped because no time was left for another.
    """

    def __init__(
        self,
        message: str = "timeout exceeded",
        *,
        timeout: float | None = None,
        last_failure: BaseException | None = None,
    ) -> None:
        super().__init__(message)
        self.timeout = timeout
        self.last_failure = last_failure


def underlying_failure(failure: BaseException) -> BaseException:
    """The real failure behind a policy's verdict: the last attempt's failure when retries ran out or no time was
    left for another; ``failure`` itself otherwise (a call that failed, timed out or was rejected)."""
    while isinstance(failure, (RetriesExceededError, TimeoutExceededError)) and failure.last_failure is not None:
        failure = failure.last_failure
    return failure


def out_of_time(failure: BaseException) -> bool:
    """Whether ``failure`` says that time ran out: a Timeout passed, or no time was left to retry."""
    while True:
        if isinstance(failure, TimeoutExceededError):
            return True
        if not isinstance(failure, RetriesExceededError):
            return False
        failure = failure.last_failure
