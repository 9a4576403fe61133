"""An access log for sync and aio servers: one record per call, with the status its client saw (see
:mod:`._observer`).

Every call gets its line: answered, failed, aborted, refused by another interceptor further in (a shedding
rejection, an undecodable request) and calls to methods the server does not have (UNIMPLEMENTED). A call that
ended because its deadline passed or its client cancelled it is logged as DEADLINE_EXCEEDED or CANCELLED, as its
client saw it, not as the error its abandoned handler may have raised. Requests larger than the server's
``grpc.max_receive_message_length`` are refused by grpc's core before any Python code sees them: grpcio offers
no hook to log those.
"""

from __future__ import annotations

import logging
import time

import grpc

from ._observer import OK, AioObserver, CallObserver, SyncObserver

__all__ = ["AccessLog", "AioAccessLog"]


class _Logs(CallObserver):
    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = _logger(logger)

    def _ended(self, method: str, code: grpc.StatusCode, started: float) -> None:
        latency_ms = round((time.monotonic() - started) * 1000, 3)
        level = logging.INFO if code is OK else logging.ERROR
        extra = {"method": method, "code": code.name, "latency_ms": latency_ms}
        self._log.log(level, "%s %s", code.name, method, extra=extra)


class AccessLog(_Logs, SyncObserver):
    """Logs one record per call of a sync server, when it ends: its method, status code and latency.

    Records go to ``logger`` (default ``interceptors.access``) at INFO when OK, ERROR otherwise, with the fields
    ``method``, ``code`` and ``latency_ms`` as extras, for a structured (e.g. JSON) formatter to print. Install it
    first (outermost), so that it sees the calls other interceptors refuse.
    """


class AioAccessLog(_Logs, AioObserver):
    """:class:`AccessLog` for ``grpc.aio`` servers."""


def _logger(logger: object) -> logging.Logger:
    if logger is None:
        return logging.getLogger("interceptors.access")
    if not isinstance(logger, logging.Logger):
        raise ValueError(f"logger must be a logging.Logger, got {logger!r}")
    return logger
