"""The sync flavour's entry points: the interceptor, the channel and its unary methods."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from ...engine._policy import Policy
from ...engine._priority import Priority
from .._channel import open_channel
from .._core import (
    BIDI_STREAM,
    CLIENT_STREAM,
    SERVER_STREAM,
    CallMetrics,
    MethodPolicies,
    Route,
    RoutedChannel,
    RoutedMethod,
    Router,
    cancelled_error,
)
from .._grpc_shapes import blocks, cancellable_blocking, next_multicallable
from .._incoming import INCOMING
from .._registry import Registry
from .._service_config import channel_plan
from .._streams import DEFAULT_REPLAY_BUFFER, Replay
from .._streams import replay_buffer as checked_replay_buffer
from .attempts import Send, current_request, directly, run_blocking, run_for_interceptor, via_continuation
from .calls import ResilientFuture
from .ended import SYNC, AnsweredCall, SucceededCall, ended_call
from .streams import ResilientStream

__all__ = ["ResilienceInterceptor", "resilient_channel"]

OK = grpc.StatusCode.OK
if TYPE_CHECKING:  # generic in typeshed only
    _UnaryUnaryMultiCallable = grpc.UnaryUnaryMultiCallable[Any, Any]
else:
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
    Every chain is checked when the interceptor is built.

    Every kind of call gets every policy. Streaming calls are retried until they commit: a server or bidi stream
    at its first response message (after which a :class:`StreamResume` can resume a server stream), any stream
    whose requests outgrow ``replay_buffer``; breakers, bulkheads and limiters count a stream's final status, once.

    A stub's blocking unary calls leave grpc's interceptor hooks at its third call: the interceptor calls the next
    multicallable itself (interceptors under it see every attempt); where this one's hook is wrapped or overridden,
    they stay.

    :param policies: the chain for every method (default: none), first outermost.
    :param methods: chains by ``/pkg.Service/Method`` or ``/pkg.Service/*`` (default None); ValueError for a key
        of another form, a value that is not a sequence of policies, or a chain whose policies cannot run together.
    :param replay_buffer: bytes of a client-streaming or bidi call's requests kept for a retry to send again
        (default 256 KiB, grpc's own); a call whose requests outgrow it commits.
    :param metrics: an :class:`interceptors.otel.Metrics` to record every call and attempt in (default None).
    :param target: the channel's target, as metrics name it (``grpc.target``; default "other").
    :param priority: the priority of its calls that have none in their context (default None: none, and the
        server's default applies); see :func:`interceptors.prioritized`.
    :param registry: a :class:`~interceptors.Registry` whose chains its calls take, each reload's from then on (in
        place of ``policies`` and ``methods``; default None).
    """

    def __init__(
        self,
        *policies: Policy,
        methods: MethodPolicies | None = None,
        replay_buffer: int = DEFAULT_REPLAY_BUFFER,
        metrics: CallMetrics | None = None,
        target: str = "other",
        priority: Priority | str | None = None,
        registry: Registry | None = None,
    ) -> None:
        self._router = Router(policies, methods, SYNC, metrics, target, priority, registry)
        self._replay_buffer = checked_replay_buffer(replay_buffer)

    @classmethod
    def _routed(cls, router: Router, replay_buffer: int) -> ResilienceInterceptor:
        """An interceptor over ``router`` (a helper's, see :func:`channel_plan`)."""
        interceptor = cls.__new__(cls)
        interceptor._router, interceptor._replay_buffer = router, checked_replay_buffer(replay_buffer)
        return interceptor

    @functools.cached_property
    def _takes_over(self) -> bool:
        """Whether a stub's blocking unary calls may be taken over from grpc's hooks (see :func:`next_multicallable`):
        not where a subclass hooks in, which must go on seeing every call."""
        return type(self).intercept_unary_unary is ResilienceInterceptor.intercept_unary_unary

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        method = client_call_details.method
        route = self._router.route(method)
        if route is None:
            return continuation(client_call_details, request)
        multicallable = next_multicallable(continuation, method, self._call_on if self._takes_over else None)
        if multicallable is None:  # a future's continuation, or one of a shape we do not know: called as it is
            send = via_continuation(self._router, continuation, client_call_details, request)
            if not blocks(continuation):
                return ResilientFuture(route, send, request, client_call_details.timeout)
            return run_for_interceptor(route, send, request, client_call_details.timeout)
        try:
            return self._call_on(
                multicallable,
                method,
                request,
                client_call_details.timeout,
                client_call_details.metadata,
                client_call_details.credentials,
                getattr(client_call_details, "wait_for_ready", None),
                getattr(client_call_details, "compression", None),
            )[1]
        except Exception as error:
            return ended_call(error)

    def _call_on(
        self,
        multicallable: Any,
        method: str,
        request: Any,
        timeout: Any,
        metadata: Any,
        credentials: Any,
        wait_for_ready: Any,
        compression: Any,
    ) -> tuple[Any, Any]:
        """A blocking call of ``method`` through its route's policies, its attempts sent with the next
        ``multicallable`` (see :func:`next_multicallable`): ``(response, call)``, or raises the caller's error."""
        options = {"credentials": credentials, "wait_for_ready": wait_for_ready, "compression": compression}
        route = self._router.route(method)
        if route is None:  # a registry's reload took its policies away
            return multicallable.with_call(request, timeout, metadata, **options)  # type: ignore[no-any-return]
        own = cancellable_blocking(multicallable) if route.hedged else None
        response, call = blocking_unary(route, multicallable, request, timeout, metadata, options, own, self._router)
        return response, (call if isinstance(call, grpc.Future) else SucceededCall(response, call))

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        route = self._router.route(client_call_details.method, SERVER_STREAM)
        if route is None:
            return continuation(client_call_details, request)
        send = via_continuation(self._router, continuation, client_call_details, None, current_request)
        return ResilientStream(route, send, request, client_call_details.timeout)

    def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        route = self._router.route(client_call_details.method, CLIENT_STREAM)
        if route is None:
            return continuation(client_call_details, request_iterator)
        replay = Replay(request_iterator, self._replay_buffer)
        send = via_continuation(self._router, continuation, client_call_details, None, replay.attempt)
        if blocks(continuation):
            return run_for_interceptor(route, send, None, client_call_details.timeout)
        return ResilientFuture(route, send, None, client_call_details.timeout)

    def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        route = self._router.route(client_call_details.method, BIDI_STREAM)
        if route is None:
            return continuation(client_call_details, request_iterator)
        replay = Replay(request_iterator, self._replay_buffer)
        send = via_continuation(self._router, continuation, client_call_details, None, replay.attempt)
        return ResilientStream(route, send, None, client_call_details.timeout, replay)


