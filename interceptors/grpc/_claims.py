"""What a server believes of an incoming call's priority: the caller's claim (``x-priority``), no higher than the
server allows that caller (see ``Priorities.max_claimed``), and whether the call is a retry or a hedge
(``grpc-previous-rpc-attempts`` above 0)."""

from __future__ import annotations

import logging
from typing import Any

from ..engine._options import shown
from ..engine._priority import Priorities, Priority
from ._core import PREVIOUS_ATTEMPTS, PRIORITY_KEY

__all__ = ["claimed"]

_log = logging.getLogger("interceptors")
_LEVELS = {level.name.lower(): level for level in Priority}
_warned: set[str] = set()  # what was logged once: "header", "max_claimed"


def claimed(context: Any, priorities: Priorities) -> tuple[Priority | None, bool]:
    """The priority the server gives the call ``context`` answers (None: it claims none, or one that is not a
    priority, which is logged once), and whether it is a retry or a hedge."""
    level: Priority | None = None
    retry = False
    for key, value in context.invocation_metadata() or ():
        if key == PRIORITY_KEY:
            level = _LEVELS.get(value.strip().lower()) if isinstance(value, str) else None
            if level is None:
                _once("header", "ignored an x-priority that names no priority: %s", shown(value))
        elif key == PREVIOUS_ATTEMPTS:
            retry = isinstance(value, str) and value.strip() not in ("", "0")
    if level is None:  # saying nothing gains a caller no more than a claim would
        default = priorities.default
        if priorities.max_claimed is None and default <= Priority.NORMAL:  # what any caller is believed
            return None, retry
        believed = _max_claimed(context, priorities)
        return (believed if believed < default else None), retry
    return min(level, _max_claimed(context, priorities)), retry


def _max_claimed(context: Any, priorities: Priorities) -> Priority:
    """The highest priority the server believes of this caller."""
    rule = priorities.max_claimed
    if isinstance(rule, Priority):
        return rule
    try:
        if rule is None:  # callers the channel authenticated (a TLS client certificate) are believed
            return Priority.CRITICAL if context.peer_identities() else Priority.NORMAL
        return Priority.of(rule(context), "what max_claimed returned")
    except Exception as error:
        _once("max_claimed", "max_claimed failed (callers are believed up to the default priority): %r", error)
        return priorities.default


def _once(what: str, message: str, argument: object) -> None:
    if what not in _warned:
        _warned.add(what)
        _log.warning(message, argument)
