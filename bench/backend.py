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


class Backend:
    """A running backend process; ``target`` to dial. Leaving the ``with`` block stops it and reads its record."""

    def __init__(self, **faults: float) -> None:
        self._dir = tempfile.TemporaryDirectory()
        port_file, self._record_file = Path(self._dir.name, "port"), Path(self._dir.name, "record.json")
        options = [f"--{name.replace('_', '-')}={value}" for name, value in faults.items()]
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.server",
                f"--port-file={port_file}",
                f"--record-file={self._record_file}",
                *options,
            ],
            cwd=ROOT,
            env={**os.environ, "GRPC_VERBOSITY": "ERROR"},
        )
        deadline = time.monotonic() + 20
        while not (port_file.exists() and port_file.read_text()):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self._process.kill()
                raise RuntimeError("the benchmark backend did not start")
            time.sleep(0.02)
        self.target = f"127.0.0.1:{port_file.read_text()}"
        self.calls: list[float] = []
        self.switches: list[tuple[float, str]] = []

    def outage(self, on: bool) -> None:
        self._process.send_signal(signal.SIGUSR1 if on else signal.SIGUSR2)

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self._process.terminate()
        self._process.wait(20)
        if self._record_file.exists():
            record: dict[str, Any] = json.loads(self._record_file.read_text())
            self.calls, self.switches = record["calls"], [tuple(s) for s in record["switches"]]
        self._dir.cleanup()

    def calls_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.calls if start <= t < end)
