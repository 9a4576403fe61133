"""The call core the sync and aio adapters share: which policies apply to a method, how one call's execution
starts (its deadline), what each attempt is sent with, and what the caller gets when the policies are done.

The adapters differ only in how they call grpc and wait; everything here is the same for both. What a caller gets
is one of: the last attempt's own call, a fallback's answer dressed as a finished call (code OK, trailers naming
the failure it replaced), or a ``grpc.RpcError`` carrying the status the policies decided on (a
:class:`StatusError`, which is also the policy's own error: ``CircuitOpenError``, ``RetriesExceededError``,
``TimeoutExceededError``).

Inside a server handler with context propagation (see :mod:`._incoming`), a call also ends by the incoming call's
deadline less its reserve, fails at once with CANCELLED if the incoming call has been cancelled, and sends no
attempt once it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, cast

import grpc
from grpc.aio import AioRpcError

from ..engine._errors import (
    BulkheadFullError,
    CircuitOpenError,
    LimitExceededError,
    RateLimitedError,
    RejectedError,
    ResilienceError,
    RetriesExceededError,
    ThrottledError,
    TimeoutExceededError,
)
from ..engine._events import CacheHit, FallbackExecuted
from ..engine._execution import INTERNAL_FRAMES, Execution
from ..engine._hedge import HedgePolicy
from ..engine._policy import Executor, Policy
from ..engine._priority import PRIORITY, Priority
from ..engine._retry import RetryPolicy
from ..engine._warn import warn
from ._channel import StackedRetriesWarning
from ._fit import FallbackMisfitWarning, fitted, misfits, reasons, service_methods
from ._incoming import INCOMING, IncomingCall, wire_unit
from ._pushback import PUSHBACK_MS
from ._status import (
    CACHE_METADATA_KEY,
    FALLBACK_METADATA_KEY,
    FALLBACK_OUT_OF_TIME_KEY,
    GrpcSemantics,
    ResponseStreamSemantics,
    status_code,
)
from ._streams import StreamResume

INTERNAL_FRAMES.append(os.path.dirname(os.path.abspath(grpc.__file__)) + os.sep)  # grpcio's frames: see forget_frames

__all__ = [
    "CallExecution",
    "MethodPolicies",
    "Route",
    "RoutedMethod",
    "Router",
    "Status",
    "StatusError",
    "rpc_error",
    "sent",
]

PREVIOUS_ATTEMPTS = "grpc-previous-rpc-attempts"
PRIORITY_KEY = "x-priority"
"""The metadata that carries a call's priority: its name in lower case (see :class:`~interceptors.Priority`)."""
PRIORITY_NAMES = tuple(level.name.lower() for level in Priority)
OK = grpc.StatusCode.OK
DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED
DEADLINE_TOLERANCE = 0.005
"""Seconds before an inherited deadline within which grpc's DEADLINE_EXCEEDED is taken to be that deadline's."""

UNARY = (False, False)
SERVER_STREAM = (False, True)
CLIENT_STREAM = (True, False)
BIDI_STREAM = (True, True)
"""Kinds of call: whether requests, whether responses are streamed."""

MethodPolicies = Mapping[str, Sequence[Policy]]
"""Policies by full method name (``/pkg.Service/Method``) or service (``/pkg.Service/*``)."""


class CallMetrics(Protocol):
    """What ``metrics=`` takes (:class:`interceptors.otel.Metrics` is one): channels and interceptors have each
    method's calls measured (``instrument``) and their policies watched (``watch``)."""

    def instrument(self, executor: Executor, method: str, target: str) -> Executor:
        """``executor`` with the timing of ``method``'s calls and attempts (on the channel to ``target``)."""

    def watch(self, policies: Iterable[Any]) -> None:
        """Count these policies' events and report their state."""


Pairs = tuple[tuple[str, Any], ...]

if TYPE_CHECKING:  # generic in typeshed only
    _Future = grpc.Future[Any]
else:
    _Future = grpc.Future


