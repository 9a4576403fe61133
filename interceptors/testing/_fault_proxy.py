"""FaultProxy: a TCP proxy on loopback whose network faults a test switches while traffic flows."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
import struct
import sys
import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["FaultProxy"]

_CHUNK = 64 * 1024
_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST instead of FIN


def _number(value: object, option: str, unit: str) -> float:
    """A finite number >= 0 of ``unit``; compared exactly, so NaN, infinities and integers too large for a float
    are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= sys.float_info.max:
        shown = f"an integer of {value.bit_length()} bits" if isinstance(value, int) else repr(value)
        raise ValueError(f"FaultProxy: {option} must be a finite number of {unit} >= 0, got {shown}")
    return float(value)


_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
"""A host name or an IPv4 address, in ASCII: no scheme, path, space or port."""


def _address(target: object) -> tuple[str, int]:
    """``host:port``: a host name or IPv4 address (or an IPv6 address in brackets), then a port in 1..65535 in
    ASCII digits."""
    host, colon, port = target.rpartition(":") if isinstance(target, str) else ("", "", "")
    if not (colon and host and port):
        raise ValueError(f"FaultProxy: target must be 'host:port', got {target!r}")
    if not (port.isascii() and port.isdigit()):  # int() also reads Arabic-Indic, fullwidth (any Unicode) digits
        raise ValueError(f"FaultProxy: target must be 'host:port' with a port in ASCII digits, got {target!r}")
    if not 0 < int(port) < 65536:
        raise ValueError(f"FaultProxy: target must be 'host:port' with a port in 1..65535, got {target!r}")
    if host.startswith("[") and host.endswith("]"):
        with contextlib.suppress(ValueError):
            return str(ipaddress.IPv6Address(host[1:-1])), int(port)
    elif _HOST.fullmatch(host):
        return host, int(port)
    raise ValueError(
        "FaultProxy: target must be 'host:port' with a host without a scheme: a name, an IPv4 address or an IPv6 "
        f"host in brackets ([::1]), got {target!r}"
    )


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close ``writer``'s connection with a RST."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
    writer.transport.abort()


class _Link:
    """One client connection and its connection to the target."""

    __slots__ = ("client", "lost", "tasks", "upstream")

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client, self.upstream = client, upstream
        self.lost = False  # bytes were dropped (a blackhole): the byte streams have gaps
        self.tasks: list[asyncio.Task[None]] = []

    def reset(self) -> None:
        for writer in (self.client, self.upstream):
            _reset(writer)
        for task in self.tasks:
            task.cancel()


