"""Key functions that never fail a call: what tells a call's key (its tenant, client or method) for keyed state."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from . import _options as options

__all__ = ["KeyFunction"]

_log = logging.getLogger("interceptors")


class KeyFunction:
    """Calls ``fn`` to tell a call's key; gives ``fallback`` when it raises (logged once, naming ``owner``) or gives
    anything but a str, so that no call is failed by it."""

    __slots__ = ("_warned", "fallback", "fn", "owner")

    def __init__(self, fn: Callable[[Any], str | None], option: str, argument: str, fallback: str, owner: str) -> None:
        self.fn: Callable[[Any], str | None] = options.function(fn, option, argument)
        self.fallback, self.owner = fallback, owner
        self._warned = False

    def __call__(self, subject: Any) -> str:
        try:
            key = self.fn(subject)
        except Exception as error:
            key = None
            if not self._warned:
                self._warned = True
                _log.warning(
                    "%s: the key function failed (such calls count as one, %r): %r", self.owner, self.fallback, error
                )
        return key if isinstance(key, str) else self.fallback