class Status(NamedTuple):
    """A final gRPC status, metadata as (key, value) pairs."""

    code: grpc.StatusCode
    details: str
    initial_metadata: Pairs
    trailing_metadata: Pairs
    debug_error_string: str | None

    @classmethod
    def of(cls, failure: BaseException) -> Status:
        """The status a caller should see for ``failure`` (a gRPC error, or a policy's error)."""
        if isinstance(failure, RetriesExceededError):
            return cls.of(failure.last_failure)
        code = status_code(failure) or grpc.StatusCode.UNKNOWN
        if isinstance(failure, TimeoutExceededError):
            cause = failure.__cause__
            if cause is not None and status_code(cause) is grpc.StatusCode.DEADLINE_EXCEEDED:
                return cls.of(cause)  # the call's own deadline status says more
            last = failure.last_failure  # no time left to retry: keep what the last attempt's server said
            trailing = Status.of(last).trailing_metadata if isinstance(last, grpc.RpcError) else ()
            return cls(code, str(failure), (), trailing, None)
        if isinstance(failure, RejectedError) and failure.remaining is not None and failure.remaining < math.inf:
            pushback = ((PUSHBACK_MS, str(math.ceil(failure.remaining * 1000))),)  # as a server would ask
            return cls(code, str(failure), (), pushback, None)
        if isinstance(failure, grpc.RpcError) and not isinstance(failure, ResilienceError):
            return cls(
                code,
                _call_info(failure, "details") or "",
                tuple(_call_info(failure, "initial_metadata") or ()),
                tuple(_call_info(failure, "trailing_metadata") or ()),
                _call_info(failure, "debug_error_string"),
            )
        return cls(code, str(failure), (), (), None)

    @classmethod
    def answered(cls, fallback: FallbackExecuted | CacheHit) -> Status:
        """The status of an answer in place of the attempts: OK, with trailers naming the failure it replaced (a
        fallback's, a stale cached answer's) and, for the cache's, whether it was fresh."""
        marker: Pairs = ()
        if isinstance(fallback, CacheHit):
            marker += ((CACHE_METADATA_KEY, "stale" if fallback.stale else "hit"),)
        if fallback.failure is not None:
            code = status_code(fallback.failure)
            marker += ((FALLBACK_METADATA_KEY, code.name if code is not None else "UNKNOWN"),)
        if isinstance(fallback, FallbackExecuted) and fallback.out_of_time:
            marker += ((FALLBACK_OUT_OF_TIME_KEY, "true"),)
        return cls(OK, "", (), marker, None)


def _call_info(call: object, accessor: str) -> Any:
    """What a failed call's ``accessor`` answers (None when the error lacks it: another interceptor's, or
    grpcio-testing's, which has no ``debug_error_string``)."""
    method = getattr(call, accessor, None)
    return method() if callable(method) else None


class Flavour(NamedTuple):
    """How an adapter presents ended calls (its metadata type, a fallback's answer as a finished call), and
    whether its attempts are coroutines."""

    metadata: Callable[[Pairs], Any]
    answered: Callable[[Any, Status], Any]
    awaits: bool


class EndedCall(grpc.Call, _Future):
    """A call that has ended with ``_status``: both the grpc.Call and the grpc.Future a sync caller may use."""

    _status: Status

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


class StatusError(AioRpcError, EndedCall):  # type: ignore[misc]  # typeshed's RpcError and Call disagree
    """A policy's verdict as a failed gRPC call: a ``grpc.RpcError`` (and ``grpc.aio.AioRpcError``) to raise, and
    the ended call and future a sync caller may be handed instead."""

    @classmethod
    def of(cls, status: Status, flavour: Flavour) -> StatusError:
        error = cls.__new__(cls)
        error._set_status(status, flavour)
        return error

    def _set_status(self, status: Status, flavour: Flavour) -> None:
        self._status = status
        AioRpcError.__init__(
            self,
            status.code,
            flavour.metadata(status.initial_metadata),
            flavour.metadata(status.trailing_metadata),
            status.details,
            status.debug_error_string,
        )

    def result(self, timeout: float | None = None) -> Any:
        raise self

    def exception(self, timeout: float | None = None) -> Exception | None:
        return self

    def __iter__(self) -> StatusError:  # a rejected stream fails when read
        return self

    def __next__(self) -> Any:
        raise self


def _rpc_error_type(base: type[ResilienceError]) -> type[StatusError]:
    """``base`` as a StatusError too, named after it (``CircuitOpenError`` -> ``CircuitOpenRpcError``)."""
    name = base.__name__.removesuffix("Error") + "RpcError"
    namespace = {"__module__": __name__, "__doc__": f"A {base.__name__} that is also the grpc.RpcError it ends."}
    rpc_type: type[StatusError] = types.new_class(name, (base, StatusError), exec_body=lambda ns: ns.update(namespace))
    return rpc_type


