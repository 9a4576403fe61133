"""What the sync and aio adapters share for streaming calls: the request replay buffer, the response side's commit
and resumption, and how a committed stream reports its end to the policies that admitted it.

A streaming call is retried as gRPC's own retries do it (gRFC A6): until it *commits*. It commits when the first
response message reaches the client (or, for a call with a single response, when the call ends), or when its
requests no longer fit the replay buffer. After commit, a failure goes to the caller as it is, unless a
:class:`StreamResume` says how to resume a server stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any, TypeAlias

from ..engine._execution import Execution, Settle, settle
from ..engine._policy import AsyncLink, Link, Policy

__all__ = [
    "DEFAULT_REPLAY_BUFFER",
    "Committed",
    "AsyncReplay",
    "Replay",
    "StreamResume",
    "replay_buffer",
    "replay_of",
    "settle",
    "settled",
]

_log = logging.getLogger("interceptors")

DEFAULT_REPLAY_BUFFER = 256 * 1024
"""Bytes of a call's requests kept for replay: grpc's own default (``grpc.per_rpc_retry_buffer_size``)."""
MAX_REPLAY_BUFFER = 1 << 31


def replay_buffer(value: object) -> int:
    """``value`` checked as a replay buffer size in bytes; ValueError naming the option otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_REPLAY_BUFFER:
        raise ValueError(f"replay_buffer must be a number of bytes from 0 to {MAX_REPLAY_BUFFER}, got {value!r}")
    return value


def message_size(message: object) -> int:
    """A request's size as sent: a protobuf message's serialized size, the length of bytes, else Python's size. A
    request whose size cannot be read counts as Python's size: grpc fails it when it serializes it, as grpc does
    (INTERNAL, "Exception serializing request!")."""
    byte_size = getattr(message, "ByteSize", None)
    if callable(byte_size):
        try:
            return int(byte_size())
        except Exception:
            return sys.getsizeof(message)
    if isinstance(message, (bytes, bytearray, memoryview)):
        return len(message)
    return sys.getsizeof(message)


_PULL, _OVER = object(), object()


class _Kept:
    """The requests of a call read from the caller so far, for its attempts to send in order.

    They are kept, up to ``limit`` bytes, for a retry to send again. When they outgrow it, the call commits (no
    more attempts); once it has committed, each is dropped as soon as the attempt in flight has taken it. Reading
    the caller's next request is one attempt's job at a time (``_pull``); an attempt that has been replaced stops
    at once, and what it had read is kept for its successor, so nothing is lost or sent twice.
    """

    __slots__ = ("_attempt", "_base", "_committed", "_kept", "_limit", "_size", "ended")

    def __init__(self, limit: int) -> None:
        self._kept: list[Any] = []
        self._base = 0  # the index of _kept[0] among all the requests read
        self._limit, self._size, self._attempt = limit, 0, 0
        self._committed = self.ended = False

    def _take(self, number: int, index: int) -> Any:
        """For attempt ``number``, its request ``index``; ``_PULL`` when it must be read from the caller first,
        ``_OVER`` when the attempt has no more (replaced, or the caller's requests have ended)."""
        if number != self._attempt:
            return _OVER
        position = index - self._base
        if position < 0:  # the retry policy makes no attempt after commit
            raise RuntimeError("the call has committed: its requests were not kept to send again")
        kept = self._kept
        if position < len(kept):
            message = kept[position]
            if self._committed:  # nobody will send it again
                del kept[: position + 1]
                self._base = index + 1
            return message
        return _OVER if self.ended else _PULL

    def _add(self, message: Any, execution: Execution) -> None:
        """A request just read from the caller; the call commits when the requests outgrow the limit."""
        self._kept.append(message)
        if not self._committed:
            self._size += message_size(message)
            if self._size > self._limit:
                self._committed = execution.committed = True  # it cannot be replayed whole: no more attempts

    def commit(self) -> None:
        """The call has committed: nothing is kept for another attempt any more."""
        self._committed = True


