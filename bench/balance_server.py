"""The balance benchmark's backend: a sync server whose one method burns ``--work`` seconds of CPU (pure Python,
holding the GIL, as a busy handler does), reporting its load per call (``--reports on``: ORCA, CPU as a share of
one CPU, sampled every 0.2 s) or not. It answers its ``--name``.

python -m bench.balance_server --port-file F --name N --work S --reports on|off
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from interceptors.server import LoadReporting, ServerLoad

METHOD = "/bench.Balance/Work"


def _bytes(value: bytes) -> bytes:
    return value


def main(args: argparse.Namespace) -> None:
    name: bytes = args.name.encode()

    def work(request: bytes, context: Any) -> bytes:
        ends = time.thread_time() + args.work
        while time.thread_time() < ends:
            pass
        return name

    chain: list[Any] = [LoadReporting(ServerLoad(interval=0.2, cpus=1))] if args.reports == "on" else []
    handler = grpc.unary_unary_rpc_method_handler(work, request_deserializer=_bytes, response_serializer=_bytes)
    server = grpc.server(futures.ThreadPoolExecutor(16), interceptors=chain, options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Balance", {"Work": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    Path(args.port_file).write_text(str(port))
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    stopping.wait()
    server.stop(None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--work", type=float, default=0.0005)
    parser.add_argument("--reports", choices=["on", "off"], default="on")
    main(parser.parse_args())
