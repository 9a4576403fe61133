"""The balance benchmark's backends, answering their ``--name``:

- ``--kind sync``: the one method burns ``--work`` seconds of CPU (pure Python, holding the GIL, as a busy handler
  does); ``--reports on`` puts an ORCA load report (CPU as a share of one CPU, sampled every 0.2 s) in every
  call's trailers;
- ``--kind aio``: the one method awaits ``--work`` seconds, but every ``--stall-every``-th call blocks the event
  loop ``--stall`` seconds (a handler's bug); ``--max-lag S`` sheds calls while the loop runs S seconds late.

python -m bench.balance_server --port-file F --name N [--kind sync|aio] [--work S] [--reports on|off]
    [--stall-every N] [--stall S] [--max-lag S]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from interceptors.server import AioLoadShedding, LoadReporting, ServerLoad


def _bytes(value: bytes) -> bytes:
    return value


def _service(work: Any) -> Any:
    handler = grpc.unary_unary_rpc_method_handler(work, request_deserializer=_bytes, response_serializer=_bytes)
    return grpc.method_handlers_generic_handler("bench.Balance", {"Work": handler})


def sync_main(args: argparse.Namespace) -> None:
    name: bytes = args.name.encode()

    def work(request: bytes, context: Any) -> bytes:
        ends = time.thread_time() + args.work
        while time.thread_time() < ends:
            pass
        return name

    chain: list[Any] = [LoadReporting(ServerLoad(interval=0.2, cpus=1))] if args.reports == "on" else []
    server = grpc.server(futures.ThreadPoolExecutor(16), interceptors=chain, options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((_service(work),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    Path(args.port_file).write_text(str(port))
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    stopping.wait()
    server.stop(None)


async def aio_main(args: argparse.Namespace) -> None:
    name: bytes = args.name.encode()
    served = itertools.count(1)

    async def work(request: bytes, context: Any) -> bytes:
        if args.stall_every and next(served) % args.stall_every == 0:
            time.sleep(args.stall)  # noqa: ASYNC251 (the bug: a blocking call on the event loop)
        await asyncio.sleep(args.work)
        return name

    chain: list[Any] = []
    if args.max_lag:
        chain.append(AioLoadShedding(load=ServerLoad(interval=0.1), max_lag=args.max_lag, pushback=0.001))
    server = grpc.aio.server(interceptors=chain, options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((_service(work),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    Path(args.port_file).write_text(str(port))  # noqa: ASYNC240 (once, before any call)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await stopping.wait()
    await server.stop(None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--kind", choices=["sync", "aio"], default="sync")
    parser.add_argument("--work", type=float, default=0.0005)
    parser.add_argument("--reports", choices=["on", "off"], default="on")
    parser.add_argument("--stall-every", type=int, default=0)
    parser.add_argument("--stall", type=float, default=0.1)
    parser.add_argument("--max-lag", type=float, default=0.0)
    arguments = parser.parse_args()
    if arguments.kind == "sync":
        sync_main(arguments)
    else:
        asyncio.run(aio_main(arguments))
