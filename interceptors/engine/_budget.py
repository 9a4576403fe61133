"""RetryBudget: how much retries may add to the load of a whole client, shared by every RetryPolicy that names it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from . import _options as options
from ._clock import Clock
from ._events import BudgetExceeded
from ._tally import Tally

__all__ = ["DEFAULT_MIN_PER_SECOND", "DEFAULT_RATIO", "DEFAULT_WINDOW", "RetryBudget"]

DEFAULT_RATIO = 0.2
DEFAULT_MIN_PER_SECOND = 10.0
DEFAULT_WINDOW = 10.0


class RetryBudget:
    """A budget of retries for the calls of a whole client, so that a fleet under stress sheds load instead of
    multiplying it: each hop of a chain of services that retries 3 times multiplies the load on the last one by up
    to 3; with a budget, by at most ``1 + ratio``.

    A retry is allowed while, over the last ``window`` seconds::

        retries < ratio * calls + min_per_second * window

    ``calls`` counting each call once (its first attempt), ``retries`` every retry the budget allowed. The floor
    lets a client with little traffic still retry. A retry the budget refuses ends its call at once with the last
    attempt's failure (:class:`RetriesExceededError`), never waits; ``on_exceeded`` hears
    :class:`BudgetExceeded`. This is Finagle's RetryBudget; :meth:`token_bucket` is gRPC's ``retryThrottling``.

    Give one budget to every RetryPolicy (``RetryPolicy(budget=...)``) whose calls go to the same backend; it is
    thread-safe and asyncio-safe.

    :param ratio: retries per call allowed on top of the calls (default 0.2: 20 % more load at most), in (0, 1].
    :param min_per_second: retries a second allowed whatever the traffic (default 10, as Finagle's; 0 for none).
    :param window: seconds over which calls and retries are counted (default 10; at least 1 ms).
    :param on_exceeded: hears :class:`BudgetExceeded` when a retry is refused.
    :param clock: the clock of the window (default the system clock).
    """

    __slots__ = (
        "__weakref__",
        "_lock",
        "_max_tokens",
        "_observers",
        "_tally",
        "_token_ratio",
        "_tokens",
        "min_per_second",
        "on_exceeded",
        "ratio",
        "window",
    )
    ratio: float
    min_per_second: float
    window: float
    on_exceeded: options.Listener[BudgetExceeded] | None
    _tally: Tally
    _lock: threading.Lock
    _max_tokens: float
    _token_ratio: float
    _tokens: float
    _observers: tuple[Callable[[Any], object], ...]

    def __init__(
        self,
        *,
        ratio: float = DEFAULT_RATIO,
        min_per_second: float = DEFAULT_MIN_PER_SECOND,
        window: options.Duration = DEFAULT_WINDOW,
        on_exceeded: options.Listener[BudgetExceeded] | None = None,
        clock: Clock | None = None,
    ) -> None:
        floor = options.number(min_per_second, "min_per_second", 0, options.MAX_CALLS)
        seconds = options.window(window, "window")
        self._set(
            ratio=options.ratio(ratio, "ratio"),
            min_per_second=floor,
            window=seconds,
            on_exceeded=options.listener(on_exceeded, "on_exceeded"),
            _tally=Tally(seconds, options.clock(clock)),  # calls, retries
            _lock=threading.Lock(),
            _max_tokens=0.0,  # token bucket mode when > 0
            _token_ratio=0.0,
            _tokens=0.0,
            _observers=(),
        )

    def _set(self, **values: object) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("RetryBudget is read-only; create a new one instead")

    @classmethod
    def token_bucket(
        cls,
        *,
        max_tokens: float,
        token_ratio: float,
        on_exceeded: options.Listener[BudgetExceeded] | None = None,
    ) -> RetryBudget:
        """gRPC's ``retryThrottling`` (A6): a bucket of ``max_tokens`` tokens, full at first; every attempt that
        fails in a way the retry handles takes one token, every successful one puts ``token_ratio`` back; retries are
        allowed only while more than half the tokens are left.

        :param max_tokens: the bucket's size, in (0, 1000] as in gRPC.
        :param token_ratio: tokens a success puts back, in (0, 1].
        """
        tokens = options.number(max_tokens, "max_tokens", 0, 1000, above=True)
        budget = cls(on_exceeded=on_exceeded)
        budget._set(_token_ratio=options.ratio(token_ratio, "token_ratio"), _max_tokens=tokens, _tokens=tokens)
        return budget

    def inherit(self, old: RetryBudget) -> None:
        """Take over ``old``'s state, the budget this one replaces when a :class:`~interceptors.Registry` reloads:
        its tokens (a token bucket, at most this one's size; copied: the retries of calls still in flight through
        ``old`` draw on its own), or its window of calls and retries (of the same length; shared)."""
        if bool(old._max_tokens) != bool(self._max_tokens):
            return
        with old._lock:
            if self._max_tokens:
                self._set(_tokens=min(old._tokens, self._max_tokens))
            elif old.window == self.window:
                self._set(_lock=old._lock, _tally=old._tally)

    @property
    def tokens(self) -> float | None:
        """The tokens left, in token bucket mode (else None)."""
        return self._tokens if self._max_tokens else None

    def record_call(self) -> None:
        """A call started (its first attempt)."""
        if not self._max_tokens:
            with self._lock:
                self._tally.add(first=1)

    def record_outcome(self, failed: bool) -> None:
        """An attempt ended: ``failed`` when the retry handles its failure (token bucket mode only)."""
        if self._max_tokens:
            with self._lock:
                tokens = self._tokens - 1 if failed else self._tokens + self._token_ratio
                object.__setattr__(self, "_tokens", min(max(tokens, 0.0), self._max_tokens))

    def try_retry(self, attempts: int, failure: BaseException | None, method: str | None = None) -> bool:
        """Take one retry from the budget if it allows one; else report :class:`BudgetExceeded` (for the call of
        ``method``) and return False."""
        with self._lock:
            if self._max_tokens:
                allowed = self._tokens > self._max_tokens / 2
            else:
                tally = self._tally
                tally.roll()
                allowed = tally.second < self.ratio * tally.first + self.min_per_second * self.window
                if allowed:
                    tally.add(second=1)
        if not allowed and (self.on_exceeded is not None or self._observers):
            options.emit(self.on_exceeded, BudgetExceeded(attempts, failure, "RetryBudget", method), self._observers)
        return allowed

    def __repr__(self) -> str:
        if self._max_tokens:
            return f"RetryBudget.token_bucket(max_tokens={self._max_tokens:g}, token_ratio={self._token_ratio:g})"
        return f"RetryBudget(ratio={self.ratio:g}, min_per_second={self.min_per_second:g}, window={self.window:g})"