def resilient_channel(
    target: str,
    *policies: Policy,
    methods: MethodPolicies | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
    compression: grpc.Compression | None = None,
    replay_buffer: int = DEFAULT_REPLAY_BUFFER,
    service_config: str | Mapping[str, Any] | None = None,
    metrics: CallMetrics | None = None,
    priority: Priority | str | None = None,
    registry: Registry | None = None,
) -> grpc.Channel:
    """A channel to ``target`` whose calls run through ``policies`` (see :class:`ResilienceInterceptor`).

    It behaves as ``grpc.intercept_channel(channel, ResilienceInterceptor(...))`` but sends unary calls without
    grpc's interceptor machinery, which costs more per call than the policies. grpcio's own retries are turned
    off where a RetryPolicy or a HedgePolicy applies (their attempts would multiply grpc's). A gRPC service config
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
    :param priority: the priority of its calls that have none in their context (default None: none, and the
        server's default applies); see :func:`interceptors.prioritized`.
    :param registry: a :class:`~interceptors.Registry` whose chains its calls take, each reload's from then on (in
        place of ``policies``, ``methods`` and ``service_config``; what the registry's config tells grpc goes to
        grpc; default None).
    """
    router, opts = channel_plan(policies, methods, options, service_config, SYNC, metrics, target, priority, registry)
    interceptor = ResilienceInterceptor._routed(router, replay_buffer)
    return _ResilientChannel(open_channel(grpc, target, credentials, opts, compression=compression), interceptor)


class _ResilientChannel(RoutedChannel, grpc.Channel):
    """A channel whose unary-unary calls run the policies directly; streams go through the interceptor."""

    def __init__(self, channel: grpc.Channel, interceptor: ResilienceInterceptor) -> None:
        self._channel, self._router, self._unary_type = channel, interceptor._router, _ResilientUnaryUnary
        self._streams = grpc.intercept_channel(channel, interceptor)

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


