"""A scripted server (see :mod:`.server`) in a process of its own, for load tests whose client process must be the
only one measured: ``python -m tests.support.remote sync|aio`` prints its port, and serves until its stdin ends
(the test process closing the pipe, or dying)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class RemoteServer:
    """A running server process of ``kind`` ("sync" or "aio"); ``target`` to dial; :meth:`stop` ends it."""

    def __init__(self, kind: str = "aio") -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.remote", kind],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self._process.stdout is not None
        port = self._process.stdout.readline().decode().strip()
        if not port.isdigit():
            self.stop()
            raise RuntimeError(f"the server process did not start (it said {port!r})")
        self.target = f"127.0.0.1:{port}"

    def stop(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def _serve(kind: str) -> None:
    import os

    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from .server import ScriptedServer

    server = ScriptedServer(kind)
    print(server.port, flush=True)
    sys.stdin.read()  # until the test process closes the pipe
    server.stop()


if __name__ == "__main__":
    _serve(sys.argv[1])