class Replay(_Kept):
    """The requests of a sync client-streaming or bidi call (see :class:`_Kept`). Thread-safe: grpc reads each
    attempt's requests in a thread of its own, and a failed attempt's thread may still be waiting for the
    caller's next request."""

    __slots__ = ("_lock", "_reading", "_source")

    def __init__(self, requests: Iterable[Any], limit: int) -> None:
        super().__init__(limit)
        self._source = iter(requests)
        self._lock, self._reading = threading.Lock(), threading.Lock()

    def attempt(self, execution: Execution) -> Iterator[Any]:
        """The requests of the execution's current attempt; an earlier attempt's stop."""
        with self._lock:
            self._attempt += 1
            return self._requests(self._attempt, execution)

    def _requests(self, number: int, execution: Execution) -> Iterator[Any]:
        index = 0
        while True:
            if index - self._base < len(self._kept):  # kept: take it (checked again under the lock)
                with self._lock:
                    message = self._take(number, index)
            else:  # most often: the caller's next request (_pull checks what _take would, under the lock)
                message = _PULL
            if message is _PULL:
                message = self._pull(number, index, execution)
            if message is _OVER:
                return
            if message is not _PULL:  # else another attempt read it meanwhile: take it from what is kept
                index += 1
                yield message

    def _pull(self, number: int, index: int, execution: Execution) -> Any:
        """The caller's next request, read for attempt ``number`` as its request ``index`` (and kept); ``_PULL``
        when another attempt read it meanwhile, ``_OVER`` when there is none or the attempt was replaced."""
        with self._reading:
            with self._lock:
                if number != self._attempt:
                    return _OVER
                if index - self._base < len(self._kept):
                    return _PULL  # another attempt read it meanwhile
                if self.ended:
                    return _OVER
            try:
                message = next(self._source)
            except StopIteration:
                with self._lock:
                    self.ended = True
                return _OVER
            with self._lock:
                self._add(message, execution)
                if self._committed and number == self._attempt:  # sent now, never again: nothing to keep
                    self._kept.clear()
                    self._base = index + 1
            return message


class AsyncReplay(_Kept):
    """:class:`Replay` for the async iterables of grpc.aio callers (a sync iterable gets a :class:`Replay`: see
    :func:`replay_of`)."""

    __slots__ = ("_reading", "_source")

    def __init__(self, requests: AsyncIterable[Any], limit: int) -> None:
        super().__init__(limit)
        self._source = aiter(requests)
        self._reading = asyncio.Lock()

    def attempt(self, execution: Execution) -> AsyncIterator[Any]:
        self._attempt += 1
        return self._requests(self._attempt, execution)

    async def _requests(self, number: int, execution: Execution) -> AsyncIterator[Any]:
        index = 0
        while True:
            message = self._take(number, index)
            if message is _PULL:
                message = await self._pull(number, index, execution)
            if message is _OVER:
                return
            if message is not _PULL:
                index += 1
                yield message

    async def _pull(self, number: int, index: int, execution: Execution) -> Any:
        """As :meth:`Replay._pull`."""
        async with self._reading:
            if number != self._attempt:
                return _OVER
            if index - self._base < len(self._kept):
                return _PULL
            if self.ended:
                return _OVER
            try:
                message = await anext(self._source)
            except StopAsyncIteration:
                self.ended = True
                return _OVER
            self._add(message, execution)
            if self._committed and number == self._attempt:
                self._kept.clear()
                self._base = index + 1
            return message


def replay_of(requests: Iterable[Any] | AsyncIterable[Any], limit: int) -> Replay | AsyncReplay:
    """The replay buffer of a grpc.aio call's requests: a sync iterable's is read as grpc.aio reads it, without
    the cost of an async iterator per request."""
    return AsyncReplay(requests, limit) if isinstance(requests, AsyncIterable) else Replay(requests, limit)


class Committed:
    """A response stream's committed attempt, its first message read ahead (both flavours'): what its policies got."""

    __slots__ = ("_call", "_first")
    _first: list[Any]

    @property
    def first_message(self) -> Any:
        """The first response message, as result predicates see it (see :mod:`interceptors.engine._results`); None
        when the stream ended with none (or it has been read)."""
        return self._first[0] if self._first else None


