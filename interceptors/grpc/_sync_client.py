"""Sync gRPC client interceptor: the policy engine on every sync call path.

Blocking calls (``stub.M(req)``, ``stub.M.with_call(req)``) run the policies in the caller's thread; a hedged method's
hedges are grpc futures, started by the library's timer (see :mod:`interceptors.engine._hedge`), and the caller's thread
waits for its own attempt (see :func:`_hedged_attempt`), so that a winner can cancel the others. ``.future()`` calls
return at once: their policies run as a task of the library's one background event loop (see
:mod:`interceptors.engine._loop`), each attempt a grpc future whose end wakes the loop, so that calls in flight cost no
thread; cancelling the future cancels the attempt in flight and every later one. Streams run their policies until they
commit in a worker thread (their first message can only be waited for by a blocking read).

In a handler with context propagation, an incoming call's cancellation cancels the calls made for it as
``cancel()`` would: their blocking calls then send each attempt as a grpc future, so that the attempt in flight
can be cancelled.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import contextvars
import functools
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import grpc

from ..engine._execution import LATE_REPORT, Execution
from ..engine._loop import BACKGROUND, Spawned
from ..engine._policy import Policy
from ..engine._workers import FUTURES, Workers
from ._channel import open_channel
from ._core import (
    BIDI_STREAM,
    CLIENT_STREAM,
    SERVER_STREAM,
    CallExecution,
    EndedCall,
    Flavour,
    MethodPolicies,
    Route,
    RoutedChannel,
    RoutedMethod,
    Router,
    Status,
    StatusError,
    attempt_metadata,
    attempt_timeout,
    cancelled_error,
    rpc_error,
    sent,
    time_left,
)
from ._grpc_shapes import blocks, futures_of
from ._incoming import INCOMING
from ._service_config import channel_plan
from ._streams import DEFAULT_REPLAY_BUFFER, Replay, resumes, settle, settled
from ._streams import replay_buffer as checked_replay_buffer

__all__ = ["ResilienceInterceptor", "resilient_channel"]

OK = grpc.StatusCode.OK
READ_ALONE = "SingleThreadedUnaryStream"
"""grpc.experimental.ChannelOptions.SingleThreadedUnaryStream: the channel's unary-stream calls are read by the
thread that reads them (see :class:`_ResilientChannel`)."""

if TYPE_CHECKING:  # generic in typeshed only
    _Future = grpc.Future[Any]
    _UnaryUnaryMultiCallable = grpc.UnaryUnaryMultiCallable[Any, Any]
else:
    _Future = grpc.Future
    _UnaryUnaryMultiCallable = grpc.UnaryUnaryMultiCallable

Send = Callable[[Execution], Any]
"""Sends the execution's current attempt (its own timeout and metadata); returns what grpc gives back for it."""


class ResilienceInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Runs every call of a sync channel through ``policies`` (first = outermost).

    ``methods`` gives some methods or services their own chains: ``{"/pkg.Service/Method": [...],
    "/pkg.Service/*": [...]}``; an empty chain, or no policies at all for a method, lets its calls pass untouched.
    Every chain is checked when the interceptor is built.

    Every kind of call gets every policy. Streaming calls are retried until they commit (see
    :mod:`interceptors.grpc._streams`): a server or bidi stream at its first response message, any stream whose
    requests outgrow ``replay_buffer``; breakers, bulkheads and limiters count a stream's final status, once.

    :param policies: the chain for every method (default: none), first outermost.
    :param methods: chains by ``/pkg.Service/Method`` or ``/pkg.Service/*`` (default None); ValueError for a key
        of another form, a value that is not a sequence of policies, or a chain whose policies cannot run together.
    :param replay_buffer: bytes of a client-streaming or bidi call's requests kept for a retry to send again
        (default 256 KiB, grpc's own); a call whose requests outgrow it commits.
    :param metrics: an :class:`interceptors.otel.Metrics` to record every call and attempt in (default None).
    :param target: the channel's target, as metrics name it (``grpc.target``; default "other").
    """

    def __init__(
        self,
        *policies: Policy,
        methods: MethodPolicies | None = None,
        replay_buffer: int = DEFAULT_REPLAY_BUFFER,
        metrics: Any = None,
        target: str = "other",
    ) -> None:
        self._router = Router(policies, methods, SYNC, metrics, target)
        self._replay_buffer = checked_replay_buffer(replay_buffer)

    @classmethod
    def _routed(cls, router: Router, replay_buffer: int) -> ResilienceInterceptor:
        """An interceptor over ``router`` (a helper's, see :func:`channel_plan`)."""
        interceptor = cls.__new__(cls)
        interceptor._router, interceptor._replay_buffer = router, checked_replay_buffer(replay_buffer)
        return interceptor

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        route = self._router.route(client_call_details.method)
        if route is None:
            return continuation(client_call_details, request)
        timeout = client_call_details.timeout
        if not blocks(continuation):
            return _ResilientFuture(
                route, _via_continuation(self._router, continuation, client_call_details, request), request, timeout
            )
        incoming = INCOMING.get()
        futures = None if incoming is None and not route.hedged else futures_of(continuation)
        if futures is not None:  # attempts that the incoming call's cancellation, or a hedge that won, can cancel
            send = _directly(
                futures(client_call_details.method),
                request,
                client_call_details.metadata,
                {
                    "credentials": client_call_details.credentials,
                    "wait_for_ready": getattr(client_call_details, "wait_for_ready", None),
                    "compression": getattr(client_call_details, "compression", None),
                },
                self._router,
            )
            if incoming is None:
                return _call(route, send, request, timeout)
            try:
                return _cancellable(route, send, request, timeout)
            except grpc.RpcError as cancelled:
                return _ended_call(cancelled)
        send = _via_continuation(self._router, continuation, client_call_details, request)
        return _call(route, send, request, timeout)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        route = self._router.route(client_call_details.method, SERVER_STREAM)
        if route is None:
            return continuation(client_call_details, request)
        send = _via_continuation(self._router, continuation, client_call_details, None, _current_request)
        return _ResponseStream(route, send, request, client_call_details.timeout)

    def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        route = self._router.route(client_call_details.method, CLIENT_STREAM)
        if route is None:
            return continuation(client_call_details, request_iterator)
        replay = Replay(request_iterator, self._replay_buffer)
        send = _via_continuation(self._router, continuation, client_call_details, None, replay.attempt)
        if blocks(continuation):
            return _call(route, send, None, client_call_details.timeout)
        return _ResilientFuture(route, send, None, client_call_details.timeout)

    def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        route = self._router.route(client_call_details.method, BIDI_STREAM)
        if route is None:
            return continuation(client_call_details, request_iterator)
        replay = Replay(request_iterator, self._replay_buffer)
        send = _via_continuation(self._router, continuation, client_call_details, None, replay.attempt)
        return _ResponseStream(route, send, None, client_call_details.timeout, replay)


def resilient_channel(
    target: str,
    *policies: Policy,
    methods: MethodPolicies | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
    compression: grpc.Compression | None = None,
    replay_buffer: int = DEFAULT_REPLAY_BUFFER,
    service_config: str | Mapping[str, Any] | None = None,
    metrics: Any = None,
) -> grpc.Channel:
    """A channel to ``target`` whose calls run through ``policies`` (see :class:`ResilienceInterceptor`).

    It behaves as ``grpc.intercept_channel(channel, ResilienceInterceptor(...))`` but sends unary calls without
    grpc's interceptor machinery, which costs more per call than the policies. grpcio's own retries are turned
    off where a RetryPolicy or a HedgePolicy applies (see :mod:`interceptors.grpc._channel`). A gRPC service config
    (``service_config=``, or the ``grpc.service_config`` option) is converted to policies (see
    :func:`interceptors.from_service_config`): its retries, hedging and throttling run as policies, under the chains
    given here (``policies`` replaces its default chain, ``methods`` entries its own), and grpc gets the rest.

    :param target: what to dial, as for ``grpc.insecure_channel``.
    :param policies: and ``methods``: as for :class:`ResilienceInterceptor`.
    :param credentials: a secure channel's credentials (default None: an insecure channel).
    :param options: grpc channel options, (key, value) pairs (default none).
    :param compression: the channel's default compression (default None).
    :param replay_buffer: as for :class:`ResilienceInterceptor`.
    :param service_config: a gRPC service config, JSON or a mapping (default None); ValueError naming the JSON path
        of what is wrong in it.
    :param metrics: an :class:`interceptors.otel.Metrics` to record every call and attempt in (default None).
    """
    router, opts = channel_plan(policies, methods, options, service_config, SYNC, metrics, target)
    interceptor = ResilienceInterceptor._routed(router, replay_buffer)
    channel = open_channel(grpc, target, credentials, opts, compression=compression)
    read_alone = [*opts, (READ_ALONE, 1)]
    twin = functools.partial(open_channel, grpc, target, credentials, read_alone, compression=compression)
    return _ResilientChannel(channel, interceptor, twin)


class _ResilientChannel(RoutedChannel, grpc.Channel):
    """A channel whose unary-unary calls run the policies directly; streams go through the interceptor.

    A hedged unary method's own attempt (the first, which its caller's thread runs) is made through a twin channel
    whose unary-stream calls are read by the thread that reads them (grpc's ``SingleThreadedUnaryStream``): the call
    is the unary call, read as a stream of one message, which its caller's thread waits for as for a blocking call
    (no thread of grpc's in between, unlike a future) and which, unlike a blocking call, can be cancelled when a
    hedge wins. The twin shares the channel's connections (grpc pools its subchannels by target and options)."""

    def __init__(
        self, channel: grpc.Channel, interceptor: ResilienceInterceptor, twin: Callable[[], grpc.Channel]
    ) -> None:
        self._channel, self._router, self._unary_type = channel, interceptor._router, _ResilientUnaryUnary
        self._streams = grpc.intercept_channel(channel, interceptor)
        self._make_twin, self._twin = twin, cast("grpc.Channel | None", None)
        self._lock, self._closed = threading.Lock(), False

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        multicallable = super().unary_unary(method, *args, **kwargs)
        if multicallable.hedged:
            with self._lock:
                if self._twin is None and not self._closed:  # a stub made after close() has calls that fail as
                    self._twin = self._make_twin()  # grpc's do: through the closed channel
                twin = self._twin
            if twin is not None:
                multicallable.read_alone = twin.unary_stream(method, *args, **kwargs)
                multicallable.twin = twin  # a stub outlives the channel object it was made from, as grpc's own do
        return multicallable

    def subscribe(self, callback: Any, try_to_connect: bool = False) -> None:
        self._channel.subscribe(callback, try_to_connect)

    def unsubscribe(self, callback: Any) -> None:
        self._channel.unsubscribe(callback)

    def close(self) -> None:
        self._channel.close()
        with self._lock:
            self._closed, twin = True, self._twin
        if twin is not None:
            twin.close()

    def __enter__(self) -> _ResilientChannel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _ResilientUnaryUnary(RoutedMethod, _UnaryUnaryMultiCallable):
    """A unary method of a :func:`resilient_channel`: the policies around grpc's own multicallable.

    Blocking attempts use grpc's ``with_call``, which raises failures and answers (response, call) on success, so
    a healthy call touches grpc's call object no more than a bare one does.
    """

    read_alone: Any = None
    """For a hedged method, its unary-stream twin on the channel's twin (see :class:`_ResilientChannel`)."""
    twin: grpc.Channel | None = None

    # credentials, wait_for_ready and compression pass through ``options`` to grpc: keyword-only here
    def __call__(self, request: Any, timeout: float | None = None, metadata: Any = None, **options: Any) -> Any:  # type: ignore[override]
        return self.with_call(request, timeout, metadata, **options)[0]

    def with_call(  # type: ignore[override]
        self, request: Any, timeout: float | None = None, metadata: Any = None, **options: Any
    ) -> tuple[Any, Any]:
        """As grpc's; ``options`` (credentials, wait_for_ready, compression) go to every attempt."""
        route = self.route()
        if route is None:
            return self._multicallable.with_call(request, timeout, metadata, **options)  # type: ignore[no-any-return]
        if INCOMING.get() is not None:  # attempts the incoming call's cancellation can cancel
            send = _directly(self._multicallable.future, request, metadata, options)
            ended = _cancellable(route, send, request, timeout)
            return ended.result(), ended
        if route.hedged:  # hedges as grpc futures, and the caller's own attempt read alone: either can be cancelled
            futures = _directly(self._multicallable.future, request, metadata, options)
            alone = None if self.read_alone is None else _directly(self.read_alone, request, metadata, options)
            ended = _run(route, futures, request, timeout, alone)
            return ended.result(), ended
        send = _directly(self._multicallable.with_call, request, metadata, options)
        result = _run(route, send, request, timeout)
        return (result.result(), result) if isinstance(result, _AnsweredCall) else result

    def future(self, request: Any, timeout: float | None = None, metadata: Any = None, **options: Any) -> Any:  # type: ignore[override]
        route = self.route()
        if route is None:
            return self._multicallable.future(request, timeout, metadata, **options)
        send = _directly(self._multicallable.future, request, metadata, options)
        return _ResilientFuture(route, send, request, timeout)


def _cancellable(route: Route, send: Send, request: Any, timeout: Any) -> Any:
    """A blocking call made for an incoming call (see :mod:`._incoming`): its policies run in this thread, each
    attempt a grpc future (``send``) that the incoming call's cancellation cancels. Returns the ended call; raises
    a CANCELLED StatusError when the incoming call was cancelled."""
    try:
        return _ResilientFuture(route, send, request, timeout, inline=True)._final()
    except grpc.FutureCancelledError:
        raise cancelled_error(SYNC, "the call was cancelled") from None


def _via_continuation(
    router: Router,
    continuation: Any,
    details: Any,
    request: Any,
    requests: Callable[[Execution], Any] | None = None,
) -> Send:
    """Attempts through an interceptor's continuation: the caller's details with each attempt's timeout and
    metadata; each sends ``request``, or what ``requests`` gives for the attempt."""
    method, metadata, credentials = details.method, details.metadata, details.credentials
    wait_for_ready, compression = getattr(details, "wait_for_ready", None), getattr(details, "compression", None)

    def send(execution: Execution) -> Any:
        timeout, attempt = attempt_timeout(execution), attempt_metadata(metadata, execution, router)
        details = _CallDetails(method, timeout, attempt, credentials, wait_for_ready, compression)
        return continuation(details, request if requests is None else requests(execution))

    return send


def _current_request(execution: Execution) -> Any:
    """The request of a server stream's attempt: the caller's, or the one that resumes the stream."""
    return execution.request


def _directly(invoke: Any, request: Any, metadata: Any, options: dict[str, Any], router: Router | None = None) -> Send:
    """Attempts through grpc's own ``with_call`` or ``future``, with each attempt's timeout and metadata and the
    caller's other ``options``."""

    def send(execution: Execution) -> Any:
        return invoke(
            request,
            timeout=attempt_timeout(execution),
            metadata=attempt_metadata(metadata, execution, router),
            **options,
        )

    return send


def _run(route: Route, send: Send, request: Any, timeout: Any, alone: Send | None = None) -> Any:
    """A blocking call through the route's policies, in this thread: the last attempt's outcome or a fallback's
    answer (an ended call); raises the error the caller gets. A hedged route's attempts are sent by ``send`` as grpc
    futures, to be cancelled (see :func:`_hedged_attempt`), the caller's own by ``alone`` where there is one."""
    try:
        attempt: Callable[[Execution], Any]
        if route.hedged:
            attempt = functools.partial(_hedged_attempt, futures=send, alone=alone)
        else:
            attempt = lambda execution: _succeeded(send(execution))  # noqa: E731
        execution = route.execution(attempt, request, timeout)
        return route.ended(execution, route.executor.run_execution(execution), SYNC)
    except Exception as failure:
        raise rpc_error(failure, SYNC)  # noqa: B904  (its own cause is kept; the failure is its context)
    except asyncio.CancelledError:  # the incoming call was cancelled: no attempt after that
        raise cancelled_error(SYNC, "no more attempts were sent") from None


def _hedged_attempt(execution: Execution, futures: Send, alone: Send | None) -> Any:
    """An attempt of a hedged unary call: a hedge (``execution.deferred``), a grpc future whose end grpc reports.
    The caller's own, with ``alone`` and while at most :data:`ALONE_AT_MOST` callers' own attempts are in flight,
    is the unary call read as a stream of one message by the caller's thread, as a blocking call is waited for, and
    cancelled (through :data:`CANCELS`) when a hedge wins; its answer is a finished call (see :class:`_ReadAlone`).
    With more in flight it is a grpc future too, which the caller waits for."""
    if execution.deferred or alone is None:
        return _cancellable_attempt(execution, futures, _succeeded, True)
    with OWN_ATTEMPTS as in_flight:
        if in_flight > ALONE_AT_MOST:
            return _cancellable_attempt(execution, futures, _succeeded, True)
        return _read_alone(execution, alone)


def _read_alone(execution: Execution, alone: Send) -> Any:
    if execution.abandoned:
        raise asyncio.CancelledError
    call = alone(execution)
    sent(execution, call, functools.partial(CANCELS.submit, call.cancel))  # by whoever decides the race
    try:
        messages = list(call)  # the response, then the status: raises the call's failure
    except grpc.RpcError:
        if execution.abandoned:
            raise asyncio.CancelledError from None
        raise
    if len(messages) != 1:
        raise StatusError.of(_NOT_ONE_ANSWER, SYNC)
    return _ReadAlone(call, messages[0])


def _cancellable_attempt(execution: Execution, send: Send, outcome: Callable[[Any], Any], unary: bool) -> Any:
    """Send the execution's attempt, a grpc future, and wait for ``outcome(call)``; the call is kept on the execution
    (see :func:`sent`), so that cancelling the execution (its caller, or a hedge that won) cancels it. An attempt
    cancelled so raises asyncio.CancelledError: breakers count nothing, retries stop. A deferred attempt (see
    ``Execution.deferred``) returns at once, as a :class:`_Sent`. A ``unary`` call's end is waited for no longer
    than its deadline allows (see :func:`_expired`)."""
    if execution.abandoned:  # cancelled before this attempt was sent: it never will be
        raise asyncio.CancelledError
    call = _sent_future(execution, send(execution))
    if execution.deferred:
        return _Sent(execution, call, outcome)
    if unary and not _ended_by(call, execution.deadline, execution.clock):
        return _expired(execution, call)
    return _outcome_of(execution, call, outcome)


async def _awaited_attempt(execution: Execution, send: Send, outcome: Callable[[Any], Any]) -> Any:
    """:func:`_cancellable_attempt` on an event loop (the background loop of ``.future()`` calls): it waits for the
    grpc future's end without a thread, and cancelling the task cancels the attempt."""
    if execution.abandoned:
        raise asyncio.CancelledError
    call = _sent_future(execution, send(execution))
    expires = execution.deadline
    try:
        await _ended(call, None if expires is None else expires - execution.clock.now() + LATE_REPORT)
    except asyncio.CancelledError:
        CANCELS.submit(call.cancel)  # not on the loop, which grpc's cancel() may hold up
        raise
    if not call.done():
        return _expired(execution, call)
    return _outcome_of(execution, call, outcome)


class _InFlight:
    """A count of what is in flight: ``with`` it, as the count with this one."""

    __slots__ = ("_count", "_lock")

    def __init__(self) -> None:
        self._count, self._lock = 0, threading.Lock()

    def __enter__(self) -> int:
        with self._lock:
            self._count += 1
            return self._count

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._count -= 1


OWN_ATTEMPTS = _InFlight()
"""The callers' own attempts of hedged calls in flight in the process."""
ALONE_AT_MOST = 4
"""How many callers' own attempts of hedged calls are read alone at once (see :func:`_hedged_attempt`). Read alone,
an attempt costs its caller's thread five wake-ups (one per event of a stream's call) where a blocking call costs
one, cheaper than a grpc future in a quiet process (1.1x a bare call where a future costs 1.2x), but under load
each wake-up waits its turn for the GIL: 64 threads hedging so had a p99 of 0.18-0.23 s at a 0.1 s deadline,
0.11-0.13 s as futures, whose ends one grpc thread reports for all."""


CANCELS = Workers("interceptors-cancel", limit=2)
"""The threads that cancel sync attempts (grpc futures) for the threads and the loop that decide it: grpc's
``cancel()`` waits for the channel's lock, which its callback thread holds for tens of milliseconds in a busy
process, and a hedged call's winner must not wait on its losers."""


OFFLOADS = Workers("interceptors-offload", limit=4)
"""The threads that run the sync fallback functions of ``.future()`` calls, which may block, off the background
loop (see ``Execution.offload``): a slow one holds up no other call (at most four at once)."""


def _offload(fn: Callable[[], Any]) -> asyncio.Future[Any]:
    """``fn()`` in one of :data:`OFFLOADS`, in a copy of the current context, as a future of the running loop."""
    loop, context = asyncio.get_running_loop(), contextvars.copy_context()
    done: asyncio.Future[Any] = loop.create_future()

    def job() -> None:
        try:
            result = context.run(fn)
        except BaseException as error:
            loop.call_soon_threadsafe(_fail, done, error)
        else:
            loop.call_soon_threadsafe(_answer, done, result)

    OFFLOADS.submit(job)
    return done


def _answer(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _sent_future(execution: Execution, call: Any) -> Any:
    """The grpc future ``call``, kept as the execution's attempt in flight (see :func:`sent`), cancelled by
    :data:`CANCELS`."""
    return sent(execution, call, functools.partial(CANCELS.submit, call.cancel))


def _ended(call: Any, timeout: float | None) -> asyncio.Future[None]:
    """A future of the running loop, done when the grpc future ``call`` is (told by grpc's callback thread), or
    after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    call.add_done_callback(lambda _: loop.call_soon_threadsafe(_resolve, waiter))
    if timeout is not None:
        timer = loop.call_later(max(timeout, 0.0), _resolve, waiter)
        waiter.add_done_callback(lambda _: timer.cancel())
    return waiter


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _ended_by(call: Any, expires: float | None, clock: Any) -> bool:
    """Wait for the grpc future ``call`` to end, no longer than :data:`LATE_REPORT` past ``expires``; whether it
    ended."""
    if expires is None:
        call.exception()
        return True
    try:
        call.exception(timeout=max(expires + LATE_REPORT - clock.now(), 0.0))
    except grpc.FutureTimeoutError:
        return call.done()  # type: ignore[no-any-return]
    except grpc.FutureCancelledError:
        pass
    return True


def _expired(execution: Execution, call: Any) -> Any:
    """An attempt whose deadline passed and whose end grpc did not report in time: ended now, as grpc ended it
    (its core did, at the deadline). grpc reports a future's end from one thread per channel, which a busy process
    (other threads, an event loop) can hold up far past the deadline; a caller's deadline must not wait on it."""
    if execution.abandoned:
        raise asyncio.CancelledError
    raise StatusError.of(_DEADLINE_PASSED, SYNC)


def _outcome_of(execution: Execution, call: Any, outcome: Callable[[Any], Any]) -> Any:
    """``outcome(call)``; a failure of an attempt that was cancelled (abandoned) is asyncio.CancelledError."""
    try:
        return outcome(call)
    except Exception:
        if execution.abandoned:
            raise asyncio.CancelledError from None
        raise


class _Sent:
    """A deferred attempt (see ``Execution.deferred``): its grpc future, whose end grpc reports."""

    __slots__ = ("_call", "_execution", "_outcome", "expires")

    def __init__(self, execution: Execution, call: Any, outcome: Callable[[Any], Any]) -> None:
        self._execution, self._call, self._outcome = execution, call, outcome
        self.expires = execution.deadline  # grpc ends it by then: it went out with what was left of it

    def when_done(self, callback: Callable[[], object]) -> None:
        self._call.add_done_callback(lambda _: callback())

    def outcome(self) -> Any:
        if not self._call.done():
            return _expired(self._execution, self._call)
        return _outcome_of(self._execution, self._call, self._outcome)


def _call(route: Route, send: Send, request: Any, timeout: Any) -> Any:
    """A blocking call for an interceptor, which hands grpc a finished call whether it failed or not."""
    try:
        return _run(route, send, request, timeout)
    except Exception as error:
        return _ended_call(error)


def _succeeded(outcome: Any) -> Any:
    """``outcome`` if the attempt succeeded; else raises its failure.

    grpc hands failures back rather than raising them (grpc/grpc#25207): its own failed calls (futures whose
    ``exception()`` tells, waiting for them to end), and, as they were, errors an interceptor further down raised.
    """
    exception = getattr(outcome, "exception", None)
    if exception is None:
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome
    failure = exception()
    if failure is not None:
        raise failure
    return outcome


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    """Call details for the continuation, shaped as grpc's own."""


class _Answered(EndedCall):
    """A finished call that answered ``_response``."""

    _response: Any

    def result(self, timeout: float | None = None) -> Any:
        return self._response

    def exception(self, timeout: float | None = None) -> Exception | None:
        return None


class _AnsweredCall(_Answered):
    """A fallback's answer as a finished call: code OK, trailing metadata naming the failure it replaced."""

    def __init__(self, response: Any, status: Status) -> None:
        self._response, self._status = response, status


class _ReadAlone(_Answered):
    """A hedged unary call's own attempt, read to its end (see :func:`_hedged_attempt`): its answer, and the call
    for what else a caller asks (its status, its metadata)."""

    def __init__(self, call: Any, response: Any) -> None:
        self._call, self._response = call, response

    def initial_metadata(self) -> Any:
        return self._call.initial_metadata()

    def trailing_metadata(self) -> Any:
        return self._call.trailing_metadata()

    def code(self) -> grpc.StatusCode:
        return self._call.code()  # type: ignore[no-any-return]

    def details(self) -> str:
        return self._call.details()  # type: ignore[no-any-return]

    def debug_error_string(self) -> str | None:
        return self._call.debug_error_string()  # type: ignore[no-any-return]


class _FailedCall(EndedCall):
    """A call that ended with an error that is not a gRPC status (e.g. a caller's bad timeout)."""

    def __init__(self, error: Exception) -> None:
        self._error = error
        self._status = Status.of(error)

    def result(self, timeout: float | None = None) -> Any:
        raise self._error

    def exception(self, timeout: float | None = None) -> Exception | None:
        return self._error


SYNC = Flavour(metadata=tuple, answered=_AnsweredCall, awaits=False)


def _ended_call(error: Exception) -> Any:
    """The ended call an interceptor hands grpc for ``error``: grpc's own failed call or our StatusError as they
    are, anything else wrapped so that ``result()`` raises it."""
    if isinstance(error, grpc.RpcError) and isinstance(error, grpc.Future):
        return error
    return _FailedCall(error)


class _ResilientFuture(grpc.Call, _Future):
    """What ``.future()`` returns: its policies run as a task of the background loop (or, ``inline``, in this thread
    before the constructor returns), each attempt a grpc future that ``cancel()`` cancels, as does the
    cancellation of the incoming call it is made for; then it stands for the call that ended it."""

    _spawned: Spawned | None = None

    def __init__(self, route: Route, send: Send, request: Any, timeout: Any, inline: bool = False) -> None:
        self._send = send
        self._ended: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._execution: CallExecution | None = None
        self._clock, self._deadline = route.executor.clock, None
        background = not inline and self._unary
        try:
            execution = route.execution(self._attempt_function(background), request, timeout, awaits=background)
        except Exception as error:
            self._ended.set_result(_ended_call(rpc_error(error, SYNC)))
            return
        self._execution, self._deadline = execution, execution.deadline
        self._cancel_with_incoming(execution)
        self._prepare(execution)
        if inline:
            self._run(route, execution)
        else:
            self._background(route, execution)

    _unary = True
    """A unary response: its policies run on the background loop, its attempts end with the answer (a stream's run
    in a worker thread, its attempts end at their first message: see :class:`_ResponseStream`)."""

    def _background(self, route: Route, execution: CallExecution) -> None:
        """Run the policies while the caller goes on, in a copy of the caller's context (e.g. a tracing span)."""
        execution.offload = _offload
        self._spawned = BACKGROUND.spawn(lambda: self._arun(route, execution), contextvars.copy_context())

    async def _arun(self, route: Route, execution: CallExecution) -> None:
        try:
            ended = route.ended(execution, await route.executor.arun_execution(execution), SYNC)
        except asyncio.CancelledError:
            return  # cancel() has already ended the future
        except Exception as failure:
            ended = _ended_call(rpc_error(failure, SYNC))
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled meanwhile
            self._ended.set_result(ended)

    def _cancel_with_incoming(self, execution: CallExecution) -> None:
        """Be cancelled with the incoming call the execution is made for, until the call (a stream: its last
        message) ends."""
        if execution.incoming is not None:
            forget = execution.incoming.on_cancel(self.cancel)
            self.add_done_callback(lambda _: forget())

    def _attempt_function(self, awaits: bool) -> Callable[[Execution], Any]:
        return self._aattempt if awaits else self._attempt

    def _prepare(self, execution: Execution) -> None:
        """Make ready what the policies will run (nothing, for a unary call)."""

    def _conclude(self, route: Route, execution: CallExecution) -> Any:
        """Run the policies: what the call ended with (raises the failure)."""
        return route.ended(execution, route.executor.run_execution(execution), SYNC)

    def _outcome(self, call: Any) -> Any:
        """The attempt ``call`` when it has succeeded; raises its failure (see :func:`_succeeded`)."""
        return _succeeded(call)

    def _run(self, route: Route, execution: CallExecution) -> None:
        try:
            ended = self._conclude(route, execution)
        except asyncio.CancelledError:
            return  # cancel() has already ended the future
        except Exception as failure:
            ended = _ended_call(rpc_error(failure, SYNC))
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled meanwhile
            self._ended.set_result(ended)

    def _attempt(self, execution: Execution) -> Any:
        return _cancellable_attempt(execution, self._send, self._outcome, self._unary)

    def _aattempt(self, execution: Execution) -> Any:
        return _awaited_attempt(execution, self._send, self._outcome)

    def cancel(self) -> bool:
        if self._ended.done():
            return False
        execution = self._execution
        if execution is not None:
            execution.cancel()  # the attempt in flight (every one, when hedged), and no more
        if self._spawned is not None:
            self._spawned.cancel()  # a backoff or a wait in progress
        return self._ended.cancel()

    def _final(self, timeout: float | None = None) -> Any:
        try:
            return self._ended.result(timeout)
        except concurrent.futures.CancelledError:
            raise grpc.FutureCancelledError() from None
        except concurrent.futures.TimeoutError:
            raise grpc.FutureTimeoutError() from None

    def result(self, timeout: float | None = None) -> Any:
        return self._final(timeout).result()

    def exception(self, timeout: float | None = None) -> Exception | None:
        error: Exception | None = self._final(timeout).exception()
        return error

    def traceback(self, timeout: float | None = None) -> TracebackType | None:
        error = self.exception(timeout)
        return None if error is None else error.__traceback__

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        self._ended.add_done_callback(lambda _: fn(self))

    def cancelled(self) -> bool:
        return self._ended.cancelled()

    def running(self) -> bool:
        return not self._ended.done()

    def done(self) -> bool:
        return self._ended.done()

    def is_active(self) -> bool:
        return not self._ended.done()

    def time_remaining(self) -> float | None:  # type: ignore[override]
        return time_left(self._deadline, self._clock)

    def add_callback(self, callback: Callable[[], None]) -> bool:
        if self._ended.done():
            return False
        self._ended.add_done_callback(lambda _: callback())
        return True

    def initial_metadata(self) -> Any:
        return self._final().initial_metadata()

    def trailing_metadata(self) -> Any:
        return self._final().trailing_metadata()

    def code(self) -> grpc.StatusCode:
        if self._ended.cancelled():
            return grpc.StatusCode.CANCELLED
        code: grpc.StatusCode = self._final().code()
        return code

    def details(self) -> str:
        if self._ended.cancelled():
            return "Locally cancelled by application!"
        details: str = self._final().details()
        return details


class _ResponseStream(_ResilientFuture):
    """A call with streamed responses (server-streaming or bidi), as grpc's own: its iterator, grpc.Call and
    grpc.Future.

    Its policies run in a worker thread until an attempt commits: when its first response message arrives (kept
    to be read first), or it ends. Reads then come straight from that attempt's grpc call. A failure after commit
    ends the stream, unless the route's :class:`StreamResume` gives a request that resumes it: the policies then
    run again, in the reading thread, as a retry of the failed attempt.
    """

    _unary = False

    def __init__(self, route: Route, send: Send, request: Any, timeout: Any, replay: Replay | None = None) -> None:
        self._replay, self._route, self._request = replay, route, request
        self._resume = route.resume if replay is None else None
        self._delivered: list[Any] | None = None if self._resume is None else []
        self._messages: Iterator[Any] | None = None
        super().__init__(route, send, request, timeout)

    def _background(self, route: Route, execution: CallExecution) -> None:
        context = contextvars.copy_context()  # the caller's context variables (e.g. a tracing span) go along
        FUTURES.submit(lambda: context.run(self._run, route, execution))

    def _attempt_function(self, awaits: bool) -> Callable[[Execution], Any]:
        """The attempt, through a weak reference: the stream keeps its execution (to resume it), and a stream its
        caller lets go of must be collected at once, to be cancelled."""
        attempt = weakref.WeakMethod(self._attempt)

        def weakly(execution: Execution) -> Any:
            bound = attempt()
            if bound is None:
                raise asyncio.CancelledError
            return bound(execution)

        return weakly

    def _prepare(self, execution: Execution) -> None:
        execution.settle = []

    def _outcome(self, call: Any) -> Any:
        try:
            first: list[Any] = [next(call)]
        except StopIteration:
            first = []
        if self._replay is not None:
            self._replay.commit()
        return _Peeked(call, first)

    def _conclude(self, route: Route, execution: CallExecution) -> Any:
        with settled(execution, lambda: execution.call, _settle_when_done):
            return super()._conclude(route, execution)

    def __iter__(self) -> _ResponseStream:
        return self

    def __next__(self) -> Any:
        while True:
            messages = self._messages
            if messages is None:
                messages = self._messages = self._opened()
            try:
                message = next(messages)
            except grpc.RpcError as failure:
                self._resumed(failure)
                continue
            delivered = self._delivered
            if delivered is not None:
                delivered.append(message)
            return message

    def _opened(self) -> Iterator[Any]:
        """The messages of the call the policies ended with: a committed attempt's, a fallback's answer, or none
        (raises the failure)."""
        try:
            ended = self._final()
        except grpc.FutureCancelledError:
            raise StatusError.of(_LOCALLY_CANCELLED, SYNC) from None
        if isinstance(ended, _AnsweredCall):
            return iter(ended.result())
        if isinstance(ended, EndedCall):
            raise ended.exception()  # type: ignore[misc]
        return iter(ended)

    def _resumed(self, failure: grpc.RpcError) -> None:
        """After ``failure`` ended the committed attempt: run the policies again with the request that resumes
        the stream; raises ``failure`` when there is none (or the call was cancelled), or what ends the retry."""
        execution, committed = self._execution, self._messages
        answered = self._resume is not None and isinstance(self._final(), EndedCall)  # a fallback's, not a stream
        if not resumes(execution, self._resume, self._delivered, answered, self._request, failure):
            raise failure
        assert execution is not None
        try:
            ended = self._conclude(self._route, execution)
        except asyncio.CancelledError:
            raise failure from None
        except Exception as error:
            raise rpc_error(error, SYNC) from None
        if execution.fallback is not None:  # messages were delivered: a fallback's cannot follow them
            raise failure
        self._ended = concurrent.futures.Future()
        self._ended.set_result(ended)
        if self._messages is committed:
            self._messages = iter(ended)

    def cancel(self) -> bool:
        if super().cancel():
            return True
        execution = self._execution  # committed: cancel the attempt being read
        if execution is None or self._ended.cancelled() or not self._ended.done():
            return False
        execution.abandoned = True
        return bool(execution.call is not None and execution.call.cancel())

    def done(self) -> bool:
        return self._ended.done() and (self._ended.cancelled() or self._final().done())

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # a stream its caller let go of is cancelled, as grpc's own
            if not self.done():
                self.cancel()

    def running(self) -> bool:
        return not self.done()

    def is_active(self) -> bool:
        return not self.done()

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        self._ended.add_done_callback(lambda ended: self._when_ended(ended, lambda: fn(self)))

    def add_callback(self, callback: Callable[[], None]) -> bool:
        if self.done():
            return False
        self._ended.add_done_callback(lambda ended: self._when_ended(ended, callback))
        return True

    @staticmethod
    def _when_ended(ended: concurrent.futures.Future[Any], callback: Callable[[], None]) -> None:
        if ended.cancelled():
            callback()
        else:
            ended.result().add_done_callback(lambda _: callback())


class _Peeked:
    """A committed attempt's grpc call, its first message read ahead: that message first, then the call's."""

    __slots__ = ("_call", "_first")

    def __init__(self, call: Any, first: list[Any]) -> None:
        self._call, self._first = call, first

    def __iter__(self) -> _Peeked:
        return self

    def __next__(self) -> Any:
        return self._first.pop() if self._first else next(self._call)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


_LOCALLY_CANCELLED = Status(grpc.StatusCode.CANCELLED, "Locally cancelled by application!", (), (), None)
_DEADLINE_PASSED = Status(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", (), (), None)
_NOT_ONE_ANSWER = Status(grpc.StatusCode.INTERNAL, "a unary call answered other than one message", (), (), None)


def _settle_when_done(call: Any, callbacks: Any) -> None:
    """Tell ``callbacks`` (see ``Execution.settle``) how the committed stream ``call`` ends, once it has."""

    def ended(done: Any) -> None:
        settle(callbacks, asyncio.CancelledError() if done.cancelled() else None if done.code() is OK else done)

    call.add_done_callback(ended)
