"""A client's view of a backend's load: the ORCA reports it streams out of band (gRFC A51's ``OpenRcaService``, as
:class:`~interceptors.server.OrcaService` serves it), for sync and aio channels.

Per-call reports do not reach a grpcio application: its C-core takes the ``endpoint-load-metrics-bin`` trailer for
its own balancers and leaves it out of the trailers it shows (grpcio 1.85). The out-of-band stream is what a
Python client can read. On a channel to several backends, the stream goes to whichever one grpc picks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

import grpc

from ..engine import _options as options
from ..engine._clock import Clock
from ..engine._load import LoadReport
from ._orca import ORCA_METHOD, OrcaLoadReport, OrcaLoadReportRequest, report_of

__all__ = ["AioLoadWatch", "LoadWatch"]

FIRST_RETRY = 0.1
"""Seconds before a failed stream is opened again; doubling up to the interval."""
STALE = 3
"""A report older than this many times the time between reports (or the interval asked, if longer) is no longer
the backend's load (it may be gone)."""
_log = logging.getLogger("interceptors")


class _Watch:
    def __init__(
        self,
        channel: Any,
        *,
        interval: options.Duration = 1.0,
        on_report: options.Listener[LoadReport] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.interval: float = options.window(interval, "interval")
        self.on_report: options.Listener[LoadReport] | None = options.listener(on_report, "on_report")
        self._clock = options.clock(clock)
        self._report: LoadReport | None = None
        self._received = -float("inf")
        self._gap = self.interval  # between the last two reports: the server may send them less often than asked
        self._stream = channel.unary_stream(
            ORCA_METHOD, request_serializer=_serialized, response_deserializer=OrcaLoadReport.FromString
        )
        self._request = OrcaLoadReportRequest()
        self._request.report_interval.FromNanoseconds(round(self.interval * 1e9))
        self._closed = False

    @property
    def report(self) -> LoadReport | None:
        """The latest report; None before the first, or once it is 3 times as old as the time between the last two
        reports (or the interval asked, if longer): a server sends them no more often than its minimum (gRPC's and
        :class:`~interceptors.server.OrcaService`'s: 30 s by default)."""
        fresh = self._clock.now() - self._received < STALE * max(self._gap, self.interval)
        return self._report if fresh else None

    def utilization(self, name: str | None = None) -> float | None:
        """The backend's utilization named ``name`` in its report's ``utilization`` map; without a name, as gRPC's
        weighted round robin reads it (A58): its application utilization, else its CPU utilization. None without a
        fresh report that has it."""
        report = self.report
        if report is None:
            return None
        if name is not None:
            return report.utilization.get(name)
        return report.application_utilization or report.cpu_utilization

    def _heard(self, message: Any, first: bool) -> None:
        """A report came (the ``first`` of its stream)."""
        report, now = report_of(message), self._clock.now()
        if not first:
            self._gap = now - self._received
        self._report, self._received = report, now
        if self.on_report is not None:
            options.emit(self.on_report, report)

    def _again(self, error: Exception) -> bool:
        """Whether to open the stream again after ``error``."""
        if self._closed:
            return False
        if not isinstance(error, grpc.RpcError):  # the channel closed under it, say
            _log.warning("load watch: stopped by %r", error)
            return False
        if error.code() is grpc.StatusCode.UNIMPLEMENTED:
            _log.warning("load watch: the backend serves no ORCA stream (UNIMPLEMENTED); not asked again")
            return False
        return True

    def _later(self, wait: float, opened: float) -> float:
        """The wait before the stream, opened at ``opened`` and now ended, is opened again, the last wait having
        been ``wait``: 0.1 s after a stream that lived an interval, else twice as long, up to the interval."""
        if self._clock.now() - opened >= self.interval:
            return FIRST_RETRY
        return min(wait * 2, max(self.interval, FIRST_RETRY))


def _serialized(message: Any) -> bytes:
    return bytes(message.SerializeToString())


class LoadWatch(_Watch):
    """Watches the load a backend reports on ``channel``'s ORCA stream, asking for a report every ``interval``
    seconds (default 1; the server may send them less often): :attr:`report` is the latest, :meth:`utilization`
    A58's figure of it, ``on_report`` hears each. One thread per watch, until :meth:`close`; a stream that ends or
    fails is opened again after 0.1 s, doubling while it keeps ending early up to ``interval``; a backend without
    the service (UNIMPLEMENTED) is not asked again, nor a closed channel.

    Feed it to an :class:`~interceptors.AdaptiveThrottle` (``utilization=watch.utilization``) to back off before
    the backend starts refusing::

        watch = LoadWatch(channel)
        throttle = AdaptiveThrottle(utilization=watch.utilization, max_utilization=0.9)
    """

    def __init__(
        self,
        channel: grpc.Channel,
        *,
        interval: options.Duration = 1.0,
        on_report: options.Listener[LoadReport] | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(channel, interval=interval, on_report=on_report, clock=clock)
        self._call: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="interceptors-load-watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        wait = FIRST_RETRY / 2
        while not self._closed:
            opened = self._clock.now()
            try:
                self._call = self._stream(self._request)
                if self._closed:  # closed while it was made: close() may have missed it
                    self._call.cancel()
                for index, message in enumerate(self._call):
                    self._heard(message, index == 0)
            except Exception as error:
                if not self._again(error):
                    return
            wait = self._later(wait, opened)
            if self._stop.wait(wait):
                return

    def close(self) -> None:
        """Stop watching (the stream is cancelled, the thread ends)."""
        self._closed = True
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()
        if threading.current_thread() is not self._thread:  # not from its own on_report
            self._thread.join(5)

    def __enter__(self) -> LoadWatch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AioLoadWatch(_Watch):
    """:class:`LoadWatch` for a ``grpc.aio`` channel: a task of the running event loop (make it in a coroutine),
    until :meth:`aclose`."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        interval: options.Duration = 1.0,
        on_report: options.Listener[LoadReport] | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(channel, interval=interval, on_report=on_report, clock=clock)
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        wait = FIRST_RETRY / 2
        while not self._closed:
            opened, index = self._clock.now(), 0
            try:
                async for message in self._stream(self._request):
                    self._heard(message, index == 0)
                    index += 1
            except Exception as error:
                if not self._again(error):
                    return
            wait = self._later(wait, opened)
            await asyncio.sleep(wait)

    async def aclose(self) -> None:
        """Stop watching (the stream is cancelled, the task ends)."""
        self._closed = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def __aenter__(self) -> AioLoadWatch:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