class _Relay:
    """What a :class:`FaultProxy` runs: its event loop, its thread, its listening socket and its connections. It
    holds no reference to its FaultProxy, so a proxy dropped without ``close()`` can be collected, and its
    finalizer closes this."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.up, self.down = 0.0, 0.0
        self.blackholed = self.refusing = False
        self.rate: float | None = None
        self.links: set[_Link] = set()
        self.accepted = 0
        self.closed = False
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="FaultProxy", daemon=True)
        self._thread.start()
        try:
            self._server = self.run(asyncio.start_server, self._accept, "127.0.0.1", 0)
        except BaseException:
            self._stop_loop()
            raise
        self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        self._thread.name = f"FaultProxy {self.address}"

    def run(self, make: Callable[..., Coroutine[Any, Any, Any]], *args: Any, timeout: float = 10.0) -> Any:
        """Run ``make(*args)`` on the loop and wait for it; a closed proxy says so (the coroutine is not made)."""
        if self.closed:
            raise RuntimeError(f"FaultProxy {self.address} is closed: make a new one")
        return asyncio.run_coroutine_threadsafe(make(*args), self._loop).result(timeout)

    async def switch(self, blackholed: bool, refusing: bool, up: float, down: float, rate: float | None) -> None:
        lifted = self.blackholed and not blackholed
        self.blackholed, self.refusing, self.up, self.down, self.rate = blackholed, refusing, up, down, rate
        if lifted:
            for link in [link for link in self.links if link.lost]:
                link.reset()
                self.links.discard(link)

    async def reset_all(self) -> None:
        for link in list(self.links):
            link.reset()
        self.links.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.refusing:
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            return
        link = _Link(writer, up_writer)
        self.links.add(link)
        link.tasks = [
            asyncio.ensure_future(self._pump(link, reader, up_writer, toward_target=True)),
            asyncio.ensure_future(self._pump(link, up_reader, writer, toward_target=False)),
        ]

    async def _pump(
        self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, toward_target: bool
    ) -> None:
        """Carry bytes one way: read, hold for the delay, write at the allowed rate; dropped while blackholed."""
        loop = asyncio.get_running_loop()
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.ensure_future(self._send(link, held, writer))
        try:
            while data := await reader.read(_CHUNK):
                if self.blackholed:
                    link.lost = True
                    continue
                held.put_nowait((loop.time() + (self.up if toward_target else self.down), data))
            held.put_nowait((loop.time(), b""))  # end of stream
            await sender
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            sender.cancel()
            if link in self.links:  # one side ended: end the other
                self.links.discard(link)
                link.client.transport.abort()
                link.upstream.transport.abort()

    async def _send(self, link: _Link, held: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await held.get()
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            if self.blackholed:
                link.lost = True
                continue
            rate = self.rate
            step = len(data) if rate is None else max(1, int(rate / 50))  # 50 slices a second when limited
            for start in range(0, len(data), step):
                writer.write(data[start : start + step])
                await writer.drain()
                if rate is not None:
                    await asyncio.sleep(min(step, len(data) - start) / rate)

    async def _stop(self) -> None:
        self._server.close()
        await self.reset_all()
        pending = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in pending:  # pumps still finishing a stream that ended
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def close(self) -> None:
        """Stop accepting, reset every connection, stop the thread; once (later calls do nothing)."""
        with self._lock:
            if self.closed:
                return
            try:
                self.run(self._stop)
            finally:
                self.closed = True
                self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()


class FaultProxy:
    """A TCP proxy on 127.0.0.1 between clients and ``target`` (``host:port``), run by an event loop in a thread of
    its own, switched between faults while calls flow through it. Clients dial :attr:`address`.

    - :meth:`pass_through`: no fault (how it starts).
    - :meth:`delay` ``(up, down)``: each chunk of bytes is held ``up`` seconds on its way to the target, ``down`` on
      its way back; order is kept. Applies to bytes read from then on.
    - :meth:`blackhole`: connections are accepted and kept open, and every byte either way is dropped: peers learn
      only from their deadlines and keepalives. Leaving it resets the connections that lost bytes (a proxy cannot
      retransmit them as TCP would; their streams have gaps).
    - :meth:`reset`: every open connection is reset (RST to both sides) now.
    - :meth:`refuse`: new connections are reset as soon as they are accepted; open ones live on.
    - :meth:`bandwidth` ``(bytes_per_second)``: each direction of each connection carries at most that (None:
      unlimited).

    A target that cannot be reached resets the client's connection, as a closed port would. Use it as a context
    manager, or :meth:`close` it: after that every method raises RuntimeError saying the proxy is closed (``close``
    itself does nothing again). A proxy dropped without ``close`` is closed when it is garbage-collected.
    ``accepted`` counts the connections accepted, ``open`` those open now.

    ``target`` is a host name or an IPv4 address (an IPv6 address in brackets), without a scheme, and a port in
    ASCII digits.
    """

    def __init__(self, target: str) -> None:
        self._relay = _Relay(_address(target))
        self._finalizer = weakref.finalize(self, self._relay.close)
        self.address: str = self._relay.address
        """What clients dial: ``127.0.0.1:port``."""

    def pass_through(self) -> None:
        """No fault: bytes flow as they come."""
        self._relay.run(self._relay.switch, False, False, 0.0, 0.0, None)

    def delay(self, up: float = 0.0, down: float = 0.0) -> None:
        """Hold each chunk ``up`` seconds toward the target and ``down`` seconds back (other faults are lifted)."""
        up, down = _number(up, "up", "seconds"), _number(down, "down", "seconds")
        self._relay.run(self._relay.switch, False, False, up, down, None)

    def blackhole(self) -> None:
        """Accept connections, keep them open, drop every byte."""
        relay = self._relay
        relay.run(relay.switch, True, relay.refusing, relay.up, relay.down, relay.rate)

    def refuse(self) -> None:
        """Reset every new connection at once (open connections live on)."""
        relay = self._relay
        relay.run(relay.switch, relay.blackholed, True, relay.up, relay.down, relay.rate)

    def bandwidth(self, bytes_per_second: float | None) -> None:
        """Carry at most ``bytes_per_second`` each way on each connection (None: unlimited)."""
        rate = None
        if bytes_per_second is not None:
            rate = _number(bytes_per_second, "bytes_per_second", "bytes per second")
            if rate == 0:
                raise ValueError("FaultProxy: bytes_per_second must be above 0 (blackhole() drops everything)")
        relay = self._relay
        relay.run(relay.switch, relay.blackholed, relay.refusing, relay.up, relay.down, rate)

    def reset(self) -> None:
        """Reset every open connection (RST both ways) now."""
        self._relay.run(self._relay.reset_all)

    @property
    def accepted(self) -> int:
        """Connections accepted so far."""
        return self._relay.accepted

    @property
    def open(self) -> int:
        """Connections open now."""
        return len(self._relay.links)

    def close(self) -> None:
        """Stop accepting, reset every connection, stop the thread (again: nothing)."""
        self._finalizer()

    def __enter__(self) -> FaultProxy:
        if self._relay.closed:
            raise RuntimeError(f"FaultProxy {self.address} is closed: make a new one")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        host, port = self._relay.target
        state = "closed" if self._relay.closed else f"open={self.open}"
        return f"FaultProxy({self.address} -> {host}:{port}, {state})"
