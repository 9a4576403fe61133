"""The options of the channels the helpers make: no stacked retries, transparent retries kept where they can be.

grpcio has retries of its own. Configured ones (a service config's ``retryPolicy``) would run under a RetryPolicy
and multiply its attempts; the helpers convert service configs to policies instead (see
:mod:`interceptors.grpc._service_config`), and hand grpc only the rest. Transparent
retries (of calls that never reached the server application, e.g. refused on a GOAWAY) are safe and worth
keeping, but they come with grpcio's retry machinery, which strips the application's
``grpc-previous-rpc-attempts`` header from every call. So the helpers turn grpcio's retries off
(``grpc.enable_retries=0``) only on channels where a RetryPolicy or a HedgePolicy applies to some method (its
attempts carry the header, and it retries refused calls itself, as UNAVAILABLE); other channels keep grpcio's
default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from ..engine._warn import warn

ENABLE_RETRIES = "grpc.enable_retries"
SERVICE_CONFIG = "grpc.service_config"


class StackedRetriesWarning(UserWarning):
    """grpcio's built-in retries are on under a RetryPolicy: they strip its ``grpc-previous-rpc-attempts``, and
    a retry policy a resolver supplies would multiply its attempts."""


def open_channel(
    grpc_module: Any, target: str, credentials: Any, options: list[tuple[str, Any]], **arguments: Any
) -> Any:
    """A channel of ``grpc_module`` (grpc or grpc.aio) to ``target``: secure with ``credentials``, else insecure.
    Raises ValueError naming a target, credentials or compression of the wrong kind."""
    if not isinstance(target, str) or not target.strip():
        raise ValueError(f"target must be an address to dial, such as 'host:port', got {target!r}")
    if credentials is not None and not isinstance(credentials, grpc.ChannelCredentials):
        raise ValueError(f"credentials must be grpc.ChannelCredentials or None, got {credentials!r}")
    compression = arguments.get("compression")
    if compression is not None and not isinstance(compression, grpc.Compression):
        raise ValueError(f"compression must be a grpc.Compression or None, got {compression!r}")
    if credentials is None:
        return grpc_module.insecure_channel(target, options=options, **arguments)
    return grpc_module.secure_channel(target, credentials, options=options, **arguments)


def option_pairs(options: object) -> list[tuple[str, Any]]:
    """``options`` as a list; raises ValueError for options that are not (key, value) pairs."""
    if isinstance(options, (str, bytes)) or not isinstance(options, Sequence):
        raise ValueError(f"options must be a sequence of (key, value) pairs, got {options!r}")
    for pair in options:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise ValueError(f"options must be (key, value) pairs with str keys, got {pair!r}")
    return list(options)


def channel_options(options: object, *, retries: bool) -> list[tuple[str, Any]]:
    """``options`` for a helper's channel (see :func:`option_pairs`); ``retries`` tells whether a RetryPolicy or a
    HedgePolicy applies to some of its methods."""
    result = option_pairs(options)
    settings = dict(result)
    if ENABLE_RETRIES not in settings:
        if retries:
            result.append((ENABLE_RETRIES, 0))
    elif settings[ENABLE_RETRIES] and retries:
        warn(
            f"{ENABLE_RETRIES} is on under a RetryPolicy: grpcio strips the grpc-previous-rpc-attempts of its "
            "retries, and would multiply its attempts by any retry policy a resolver supplies",
            StackedRetriesWarning,
        )
    return result
