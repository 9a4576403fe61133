"""Starting, steering and reading the benchmark backend (bench/server.py) from the benchmark process."""

from __future__ import annotations

import json
import os
import signal
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
        self.calls: list[float] = []
        self.switches: list[tuple[float, str]] = []

    def outage(self, on: bool) -> None:
        self._process.send_signal(signal.SIGUSR1 if on else signal.SIGUSR2)

    def kill(self) -> None:
        """SIGKILL: the process dies at once; the kernel resets its connections."""
        self._process.kill()
        self._process.wait(20)

    def pause(self, paused: bool) -> None:
        """SIGSTOP (True) or SIGCONT (False): the process freezes, its connections stay open and fill up."""
        self._process.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM: a graceful stop (GOAWAY, then ``grace`` seconds for the calls in flight)."""
        self._process.terminate()
        self._process.wait(20)

    def restart(self) -> None:
        """Start again on the same port (after :meth:`kill` or :meth:`stop`)."""
        port = self.target.rpartition(":")[2]
        directory = Path(self._dir.name, f"restart-{time.monotonic_ns()}")
        directory.mkdir()
        self._process, _ = _start(
            "bench.server", str(directory), record_file=self._record_file, port=port, **self._faults
        )

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
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