_RPC_ERRORS: dict[type[ResilienceError], type[StatusError]] = {
    base: _rpc_error_type(base)
    for base in (
        CircuitOpenError,
        ThrottledError,
        BulkheadFullError,
        RateLimitedError,
        LimitExceededError,
        RetriesExceededError,
        TimeoutExceededError,
    )
}


def rpc_error(failure: Exception, flavour: Flavour) -> Exception:
    """``failure`` as the error a caller gets: a policy's error becomes a copy that is also a :class:`StatusError`
    with ``Status.of(failure)``; anything else (gRPC's own errors, or a caller's mistake) stays as it is."""
    for base, rpc_type in _RPC_ERRORS.items():
        if isinstance(failure, base):
            error = rpc_type.__new__(rpc_type)
            error._set_status(Status.of(failure), flavour)
            error.__dict__.update(failure.__dict__)
            error.args = failure.args
            error.__cause__ = failure.__cause__
            error.__suppress_context__ = True
            return error.with_traceback(failure.__traceback__)
    return failure


class CallExecution(Execution):
    """An execution of a gRPC call: ``incoming`` is the incoming call it is made for (None outside a handler with
    context propagation), ``inherited`` the absolute deadline it inherited from it when that one binds (less
    than the caller's own)."""

    __slots__ = ("call", "incoming", "inherited", "response", "sent_deadline")

    def __init__(
        self,
        fn: Callable[[Execution], Any],
        clock: Any,
        semantics: GrpcSemantics,
        request: Any,
        deadline: float | None,
        incoming: IncomingCall | None = None,
        inherited: float | None = None,
        priority: Priority | None = None,
    ) -> None:
        super().__init__(fn, clock, semantics, request, deadline)
        self.incoming, self.inherited = incoming, inherited
        if self.priority is None:  # none in the caller's context: the incoming call's, else the channel's default
            self.priority = priority if incoming is None or incoming.priority is None else incoming.priority
        self.sent_deadline: float | None = None
        """When the attempt in flight was sent with the inherited deadline: that deadline as sent (see
        :func:`wire_timeout`), by which grpc will end it."""
        self.call: Any = None
        """The grpc call of the attempt in flight, where the adapter keeps it (see :func:`sent`)."""
        self.response: Any = None
        """The response of the last aio unary attempt, which the finished call it returns gives only when awaited (see
        ``GrpcSemantics.response_of``)."""

    def fork(self, attempts: int) -> CallExecution:
        child = cast(CallExecution, super().fork(attempts))
        child.incoming, child.inherited, child.sent_deadline, child.call = self.incoming, self.inherited, None, None
        child.response = None
        return child

    def adopt(self, child: Execution) -> None:
        super().adopt(child)
        adopted = cast(CallExecution, child)
        self.call, self.response = adopted.call, adopted.response

    def release(self) -> None:
        super().release()
        self.call = self.response = None


def sent(execution: Execution, call: Any, cancel: Callable[[], object] | None = None) -> Any:
    """``call``, kept as the execution's attempt in flight: ``execution.cancel()`` cancels it (by ``cancel``,
    default ``call.cancel``; at once if the execution was abandoned while it was being sent), and a stream that
    commits settles with it."""
    cancel = call.cancel if cancel is None else cancel
    execution.call, execution.on_cancel = call, cancel  # type: ignore[attr-defined]  # a CallExecution
    if execution.abandoned:
        cancel()
    return call


