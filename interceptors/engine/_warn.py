"""Warnings that name the line of the user's code they are about."""

from __future__ import annotations

import sys
import warnings
from types import FrameType

_INTERNAL = ("interceptors", "grpc", "asyncio")
"""The packages whose frames a warning passes over: ours, and grpc's and asyncio's, which call ours; and the stubs
grpc generates (``*_pb2_grpc``), whose constructors make the multicallables."""


def _internal(module: str) -> bool:
    return module.partition(".")[0] in _INTERNAL or module.endswith("_pb2_grpc")


def warn(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` at the first frame of the caller's own code, past the frames of :data:`_INTERNAL` (a stub
    made, a call through grpc's interceptor hooks): the line that made the channel, the stub or the call. With no
    such frame (all of them ours, in a task or thread of grpc's), at the frame that called this."""
    frame: FrameType | None = sys._getframe(1)
    level = 2
    while frame is not None and _internal(frame.f_globals.get("__name__", "")):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level if frame is not None else 2)
