"""Small callables for engine tests, in the spirit of failsafe-go's testutil."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Boom(Exception):
    """A failure the tests raise."""


class CallerMistake(Exception):
    """A failure the tests tell policies not to handle."""


class Calls:
    """Counts calls; fails the first ``failures`` of them with ``error`` (all of them when None), then returns."""

    def __init__(self, failures: int | None = None, result: Any = "ok", error: Callable[[], Exception] = Boom):
        self.failures, self.result, self.error = failures, result, error
        self.count = 0

    def __call__(self, *_: Any) -> Any:
        self.count += 1
        if self.failures is None or self.count <= self.failures:
            raise self.error()
        return self.result

    async def async_call(self, *_: Any) -> Any:
        return self()
