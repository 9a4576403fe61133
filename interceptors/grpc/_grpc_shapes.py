"""Every reach into grpcio's private shapes, in one place: what grpc gives no API for. Each has an answer that is
safe when the shape is not there; tests/client/test_grpc_shapes.py checks each against the installed grpcio and
fails naming its version when one changes.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any

import grpc

try:  # the unary-unary multicallable of grpc.intercept_channel, for next_multicallable to take over
    from grpc._interceptor import _UnaryUnaryMultiCallable

    _Intercepted: Any = _UnaryUnaryMultiCallable
except (ImportError, AttributeError):  # pragma: no cover
    _Intercepted = None

try:  # grpc's core status codes, for cancel_blocking
    from grpc._cython.cygrpc import StatusCode as _CoreStatus  # type: ignore[import-not-found]

    _CANCELLED: Any = _CoreStatus.cancelled
except (ImportError, AttributeError):  # pragma: no cover
    _CANCELLED = None

_log = logging.getLogger("interceptors")

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


_SELF: dict[object, int | None] = {}
_NEXT = "_interceptors_next"


def next_multicallable(
    continuation: Any, method: str, direct: Callable[..., tuple[Any, Any]] | None = None
) -> Any | None:
    """For a blocking continuation of ``grpc.intercept_channel``: the unary-unary multicallable it calls ``with_call``
    on for ``method``, the next one in the channel (None for a future's continuation, see :func:`blocks`, and where
    grpc's continuation does not have the shape this knows).

    Calling it directly is calling on: grpc's continuation only unwraps the details and makes that multicallable,
    afresh each call (its channel's ``unary_unary``: ~20 Python calls, as much as our policies cost). grpc's
    continuation closes over the intercepted multicallable (``self``), whose ``_thunk(method)`` makes the next one;
    it is made once and kept on the intercepted multicallable (a stub's, which lives as long as the stub). Under an
    interceptor of another kind, grpc makes our intercepted multicallable afresh each call: it is made each call.

    With ``direct``, a bound method of the interceptor whose hook grpc called for it, a multicallable found keeping
    its next one (so not made afresh per call) has its later blocking calls taken over (see :class:`_TakenOver`):
    they go to ``direct(next, method, request, timeout, metadata, credentials, wait_for_ready, compression)``, which
    answers ``(response, call)`` or raises, without grpc's hooks (call details, a closure and the returned call's
    ``result()`` per call, as much again as the policies cost). Not when the multicallable's interceptor is another
    (one that calls ours from its own hook, which must go on seeing every call).
    """
    code = getattr(continuation, "__code__", None)
    index = _SELF.get(code, -1)
    if index == -1:
        names = getattr(code, "co_freevars", ())
        index = _SELF[code] = names.index("self") if "self" in names and blocks(continuation) else None
    if index is None:
        return None
    try:
        owner = continuation.__closure__[index].cell_contents
        kept = getattr(owner, _NEXT, None)
        if kept is not None and owner._method == method:
            if direct is not None and type(owner) is _Intercepted and owner._interceptor is direct.__self__:  # type: ignore[attr-defined]
                owner._interceptors_direct = functools.partial(direct, kept, method)
                owner.__class__ = TAKEN_OVER  # None only where _Intercepted is
            return kept
        made = owner._thunk(method)
    except Exception:  # not the shape this knows (or grpc refused): the continuation serves, as it would have
        return None
    if owner._method == method:  # an interceptor above ours makes a new intercepted multicallable per call: no use
        with contextlib.suppress(AttributeError):  # one that cannot keep it is asked again next call
            setattr(owner, _NEXT, made)
    return made


_CALL_PARAMETERS = ("self", "request", "timeout", "metadata", "credentials", "wait_for_ready", "compression")


def _calls_as_known(cls: Any) -> bool:
    """Whether ``cls``'s ``__call__`` and ``with_call`` take just the parameters :class:`_TakenOver` passes on."""
    try:
        return all(
            tuple(inspect.signature(getattr(cls, name)).parameters) == _CALL_PARAMETERS
            for name in ("__call__", "with_call")
        )
    except (TypeError, ValueError, AttributeError):  # pragma: no cover
        return False


if _Intercepted is not None and _calls_as_known(_Intercepted):

    class _TakenOver(_Intercepted):  # type: ignore[misc]  # grpc's class is Any here
        """grpc's intercepted unary-unary multicallable whose interceptor took its blocking calls over (see
        :func:`next_multicallable`); ``future()`` is still grpc's."""

        _interceptors_direct: Callable[..., tuple[Any, Any]]

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return self.with_call(*args, **kwargs)[0]

        def with_call(
            self,
            request: Any,
            timeout: Any = None,
            metadata: Any = None,
            credentials: Any = None,
            wait_for_ready: Any = None,
            compression: Any = None,
        ) -> tuple[Any, Any]:
            return self._interceptors_direct(request, timeout, metadata, credentials, wait_for_ready, compression)

    TAKEN_OVER: type | None = _TakenOver
else:  # pragma: no cover
    TAKEN_OVER = None


def cancellable_blocking(multicallable: Any) -> Callable[..., Any] | None:
    """grpc's ``with_call`` of a unary-unary ``multicallable``, as a blocking call that another thread can cancel
    (None where grpc's multicallable does not have the shape this knows).

    The caller's thread waits for the call in grpc's core as for ``with_call`` (one wake-up, no grpc thread in
    between, unlike a future); before it waits, the call is handed to the thread's receiver (see
    :func:`hand_calls_to`), and :func:`cancel_blocking` of it ends the wait with CANCELLED, as grpc's ``cancel()``
    does. grpc gives a blocking call no handle: its ``_blocking`` makes the call with its channel's
    ``segregated_call`` and waits for it in the same thread; a copy of the multicallable whose channel hands over
    each call it makes gives one.
    """
    channel = getattr(multicallable, "_channel", None)
    if _CANCELLED is None or not callable(getattr(channel, "segregated_call", None)):
        return None
    try:
        handing = copy.copy(multicallable)
        handing._channel = _HandingChannel(channel)
    except (TypeError, AttributeError):
        return None
    return handing.with_call  # type: ignore[no-any-return]


def hand_calls_to(receiver: Callable[[Any], object] | None) -> Callable[[Any], object] | None:
    """Hand each call that a :func:`cancellable_blocking` call of this thread makes to ``receiver`` (None: none);
    returns the receiver it replaces."""
    outer, _HANDS.receiver = _HANDS.receiver, receiver
    return outer


def cancel_blocking(call: Any) -> None:
    """Cancel a call handed over by a :func:`cancellable_blocking` call (nothing if it has ended)."""
    call.cancel(_CANCELLED, "Locally cancelled by application!")


class _Hands(threading.local):
    receiver: Callable[[Any], object] | None = None


_HANDS = _Hands()


class _HandingChannel:
    """grpc's own channel (cygrpc's) as a :func:`cancellable_blocking` multicallable sees it."""

    __slots__ = ("_channel",)

    def __init__(self, channel: Any) -> None:
        self._channel = channel

    def segregated_call(self, *args: Any, **kwargs: Any) -> Any:
        call = self._channel.segregated_call(*args, **kwargs)
        receiver = _HANDS.receiver
        if receiver is not None:
            try:
                receiver(call)
            except Exception:  # the call goes on, waited for as grpc waits for it: only it cannot be cancelled
                _log.exception("a blocking call could not be handed over")
        return call

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)


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