Resumer: TypeAlias = Callable[[Any, Sequence[Any]], Any]
"""A :class:`StreamResume` hook: ``resume(request, delivered)`` gets the call's first request and the messages
delivered so far, and returns the request that continues the stream, or None to let the failure end the call."""


class StreamResume(Policy):
    """Resumes a server-streaming call that fails after it has delivered messages (beyond gRPC's retries, which
    stop at commit), for streams that are safe to resume.

    When such a call fails with a failure the chain's :class:`~interceptors.RetryPolicy` would retry,
    ``resume(request, delivered)`` gets the original request and every message delivered so far (kept only when
    this policy applies; the call keeps them all) and returns the request that continues the stream (say, with a
    resume token or an offset taken from the last message), or None to let the failure end the call. The new
    request goes through the chain as a retry of the failed attempt: the RetryPolicy's delay, ``max_attempts`` and
    budget count it. The caller sees one stream; the messages of the new attempt follow the ones delivered, so the
    request must say where to continue, or messages repeat. A fallback does not answer a stream that has delivered
    messages. Applies to server-streaming calls only (other kinds ignore it); the chain needs a RetryPolicy.

    :param resume: ``resume(request, delivered) -> request | None``; what it raises is logged, and the failure ends
        the call.
    """

    __slots__ = ("resume",)
    resume: Resumer
    serves_deferred = True

    def __init__(self, resume: Resumer) -> None:
        if not callable(resume):
            raise ValueError(f"resume must be a function of (request, delivered), got {resume!r}")
        self._init(resume=resume)

    def wrap(self, inner: Link) -> Link:
        return inner  # the adapters read it: it applies between runs of the chain

    def wrap_async(self, inner: AsyncLink) -> AsyncLink:
        return inner

    def prepare(self, execution: Execution, request: Any, delivered: Sequence[Any], failure: BaseException) -> bool:
        """Make ``execution`` ready to run again as a retry of the attempt ``failure`` ended after delivering
        ``delivered`` (``request`` the original); False when there is no request to resume with (also when
        ``resume`` raises: logged)."""
        try:
            resumed = self.resume(request, tuple(delivered))
        except Exception:
            _log.exception("StreamResume's resume function raised: the stream is not resumed")
            return False
        if resumed is None:
            return False
        execution.request, execution.resuming, execution.committed = resumed, failure, False
        execution.fallback = None
        return True


def resumes(
    execution: Execution | None,
    resume: StreamResume | None,
    delivered: Sequence[Any] | None,
    answered: bool,
    request: Any,
    failure: BaseException,
) -> bool:
    """Whether a stream whose committed attempt ``failure`` ended is to run its policies again, resumed (both
    flavours' rule): its chain resumes streams and kept what it delivered, its messages are an attempt's and not a
    fallback's answer (``answered``), the call was not cancelled, and the resume function gave a request (the
    execution is then ready to run: see :meth:`StreamResume.prepare`)."""
    if execution is None or resume is None or delivered is None or answered or execution.abandoned:
        return False
    call = getattr(execution, "call", None)
    if call is not None and call.cancelled():
        return False
    return resume.prepare(execution, request, delivered, failure)


@contextlib.contextmanager
def settled(
    execution: Execution,
    in_flight: Callable[[], Any],
    when_done: Callable[[Any, list[Settle]], None],
) -> Iterator[None]:
    """Around a run of a stream's policies: the policies that admitted its committed attempt (what they append to
    ``execution.settle``) learn how that attempt, ``in_flight()``, ends, through ``when_done(call, callbacks)``.
    When the policies fail the call after the attempt committed (an outer policy's verdict; or a fallback answers
    it after all), the attempt is cancelled and they learn that failure now."""
    callbacks = execution.settle
    assert callbacks is not None, "a stream's execution settles its outcome later"
    try:
        yield
    except BaseException as failure:
        if callbacks:
            in_flight().cancel()
            settle(callbacks, failure)
        raise
    finally:
        execution.settle = []
    if not callbacks:
        return
    if execution.fallback is None:
        when_done(in_flight(), callbacks)
    else:
        in_flight().cancel()
        settle(callbacks, execution.fallback.failure)
