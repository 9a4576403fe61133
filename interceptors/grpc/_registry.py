"""Registry: named policies that channels and interceptors share, reloaded at runtime without forgetting their state."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from ..engine import _options as options
from ..engine._budget import RetryBudget
from ..engine._policy import Policy
from ..fleet._store import FleetStore
from ._core import MethodPolicies, Plan, Router
from ._service_config import from_service_config

__all__ = ["Registry"]

_log = logging.getLogger("interceptors")

Config = str | bytes | Mapping[str, Any]
THROTTLING = "retryThrottling"
"""The name of a service config's retry budget (``retryThrottling``) in a registry."""


class Registry:
    """The policies of a backend's methods, by name, shared by every channel and interceptor given the registry
    (``resilient_channel(target, registry=...)``, ``ResilienceInterceptor(registry=...)``, and the aio ones), and
    reloadable while they serve calls.

    The chains come from a gRPC service config (see :func:`~interceptors.from_service_config`, our ``resilience``
    block included), from code (``policies`` for every method, ``methods`` by method or service), or both (the
    code's chains over the config's, as for the helpers). :meth:`reload` takes a new config the same way: it is
    checked whole first, and a bad one raises ValueError (naming the JSON path of what is wrong) leaving the
    running chains in place. Otherwise each new policy whose **name** matches a running one takes over its state
    (:meth:`Policy.inherit`: a breaker that is open stays open, a limiter keeps its calls in flight, a budget its
    window or tokens, a throttle its window, a cache its answers); the calls that start after the reload get the
    new chains, those in flight end as they began.

    A policy's name is its ``name=`` when given (two alike policies of one name are one policy, shared by every
    chain that names it; a name given to policies of different kinds or options is refused), else its chain's
    methods and its kind (``"/pkg.Svc/Get,/pkg.Svc/List CircuitBreaker"``; ``"* Timeout"`` for the default
    chain; a second one of a kind in a chain gets ``#2``). A reload that would change the kind of a named policy is
    refused, naming it. The retry budget of a config's ``retryThrottling`` is named ``retryThrottling``.

    What a service config tells grpc itself (load balancing, ``waitForReady``) is read by a channel when it is made
    (:attr:`grpc_config`), not at a reload. A channel made with a registry has grpc's own retries off, as a
    reload may bring retries in.

    :param config: a gRPC service config, JSON or a mapping (default None).
    :param policies: the chain of every method no other chain names (default: the config's).
    :param methods: chains by ``/pkg.Service/Method`` or ``/pkg.Service/*``, over the config's.
    :param fleet_store: the :class:`~interceptors.fleet.FleetStore` of the config's fleet policies.
    """

    __slots__ = ("_budgets", "_fleet_store", "_lock", "_named", "_plan", "_routers", "grpc_config", "version")
    grpc_config: str | None
    version: int

    def __init__(
        self,
        config: Config | None = None,
        *,
        policies: Sequence[Policy] = (),
        methods: MethodPolicies | None = None,
        fleet_store: FleetStore | None = None,
    ) -> None:
        self._fleet_store = fleet_store
        self._lock = threading.Lock()
        self._routers: weakref.WeakSet[Router] = weakref.WeakSet()
        self._plan, self._named, self._budgets, grpc_config = self._built(config, policies, methods, {})
        self.grpc_config = grpc_config
        """What the first config tells grpc itself (see :attr:`ServiceConfig.grpc_config`), or None."""
        self.version = 0
        """How many reloads it has taken."""

    def reload(
        self, config: Config | None = None, *, policies: Sequence[Policy] = (), methods: MethodPolicies | None = None
    ) -> None:
        """Replace the chains with those of ``config``, ``policies`` and ``methods`` (as the constructor's), keeping
        the state of each policy whose name stays (see the class's doc). Raises ValueError, changing nothing, for a
        config that cannot be served."""
        with self._lock:
            plan, named, budgets, _ = self._built(config, policies, methods, self._named)
            pairs: list[tuple[Any, Any]] = [(policy, self._named.get(name)) for name, policy in named.items()]
            pairs += [(budget, self._budgets.get(name)) for name, budget in budgets.items()]
            for new, old in pairs:
                if old is not None and old is not new:
                    try:
                        new.inherit(old)
                    except Exception:
                        _log.exception("%r could not take over the state of %r: it starts afresh", new, old)
            plan = plan.again()  # its chains run on the state they took over
            self._plan, self._named, self._budgets = plan, named, budgets
            self.version += 1
            for router in list(self._routers):
                router.load(plan)

    def __getitem__(self, name: str) -> Policy:
        """The policy of that name (see the class's doc); KeyError if none."""
        return self._named[name]

    @property
    def names(self) -> list[str]:
        """The names of its policies."""
        return list(self._named)

    def _serve(self, router: Router) -> Plan:
        """The chains of ``router``, which takes every reload from now on."""
        with self._lock:
            self._routers.add(router)
            return self._plan

    def _built(
        self,
        config: Config | None,
        policies: Sequence[Policy],
        methods: MethodPolicies | None,
        running: Mapping[str, Policy],
    ) -> tuple[Plan, dict[str, Policy], dict[str, RetryBudget], str | None]:
        """The chains of a config, checked, with their policies and budgets by name."""
        if methods is not None and not isinstance(methods, Mapping):
            raise ValueError(f"methods must map method or service names to policies, got {options.shown(methods)}")
        chains: dict[str, Sequence[Policy]] = {}
        budgets: dict[str, RetryBudget] = {}
        grpc_config = None
        if config is not None:
            if not isinstance(config, (str, bytes, Mapping)):
                raise ValueError(f"config must be a service config, JSON or a mapping, got {options.shown(config)}")
            parsed = from_service_config(config, fleet_store=self._fleet_store)
            chains, grpc_config = {"": parsed.policies, **parsed.methods}, parsed.grpc_config
            if parsed.budget is not None:
                budgets[THROTTLING] = parsed.budget
        if policies:
            chains[""] = tuple(policies)
        chains.update(methods or {})
        named, stand_ins = _named(chains)
        for name, policy in named.items():
            old = running.get(name)
            if old is not None and type(old) is not type(policy):
                now, then = type(old).__name__, type(policy).__name__
                raise ValueError(
                    f"policy {name!r} is a {now} now; the new config makes it a {then}: give it another name"
                )
        chains = {key: tuple(stand_ins.get(id(p), p) for p in chain) for key, chain in chains.items()}
        default = chains.pop("", ())
        plan = Plan(default, chains)
        plan.check_named()
        for name, policy in named.items():
            budget = getattr(policy, "budget", None)
            if isinstance(budget, RetryBudget) and budget not in budgets.values():
                budgets[f"{name} budget"] = budget
        return plan, named, budgets, grpc_config

    def __repr__(self) -> str:
        return f"Registry({', '.join(self._named)})"


