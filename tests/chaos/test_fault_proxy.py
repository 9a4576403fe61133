"""FaultProxy: each fault, seen by raw sockets and by gRPC calls (sync and aio servers) through it."""

from __future__ import annotations

import contextlib
import gc
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from interceptors.testing import FaultProxy

from ..support.clients import Client, wait_until
from ..support.server import Request, ScriptedServer


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with contextlib.suppress(ConnectionError):
            while data := self.request.recv(65536):
                self.request.sendall(data)


@pytest.fixture
def echo() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def dial(proxy: FaultProxy) -> socket.socket:
    host, port = proxy.address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=5)
    return sock


def assert_reset(proxy: FaultProxy) -> None:
    """A new connection is reset: at once (on a loaded machine, while connect() still runs) or at the first read."""
    with pytest.raises(ConnectionResetError), dial(proxy) as sock:
        sock.recv(1)


def received(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def test_bytes_pass_both_ways(echo: str) -> None:
    with FaultProxy(echo) as proxy, dial(proxy) as sock:
        sock.sendall(b"hello")
        assert received(sock, 5) == b"hello"
        assert proxy.accepted == 1 and proxy.open == 1


def test_a_delay_holds_each_way(echo: str) -> None:
    with FaultProxy(echo) as proxy, dial(proxy) as sock:
        sock.sendall(b"warm")
        assert received(sock, 4) == b"warm"
        proxy.delay(up=0.1, down=0.05)
        started = time.monotonic()
        sock.sendall(b"slow")
        assert received(sock, 4) == b"slow"
        assert 0.15 <= time.monotonic() - started < 1.0


def test_a_blackhole_drops_everything_and_keeps_the_socket_open(echo: str) -> None:
    with FaultProxy(echo) as proxy, dial(proxy) as sock:
        proxy.blackhole()
        sock.sendall(b"lost")
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sock.recv(4)  # no answer, and no FIN or RST either
        assert proxy.open == 1
        with dial(proxy) as other:  # new connections are accepted too, and hear nothing
            other.sendall(b"x")
            other.settimeout(0.1)
            with pytest.raises(TimeoutError):
                other.recv(1)
            proxy.pass_through()  # both lost bytes: reset
            other.settimeout(5)
            with pytest.raises(ConnectionResetError):
                other.recv(1)
        with dial(proxy) as fresh:
            fresh.sendall(b"back")
            assert received(fresh, 4) == b"back"


def test_reset_sends_rst_to_open_connections(echo: str) -> None:
    with FaultProxy(echo) as proxy, dial(proxy) as sock:
        sock.sendall(b"a")
        assert received(sock, 1) == b"a"
        proxy.reset()
        with pytest.raises(ConnectionResetError):
            sock.recv(1)
        assert proxy.open == 0


def test_refused_connections_are_reset_and_open_ones_live_on(echo: str) -> None:
    with FaultProxy(echo) as proxy, dial(proxy) as sock:
        sock.sendall(b"a")
        assert received(sock, 1) == b"a"
        proxy.refuse()
        assert_reset(proxy)
        sock.sendall(b"b")
        assert received(sock, 1) == b"b"


def test_bandwidth_limits_each_direction(echo: str) -> None:
    with FaultProxy(echo) as proxy, dial(proxy) as sock:
        proxy.bandwidth(100_000)
        started = time.monotonic()
        sock.sendall(b"x" * 20_000)
        assert len(received(sock, 20_000)) == 20_000
        assert 0.15 <= time.monotonic() - started < 2  # 0.2 s each way, the two ways overlapping
        proxy.bandwidth(None)


def test_an_unreachable_target_resets_the_client() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with FaultProxy(f"127.0.0.1:{port}") as proxy:
        assert_reset(proxy)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: FaultProxy("nowhere"), "target must be 'host:port'"),
        (lambda: FaultProxy("host:0"), "target must be 'host:port'"),
        (lambda: FaultProxy(5), "target must be 'host:port'"),  # type: ignore[arg-type]
        (lambda: FaultProxy("http://127.0.0.1:80"), "a host without a scheme"),
        (lambda: FaultProxy("dns:///localhost:80"), "a host without a scheme"),
        (lambda: FaultProxy("127.0.0.1:\u0668\u0660"), "ASCII digits"),  # Arabic-Indic 80: int() reads it
        (lambda: FaultProxy("127.0.0.1:\uff18\uff10"), "ASCII digits"),  # fullwidth 80
        (lambda: FaultProxy("127.0.0.1:+80"), "ASCII digits"),
        (lambda: FaultProxy("127.0.0.1:65536"), "port in 1..65535"),
        (lambda: FaultProxy("::1:80"), "an IPv6 host in brackets"),
        (lambda: FaultProxy("[nope]:80"), "an IPv6 host in brackets"),
        (lambda: FaultProxy("bad host:80"), "a host without a scheme"),
        (lambda: FaultProxy("h\u00f6st:80"), "a host without a scheme"),
    ],
)
def test_wrong_targets_are_refused(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


@pytest.mark.parametrize("target", ["localhost:{port}", "127.0.0.1:{port}", "[::1]:{port}"])
def test_hosts_names_ipv4_and_bracketed_ipv6_are_targets(target: str) -> None:
    with FaultProxy(target.format(port=50051)) as proxy:
        assert proxy.address.startswith("127.0.0.1:")


@pytest.mark.parametrize(
    "use",
    [
        lambda p: p.pass_through(),
        lambda p: p.delay(up=0.01),
        lambda p: p.blackhole(),
        lambda p: p.refuse(),
        lambda p: p.bandwidth(1000),
        lambda p: p.bandwidth(None),
        lambda p: p.reset(),
        lambda p: p.__enter__(),
    ],
    ids=["pass_through", "delay", "blackhole", "refuse", "bandwidth", "unlimited", "reset", "enter"],
)
def test_a_closed_proxy_says_it_is_closed(echo: str, use: object) -> None:
    proxy = FaultProxy(echo)
    proxy.close()
    with pytest.raises(RuntimeError, match=r"FaultProxy .* is closed"):
        use(proxy)  # type: ignore[operator]
    proxy.close()  # closing again does nothing
    assert proxy.open == 0 and "closed" in repr(proxy)


def proxy_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name.startswith("FaultProxy")}


