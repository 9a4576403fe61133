"""FaultProxy: a TCP proxy on loopback whose network faults a test switches while traffic flows."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
import threading
from typing import Any

__all__ = ["FaultProxy"]

_CHUNK = 64 * 1024
_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST instead of FIN


def _seconds(value: object, option: str) -> float:
    # compared exactly: NaN, infinities and integers too large for a float are all outside
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= sys.float_info.max:
        shown = f"an integer of {value.bit_length()} bits" if isinstance(value, int) else repr(value)
        raise ValueError(f"FaultProxy: {option} must be a finite number of seconds >= 0, got {shown}")
    return float(value)


def _address(target: object) -> tuple[str, int]:
    host, colon, port = target.rpartition(":") if isinstance(target, str) else ("", "", "")
    if not (colon and host and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"FaultProxy: target must be 'host:port', got {target!r}")
    return host.strip("[]"), int(port)


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
    manager, or :meth:`close` it. ``accepted`` counts the connections accepted, ``open`` those open now.
    """

    def __init__(self, target: str) -> None:
        self._target = _address(target)
        self._up, self._down = 0.0, 0.0
        self._blackholed = self._refusing = False
        self._rate: float | None = None
        self._links: set[_Link] = set()
        self.accepted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="FaultProxy", daemon=True)
        self._thread.start()
        self._server = self._run(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        """What clients dial: ``127.0.0.1:port``."""

    def _run(self, coroutine: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _switch(self, blackholed: bool, refusing: bool, up: float, down: float, rate: float | None) -> None:
        lifted = self._blackholed and not blackholed
        self._blackholed, self._refusing, self._up, self._down, self._rate = blackholed, refusing, up, down, rate
        if lifted:
            for link in [link for link in self._links if link.lost]:
                link.reset()
                self._links.discard(link)

    def pass_through(self) -> None:
        """No fault: bytes flow as they come."""
        self._run(self._switch(False, False, 0.0, 0.0, None))

    def delay(self, up: float = 0.0, down: float = 0.0) -> None:
        """Hold each chunk ``up`` seconds toward the target and ``down`` seconds back (other faults are lifted)."""
        self._run(self._switch(False, False, _seconds(up, "up"), _seconds(down, "down"), None))

    def blackhole(self) -> None:
        """Accept connections, keep them open, drop every byte."""
        self._run(self._switch(True, self._refusing, self._up, self._down, self._rate))

    def refuse(self) -> None:
        """Reset every new connection at once (open connections live on)."""
        self._run(self._switch(self._blackholed, True, self._up, self._down, self._rate))

    def bandwidth(self, bytes_per_second: float | None) -> None:
        """Carry at most ``bytes_per_second`` each way on each connection (None: unlimited)."""
        if bytes_per_second is not None:
            rate = _seconds(bytes_per_second, "bytes_per_second")
            if rate == 0:
                raise ValueError("FaultProxy: bytes_per_second must be above 0 (blackhole() drops everything)")
        self._run(self._switch(self._blackholed, self._refusing, self._up, self._down, bytes_per_second))

    def reset(self) -> None:
        """Reset every open connection (RST both ways) now."""

        async def reset_all() -> None:
            for link in list(self._links):
                link.reset()
            self._links.clear()

        self._run(reset_all())

    @property
    def open(self) -> int:
        """Connections open now."""
        return len(self._links)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._refusing:
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            _reset(writer)
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
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
                if self._blackholed:
                    link.lost = True
                    continue
                held.put_nowait((loop.time() + (self._up if toward_target else self._down), data))
            held.put_nowait((loop.time(), b""))  # end of stream
            await sender
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            sender.cancel()
            if link in self._links:  # one side ended: end the other
                self._links.discard(link)
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
            if self._blackholed:
                link.lost = True
                continue
            rate = self._rate
            step = len(data) if rate is None else max(1, int(rate / 50))  # 50 slices a second when limited
            for start in range(0, len(data), step):
                writer.write(data[start : start + step])
                await writer.drain()
                if rate is not None:
                    await asyncio.sleep(min(step, len(data) - start) / rate)

    def close(self) -> None:
        """Stop accepting, reset every connection, stop the thread."""
        if not self._loop.is_running():
            return

        async def stop() -> None:
            self._server.close()
            for link in list(self._links):
                link.reset()
            self._links.clear()
            pending = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in pending:  # pumps still finishing a stream that ended
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        self._run(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FaultProxy({self.address} -> {self._target[0]}:{self._target[1]}, open={self.open})"