def _named(chains: Mapping[str, Sequence[Policy]]) -> tuple[dict[str, Policy], dict[int, Policy]]:
    """The policies of ``chains`` (by method key, "" for the default) by name (see :class:`Registry`), and the
    policies that stand in for others (by ``id``): alike policies of one given name are one, the first. The chains'
    policies are checked here: ValueError for what is not one."""
    labels: dict[int, list[str]] = {}  # the keys of each chain (a config's entry serves all its names)
    for key, chain in chains.items():
        if isinstance(chain, (str, bytes)) or not isinstance(chain, Sequence):
            raise ValueError(f"methods[{key!r}] must be a sequence of policies, got {options.shown(chain)}")
        labels.setdefault(id(chain), []).append(key or "*")
    named: dict[str, Policy] = {}
    stand_ins: dict[int, Policy] = {}
    seen: set[int] = set()
    for key, chain in chains.items():
        kinds: dict[str, int] = {}
        for policy in chain:
            if not isinstance(policy, Policy):
                raise ValueError(f"methods[{key!r}] must hold Policy instances, got {options.shown(policy)}")
            kind = type(policy).__name__
            kinds[kind] = kinds.get(kind, 0) + 1
            if id(policy) in seen:
                continue
            seen.add(id(policy))
            if policy.name == kind:  # not named by its user: by its chain and kind
                label = ",".join(sorted(labels[id(chain)]))
                named[f"{label} {kind}" if kinds[kind] == 1 else f"{label} {kind}#{kinds[kind]}"] = policy
                continue
            first = named.setdefault(policy.name, policy)
            if first is policy:
                continue
            if type(first) is not type(policy) or repr(first) != repr(policy):
                raise ValueError(
                    f"policy {policy.name!r} is given twice, as {options.shown(first, 200)} and "
                    f"{options.shown(policy, 200)}: one name, one policy"
                )
            stand_ins[id(policy)] = first
    return named, stand_ins
