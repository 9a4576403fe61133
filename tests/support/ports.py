"""Ports for servers that tests stop and start again on the same port."""

from __future__ import annotations

import errno
import random
import socket
from pathlib import Path


def free_port(*, bus: bool = False) -> int:
    """A free port of 127.0.0.1 below the kernel's ephemeral range, so that a server stopped and started again on
    it finds it free: no bind to port 0 and no outgoing connection of any process takes it meanwhile (two suites at
    once do both all the time), only a bind to it by number; with ``bus``, one whose cluster bus port (+10 000) is
    free too."""
    low = _EPHEMERAL_LOW - (10_000 if bus else 0)
    for _ in range(1000):
        port = random.randrange(10_000, low)
        try:
            for each in (port, port + 10_000) if bus else (port,):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", each))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            continue
        return port
    raise RuntimeError(f"no free port of 127.0.0.1 between 10 000 and {low} in 1 000 tries")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):  # not Linux: IANA's range
        return 49_152


_EPHEMERAL_LOW = max(_ephemeral_low(), 25_000)
"""Where the ephemeral range begins (a range that begins lower than 25 000 leaves this too few ports below it: the
ports then chosen may be ephemeral ones)."""
