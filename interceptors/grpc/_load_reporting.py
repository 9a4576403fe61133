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
import contextlib
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, NamedTuple

import grpc

from ..engine import _options as options
from ..engine._clock import Clock
from ..engine._load import LoadRecorder, LoadReport, allowed
from ..engine._load_signals import CpuUsage, Lateness, Later, Rate, cpu_count, memory_utilization
from ..engine._timers import TIMERS
from ._admission import Admitting, AioAdmitting, End
from ._handlers import wrapped
from ._orca import LOAD_REPORT_METADATA_KEY, ORCA_METHOD, OrcaLoadReportRequest, message_of, serialized

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
        pool: ThreadPoolExecutor | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.interval: float = options.window(interval, "interval")
        self._clock = options.clock(clock)
        count = cpu_count() if cpus is None else options.count(cpus, "cpus", maximum=1 << 16)
        cpu_time = options.optional_function(cpu_seconds, "cpu_seconds", "", count=0)
        self._cpu = None if cpu_time is None else CpuUsage(self._clock, self.interval, count, cpu_time)
        self._memory = options.optional_function(memory, "memory", "", count=0)
        if pool is not None and not isinstance(pool, ThreadPoolExecutor):
            raise ValueError(
                f"pool must be the server's concurrent.futures.ThreadPoolExecutor, got {options.shown(pool)}"
            )
        self._pool = pool
        self._lateness = Lateness(self._clock, self.interval)
        self._late_name: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # where the probes run, on an aio server
        self._rate = Rate(self._clock, self.interval, kinds=3)  # calls, failed calls, seconds of calls
        self._places: Any = None  # the places of a LoadShedding with a limit, when one shares this load
        self.recorder: LoadRecorder = LoadRecorder()
        """What the application recorded (:meth:`record` writes to it)."""
        self._lock = threading.Lock()
        self._built = _Built(-math.inf, LoadReport(), -1, LoadReport(), b"")

    def record(self, **values: Any) -> None:
        """Record server-wide values (see :meth:`~interceptors.server.LoadRecorder.record`): they stand in the
        reports for what the server would sample."""
        self.recorder.record(**values)

    def lateness(self, aio: bool) -> float | None:
        """Seconds work waits to start on the running event loop (``aio``) or in the worker pool: the most a probe
        waited over the last ``interval``; None when there is neither. Starts the probes if they are stopped (on
        another event loop than before: starts them there)."""
        if aio:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return None
            if loop is not self._loop:  # the server runs on a new loop: the old one's probes are gone
                self._lateness.stop()
                self._loop = loop
            later: Later = loop.call_later
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

    def close(self) -> None:
        """Stop the lateness probes (they start again if asked)."""
        self._lateness.stop()

    def cpu_utilization(self) -> float | None:
        """The process's CPU utilization, sampled; None when it is not measured (``cpu_seconds=None``, or it
        raised)."""
        if self._cpu is None:
            return None
        try:
            return self._cpu.sample()
        except Exception:
            _once("cpu_seconds", "load report: cpu_seconds() raised; the CPU is not reported")
            return None

    @property
    def report(self) -> LoadReport:
        """The load reported now."""
        return self._snapshot().report

    def _snapshot(self) -> _Built:
        """What is reported now: the sampled values, sampled again each ``interval``, under what was recorded."""
        now, version = self._clock.now(), self.recorder.version
        built = self._built
        if now - built.sampled_at < self.interval and built.version == version:
            return built
        with self._lock:
            built = self._built
            sampled_at, sampled = built.sampled_at, built.sampled
            if now - sampled_at >= self.interval:
                sampled_at, sampled = now, self._sampled()
            elif built.version == version:
                return built
            report = self.recorder.report.over(sampled)
            self._built = built = _Built(sampled_at, sampled, version, report, _bytes_of(report))
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
        return LoadReport(
            cpu_utilization=self.cpu_utilization(),
            memory_utilization=self._memory_utilization(),
            qps=qps,
            eps=eps,
            utilization=utilization,
            named_metrics=MappingProxyType(named),
        )

    def _memory_utilization(self) -> float | None:
        if self._memory is None:
            return None
        try:
            return allowed("memory_utilization", self._memory())
        except Exception:
            _once("memory", "load report: memory() raised; the memory is not reported")
            return None

    def _trailer(self, call: LoadRecorder | None) -> bytes | None:
        """A call's report, serialized: the server's, with what the call recorded over it (protobuf merges
        messages laid end to end: the later values win, map entries by name); None if it cannot be."""
        server = self._snapshot().data
        if server is None or call is None or not call.version:
            return server
        own = _bytes_of(call.report)
        return server if own is None else server + own

    def _ended(self, failed: bool, seconds: float) -> None:
        """Count a call that ended, after ``seconds``."""
        self._rate.count((1, int(failed), seconds))