class Route:
    """Everything the adapters need for one method: its executor, semantics, and (for streamed responses) how to
    resume a stream."""

    __slots__ = ("async_chain", "chain", "executor", "flavour", "hedged", "priority", "resume", "semantics")

    def __init__(
        self,
        method: str,
        executor: Executor,
        flavour: Flavour,
        kind: tuple[bool, bool] = UNARY,
        wide: bool = False,
        priority: Priority | None = None,
    ) -> None:
        self.flavour, self.priority = flavour, priority
        """The priority of its calls that have none in their context (see :func:`~interceptors.prioritized`)."""
        self.semantics = semantics_of(method, kind, lambda failure: rpc_error(failure, flavour))
        self.executor = executor = fitted(executor, self.semantics, wide)  # a chain for many methods, as it fits this
        self.chain, self.async_chain = executor._chain, executor._async_chain
        """The executor's chains (as its ``run_execution`` and ``arun_execution`` run them, a call less per call)."""
        self.resume = next((p for p in executor.policies if isinstance(p, StreamResume)), None)
        self.hedged = self.semantics.concurrent_attempts and any(isinstance(p, HedgePolicy) for p in executor.policies)
        """Whether its calls may race attempts: the sync adapter then sends them so that the losers can be cancelled."""

    def execution(
        self, attempt: Callable[[Execution], Any], request: Any, timeout: object, awaits: bool | None = None
    ) -> CallExecution:
        """A new execution of ``attempt``, with the caller's ``timeout`` (checked: see :func:`caller_timeout`) as
        its absolute deadline, or the incoming call's less its reserve when that is sooner. ``awaits``: whether
        ``attempt`` is a coroutine function (default: as the route's flavour).

        Raises a CANCELLED StatusError if the incoming call has been cancelled: nothing is sent for it.
        """
        clock = self.executor.clock
        seconds = timeout if type(timeout) is float and 0.0 < timeout < math.inf else caller_timeout(timeout)
        incoming = INCOMING.get()
        if incoming is None:
            deadline = None if seconds is None else clock.now() + seconds
            return CallExecution(attempt, clock, self.semantics, request, deadline, priority=self.priority)
        if incoming.cancelled:
            raise cancelled_error(self.flavour, "nothing was sent")
        deadline, inherited = _deadlines(clock, seconds, incoming)
        if inherited is None or (deadline is not None and deadline <= inherited):
            return CallExecution(attempt, clock, self.semantics, request, deadline, incoming, priority=self.priority)
        awaited = self.flavour.awaits if awaits is None else awaits
        bounded = _bounded_async(attempt) if awaited else _bounded(attempt)
        return CallExecution(bounded, clock, self.semantics, request, inherited, incoming, inherited, self.priority)

    def deadline(self, timeout: object) -> float | None:
        """The deadline (on the executor's clock) of a call with the caller's ``timeout``, as :meth:`execution`
        gives it: the caller's, or the incoming call's less its reserve when that is sooner; None for neither, or
        for a timeout :meth:`execution` refuses. What a call's ``time_remaining()`` counts down to."""
        clock = self.executor.clock
        try:
            seconds = caller_timeout(timeout)
        except Exception:
            return None
        incoming = INCOMING.get()
        if incoming is None:
            return None if seconds is None else clock.now() + seconds
        deadline, inherited = _deadlines(clock, seconds, incoming)
        return inherited if deadline is None or (inherited is not None and inherited < deadline) else deadline

    def ended(self, execution: Execution, result: Any, flavour: Flavour) -> Any:
        """What the caller gets for the chain's ``result``: the last attempt's own, or a fallback's answer."""
        fallback = execution.fallback
        return result if fallback is None else flavour.answered(result, Status.answered(fallback))


def _deadlines(clock: Any, seconds: float | None, incoming: IncomingCall) -> tuple[float | None, float | None]:
    """The caller's own deadline (``seconds`` from now) and the one inherited from ``incoming``, on ``clock``."""
    now, remaining = clock.now(), incoming.outgoing_remaining()
    return None if seconds is None else now + seconds, None if remaining is None else now + remaining


def time_left(deadline: float | None, clock: Any) -> float | None:
    """What a call's ``time_remaining()`` says: seconds to ``deadline`` on ``clock`` (never below 0), or None."""
    return None if deadline is None else max(deadline - clock.now(), 0.0)


def semantics_of(
    method: str, kind: tuple[bool, bool], caller_error: Callable[[Exception], Exception] | None = None
) -> GrpcSemantics:
    """How the policies see calls of ``method``, a call of ``kind``."""
    request_stream, response_stream = kind
    semantics = ResponseStreamSemantics if response_stream else GrpcSemantics
    return semantics(method, caller_error, request_stream=request_stream)


