"""Warnings that name the line of the user's code they are about."""

from __future__ import annotations

import sys
import warnings
from types import FrameType

from ._execution import INTERNAL_FRAMES

_CALLERS = ("asyncio",)
"""Packages whose frames, calling ours, a warning passes over too (besides this library's and the transport's)."""
_THREADS = ("threading", "concurrent")
"""Where a thread's frames begin: reached, there is no user's line to name."""


def _internal(frame: FrameType, places: tuple[str, ...]) -> bool:
    module = frame.f_globals.get("__name__", "")
    return (
        frame.f_code.co_filename.startswith(places)
        or module.partition(".")[0] in _CALLERS
        or module.endswith("_pb2_grpc")  # a generated stub's constructor makes the multicallables
    )


def warn(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` at the first frame of the caller's own code, past this library's frames, the transport's
    (:data:`INTERNAL_FRAMES`: grpcio's), asyncio's and generated stubs' that called it (a stub made, a call through
    grpc's interceptor hooks): the line that made the channel, the stub or the call. In a thread of the library's or
    grpc's, with no such line, at the frame that called this."""
    places = tuple(INTERNAL_FRAMES)
    frame: FrameType | None = sys._getframe(1)
    level = 2
    while frame is not None and _internal(frame, places):
        frame, level = frame.f_back, level + 1
    if frame is None or frame.f_globals.get("__name__", "").partition(".")[0] in _THREADS:
        level = 2
    warnings.warn(message, category, stacklevel=level)
