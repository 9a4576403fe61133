"""ORCA load reports from sync and aio servers (gRFC A51): per call, in the ``endpoint-load-metrics-bin`` trailer,
and out of band, on the ``xds.service.orca.v3.OpenRcaService`` stream; what load-aware balancers (gRPC's
``weighted_round_robin``, gRFC A58; Envoy) weigh backends by.

A :class:`ServerLoad` holds what is reported: what the application records, over what the server samples itself
(its process's CPU and memory, the calls and failures per second it ends, how late its work starts, and the calls
its :class:`LoadShedding` holds). :class:`LoadReporting` puts it in every call's trailers, with what the call's
handler recorded through :func:`call_load`; :class:`OrcaService` streams it to the clients that ask.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import Executor
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

import grpc

from ..engine import _options as options
from ..engine._clock import Clock
from ..engine._load import LoadRecorder, LoadReport
from ..engine._load_signals import CpuUsage, Lateness, Later, Rate, cpu_count, memory_utilization
from ..engine._timers import TIMERS
from ._admission import Admitting, AioAdmitting, End
from ._handlers import wrapped
from ._orca import LOAD_REPORT_METADATA_KEY, ORCA_SERVICE, OrcaLoadReportRequest, message_of, serialized

__all__ = ["AioLoadReporting", "LoadReporting", "OrcaService", "ServerLoad", "call_load"]

LOOP_LAG, QUEUE_TIME = "event_loop_lag", "pool_queue_time"
"""The named metrics a server's lateness is reported as (seconds): an aio server's, a sync server's."""
OK = grpc.StatusCode.OK


