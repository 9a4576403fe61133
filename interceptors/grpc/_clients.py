"""Who the client of an incoming call is, as a server decides it (for quotas, and load shedding's fairness): by
default the identity the channel authenticated (a TLS client certificate) or else the caller's address, never what
the caller claims in metadata; a tenant from metadata (:func:`by_metadata`) is an explicit choice, for callers the
server trusts to say who they are."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..engine import _options as options

__all__ = ["UNKNOWN", "ClientKey", "ClientOf", "by_identity", "by_metadata", "by_peer"]

UNKNOWN = "<unknown>"
"""The client of the calls whose client cannot be told (the key function raised, or gave no str)."""

_log = logging.getLogger("interceptors")


ClientKey = Callable[[Any], "str | None"]
"""Who the client of a call is, from its ``grpc.ServicerContext`` (None: it cannot be told)."""

_log = logging.getLogger("interceptors")


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


class ClientOf:
    """Tells the client of a call by ``key``: :data:`UNKNOWN` when the function raises (logged once) or gives no
    str, so that no call is failed by it."""

    __slots__ = ("_warned", "key")

    def __init__(self, key: ClientKey, option: str) -> None:
        self.key: ClientKey = options.function(key, option, "the call's grpc.ServicerContext")
        self._warned = False

    def __call__(self, context: Any) -> str:
        try:
            client = self.key(context)
        except Exception as error:
            client = None
            if not self._warned:
                self._warned = True
                _log.warning("the key function failed (such calls count as one client, %r): %r", UNKNOWN, error)
        return client if isinstance(client, str) else UNKNOWN