class RoutedChannel:
    """What the helpers' channels (sync and aio) share: a unary-unary multicallable gets its method's route
    around grpc's own (``_unary_type``, see :class:`RoutedMethod`); streams go through ``_streams``, a channel that
    has the interceptors. Every method's route is made (its chain checked against it) when its multicallable is:
    when a stub is made."""

    _channel: Any
    _streams: Any
    _router: Router
    _unary_type: Callable[[Any, Router, str], Any]

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._unary_type(self._channel.unary_unary(method, *args, **kwargs), self._router, method)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self._router.route(method, SERVER_STREAM, calling=False)
        return self._streams.unary_stream(method, *args, **kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self._router.route(method, CLIENT_STREAM, calling=False)
        return self._streams.stream_unary(method, *args, **kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self._router.route(method, BIDI_STREAM, calling=False)
        return self._streams.stream_stream(method, *args, **kwargs)


class RoutedMethod:
    """A unary method of a helper's channel: grpc's ``multicallable`` and the method's route, or, for a method no
    policy applies to, the route of the call at hand (see :meth:`Router.route`): None sends it as it is."""

    __slots__ = ("_method", "_multicallable", "_route", "_router", "_version")

    def __init__(self, multicallable: Any, router: Router, method: str) -> None:
        self._multicallable, self._router, self._method = multicallable, router, method
        self._version = router.version  # read first: a reload meanwhile makes the route again at the first call
        self._route = router.route(method, calling=False)

    def route(self) -> Route | None:
        """The route of a call of it: the method's own (made again after the router's registry reloaded), else the
        call's (see :meth:`Router.route`)."""
        router = self._router
        version = router.version
        if self._version != version:
            self._route, self._version = router.route(self._method), version
        route = self._route
        return route if route is not None else router.route(self._method)

    @property
    def hedged(self) -> bool:
        """Whether its calls race attempts (see :attr:`Route.hedged`)."""
        route = self.route()
        return route is not None and route.hedged


def caller_timeout(timeout: object) -> float | None:
    """The timeout a caller gave, in seconds. Raises TypeError for one that is not a number of seconds, and
    TimeoutExceededError (so that nothing is sent) for one that has already run out, as grpc does for a negative
    timeout: grpcio itself would send a zero timeout as none at all."""
    if timeout is None:
        return None
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or math.isnan(timeout):
        raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r}")
    if timeout <= 0:
        raise TimeoutExceededError(f"the call's deadline had passed ({timeout:g}s left): nothing was sent")
    return float(timeout)


def attempt_timeout(execution: Execution) -> float | None:
    """The grpc timeout for the current attempt: what is left of the execution's deadline. A deadline already
    passed raises TimeoutExceededError: grpcio would send a zero timeout as none at all. An incoming call
    cancelled meanwhile raises asyncio.CancelledError: no more attempts, and nothing for the breakers to count."""
    call: CallExecution = execution  # type: ignore[assignment]  # what the adapters run (a cast costs a call)
    if call.incoming is not None and call.incoming.cancelled:
        raise asyncio.CancelledError
    if call.deadline is None:
        return None
    now = call.clock.now()
    remaining = call.deadline - now
    inherited = call.inherited is not None and call.deadline >= call.inherited  # the inherited deadline binds
    if remaining <= 0:
        if inherited:
            raise TimeoutExceededError("the incoming call's deadline, less the reserve, has passed: nothing was sent")
        raise TimeoutExceededError("the deadline passed before the attempt was sent: nothing was sent")
    if not inherited:
        call.sent_deadline = None
        return remaining
    sent = wire_timeout(remaining)
    call.sent_deadline = now + sent
    return sent


def wire_timeout(seconds: float) -> float:
    """``seconds`` as a timeout grpc sends without handing the next server more: rounded down to a whole unit of
    grpc's wire format (see :func:`wire_unit`), less one unit, as grpc rounds up what its own clock, a few ms late,
    says is left."""
    unit = wire_unit(seconds)
    return round(max(math.floor(seconds / unit + 1e-9) - 1, 1) * unit, 3)


def cancelled_error(flavour: Flavour, consequence: str) -> StatusError:
    """The CANCELLED error of a call made for an incoming call that was cancelled."""
    status = Status(grpc.StatusCode.CANCELLED, f"the incoming call was cancelled: {consequence}", (), (), None)
    return StatusError.of(status, flavour)


def _inherited_timeout(execution: Execution, failure: Exception) -> Exception:
    """``failure`` as the policies see it: grpc's DEADLINE_EXCEEDED at the inherited deadline (as sent) becomes a
    TimeoutExceededError, so that a fallback may still answer the incoming call in its reserve."""
    sent = cast(CallExecution, execution).sent_deadline
    if (
        sent is None
        or status_code(failure) is not DEADLINE_EXCEEDED
        or execution.clock.now() < sent - DEADLINE_TOLERANCE
    ):
        return failure
    timeout = TimeoutExceededError("the incoming call's deadline, less the reserve, passed")
    timeout.__cause__ = failure
    return timeout


def _bounded(attempt: Callable[[Execution], Any]) -> Callable[[Execution], Any]:
    def run(execution: Execution) -> Any:
        try:
            result = attempt(execution)
        except Exception as failure:
            raise _inherited_timeout(execution, failure)  # noqa: B904  (chained when converted)
        if execution.deferred:  # sent, not ended: its failure is read when it comes
            execution.settle.append(functools.partial(_inherited_settled, execution))  # type: ignore[union-attr]
        return result

    return run


def _inherited_settled(execution: Execution, outcome: BaseException | None) -> BaseException | None:
    return _inherited_timeout(execution, outcome) if isinstance(outcome, Exception) else None


def _bounded_async(attempt: Callable[[Execution], Any]) -> Callable[[Execution], Any]:
    async def run(execution: Execution) -> Any:
        try:
            return await attempt(execution)
        except Exception as failure:
            raise _inherited_timeout(execution, failure)  # noqa: B904  (chained when converted)

    return run


def attempt_metadata(metadata: Any, execution: Execution, router: Router | None = None) -> Any:
    """The caller's metadata, plus ``grpc-previous-rpc-attempts`` on retries, as gRPC's own retries send, and the
    call's priority (:data:`PRIORITY_KEY`) when it has one and the caller's metadata none. On a channel that is not
    a helper's (``router``), the first retry warns, once, that grpcio strips the header unless the channel has its
    own retries off (``grpc.enable_retries=0``): we cannot see a channel's options."""
    priority = execution.priority
    if execution.attempts == 1:
        return metadata if priority is None else _with_priority(metadata, priority)
    if router is not None and router.unwarned:
        router.unwarned = False
        warn(
            "grpc-previous-rpc-attempts: grpcio strips it from the retries of an intercepted channel that has its own "
            "retries on (its default), so servers cannot tell retries apart; make the channel with "
            "options=[('grpc.enable_retries', 0)], or use interceptors.resilient_channel, which does (a channel made "
            "so already: this interceptor cannot see its options; filter this warning)",
            StackedRetriesWarning,
        )
    kept = tuple(pair for pair in metadata or () if pair[0] != PREVIOUS_ATTEMPTS)
    pairs = (*kept, (PREVIOUS_ATTEMPTS, str(execution.attempts - 1)))
    return pairs if priority is None else _with_priority(pairs, priority)


def _with_priority(metadata: Any, priority: Priority) -> Any:
    if metadata is not None and any(pair[0] == PRIORITY_KEY for pair in metadata):
        return metadata  # the caller's own
    return (*(metadata or ()), (PRIORITY_KEY, PRIORITY_NAMES[priority]))


class Plan:
    """The chains of a router, checked (policy types, one clock, no policy twice): ``default`` for methods no other
    names, by method name, by service name (``/pkg.Service/*``); ``retries`` tells whether a RetryPolicy or a
    HedgePolicy applies to some method (grpc's own retries are then off). A :class:`~interceptors.Registry` makes a
    new one at each reload."""

    __slots__ = ("_given", "by_method", "by_service", "default", "methods", "retries")

    def __init__(self, policies: Sequence[Policy], methods: MethodPolicies | None) -> None:
        self.default = _executor(policies, "policies")
        self.by_method: dict[str, Executor | None] = {}
        self.by_service: dict[str, Executor | None] = {}
        if methods is not None and not isinstance(methods, Mapping):
            raise ValueError(f"methods must map method or service names to policies, got {methods!r}")
        for key, chain in (methods or {}).items():
            service, slash, name = key[1:].partition("/") if isinstance(key, str) else ("", "", "")
            if not (isinstance(key, str) and key.startswith("/") and service and slash and name and "/" not in name):
                raise ValueError(f"methods keys are '/package.Service/Method' or '/package.Service/*', got {key!r}")
            executor = _executor(chain, f"methods[{key!r}]")
            (self.by_service if name == "*" else self.by_method)[key if name != "*" else service] = executor
        self.methods: tuple[str, ...] = tuple(methods or ())
        self._given = (policies, methods)
        chains = [self.default, *self.by_method.values(), *self.by_service.values()]
        self.retries = any(
            isinstance(p, (RetryPolicy, HedgePolicy)) for chain in chains if chain for p in chain.policies
        )

    def again(self) -> Plan:
        """The same chains, built anew: their executors run the policies as they are now (with the state they took
        over, see ``Policy.inherit``)."""
        return Plan(*self._given)

    def chain(self, method: str) -> tuple[Executor | None, bool]:
        """``method``'s chain, and whether it is a chain for many methods (a service's or the default one)."""
        executor = self.by_method.get(method, _UNSET)
        if executor is not _UNSET:
            return executor, False
        return self.by_service.get(method[1:].partition("/")[0], self.default), True

    def check(self, service: str, calling: bool) -> None:
        """Check every method of ``service`` the descriptor pool knows against its chain (see :mod:`._fit`): a chain
        given for one method that does not fit it, or a policy of a chain for many methods that fits none of the
        service's, raises ValueError naming every method; one FallbackMisfitWarning names the methods a chain for
        many methods steps aside for. A call (``calling``) is never failed: it warns."""
        served: dict[Policy, list[str]] = {}  # the methods each policy of a wide chain serves
        unfit: dict[Policy, list[str]] = {}  # the methods it does not fit, and why
        for method, kind in service_methods(service):
            executor, wide = self.chain(method)
            if executor is None:
                continue
            found = misfits(executor, semantics_of(method, kind))
            if not wide and found and not calling:
                raise ValueError(f"the chain given for {method} does not fit it: {reasons(found)}")
            for policy in executor.policies:
                served.setdefault(policy, []).append(method)
            for policy, reason in found.items():
                unfit.setdefault(policy, []).append(f"{method} ({reason})")
        for policy, methods in unfit.items():
            if len(methods) == len(served[policy]) and not calling:  # of use to none: a mistake, not a choice
                raise ValueError(f"{policy.name} fits no method of {service}: {'; '.join(methods)}")
        for policy, methods in unfit.items():
            listed = "; ".join(methods)
            warn(
                f"{policy.name} steps aside for the methods of {service} it does not fit: {listed}. Their failures "
                "reach the caller as they are; give them a chain of their own (methods=...)",
                FallbackMisfitWarning,
            )

    def check_named(self) -> None:
        """:meth:`check` the services its method names name, now (no call is made: a misfit raises)."""
        for service in dict.fromkeys(key[1:].partition("/")[0] for key in self.methods):
            self.check(service, calling=False)


class _Routes(NamedTuple):
    """A router's plan and what it made of it, replaced as one object (a reload's new plan starts afresh)."""

    plan: Plan
    routes: dict[object, Route | None]
    propagating: dict[object, Route]  # routes without policies, for incoming calls' contexts
    checked: dict[str, None]  # the services whose methods were checked against their chains


class Router:
    """Finds the route of a method: exact name first, then its service's wildcard, then the default policies.

    Every chain is checked when the router is built (policy types, one clock, no policy twice), and against the
    methods it serves (e.g. a fallback's fields against their response types, see :mod:`._fit`): a service's methods
    all at once, when the router is built for the services ``methods`` names, else when the first route of the
    service is made (a helper's stub, or the first call through grpc's own interceptor hooks). With a ``registry``
    (see :class:`~interceptors.Registry`), its chains are the registry's, and each reload replaces them for the calls
    that start after it (``version`` counts the reloads it took).
    """

    __slots__ = (
        "__weakref__",
        "_flavour",
        "_metrics",
        "_priority",
        "_state",
        "_target",
        "unwarned",
        "version",
    )

    # routes are kept by method name, and by (name, request stream, response stream) for streaming methods: at most
    # ROUTES_KEPT of each sort, the oldest made first to go (made again when called again)

    def __init__(
        self,
        policies: Sequence[Policy],
        methods: MethodPolicies | None,
        flavour: Flavour,
        metrics: CallMetrics | None = None,
        target: str = "other",
        priority: Priority | str | None = None,
        registry: Any = None,
    ) -> None:
        if metrics is not None and not callable(getattr(metrics, "instrument", None)):
            raise ValueError(f"metrics must be an interceptors.otel.Metrics, got {metrics!r}")
        if not isinstance(target, str) or not target.strip():
            raise ValueError(f"target must name the channel's target, such as 'host:port', got {target!r}")
        self._flavour, self._metrics, self._target = flavour, metrics, target
        self._priority = None if priority is None else Priority.of(priority)
        self.version = 0
        self.unwarned = True
        """Whether its first retry is still to warn that grpcio may strip ``grpc-previous-rpc-attempts`` (see
        :func:`attempt_metadata`); the helpers, whose channels have grpcio's retries off, set it False."""
        if registry is None:
            plan = Plan(policies, methods)
            plan.check_named()
            self._state = _Routes(plan, {}, {}, dict.fromkeys(key[1:].partition("/")[0] for key in plan.methods))
            return
        if policies or methods:
            raise ValueError("give a registry, or policies and methods: the registry's chains are the channel's")
        if not callable(getattr(registry, "_serve", None)):
            raise ValueError(f"registry must be an interceptors.Registry, got {registry!r}")
        plan = registry._serve(self)
        self._state = _Routes(plan, {}, {}, dict.fromkeys(key[1:].partition("/")[0] for key in plan.methods))

    @property
    def retries(self) -> bool:
        """Whether a RetryPolicy or a HedgePolicy applies to some method (grpc's own retries are then off)."""
        return self._state.plan.retries

    def load(self, plan: Plan) -> None:
        """Take ``plan`` (a registry's reload): the calls that start from now on get its chains."""
        self._state = _Routes(plan, {}, {}, dict.fromkeys(key[1:].partition("/")[0] for key in plan.methods))
        self.version += 1

    def route(self, method: str | bytes, kind: tuple[bool, bool] = UNARY, calling: bool = True) -> Route | None:
        """The route for ``method``, a call of ``kind`` (whether its requests, its responses are streamed; see
        :data:`UNARY` and the others), or None when no policy applies to it and no incoming call's context (see
        :mod:`._incoming`) does either: then the route has no policies. ``calling``: made for a call (not for a
        stub), which a chain's misfit never fails."""
        state = self._state
        key: object = method if kind is UNARY else (method, kind)
        try:
            route = state.routes[key]
        except KeyError:
            name = method.decode() if isinstance(method, bytes) else method
            executor, wide = state.plan.chain(name)
            service = name[1:].partition("/")[0]
            if service not in state.checked:
                state.plan.check(service, calling)
                _keep(state.checked, service, None)  # checked: a service refused is refused again, each time
            metrics = self._metrics
            if metrics is not None:  # every call is measured, with policies or not
                executor = metrics.instrument(executor or Executor(), name, self._target)
            wide = wide or calling
            route = None if executor is None else Route(name, executor, self._flavour, kind, wide, self._priority)
            _keep(state.routes, key, route)
        if route is not None or (INCOMING.get() is None and PRIORITY.get() is None and self._priority is None):
            return route
        try:
            return state.propagating[key]
        except KeyError:
            name = method.decode() if isinstance(method, bytes) else method
            route = Route(name, Executor(), self._flavour, kind, priority=self._priority)
            _keep(state.propagating, key, route)
            return route


ROUTES_KEPT = 1000
"""Routes a router keeps, of each sort (see :meth:`Router.route`), first made first let go: a channel that calls
more distinct methods makes a route again when its method is called again, rather than grow with method names."""


def _keep(routes: dict[Any, Any], key: object, route: Any) -> None:
    while len(routes) >= ROUTES_KEPT:
        with contextlib.suppress(StopIteration, RuntimeError):  # another thread made room meanwhile
            routes.pop(next(iter(routes)), None)  # the oldest kept
    routes[key] = route


_UNSET: Any = object()


def _executor(chain: object, option: str) -> Executor | None:
    """The executor of a chain of policies (None for an empty one), checked now; errors name ``option``."""
    if isinstance(chain, (str, bytes, Policy)) or not isinstance(chain, Sequence):
        raise ValueError(f"{option} must be a sequence of policies, got {chain!r}")
    try:
        executor = Executor(*chain) if chain else None
    except ValueError as error:
        raise ValueError(f"{option}: {error}") from None
    policies = () if executor is None else executor.policies
    if any(isinstance(p, StreamResume) for p in policies) and not any(isinstance(p, RetryPolicy) for p in policies):
        raise ValueError(f"{option}: a StreamResume resumes streams as retries: the chain needs a RetryPolicy")
    return executor
