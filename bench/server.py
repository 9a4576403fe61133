"""The benchmarks' backend: the demo's service B in a process of its own, recording every call it sees.

python -m bench.server --port-file F --record-file R [--port N] [--grace S] [--delay S] [--fail-rate R]
    [--slow-rate R] [--slow-delay S] [--retry-after S] [--seed N] [--max-connection-age-ms N] [--down 1]

Faults come from the library's injector. SIGUSR1 starts an outage (every call UNAVAILABLE, no pushback: a backend
that cannot say when to come back), SIGUSR2 ends it. On SIGTERM it writes the monotonic time of every call it saw,
and of each switch, to the record file (CLOCK_MONOTONIC is shared by the processes of one machine), after a
graceful stop of ``--grace`` seconds (a GOAWAY; calls in flight may finish). ``--port`` binds that port (0: a free
one), so that a backend killed can come back where its clients look for it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import grpc
from demo.v1 import service_b_pb2_grpc

from interceptors.server import AioFaultInjection, Faults
from service_b.app import ServiceB


class Recorder(grpc.aio.ServerInterceptor):
    """Notes the arrival time of every call, before any fault is injected."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        self.calls.append(time.monotonic())
        return await continuation(handler_call_details)


async def main(args: argparse.Namespace) -> None:
    faults = Faults(
        delay=args.delay,
        fail_rate=args.fail_rate,
        slow_rate=args.slow_rate,
        slow_delay=args.slow_delay,
        retry_after=args.retry_after,
        seed=args.seed,
    )
    if args.down:  # down from the start, saying nothing of when to come back
        faults = Faults(down=True, retry_after=None)
    recorder, injector = Recorder(), AioFaultInjection(faults)
    # a port in use is an error, except one the benchmark held for this restart (bench.backend.Backend._hold)
    options: list[tuple[str, Any]] = [("grpc.so_reuseport", args.shared_port)]
    if args.max_connection_age_ms:  # a graceful GOAWAY on every connection that old
        options += [
            ("grpc.max_connection_age_ms", args.max_connection_age_ms),
            ("grpc.max_connection_age_grace_ms", 5000),
        ]
    server = grpc.aio.server(interceptors=[recorder, injector], options=options)
    service_b_pb2_grpc.add_ServiceBServicer_to_server(ServiceB(), server)
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    await server.start()
    switches: list[tuple[float, str]] = []
    stopping = asyncio.Event()

    def switch(outage: bool) -> None:
        injector.faults = Faults(down=True, retry_after=None) if outage else faults
        switches.append((time.monotonic(), "outage" if outage else "healthy"))

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, switch, True)
    loop.add_signal_handler(signal.SIGUSR2, switch, False)
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    args.port_file.write_text(str(port))
    await stopping.wait()
    await server.stop(grace=args.grace)
    args.record_file.write_text(json.dumps({"calls": recorder.calls, "switches": switches}))


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--record-file", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--shared-port", type=int, default=0, help="1: share --port with the socket holding it")
    parser.add_argument("--grace", type=float, default=0.0, help="seconds calls in flight get when stopped")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--slow-rate", type=float, default=0.0)
    parser.add_argument("--slow-delay", type=float, default=0.0)
    parser.add_argument("--retry-after", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--max-connection-age-ms", type=int, default=0)
    parser.add_argument("--down", type=int, default=0, help="1: every call UNAVAILABLE from the start")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
