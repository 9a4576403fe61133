"""The events policies report to their ``on_*`` listeners (frozen dataclasses), and a breaker's metrics.
``CircuitState`` is at home in :mod:`interceptors`."""

from .engine._events import *  # noqa: F403
from .engine._events import __all__ as _ALL

__all__ = [name for name in _ALL if name != "CircuitState"]
