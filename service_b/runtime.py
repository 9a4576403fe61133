"""What both demo services share: JSON logs, a gRPC server with health and reflection, command-line checks."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pythonjsonlogger.json import JsonFormatter

from interceptors.server import AioAccessLog


def setup_logging(service: str) -> logging.Logger:
    """JSON lines on stdout, like the article's slog output: time, level, msg, and any extra fields."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        JsonFormatter(
            "{levelname}{message}",
            style="{",
            rename_fields={"levelname": "level", "message": "msg"},
            static_fields={"service": service},
            timestamp="time",
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    return logging.getLogger(service)


MAX_REQUEST_BYTES = 8 * 1024 * 1024
"""The largest request grpc's core takes in. Larger ones it refuses (RESOURCE_EXHAUSTED) before any Python code,
so before the access log, sees them; below it, an undecodable request is answered INVALID_ARGUMENT and logged."""


async def start_server(
    host: str, port: int, services: Sequence[tuple[Any, Any, str]], *, interceptors: Sequence[Any] = ()
) -> tuple[grpc.aio.Server, int]:
    """A started aio server with ``services`` ((servicer, add_function, full service name)), the standard health
    service (SERVING) and reflection, and an access log line per request, the first of its ``interceptors``.
    Returns it and the port it bound."""
    server = grpc.aio.server(
        interceptors=[AioAccessLog(logging.getLogger("access")), *interceptors],
        options=[
            ("grpc.so_reuseport", 0),  # a port in use is an error, not shared with a stale process
            ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
        ],
    )
    health_servicer = health.aio.HealthServicer()
    names = [name for _, _, name in services]
    for servicer, add, _ in services:
        add(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        logging.getLogger("startup").error(f"cannot listen on {host}:{port}")
        raise SystemExit(1)
    await server.start()
    for name in ("", *names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, bound


MAX_SECONDS = 24 * 3600.0
"""The longest duration a command line takes (a day): far beyond the demo's waits, and within every limit further
on (the policies' year, grpc's int32 milliseconds of pushback)."""

MAX_CALLS = 100_000
"""The most calls a command line may count (as the library's limits)."""

_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
"""A number in ASCII: float() also reads other scripts' digits, "1_0", " 1", "nan" and "inf"."""


def _number(text: str, what: str) -> float:
    if not _DECIMAL.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what} (ASCII digits)")
    return float(text)


def seconds(text: str) -> float:
    """An argparse type: a number of seconds from 0 to a day."""
    value = _number(text, "a number of seconds")
    if not 0 <= value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0 seconds and at most {MAX_SECONDS:g} (a day)")
    return value


def rate(text: str) -> float:
    """An argparse type: a probability in 0..1."""
    value = _number(text, "a number")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 1")
    return value


def whole(minimum: int, maximum: int) -> Callable[[str], int]:
    """An argparse type: a whole number in ``minimum..maximum``, in ASCII digits (int() reads any script's)."""

    def parse(text: str) -> int:
        if not (text.isascii() and text.isdigit() and len(text) <= 20) or not minimum <= int(text) <= maximum:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number in {minimum}..{maximum}")
        return int(text)

    return parse


positive = whole(1, MAX_CALLS)
"""An argparse type: a whole number of calls >= 1."""

seed = whole(0, 2**64 - 1)
"""An argparse type: a seed for random faults."""


def port(text: str) -> int:
    """An argparse type: a TCP port in ASCII digits, 0 for any free one."""
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0..65535)")
    return int(text)


TARGET_SCHEMES = ("dns", "unix", "unix-abstract", "ipv4", "ipv6", "vsock")


def target(text: str) -> str:
    """An argparse type: a gRPC target to dial, ``host:port`` (``[v6 address]:port``) or a URI such as
    ``dns:///host:port`` or ``unix:/path``. Only its form is checked: the server may well be down for now."""
    scheme, _, rest = text.partition(":")
    if scheme in TARGET_SCHEMES and rest and not any(c.isspace() for c in text):
        return text
    host, _, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""  # an IPv6 address needs brackets before its port
    bad_host = not host or any(c.isspace() or c in "/?#@[]" for c in host)
    bad_port = not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5)
    if bad_host or bad_port or not 1 <= int(port_text) <= 65535:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a gRPC target: give host:port with a port in 1..65535, or a URI such as unix:/path"
        )
    return text
