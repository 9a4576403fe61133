"""The events policies report to their ``on_*`` listeners (frozen dataclasses), and a breaker's metrics."""

from .engine.events import *  # noqa: F403
from .engine.events import __all__ as __all__