class ServerLoad:
    """What a server reports of its load (see the module's doc), sampled at most once per ``interval``.

    A report holds what the application recorded (:meth:`record`), and for what it did not record:

    - ``cpu_utilization``: the share of its ``cpus`` the process used (CPU time from ``cpu_seconds``);
    - ``memory_utilization``: what ``memory()`` answers (default: the resident set over the memory limit, on Linux);
    - ``qps`` and ``eps``: the calls, and the failed calls, :class:`LoadReporting` saw end per second;
    - ``named_metrics``: ``event_loop_lag`` (aio) or ``pool_queue_time`` (sync, given the server's ``pool``): how
      late work starts there, the most a probe set every ``interval / 10`` ran late over the last ``interval``
      (probed while calls come); ``in_flight`` and ``limit`` of the :class:`LoadShedding` that shares this load
      at the moment of the sample;
    - ``utilization["concurrency"]``, with such a LoadShedding: the calls :class:`LoadReporting` saw at work on
      average over the last interval (the seconds they took, per second), over that limit.

    :param interval: seconds between samples (default 1).
    :param cpus: the CPUs the utilization is a share of (default: those the process may run on). A process whose
        work holds Python's GIL uses one at most: give ``cpus=1`` for it to reach 1.
    :param cpu_seconds: the process's CPU time so far (default ``time.process_time``; None: CPU not reported).
    :param memory: the memory utilization now (default: see above; None: memory not reported).
    :param pool: a sync server's worker pool (the executor given to ``grpc.server``), to measure its queue time.
    :param clock: the clock samples are timed by (default: the system's).
    """

    def __init__(
        self,
        *,
        interval: options.Duration = 1.0,
        cpus: int | None = None,
        cpu_seconds: Callable[[], float] | None = time.process_time,
        memory: Callable[[], float | None] | None = memory_utilization,
        pool: Executor | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.interval: float = options.window(interval, "interval")
        self._clock = options.clock(clock)
        count = cpu_count() if cpus is None else options.count(cpus, "cpus", maximum=1 << 16)
        cpu_time = options.optional_function(cpu_seconds, "cpu_seconds", "", count=0)
        self._cpu = None if cpu_time is None else CpuUsage(self._clock, self.interval, count, cpu_time)
        self._memory = options.optional_function(memory, "memory", "", count=0)
        if pool is not None and not callable(getattr(pool, "submit", None)):
            raise ValueError(f"pool must be a concurrent.futures.Executor, got {options.shown(pool)}")
        self._pool = pool
        self._lateness = Lateness(self._clock, self.interval)
        self._late_name: str | None = None
        self._rate = Rate(self._clock, self.interval, kinds=3)  # calls, failed calls, seconds of calls
        self._places: Any = None  # a LoadShedding's places, when one shares this load
        self.recorder: LoadRecorder = LoadRecorder()
        """What the application recorded (:meth:`record` writes to it)."""
        self._lock = threading.Lock()
        self._built: tuple[float, int, LoadReport, bytes] = (-self.interval, -1, LoadReport(), b"")

    def record(self, **values: Any) -> None:
        """Record server-wide values (see :meth:`~interceptors.engine.LoadRecorder.record`): they stand in the
        reports for what the server would sample."""
        self.recorder.record(**values)

    def lateness(self, aio: bool) -> float | None:
        """Seconds work waits to start on the running event loop (``aio``) or in the worker pool: the most a probe
        waited over the last ``interval``; None when there is neither. Starts the probes if they are stopped."""
        if aio:
            try:
                later: Later = asyncio.get_running_loop().call_later
            except RuntimeError:
                return None
            self._late_name = LOOP_LAG
        elif self._pool is not None:
            later, self._late_name = self._pool_later, QUEUE_TIME
        else:
            return None
        return self._lateness.seconds(later)

    def _pool_later(self, delay: float, probe: Callable[[], object]) -> None:
        """Hand ``probe`` to the worker pool ``delay`` seconds from now (from the library's one timer thread)."""
        pool, lateness = self._pool, self._lateness
        assert pool is not None

        def submit() -> None:
            try:
                pool.submit(probe)
            except RuntimeError:  # shut down
                lateness.stop()

        TIMERS.after(delay, submit)

    def cpu_utilization(self) -> float | None:
        """The process's CPU utilization, sampled; None when it is not measured (``cpu_seconds=None``)."""
        return None if self._cpu is None else self._cpu.sample()

    @property
    def report(self) -> LoadReport:
        """The load reported now."""
        return self._snapshot()[2]

    def _snapshot(self) -> tuple[float, int, LoadReport, bytes]:
        now, version = self._clock.now(), self.recorder.version
        built = self._built
        if now - built[0] < self.interval and built[1] == version:
            return built
        with self._lock:
            built = self._built
            if now - built[0] >= self.interval or built[1] != version:
                report = self.recorder.report.over(self._sampled())
                self._built = built = (now, version, report, serialized(report))
        return built

    def _sampled(self) -> LoadReport:
        qps, eps, busy = self._rate.sample()
        named: dict[str, float] = {}
        utilization: Mapping[str, float] = MappingProxyType({})
        if self._late_name is not None:
            named[self._late_name] = self._lateness.seconds(None)
        places = self._places
        if places is not None:
            named["in_flight"], named["limit"] = places.in_flight, places.limit
            utilization = MappingProxyType({"concurrency": min(busy / places.limit, 1.0)})
        memory = None if self._memory is None else self._memory()
        return LoadReport(
            cpu_utilization=self.cpu_utilization(),
            memory_utilization=memory if isinstance(memory, float) and 0.0 <= memory <= 1.0 else None,
            qps=qps,
            eps=eps,
            utilization=utilization,
            named_metrics=MappingProxyType(named),
        )

    def _trailer(self, call: LoadRecorder | None) -> bytes:
        """A call's report, serialized: the server's, with what the call recorded over it (protobuf merges
        messages laid end to end: the later values win, map entries by name)."""
        server = self._snapshot()[3]
        return server if call is None or not call.version else server + serialized(call.report)

    def _ended(self, failed: bool, seconds: float = 0.0) -> None:
        """Count a call that ended, after ``seconds``."""
        if failed:
            self._rate.count(0, 1)
        else:
            self._rate.count(0)
        if seconds:
            self._rate.add(2, seconds)


_CALL_LOAD: ContextVar[LoadRecorder | None] = ContextVar("interceptors_call_load", default=None)


def call_load() -> LoadRecorder:
    """What the running handler's call records of its load, for its own report: ``request_cost``, ``utilization``,
    ``named_metrics``, or any value of the server's it should override for this call::

        call_load().record(request_cost={"db_queries": 3})

    Outside a call a :class:`LoadReporting` serves, a recorder whose values go nowhere."""
    return _CALL_LOAD.get() or LoadRecorder()


class _Reporting:
    _aio = False

    def __init__(self, load: ServerLoad | None = None, *, per_call: bool = True) -> None:
        if load is not None and not isinstance(load, ServerLoad):
            raise ValueError(f"load must be a ServerLoad, got {options.shown(load)}")
        self.load: ServerLoad = ServerLoad() if load is None else load
        """What the reports say."""
        self.per_call: bool = options.flag(per_call, "per_call")
        """Whether each call's trailers carry a report (else it only counts the calls, for the out-of-band one)."""

    def _admission(self, context: Any, method: str) -> End:
        load, per_call = self.load, self.per_call
        load.lateness(self._aio)  # keeps the probes going
        recorder = LoadRecorder()
        token = _CALL_LOAD.set(recorder)
        started = load._clock.now()

        def end(failure: BaseException | None) -> None:
            try:
                _CALL_LOAD.reset(token)
            except ValueError:  # ended in another context than it began (a sync stream's last message)
                _CALL_LOAD.set(None)
            code = context.code()
            failed = failure is not None or (code is not None and code != OK and code != 0)
            load._ended(failed, load._clock.now() - started)
            if per_call:
                _add_trailer(context, load._trailer(recorder))

        return end


def _add_trailer(context: Any, report: bytes) -> None:
    kept = tuple(
        key_value for key_value in context.trailing_metadata() or () if key_value[0] != LOAD_REPORT_METADATA_KEY
    )
    context.set_trailing_metadata((*kept, (LOAD_REPORT_METADATA_KEY, report)))


class LoadReporting(_Reporting, Admitting):
    """Reports a sync server's load in every call's trailers (``endpoint-load-metrics-bin``, an ORCA
    ``OrcaLoadReport``): the ``load``'s report (default: a :class:`ServerLoad` of its own), with what the call's
    handler recorded through :func:`call_load` over it. Calls that fail carry one too, and count as errors (EPS).
    Install it outside a :class:`LoadShedding`, so that refused calls carry one; health checks and reflection are
    not reported on.

    With ``per_call=False`` it only counts the calls (the QPS and EPS an :class:`OrcaService` reports), for
    balancers that read the out-of-band stream alone.
    """


class AioLoadReporting(_Reporting, AioAdmitting):
    """:class:`LoadReporting` for ``grpc.aio`` servers. ``event_loop_lag`` is probed on the server's loop.

    grpc.aio sends a call's status, trailers and all, the moment a handler (or an interceptor inside this one)
    calls ``context.abort()``: such a call carries no report of its own, though it counts as an error in the
    next ones and in the out-of-band stream's."""

    _aio = True

    async def _aadmission(self, context: Any, method: str) -> End:
        return self._admission(context, method)


class OrcaService:
    """The out-of-band ORCA service (``xds.service.orca.v3.OpenRcaService``, gRFC A51), for sync and aio servers:
    each client's stream gets ``load``'s report at once, then every interval it asks for (``report_interval``), but
    never more often than ``min_report_interval`` (default 30 s, as gRPC's own servers); it ends when the client
    cancels or the server stops. A request that cannot be decoded, or asks a negative or impossible interval, is
    answered INVALID_ARGUMENT.

    ``OrcaService(load).add_to(server)`` before the server starts.
    """

    def __init__(self, load: ServerLoad, *, min_report_interval: options.Duration = 30.0) -> None:
        if not isinstance(load, ServerLoad):
            raise ValueError(f"load must be a ServerLoad, got {options.shown(load)}")
        self.load: ServerLoad = load
        self.min_report_interval: float = options.window(min_report_interval, "min_report_interval")
        self.streams: int = 0
        """Streams open now."""
        self._lock = threading.Lock()

    def add_to(self, server: grpc.Server | grpc.aio.Server) -> None:
        """Serve the ORCA service on ``server`` (sync or aio)."""
        aio = isinstance(server, grpc.aio.Server)
        stream = self._astream if aio else self._stream
        handler = grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=OrcaLoadReportRequest.FromString, response_serializer=_response_bytes
        )
        method = f"/{ORCA_SERVICE}/StreamCoreMetrics"
        checked = wrapped(self, handler, method, _as_is, _as_is, aio=aio)  # undecodable requests: INVALID_ARGUMENT
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(ORCA_SERVICE, {"StreamCoreMetrics": checked}),)
        )

    def _interval(self, request: Any, context: Any) -> float | None:
        """The interval ``request`` asks for, no shorter than the minimum; None if it is not a duration."""
        asked = request.report_interval
        seconds: float = asked.seconds + asked.nanos / 1e9
        if asked.seconds < 0 or asked.nanos < 0 or asked.nanos >= 10**9 or seconds > options.MAX_SECONDS:
            return None
        return max(seconds, self.min_report_interval)

    def _stream(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        interval = self._interval(request, context)
        if interval is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, _bad_interval(request))
        ended = threading.Event()
        context.add_callback(ended.set)
        self._count(1)
        try:
            while context.is_active():
                yield message_of(self.load.report)
                if ended.wait(interval):
                    return
        finally:
            self._count(-1)

    async def _astream(self, request: Any, context: Any) -> AsyncIterator[Any]:
        interval = self._interval(request, context)
        if interval is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _bad_interval(request))
            return
        self._count(1)
        try:
            while True:
                self.load.lateness(aio=True)
                yield message_of(self.load.report)
                await asyncio.sleep(interval)
        finally:
            self._count(-1)

    def _count(self, change: int) -> None:
        with self._lock:
            self.streams += change


def _bad_interval(request: Any) -> str:
    asked = request.report_interval
    return (
        f"report_interval must be a duration of 0 to {options.MAX_SECONDS:g} s, got {asked.seconds} s {asked.nanos} ns"
    )


def _response_bytes(message: Any) -> bytes:
    return bytes(message.SerializeToString())


def _as_is(behavior: Callable[..., Any]) -> Callable[..., Any]:
    return behavior
