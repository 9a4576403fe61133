"""Who the client of an incoming call is, as a server decides it (for quotas, and load shedding's fairness): by
default the identity the channel authenticated (a TLS client certificate) or else the caller's address, never what
the caller claims in metadata; a tenant from metadata (:func:`by_metadata`) is an explicit choice, for callers the
server trusts to say who they are."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..engine._keys import KeyFunction

__all__ = ["UNKNOWN", "ClientKey", "by_identity", "by_metadata", "by_peer", "client_of"]

UNKNOWN = "<unknown>"
"""The client of the calls whose client cannot be told (the key function raised, or gave no str)."""


ClientKey = Callable[[Any], "str | None"]
"""Who the client of a call is, from its ``grpc.ServicerContext`` (None: it cannot be told)."""


def by_peer(context: Any) -> str | None:
    """The caller's address without its port (``ipv4:10.0.0.7``, ``ipv6:[::1]``, ``unix:/run/app.sock``): every
    connection from one host counts as one client."""
    peer = context.peer()
    if not isinstance(peer, str) or not peer:
        return None
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rpartition(":")[0]
    return peer


def by_identity(context: Any) -> str | None:
    """The identity the channel authenticated (the first of ``context.peer_identities()``: a TLS client
    certificate's name), else the caller's address (:func:`by_peer`). The default."""
    identities = context.peer_identities()
    if identities:
        first = identities[0]
        return "identity:" + (first.decode(errors="replace") if isinstance(first, bytes) else str(first))
    return by_peer(context)


def by_metadata(key: str, *, otherwise: ClientKey | None = by_identity) -> ClientKey:
    """The value of the call's metadata ``key`` (a tenant id, say), else what ``otherwise`` says (default
    :func:`by_identity`). A caller can claim any value: use it for callers trusted to say who they are."""
    if not isinstance(key, str) or not key or key != key.lower() or key.endswith("-bin"):
        raise ValueError(f"key must be a lower-case text metadata key, got {key!r}")
    named = key

    def from_metadata(context: Any) -> str | None:
        for name, value in context.invocation_metadata() or ():
            if name == named and isinstance(value, str):
                return f"{named}:{value}"
        return None if otherwise is None else otherwise(context)

    return from_metadata


def client_of(key: ClientKey, option: str, owner: str) -> KeyFunction:
    """Tells the client of a call by ``key``: :data:`UNKNOWN` when the function raises (logged once, naming
    ``owner``) or gives no str, so that no call is failed by it."""
    return KeyFunction(key, option, "the call's grpc.ServicerContext", UNKNOWN, owner)