class _Built(NamedTuple):
    sampled_at: float
    sampled: LoadReport
    version: int  # the recorder's
    report: LoadReport
    data: bytes | None


def _bytes_of(report: LoadReport) -> bytes | None:
    """``report`` serialized (an empty one: no bytes, all zero); None if it cannot be (never, by the recorder's
    rules: logged once)."""
    try:
        return serialized(report)
    except Exception:
        _once("serialize", "load report: it could not be serialized; it is not sent")
        return None


def _once(what: str, message: str) -> None:
    if what not in _warned:
        _warned.add(what)
        _log.exception(message)


_log = logging.getLogger("interceptors.server")
_warned: set[str] = set()


_CALL_LOAD: ContextVar[LoadRecorder | None] = ContextVar("interceptors_call_load", default=None)


def call_load() -> LoadRecorder:
    """What the running handler's call records of its load, for its own report: ``request_cost``, ``utilization``,
    ``named_metrics``, or any value of the server's it should override for this call (with another value: a 0 is
    not sent, as proto3 sends no zeros, so the server's stands)::

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
        if per_call and self._aio:  # the server's report, in case the call is aborted (see AioLoadReporting)
            _add_trailer(context, load._snapshot().data)
        recorder = LoadRecorder()
        token = _CALL_LOAD.set(recorder)
        started = load._clock.now()

        def end(failure: BaseException | None) -> None:
            with contextlib.suppress(ValueError):  # ended in another context than it began: nothing to undo there
                _CALL_LOAD.reset(token)
            try:
                code = context.code()
                failed = (failure is not None and not isinstance(failure, _CANCELLED)) or code not in _ANSWERED
                load._ended(failed, load._clock.now() - started)
                if per_call:
                    _add_trailer(context, load._trailer(recorder))
            except Exception:  # never the call's failure
                _once("trailer", "load report: a call's report could not be added; it goes without")

        return end


_CANCELLED = (GeneratorExit, asyncio.CancelledError)
"""How a handler ends when its caller cancelled: not the server's error."""
_ANSWERED = (None, OK, 0)
"""What ``context.code()`` says of a call not failed by its handler (sync: None or OK; aio: 0 until set)."""


def _add_trailer(context: Any, report: bytes | None) -> None:
    """Put ``report`` in the trailers, in place of one put there before (None: none)."""
    kept = tuple(pair for pair in context.trailing_metadata() or () if pair[0] != LOAD_REPORT_METADATA_KEY)
    context.set_trailing_metadata(kept if report is None else (*kept, (LOAD_REPORT_METADATA_KEY, report)))


class LoadReporting(_Reporting, Admitting):
    """Reports a sync server's load in every call's trailers (``endpoint-load-metrics-bin``, an ORCA
    ``OrcaLoadReport``): the ``load``'s report (default: a :class:`ServerLoad` of its own), with what the call's
    handler recorded through :func:`call_load` over it, keeping the trailers the handler set. Calls that fail carry
    one too, and count as errors (EPS); calls their caller cancelled do not. Install it outside a
    :class:`LoadShedding`, so that refused calls carry one too; health checks, reflection and the ORCA stream are
    not reported on.

    With ``per_call=False`` it only counts the calls (the QPS and EPS an :class:`OrcaService` reports), for
    balancers that read the out-of-band stream alone.
    """


class AioLoadReporting(_Reporting, AioAdmitting):
    """:class:`LoadReporting` for ``grpc.aio`` servers. ``event_loop_lag`` is probed on the server's loop.

    grpc.aio sends a call's status, trailers and all, the moment a handler (or an interceptor inside this one, such
    as a LoadShedding refusing it) calls ``context.abort()``: so the server's report is put in the trailers when the
    call is admitted, and replaced by the call's own when it ends; an aborted call carries the server's."""

    _aio = True


DEFAULT_MAX_STREAMS = 8
"""Out-of-band streams an OrcaService serves at once, by default: on a sync server each holds a worker thread."""