class _ResilientUnaryUnary(RoutedMethod, _UnaryUnaryMultiCallable):
    """A unary method of a :func:`resilient_channel`: the policies around grpc's own multicallable.

    Blocking attempts use grpc's ``with_call``, which raises failures and answers (response, call) on success, so
    a healthy call touches grpc's call object no more than a bare one does.
    """

    @functools.cached_property
    def _own_attempt(self) -> Callable[..., Any] | None:
        """For hedged calls: grpc's ``with_call``, whose call a hedge that wins can cancel (see
        :func:`.._grpc_shapes.cancellable_blocking`)."""
        return cancellable_blocking(self._multicallable)

    # credentials, wait_for_ready and compression pass through ``options`` to grpc: keyword-only here
    def __call__(self, request: Any, timeout: float | None = None, metadata: Any = None, **options: Any) -> Any:  # type: ignore[override]
        route = self.route()
        if route is None:
            return self._multicallable(request, timeout, metadata, **options)
        own = self._own_attempt if route.hedged else None
        return blocking_unary(route, self._multicallable, request, timeout, metadata, options, own)[0]

    def with_call(  # type: ignore[override]
        self, request: Any, timeout: float | None = None, metadata: Any = None, **options: Any
    ) -> tuple[Any, Any]:
        """As grpc's; ``options`` (credentials, wait_for_ready, compression) go to every attempt."""
        route = self.route()
        if route is None:
            return self._multicallable.with_call(request, timeout, metadata, **options)  # type: ignore[no-any-return]
        own = self._own_attempt if route.hedged else None
        return blocking_unary(route, self._multicallable, request, timeout, metadata, options, own)

    def future(self, request: Any, timeout: float | None = None, metadata: Any = None, **options: Any) -> Any:  # type: ignore[override]
        route = self.route()
        if route is None:
            return self._multicallable.future(request, timeout, metadata, **options)
        send = directly(self._multicallable.future, request, metadata, options)
        return ResilientFuture(route, send, request, timeout)


def blocking_unary(
    route: Route,
    multicallable: Any,
    request: Any,
    timeout: Any,
    metadata: Any,
    options: dict[str, Any],
    own: Callable[..., Any] | None = None,
    router: Router | None = None,
) -> tuple[Any, Any]:
    """A blocking unary call of grpc's ``multicallable`` through the route's policies, in this thread: (response,
    call), or raises the caller's error. ``options`` (credentials, wait_for_ready, compression) go to every attempt;
    ``own`` is a hedged call's :func:`cancellable_blocking` ``with_call``; ``router``, an interceptor's (see
    :func:`attempt_metadata`).

    Attempts are grpc's ``with_call``, which raises failures and answers (response, call) on success, so a healthy
    call touches grpc's call object no more than a bare one does. For an incoming call (see :mod:`.._incoming`),
    whose cancellation cancels them, they are grpc futures; so are a hedged call's hedges, and its own attempt is
    ``own``: a hedge that wins can cancel either.
    """
    if INCOMING.get() is not None:
        futures = directly(multicallable.future, request, metadata, options, router)
        ended = _cancellable(route, futures, request, timeout)
        return ended.result(), ended
    if route.hedged:
        futures = directly(multicallable.future, request, metadata, options, router)
        alone = None if own is None else directly(own, request, metadata, options, router)
        ended = run_blocking(route, futures, request, timeout, alone)
        return ended.result(), ended
    send = directly(multicallable.with_call, request, metadata, options, router)
    result = run_blocking(route, send, request, timeout)
    return (result.result(), result) if isinstance(result, AnsweredCall) else result


def _cancellable(route: Route, send: Send, request: Any, timeout: Any) -> Any:
    """A blocking call made for an incoming call (see :mod:`.._incoming`): its policies run in this thread, each
    attempt a grpc future (``send``) that the incoming call's cancellation cancels. Returns the ended call; raises
    a CANCELLED StatusError when the incoming call was cancelled."""
    try:
        return ResilientFuture(route, send, request, timeout, inline=True)._final()
    except grpc.FutureCancelledError:
        raise cancelled_error(SYNC, "the call was cancelled") from None
