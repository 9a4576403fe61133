"""Which policies of a chain can serve a method: a ``Fallback(message=...)`` or ``Fallback(value=...)`` answers with
a response of the method's type, which one method's type may not allow (a field it lacks).

The rule: a chain given for one method must fit it (a misfit is a ``ValueError``, raised when the channel, the
interceptor or the stub is made). A chain for many methods (a channel's default chain, a service's ``/pkg.Svc/*``,
a service config's service-wide or default entry) serves each with the policies that fit it: for a method a
fallback cannot answer, the fallback steps aside and that method's failures reach the caller as they are. One
:class:`FallbackMisfitWarning` per service lists the methods it steps aside for, when the first stub of the
service is made (helpers) or its first call is made (grpc's own interceptor hooks), never from a call.
"""

from __future__ import annotations

from collections.abc import Iterator

from google.protobuf import descriptor_pool

from ..engine._execution import Semantics
from ..engine._options import cut
from ..engine._policy import Executor, Policy

__all__ = ["FallbackMisfitWarning", "fitted", "misfits", "reasons", "service_methods"]


class FallbackMisfitWarning(UserWarning):
    """A policy of a chain for many methods cannot serve some of them (a Fallback whose answer their response type
    cannot hold): it steps aside for those, whose failures reach their callers as they are. Give them a chain of
    their own: ``methods={"/pkg.Service/Method": [...]}``."""


def misfits(executor: Executor, semantics: Semantics) -> dict[Policy, str]:
    """The policies of ``executor`` that cannot serve the method ``semantics`` describes, with the reason."""
    found: dict[Policy, str] = {}
    for policy in executor.policies:
        try:
            policy.check(semantics)
        except ValueError as error:
            found[policy] = cut(str(error).splitlines()[0], 160)
    return found


def fitted(executor: Executor, semantics: Semantics, wide: bool) -> Executor:
    """``executor`` for the method ``semantics`` describes: as it is when every policy fits; for a ``wide`` chain
    (one for many methods), without the policies that do not; a chain for this one method that does not fit raises
    ValueError naming the method, the policy and the reason."""
    unfit = misfits(executor, semantics)
    if not unfit:
        return executor
    if not wide:
        raise ValueError(f"the chain given for {semantics.method} does not fit it: {reasons(unfit)}")
    return Executor(*(policy for policy in executor.policies if policy not in unfit))


def reasons(unfit: dict[Policy, str]) -> str:
    return "; ".join(f"{policy.name}: {reason}" for policy, reason in unfit.items())


def service_methods(service: str) -> Iterator[tuple[str, tuple[bool, bool]]]:
    """The methods of ``service`` (``pkg.Service``) as ``/pkg.Service/Method`` and their kind (whether requests,
    whether responses are streamed), from the default protobuf descriptor pool (none when it is not there)."""
    try:
        found = descriptor_pool.Default().FindServiceByName(service)
    except KeyError:
        return
    for method in found.methods:
        yield f"/{service}/{method.name}", (method.client_streaming, method.server_streaming)
