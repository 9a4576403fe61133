"""Every reach into grpcio's private shapes, in one place: what grpc gives no API for. Each has an answer that is
safe when the shape is not there; tests/client/test_grpc_shapes.py checks each against the installed grpcio and
fails naming its version when one changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

BLOCKING: dict[object, bool] = {}


def blocks(continuation: Any) -> bool:
    """Whether grpc called us for a blocking call (its continuation then blocks too) rather than ``.future()``.

    grpc gives no flag; its continuations for ``.future()`` are defined in ``future``, those for
    ``__call__``/``with_call`` in ``_with_call``. Any other is taken as blocking: its policies run in the caller's
    thread, which is correct for both kinds (a future's caller then waits for its end: slower, never wrong) and
    holds up no thread the library shares. The answer is kept per code object: grpc makes a new continuation per
    call, all with the same code.
    """
    code = getattr(continuation, "__code__", None)
    known = BLOCKING.get(code)
    if known is None:
        qualname = getattr(continuation, "__qualname__", "")
        known = BLOCKING[code] = not qualname.endswith(".future.<locals>.continuation")
    return known


def futures_of(continuation: Any) -> Callable[[str], Any] | None:
    """For a blocking continuation of ``grpc.intercept_channel``: the ``future`` of the multicallable it calls
    ``with_call`` on, by method (None if grpc's continuation does not have the shape this knows).

    A blocking attempt cannot be cancelled; its future can. grpc's continuation closes over the intercepted
    multicallable (``self``), whose ``_thunk(method)`` is the next multicallable in the channel.
    """
    try:
        owner = continuation.__closure__[continuation.__code__.co_freevars.index("self")].cell_contents
        thunk = owner._thunk
    except (AttributeError, ValueError, IndexError, TypeError):
        return None
    return lambda method: thunk(method).future


class WrittenByGrpc:
    """A call with streamed requests returned to grpc's intercepted call, which serves ``write()`` and
    ``done_writing()`` itself: it writes to the request iterator it gave the interceptor."""

    _done_writing_flag = False  # read by grpc's intercepted call; its done_writing() ends our requests

    async def write(self, request: Any) -> None:
        raise NotImplementedError

    async def done_writing(self) -> None:
        raise NotImplementedError


def at_once(coroutine: Any) -> Any:
    """What a coroutine returns when it finishes without waiting (a finished call's accessors do); else None."""
    try:
        coroutine.send(None)
    except StopIteration as returned:
        return returned.value
    except Exception:
        return None
    coroutine.close()
    return None


def is_idle(channel: Any) -> bool:
    """Whether a new sync ``channel`` is IDLE (grpc made it: its service config was taken), asked without
    connecting; False when grpc keeps its core channel elsewhere (grpc's own calls then tell)."""
    try:
        state = channel._channel.check_connectivity_state(False)
    except AttributeError:
        return False
    return bool(state == grpc.ChannelConnectivity.IDLE.value[0])
