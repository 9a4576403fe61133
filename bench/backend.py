"""Starting, steering and reading the benchmark backend (bench/server.py) from the benchmark process."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _start(module: str, directory: str, **options: object) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``python -m module --port-file ... --option=value ...``; returns the process and its target."""
    port_file = Path(directory, f"{module}.port")
    arguments = [f"--{name.replace('_', '-')}={value}" for name, value in options.items()]
    process = subprocess.Popen(
        [sys.executable, "-m", module, f"--port-file={port_file}", *arguments],
        cwd=ROOT,
        env={**os.environ, "GRPC_VERBOSITY": "ERROR"},
    )
    deadline = time.monotonic() + 20
    while not (port_file.exists() and port_file.read_text()):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{module} did not start")
        time.sleep(0.02)
    return process, f"127.0.0.1:{port_file.read_text()}"


class Hop:
    """A relay process (bench/relay.py) serving callers by calling ``downstream`` through ``chain``'s policies,
    passing deadlines on by ``propagation`` ("library" or "manual")."""

    def __init__(self, downstream: str, chain: str, propagation: str = "library") -> None:
        self._dir = tempfile.TemporaryDirectory()
        self._process, self.target = _start(
            "bench.relay", self._dir.name, downstream=downstream, chain=chain, propagation=propagation
        )

    def __enter__(self) -> Hop:
        return self

    def __exit__(self, *exc: object) -> None:
        self._process.terminate()
        self._process.wait(20)
        self._dir.cleanup()


class Backend:
    """A running backend process; ``target`` to dial. Leaving the ``with`` block stops it and reads its record."""

    def __init__(self, **faults: float) -> None:
        self._dir = tempfile.TemporaryDirectory()
        self._record_file = Path(self._dir.name, "record.json")
        self._faults = faults
        self._process, self.target = _start("bench.server", self._dir.name, record_file=self._record_file, **faults)
        self._held: socket.socket | None = None
        self.calls: list[float] = []
        self.switches: list[tuple[float, str]] = []

    def outage(self, on: bool) -> None:
        self._process.send_signal(signal.SIGUSR1 if on else signal.SIGUSR2)

    def kill(self) -> None:
        """SIGKILL: the process dies at once; the kernel resets its connections."""
        self._process.kill()
        self._process.wait(20)
        self._hold()

    def pause(self, paused: bool) -> None:
        """SIGSTOP (True) or SIGCONT (False): the process freezes, its connections stay open and fill up."""
        self._process.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM: a graceful stop (GOAWAY, then ``grace`` seconds for the calls in flight)."""
        self._process.terminate()
        self._process.wait(20)
        self._hold()

    def restart(self) -> None:
        """Start again on the same port (after :meth:`kill` or :meth:`stop`), sharing it with the socket that held
        it meanwhile (see :meth:`_hold`), then letting go of that."""
        if self._process.poll() is None:
            raise RuntimeError("the backend is running: stop or kill it first")
        shared = {"shared_port": 1} if self._held is not None else {}
        port = self.target.rpartition(":")[2]
        directory = Path(self._dir.name, f"restart-{time.monotonic_ns()}")
        directory.mkdir()
        try:
            self._process, _ = _start(
                "bench.server", str(directory), record_file=self._record_file, port=port, **shared, **self._faults
            )
        finally:
            self._let_go()

    def _hold(self) -> None:
        """Keep the port while no backend listens on it: a socket bound to it, not listening, which a restarted
        backend shares (SO_REUSEPORT). No bind to port 0 and no outgoing connection takes the port meanwhile (two
        suites at once do both all the time: one took it between a kill and the restart 0.5 s later); a bind to it
        by number still may. Where a process listens on it already (it took the port as the backend died), nothing
        is held, and the restart fails saying the port is in use."""
        port = int(self.target.rpartition(":")[2])
        held = socket.socket()
        try:
            held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the dead backend's closing connections
            held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            held.bind(("127.0.0.1", port))
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) != errno.ECONNREFUSED:  # another's, sharing the port
                    raise OSError(errno.EADDRINUSE, "a process listens on the port")
        except OSError:
            held.close()
            return
        self._let_go()
        self._held = held

    def _let_go(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self._let_go()
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)
            self._process.terminate()
            self._process.wait(20)
        if self._record_file.exists():
            record: dict[str, Any] = json.loads(self._record_file.read_text())
            self.calls, self.switches = record["calls"], [tuple(s) for s in record["switches"]]
        self._dir.cleanup()

    def calls_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.calls if start <= t < end)