def test_a_proxy_dropped_without_close_stops_its_thread(echo: str) -> None:
    before = proxy_threads()
    proxy = FaultProxy(echo)
    with dial(proxy) as sock:
        sock.sendall(b"a")
        assert received(sock, 1) == b"a"
        (thread,) = proxy_threads() - before
        del proxy
        gc.collect()
        wait_until(lambda: not thread.is_alive())
        with pytest.raises(ConnectionResetError):  # its connections were reset as by close()
            sock.recv(1)


@pytest.mark.parametrize(
    ("switch", "message"),
    [
        (lambda p: p.delay(up=-1), "up must be a finite number of seconds"),
        (lambda p: p.delay(down=float("nan")), "down must be a finite number of seconds"),
        (lambda p: p.delay(up="1"), "up must be"),
        (lambda p: p.delay(down=10**400), "down must be a finite number of seconds"),  # OverflowError before
        (lambda p: p.bandwidth(0), "bytes_per_second must be above 0"),
        (lambda p: p.bandwidth(-5), "bytes_per_second must be a finite number of bytes per second"),
        (lambda p: p.bandwidth(float("inf")), "bytes_per_second must be a finite number of bytes per second"),
    ],
)
def test_wrong_fault_options_are_refused(echo: str, switch: object, message: str) -> None:
    with FaultProxy(echo) as proxy, pytest.raises(ValueError, match=message):
        switch(proxy)  # type: ignore[operator]


@pytest.mark.parametrize("path", ["call", "aio"])
def test_grpc_calls_through_the_proxy_see_each_fault(server: ScriptedServer, path: str) -> None:
    with FaultProxy(server.target) as proxy, Client(path, proxy.address) as client:
        assert client.unary(Request(id="ok"), timeout=5).error is None
        proxy.blackhole()
        lost = client.unary(Request(id="lost"), timeout=0.3)
        assert lost.code is grpc.StatusCode.DEADLINE_EXCEEDED and lost.elapsed < 0.3 + 0.2
        proxy.pass_through()
        wait_until(lambda: client.unary(Request(id="again"), timeout=1).error is None, timeout=10)
        slow = client.in_thread(Request(id="in-flight", sleep_ms=2000), timeout=5)
        wait_until(lambda: server.attempts("in-flight") == 1)
        proxy.reset()
        ended = slow()
        assert ended.code is grpc.StatusCode.UNAVAILABLE and ended.elapsed < 1.5
