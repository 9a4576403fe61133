"""The policy protocol and the executor that composes policies into one chain (first = outermost)."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, ParamSpec, TypeVar

from ._clock import SYSTEM_CLOCK, Clock
from ._execution import PLAIN, Execution, Semantics

__all__ = ["AsyncLink", "Executor", "Link", "Policy"]

T = TypeVar("T")
P = ParamSpec("P")
Link = Callable[[Execution], Any]
"""One step of a sync chain: runs the rest of the chain for an execution."""
AsyncLink = Callable[[Execution], Awaitable[Any]]
"""One step of an async chain."""


class Policy(abc.ABC):
    """A resilience policy: read-only configuration that wraps the rest of a chain.

    Like failsafe-go's policy executors, ``wrap`` and ``wrap_async`` are called once, when a chain is built,
    and return the function that runs per call; per-call state lives on the :class:`Execution` or in locals.
    ``name`` (every policy's ``name=`` option; by default the class's name) identifies it in its events.
    """

    __slots__ = ("__weakref__", "_observers", "name")
    name: str
    _observers: tuple[Callable[[Any], object], ...]
    """Who hears its events besides its ``on_*`` listeners (an :class:`interceptors.otel.Metrics` given the policy)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        made = super().__new__(cls)
        object.__setattr__(made, "_observers", ())
        return made

    serves_deferred: ClassVar[bool] = False
    """Whether the policy serves deferred attempts (see ``Execution.deferred``): it reads nothing of an attempt's
    outcome when the attempt returns, only what ``execution.settle`` tells it later."""

    @abc.abstractmethod
    def wrap(self, inner: Link) -> Link:
        """The sync step that applies this policy around ``inner``."""

    def wrap_over(self, inner: Link, deferrable: bool) -> Link:
        """The sync step around ``inner``, knowing whether every policy in ``inner`` serves deferred attempts (a
        HedgePolicy then defers the attempts it races). By default, :meth:`wrap`."""
        return self.wrap(inner)

    @abc.abstractmethod
    def wrap_async(self, inner: AsyncLink) -> AsyncLink:
        """The async step that applies this policy around ``inner``."""

    def inherit(self, old: Policy) -> None:  # noqa: B027  (most policies keep no state)
        """Take over the state of ``old``, the policy of the same name and kind this one replaces when a
        :class:`~interceptors.Registry` reloads (a breaker's state and window, a limiter's calls in flight), as far
        as this one's options allow. Calls in flight through ``old`` end as they began. By default nothing: the
        policy keeps no state."""

    def check(self, semantics: Semantics) -> None:  # noqa: B027  (most policies fit every transport)
        """Raise ValueError if this policy cannot serve the calls ``semantics`` describes (e.g. a fallback's fields
        that the response type lacks). Adapters call it once per method, before the method's first call."""

    def _init(self, **options: Any) -> None:
        for name, value in options.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only; create a new policy instead")

    def __repr__(self) -> str:
        names = [n for cls in type(self).__mro__ for n in getattr(cls, "__slots__", ()) if not n.startswith("_")]
        return f"{type(self).__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in names)})"


def _invoke(execution: Execution) -> Any:
    return execution._fn(execution)


class Executor:
    """Runs callables through ``policies``, the first outermost (failsafe-go's order).

    One executor, like its policies, serves sync and async callers and any number of threads and tasks at once.
    Policies that keep time must share one clock, so deadlines and delays are measured on one time line, and
    each policy may appear once (a breaker twice in a chain would count every failure twice).
    """

    __slots__ = ("_async_chain", "_chain", "clock", "policies")
    policies: tuple[Policy, ...]

    def __init__(self, *policies: Policy) -> None:
        for p in policies:
            if not isinstance(p, Policy):
                raise ValueError(f"policies must be Policy instances, got {p!r}")
        if len({id(p) for p in policies}) < len(policies):
            twice = next(p for i, p in enumerate(policies) if any(p is q for q in policies[:i]))
            raise ValueError(f"policies must each appear once in a chain, got {twice!r} twice")
        clocks = {id(c): c for c in (getattr(p, "clock", None) for p in policies) if c is not None}
        if len(clocks) > 1:
            raise ValueError(f"policies must share one clock, got {list(clocks.values())!r}")
        self.policies = policies
        self.clock: Clock = next(iter(clocks.values()), SYSTEM_CLOCK)
        chain: Link = _invoke
        async_chain: AsyncLink = _invoke
        deferrable = True  # every policy inside ``chain`` serves deferred attempts
        for p in reversed(policies):
            chain, async_chain = p.wrap_over(chain, deferrable), p.wrap_async(async_chain)
            deferrable = deferrable and p.serves_deferred
        self._chain, self._async_chain = chain, async_chain

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` through the policies."""
        return self.call_with_execution(lambda _: fn(*args, **kwargs))

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` through the policies."""
        return await self.acall_with_execution(lambda _: fn(*args, **kwargs))

    def call_with_execution(
        self,
        fn: Callable[[Execution], T],
        *,
        deadline: float | None = None,
        request: Any = None,
        semantics: Semantics = PLAIN,
    ) -> T:
        """Run ``fn(execution)``; ``deadline`` is absolute on ``self.clock``, ``request`` goes to fallbacks."""
        result: T = self._chain(
            Execution(fn, clock=self.clock, semantics=semantics, request=request, deadline=deadline)
        )
        return result

    def check(self, semantics: Semantics) -> None:
        """Raise ValueError if a policy cannot serve the calls ``semantics`` describes (see :meth:`Policy.check`)."""
        for p in self.policies:
            p.check(semantics)

    def run_execution(self, execution: Execution) -> Any:
        """Run a prepared execution (adapters build their own, to read it afterwards)."""
        return self._chain(execution)

    def arun_execution(self, execution: Execution) -> Awaitable[Any]:
        """Run a prepared execution on the async chain (await the result)."""
        return self._async_chain(execution)

    async def acall_with_execution(
        self,
        fn: Callable[[Execution], Awaitable[T]],
        *,
        deadline: float | None = None,
        request: Any = None,
        semantics: Semantics = PLAIN,
    ) -> T:
        """Await ``fn(execution)``; options as for :meth:`call_with_execution`."""
        result: T = await self._async_chain(
            Execution(fn, clock=self.clock, semantics=semantics, request=request, deadline=deadline)
        )
        return result

    def __repr__(self) -> str:
        return f"Executor{self.policies!r}"
