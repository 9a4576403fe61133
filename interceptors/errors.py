"""Errors the policies raise; all derive from :class:`ResilienceError`."""

from __future__ import annotations

__all__ = ["CircuitOpenError", "ResilienceError", "RetriesExceededError", "TimeoutExceededError"]


class ResilienceError(Exception):
    """Base class of every error raised by a policy (not by the protected call itself)."""


class CircuitOpenError(ResilienceError):
    """The circuit breaker rejected the call without running it.

    ``remaining`` is how long the breaker stays open (seconds), or None when it is held open by hand.
    """

    def __init__(self, message: str = "circuit breaker is open", *, remaining: float | None = None) -> None:
        super().__init__(message)
        self.remaining = remaining


class RetriesExceededError(ResilienceError):
    """The retry policy gave up; ``last_failure`` (also ``__cause__``) is the failure of the last attempt."""

    def __init__(self, attempts: int, last_failure: BaseException) -> None:
        super().__init__(attempts, last_failure)
        self.attempts = attempts
        self.last_failure = last_failure

    def __str__(self) -> str:
        return f"retries exceeded after {self.attempts} attempt(s); last failure: {self.last_failure!r}"


class TimeoutExceededError(ResilienceError, TimeoutError):
    """A deadline passed before the call completed, or a retry would have waited past it.

    ``timeout`` is the Timeout policy's duration in seconds, when one set the deadline.
    """

    def __init__(self, message: str = "timeout exceeded", *, timeout: float | None = None) -> None:
        super().__init__(message)
        self.timeout = timeout