class OrcaService:
    """The out-of-band ORCA service (``xds.service.orca.v3.OpenRcaService``, gRFC A51), for sync and aio servers:
    each client's stream gets ``load``'s report at once, then every interval it asks for (``report_interval``), but
    never more often than ``min_report_interval`` (default 30 s, as gRPC's own servers); it ends when the client
    cancels, or with OK at :meth:`close`. A request that cannot be decoded, or asks a negative or impossible
    interval, is answered INVALID_ARGUMENT; one past ``max_streams`` streams at once (default 8) RESOURCE_EXHAUSTED.

    On a sync server each open stream holds one of the server's worker threads between reports: give the pool that
    many more workers, or keep ``max_streams`` low (a client channel with ``weighted_round_robin`` and
    ``enableOobLoadReport`` opens one per backend it balances over; per-call reports hold none).

    ``OrcaService(load).add_to(server)`` before the server starts; ``close()`` before ``server.stop(grace)``, whose
    grace would otherwise wait for the streams.
    """

    def __init__(
        self,
        load: ServerLoad,
        *,
        min_report_interval: options.Duration = 30.0,
        max_streams: int = DEFAULT_MAX_STREAMS,
    ) -> None:
        if not isinstance(load, ServerLoad):
            raise ValueError(f"load must be a ServerLoad, got {options.shown(load)}")
        self.load: ServerLoad = load
        self.min_report_interval: float = options.window(min_report_interval, "min_report_interval")
        self.max_streams: int = options.count(max_streams, "max_streams", maximum=options.MAX_CALLS)
        self.streams: int = 0
        """Streams open now."""
        self._lock = threading.Lock()
        self._wakes: set[Callable[[], object]] = set()  # how to end each open stream
        self._closed = False

    def add_to(self, server: grpc.Server | grpc.aio.Server) -> None:
        """Serve the ORCA service on ``server`` (sync or aio)."""
        aio = isinstance(server, grpc.aio.Server)
        stream = self._astream if aio else self._stream
        handler = grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=OrcaLoadReportRequest.FromString, response_serializer=_response_bytes
        )
        checked = wrapped(self, handler, ORCA_METHOD, _as_is, _as_is, aio=aio)  # undecodable: INVALID_ARGUMENT
        service, method = ORCA_METHOD[1:].split("/")
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {method: checked}),))

    def close(self) -> None:
        """End every open stream, with OK, and refuse new ones (UNAVAILABLE)."""
        with self._lock:
            self._closed = True
            wakes = list(self._wakes)
        for wake in wakes:
            wake()

    def _interval(self, request: Any) -> float | None:
        """The interval ``request`` asks for, no shorter than the minimum; None if it is not a duration."""
        asked = request.report_interval
        seconds: float = asked.seconds + asked.nanos / 1e9
        if asked.seconds < 0 or asked.nanos < 0 or asked.nanos >= 10**9 or seconds > options.MAX_SECONDS:
            return None
        return max(seconds, self.min_report_interval)

    def _refusal(self, request: Any, wake: Callable[[], object]) -> tuple[grpc.StatusCode, str] | None:
        """Why a stream asking ``request`` is refused, or None: it is open, and ``wake`` ends it."""
        if self._interval(request) is None:
            asked = request.report_interval
            limit = options.MAX_SECONDS
            why = f"report_interval must be a duration of 0 to {limit:g} s, got {asked.seconds} s {asked.nanos} ns"
            return grpc.StatusCode.INVALID_ARGUMENT, why
        with self._lock:
            if self._closed:
                return grpc.StatusCode.UNAVAILABLE, "the ORCA service is closed"
            if self.streams >= self.max_streams:
                return grpc.StatusCode.RESOURCE_EXHAUSTED, f"at most {self.max_streams} ORCA streams at once"
            self.streams += 1
            self._wakes.add(wake)
        return None

    def _ended(self, wake: Callable[[], object]) -> None:
        with self._lock:
            self.streams -= 1
            self._wakes.discard(wake)

    def _stream(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        ended = threading.Event()
        refusal = self._refusal(request, ended.set)
        if refusal is not None:
            context.abort(*refusal)
        context.add_callback(ended.set)
        interval = self._interval(request)
        try:
            while not ended.is_set():
                self.load.lateness(aio=False)
                yield message_of(self.load.report)
                ended.wait(interval)
        finally:
            self._ended(ended.set)

    async def _astream(self, request: Any, context: Any) -> AsyncIterator[Any]:
        ended, loop = asyncio.Event(), asyncio.get_running_loop()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # its loop is closed: the stream is gone with it
                loop.call_soon_threadsafe(ended.set)

        refusal = self._refusal(request, wake)
        if refusal is not None:
            await context.abort(*refusal)
            return
        interval = self._interval(request)
        try:
            while not ended.is_set():
                self.load.lateness(aio=True)
                yield message_of(self.load.report)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(ended.wait(), interval)
        finally:
            self._ended(wake)


def _response_bytes(message: Any) -> bytes:
    return bytes(message.SerializeToString())


def _as_is(behavior: Callable[..., Any]) -> Callable[..., Any]:
    return behavior
