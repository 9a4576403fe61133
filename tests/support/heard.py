"""An observer a channel is given as its ``metrics=``, as an ``interceptors.otel.Metrics`` is: it hears the events of
the policies of the channel's routes (their service config's included), and only theirs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from interceptors import Executor
from interceptors.engine import _options as engine_options


class Heard:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def instrument(self, executor: Executor, method: str, target: str) -> Executor:
        self.watch(executor.policies)
        return executor

    def watch(self, sources: Iterable[Any]) -> None:
        for source in sources:
            engine_options.observe(source, self.events.append)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]
