"""Sync gRPC client interceptor: the policy engine on every sync call path.

Blocking calls (``stub.M(req)``, ``stub.M.with_call(req)``) run the policies in the caller's thread. ``.future()``
calls return at once: their policies run on one background event loop, so a retry waiting out its backoff holds
no thread, and cancelling the future cancels the attempt in flight and every later one.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc

from ._background import BACKGROUND
from ._routing import MethodPolicies, Route, Router, attempt_metadata, channel_options
from .errors import CircuitOpenError, ResilienceError, RetriesExceededError, TimeoutExceededError
from .execution import Execution
from .policy import Policy
from .status import FALLBACK_METADATA_KEY, Status, grpc_flavoured, status_code

__all__ = ["ResilienceInterceptor", "resilient_channel"]

OK = grpc.StatusCode.OK

if TYPE_CHECKING:  # generic in typeshed only
    _Future = grpc.Future[Any]
    _UnaryUnaryMultiCallable = grpc.UnaryUnaryMultiCallable[Any, Any]
else:
    _Future = grpc.Future
    _UnaryUnaryMultiCallable = grpc.UnaryUnaryMultiCallable


class ResilienceInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Runs every call of a sync channel through ``policies`` (first = outermost).

    ``methods`` gives some methods or services their own chains: ``{"/pkg.Service/Method": [...],
    "/pkg.Service/*": [...]}``; an empty chain, or no policies at all for a method, lets its calls pass untouched.

    Unary-unary calls get every policy. Streaming calls, for now, get the chain's tightest Timeout as their
    deadline and its circuit breakers (admission, and the final status recorded); they are neither retried nor
    answered by a fallback.
    """

    def __init__(self, *policies: Policy, methods: MethodPolicies | None = None) -> None:
        self._router = Router(policies, methods)

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        route = self._router.route(client_call_details.method)
        if route is None:
            return continuation(client_call_details, request)
        send = _via_continuation(route, continuation, client_call_details, request)
        if _blocks(continuation):
            return _call(route, send, request, client_call_details.timeout)
        return _in_background(route, send, request, client_call_details.timeout)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return self._stream(continuation, client_call_details, request)

    def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return self._stream(continuation, client_call_details, request_iterator)

    def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return self._stream(continuation, client_call_details, request_iterator)

    def _stream(self, continuation: Any, details: Any, request: Any) -> Any:
        route = self._router.route(details.method)
        if route is None:
            return continuation(details, request)
        try:
            permits = route.admit_stream()
        except CircuitOpenError as rejected:
            return _finished(rejected)
        try:
            call = continuation(_CallDetails.of(details, route.stream_timeout_for(details.timeout)), request)
        except Exception as failure:
            route.record_stream(permits, failure, cancelled=False)
            raise
        if permits:
            call.add_done_callback(lambda done: _record_stream(route, permits, done))
        return call


def resilient_channel(
    target: str,
    *policies: Policy,
    methods: MethodPolicies | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
    compression: grpc.Compression | None = None,
) -> grpc.Channel:
    """A channel to ``target`` whose calls run through ``policies``, with grpcio's built-in retries turned off.

    It behaves as ``grpc.intercept_channel(channel, ResilienceInterceptor(...))`` but sends unary calls without
    grpc's interceptor machinery, which costs more per call than the policies. Warns
    (:class:`StackedRetriesWarning`) when ``options`` ask for built-in retries, which would multiply attempts.
    """
    opts = channel_options(options)
    if credentials is None:
        channel = grpc.insecure_channel(target, options=opts, compression=compression)
    else:
        channel = grpc.secure_channel(target, credentials, options=opts, compression=compression)
    return _ResilientChannel(channel, ResilienceInterceptor(*policies, methods=methods))


