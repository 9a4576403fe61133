"""Timeout: one deadline for everything inside it."""

from __future__ import annotations

import asyncio
import functools
import sys
from typing import Any

from . import _options as options
from ._alarms import NO_ALARM, Alarms
from ._clock import Clock
from ._errors import TimeoutExceededError
from ._events import TimeoutExceeded
from ._execution import Execution
from ._policy import AsyncLink, Link, Policy

__all__ = ["Bounds", "Timeout"]


class Bounds(Policy):
    """A deadline for everything inside it: ``execution.deadline`` becomes :meth:`_own` (when sooner than the outer
    one) while the inner chain runs. Async work is cancelled at it (unless the transport ends its attempts there
    itself); a sync call is handed it to honour (the gRPC adapters send it as the call's timeout). A failure that
    comes once it has passed, and (``late_answers_fail``) an answer that does, become :meth:`_exceeded`'s
    :class:`TimeoutExceededError`, chaining the failure; an outer deadline passing is left to its owner."""

    __slots__ = ("_alarms",)
    serves_deferred = True
    late_answers_fail = True
    _alarms: Alarms

    def _own(self, outer: float | None, now: float) -> float | None:
        """This step's deadline, or None when ``outer`` binds (sooner, or this step sets none)."""
        raise NotImplementedError

    def _exceeded(self, execution: Execution) -> TimeoutExceededError:
        raise NotImplementedError

    def _settled(self, execution: Execution, own: float, outcome: BaseException | None) -> BaseException | None:
        """How a deferred attempt's end looks from outside (see ``Execution.settle``): past this deadline, a failure
        (or an answer, when late answers fail) is a :class:`TimeoutExceededError`."""
        late = self.late_answers_fail or outcome is not None
        if Execution.cancelled(outcome) or execution.clock.now() < own or not late:
            return None
        exceeded = self._exceeded(execution)
        exceeded.__cause__ = outcome
        return exceeded

    def wrap(self, inner: Link) -> Link:
        bound, settled, late = self._own, self._settled, self.late_answers_fail

        def run(execution: Execution) -> Any:
            now = execution.clock.now  # the chain's one clock
            outer = execution.deadline
            own = bound(outer, now())
            if own is None:
                return inner(execution)  # the outer deadline binds, and belongs to its owner
            execution.deadline = own
            try:
                result = inner(execution)
            except Exception as failure:
                if now() >= own:
                    raise self._exceeded(execution) from failure
                raise
            finally:
                execution.deadline = outer
            if execution.deferred:  # sent, not ended: its end is judged when it comes
                execution.settle.append(functools.partial(settled, execution, own))  # type: ignore[union-attr]
            elif late and now() >= own:
                raise self._exceeded(execution)
            return result

        return run

    def wrap_async(self, inner: AsyncLink) -> AsyncLink:
        arm, bound, late = self._alarms.arm, self._own, self.late_answers_fail

        async def run(execution: Execution) -> Any:
            now = execution.clock.now
            outer = execution.deadline
            own = bound(outer, now())
            if own is None:
                return await inner(execution)
            execution.deadline = own
            alarm = NO_ALARM if execution.semantics.enforces_deadline else arm(own - now())
            try:
                result = await inner(execution)
            except asyncio.CancelledError:
                if not alarm.fired:
                    raise
                if sys.version_info >= (3, 11):
                    alarm.task.uncancel()
                raise self._exceeded(execution) from None
            except Exception as failure:
                if now() >= own:
                    raise self._exceeded(execution) from failure
                raise
            finally:
                if alarm is not NO_ALARM:
                    alarm.disarm()
                execution.deadline = outer
            if late and now() >= own:
                raise self._exceeded(execution)
            return result

        return run


class Timeout(Bounds):
    """Bounds the time the inner chain may take to ``seconds``.

    The deadline inner policies and the call see (``execution.deadline``) is ``min(now + seconds, outer
    deadline)``. Async work is cancelled at the deadline. A sync call is handed the deadline to honour (the gRPC
    adapter sends it as the call's timeout) and a result that arrives after it is discarded. Either way, when this
    policy's deadline is the one that passed, the caller gets :class:`TimeoutExceededError` (chaining the inner
    failure, if any) and ``on_timeout_exceeded`` hears of it; an outer deadline passing is left to its owner.

    :param seconds: the time allowed (> 0, at most a year), positional.
    :param on_timeout_exceeded: hears :class:`TimeoutExceeded` when this policy's deadline passes.
    :param name: the policy's name in its events (default: its class's name, "Timeout").
    :param clock: the clock deadlines are measured on (default the system clock).
    """

    __slots__ = ("clock", "on_timeout_exceeded", "seconds")
    clock: Clock
    seconds: float
    on_timeout_exceeded: options.Listener[TimeoutExceeded] | None

    def __init__(
        self,
        seconds: options.Duration,
        /,
        *,
        on_timeout_exceeded: options.Listener[TimeoutExceeded] | None = None,
        clock: Clock | None = None,
        name: str | None = None,
    ) -> None:
        self._init(
            name=options.policy_name(name, self),
            seconds=options.seconds(seconds, "Timeout seconds", positive=True),
            on_timeout_exceeded=options.listener(on_timeout_exceeded, "on_timeout_exceeded"),
            clock=options.clock(clock),
            _alarms=Alarms(),
        )

    def _own(self, outer: float | None, now: float) -> float | None:
        own = now + self.seconds
        return None if outer is not None and outer < own else own

    def _exceeded(self, execution: Execution) -> TimeoutExceededError:
        if self.on_timeout_exceeded is not None or self._observers:
            options.emit(
                self.on_timeout_exceeded,
                TimeoutExceeded(self.seconds, execution.elapsed, self.name, execution.semantics.method),
                self._observers,
            )
        return TimeoutExceededError(f"timeout of {self.seconds:g}s exceeded", timeout=self.seconds)