class _ResilientChannel(grpc.Channel):
    """A channel whose unary-unary calls run the policies directly; streams go through the interceptor."""

    def __init__(self, channel: grpc.Channel, interceptor: ResilienceInterceptor) -> None:
        self._channel = channel
        self._router = interceptor._router
        self._intercepted = grpc.intercept_channel(channel, interceptor)

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        multicallable = self._channel.unary_unary(method, *args, **kwargs)
        route = self._router.route(method)
        return multicallable if route is None else _UnaryUnary(multicallable, route)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._intercepted.unary_stream(method, *args, **kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._intercepted.stream_unary(method, *args, **kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._intercepted.stream_stream(method, *args, **kwargs)

    def subscribe(self, callback: Any, try_to_connect: bool = False) -> None:
        self._channel.subscribe(callback, try_to_connect)

    def unsubscribe(self, callback: Any) -> None:
        self._channel.unsubscribe(callback)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> _ResilientChannel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _UnaryUnary(_UnaryUnaryMultiCallable):
    """A unary method of a :func:`resilient_channel`: the policies around grpc's own multicallable.

    Attempts use grpc's ``with_call``, which raises failures and answers (response, call) on success, so a
    healthy call touches grpc's call object no more than a bare one does.
    """

    def __init__(self, multicallable: Any, route: Route) -> None:
        self._multicallable, self._route = multicallable, route

    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        return self.with_call(request, timeout, metadata, credentials, wait_for_ready, compression)[0]

    def with_call(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> tuple[Any, Any]:
        route = self._route
        attempt = _directly(
            route, self._multicallable.with_call, request, metadata, credentials, wait_for_ready, compression
        )
        execution = route.execution(attempt, request, timeout)
        try:
            result = route.executor.run_execution(execution)
        except Exception as failure:
            error = grpc_flavoured(failure, _FLAVOURS)
        else:
            if execution.fallback_failure is None:
                return result  # type: ignore[no-any-return]
            return result, _FallbackCall(result, execution.fallback_failure)
        raise error

    def future(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        route = self._route
        send = _directly(route, self._multicallable.future, request, metadata, credentials, wait_for_ready, compression)
        return _in_background(route, send, request, timeout)


_BLOCKING: dict[object, bool] = {}


def _blocks(continuation: Any) -> bool:
    """Whether grpc called us for a blocking call (its continuation then blocks too) rather than ``.future()``.

    grpc gives no flag; its continuations for ``__call__``/``with_call`` are defined in ``_with_call``. Anything
    else takes the background path, which is correct for both kinds, only slower for blocking calls. The answer is
    kept per code object: grpc makes a new continuation per call, all with the same code.
    """
    code = getattr(continuation, "__code__", None)
    blocks = _BLOCKING.get(code)
    if blocks is None:
        qualname = getattr(continuation, "__qualname__", "")
        blocks = _BLOCKING[code] = qualname.endswith("._with_call.<locals>.continuation")
    return blocks


Send = Callable[[Execution], Any]
"""Sends one attempt of a call and returns what grpc gives back for it."""


def _via_continuation(route: Route, continuation: Any, details: Any, request: Any) -> Send:
    """Attempts through an interceptor's continuation: the caller's details with each attempt's timeout and
    metadata."""
    method, _, metadata, credentials, wait_for_ready, compression = _CallDetails.of(details, None)

    def send(execution: Execution) -> Any:
        attempt_details = _CallDetails(
            method,
            route.attempt_timeout(execution),
            attempt_metadata(metadata, execution),
            credentials,
            wait_for_ready,
            compression,
        )
        return continuation(attempt_details, request)

    return send


def _directly(route: Route, invoke: Any, request: Any, metadata: Any, *options: Any) -> Send:
    """Attempts through grpc's own ``with_call`` or ``future``, with each attempt's timeout and metadata.

    ``options`` are the caller's credentials, wait_for_ready and compression.
    """
    credentials, wait_for_ready, compression = options

    def send(execution: Execution) -> Any:
        return invoke(
            request,
            timeout=route.attempt_timeout(execution),
            metadata=attempt_metadata(metadata, execution),
            credentials=credentials,
            wait_for_ready=wait_for_ready,
            compression=compression,
        )

    return send


def _call(route: Route, send: Send, request: Any, timeout: float | None) -> Any:
    """A blocking unary call through the route's policies, in the caller's thread; returns the finished call."""
    execution = route.execution(lambda execution: _succeeded(send(execution)), request, timeout)
    try:
        return _as_call(route.executor.run_execution(execution), execution)
    except Exception as failure:
        return _finished(failure)


def _in_background(route: Route, send: Send, request: Any, timeout: float | None) -> _ResilientFuture:
    """A ``.future()`` call: its policies run on the background loop; returns at once."""
    return _ResilientFuture(BACKGROUND.submit(_call_in_background(route, send, request, timeout)))


async def _call_in_background(route: Route, send: Send, request: Any, timeout: float | None) -> Any:
    """The policies of a ``.future()`` call, on the background loop; returns the finished call."""

    async def attempt(execution: Execution) -> Any:
        call = send(execution)
        await _completion(call)
        return _succeeded(call)

    execution = route.execution(attempt, request, timeout)
    try:
        return _as_call(await route.executor.arun_execution(execution), execution)
    except Exception as failure:
        return _finished(failure)


def _as_call(result: Any, execution: Execution) -> Any:
    """The last attempt's call, or a fallback's answer dressed as a successful call."""
    if execution.fallback_failure is None:
        return result
    return _FallbackCall(result, execution.fallback_failure)


def _succeeded(outcome: Any) -> Any:
    """``outcome`` if the attempt succeeded; else raises its failure.

    grpc hands failures back rather than raising them (grpc/grpc#25207): its own failed calls (futures whose
    ``exception()`` tells), and, as they were, errors an interceptor further down raised.
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


async def _completion(call: Any) -> None:
    """Wait for a grpc future on the running loop; cancelling the wait cancels the RPC."""
    if not isinstance(call, grpc.Future) or call.done():
        return
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def wake(_: object) -> None:
        loop.call_soon_threadsafe(_set_done, done)

    call.add_done_callback(wake)
    try:
        await done
    except asyncio.CancelledError:
        call.cancel()
        raise


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _record_stream(route: Route, permits: Any, call: Any) -> None:
    cancelled = call.cancelled()
    route.record_stream(permits, None if cancelled or call.code() is OK else call, cancelled)


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    """Call details for the continuation, shaped as grpc's own."""

    @classmethod
    def of(cls, details: Any, timeout: float | None) -> _CallDetails:
        """The caller's ``details`` with another timeout."""
        wait_for_ready, compression = getattr(details, "wait_for_ready", None), getattr(details, "compression", None)
        return cls(details.method, timeout, details.metadata, details.credentials, wait_for_ready, compression)


class _Finished(grpc.Call, _Future):
    """A call that has ended with ``_status``: both the grpc.Call and the grpc.Future a caller may use."""

    _status: Status

    def _set_status(self, status: Status) -> None:
        self._status = status

    def initial_metadata(self) -> Any:
        return self._status.initial_metadata

    def trailing_metadata(self) -> Any:
        return self._status.trailing_metadata

    def code(self) -> grpc.StatusCode:
        return self._status.code

    def details(self) -> str:
        return self._status.details

    def debug_error_string(self) -> str | None:
        return self._status.debug_error_string

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:  # type: ignore[override]
        return None

    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def running(self) -> bool:
        return False

    def done(self) -> bool:
        return True

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False  # the RPC has already terminated

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        fn(self)

    def traceback(self, timeout: float | None = None) -> TracebackType | None:
        error = self.exception()
        return None if error is None else error.__traceback__


class _FallbackCall(_Finished):
    """A fallback's answer: code OK, trailing metadata naming the status it replaced."""

    def __init__(self, response: Any, failure: BaseException | None) -> None:
        code = status_code(failure) if failure is not None else None
        reason = code.name if code is not None else "UNKNOWN"
        self._response = response
        self._status = Status(OK, "", (), ((FALLBACK_METADATA_KEY, reason),), None)

    def result(self, timeout: float | None = None) -> Any:
        return self._response

    def exception(self, timeout: float | None = None) -> Exception | None:
        return None


class _ErrorCall(_Finished):
    """A call that ended with an error that is not a gRPC status (e.g. raised by a fallback function)."""

    def __init__(self, error: Exception) -> None:
        self._error = error
        self._status = Status.of(error)

    def result(self, timeout: float | None = None) -> Any:
        raise self._error

    def exception(self, timeout: float | None = None) -> Exception | None:
        return self._error


class _StatusError(grpc.RpcError, _Finished):  # type: ignore[misc]  # typeshed's RpcError and Call disagree
    """A policy's error as a failed gRPC call: raise it, or use it as the call it ended."""

    def result(self, timeout: float | None = None) -> Any:
        raise self

    def exception(self, timeout: float | None = None) -> Exception | None:
        return self

    def __iter__(self) -> Iterator[Any]:  # a rejected stream fails when read
        return self

    def __next__(self) -> Any:
        raise self


class _CircuitOpenRpcError(CircuitOpenError, _StatusError):  # type: ignore[misc]
    pass


class _RetriesExceededRpcError(RetriesExceededError, _StatusError):  # type: ignore[misc]
    pass


class _TimeoutExceededRpcError(TimeoutExceededError, _StatusError):  # type: ignore[misc]
    pass


_FLAVOURS: dict[type[ResilienceError], type[BaseException]] = {
    CircuitOpenError: _CircuitOpenRpcError,
    RetriesExceededError: _RetriesExceededRpcError,
    TimeoutExceededError: _TimeoutExceededRpcError,
}


def _finished(failure: BaseException) -> Any:
    """The finished call a caller gets for ``failure``: grpc's own failed call, a policy's error dressed as
    one, or another error wrapped so that ``result()`` raises it."""
    error = grpc_flavoured(failure, _FLAVOURS)
    if isinstance(error, grpc.RpcError) and isinstance(error, grpc.Future):
        return error
    return _ErrorCall(error)


class _ResilientFuture(grpc.Call, _Future):
    """What ``.future()`` returns while the policies run in the background; then it stands for the final call."""

    def __init__(self, future: concurrent.futures.Future[Any]) -> None:
        self._future = future

    def _final(self, timeout: float | None = None) -> Any:
        try:
            return self._future.result(timeout)
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
        self._future.add_done_callback(lambda _: fn(self))

    def cancel(self) -> bool:
        return self._future.cancel()

    def cancelled(self) -> bool:
        return self._future.cancelled()

    def running(self) -> bool:
        return not self._future.done()

    def done(self) -> bool:
        return self._future.done()

    def is_active(self) -> bool:
        return not self._future.done()

    def time_remaining(self) -> float | None:  # type: ignore[override]
        return None

    def add_callback(self, callback: Callable[[], None]) -> bool:
        if self._future.done():
            return False
        self._future.add_done_callback(lambda _: callback())
        return True

    def initial_metadata(self) -> Any:
        return self._final().initial_metadata()

    def trailing_metadata(self) -> Any:
        return self._final().trailing_metadata()

    def code(self) -> grpc.StatusCode:
        if self._future.cancelled():
            return grpc.StatusCode.CANCELLED
        code: grpc.StatusCode = self._final().code()
        return code

    def details(self) -> str:
        if self._future.cancelled():
            return "Locally cancelled by application!"
        details: str = self._final().details()
        return details
