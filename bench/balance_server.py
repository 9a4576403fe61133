"""The balance benchmark's backends, answering their ``--name``:

- ``--kind sync``: the one method burns ``--work`` seconds of CPU (pure Python, holding the GIL, as a busy handler
  does); ``--reports on`` puts an ORCA load report (CPU as a share of one CPU, sampled every 0.2 s) in every
  call's trailers, ``--reports oob`` serves them out of band (every 0.1 s at most); ``--limit N`` sheds calls past
  N at once; ``--record-file R`` gets, on SIGTERM, the calls served and refused;
- ``--kind aio``: the one method awaits ``--work`` seconds, but every ``--stall-every``-th call blocks the event
  loop ``--stall`` seconds (a handler's bug); ``--max-lag S`` sheds calls while the loop runs S seconds late,
  ``--limit N`` past N calls at once; ``--reports`` and ``--record-file`` as for sync.

python -m bench.balance_server --port-file F --name N [--kind sync|aio] [--work S] [--reports on|oob|off]
    [--limit N] [--record-file R] [--stall-every N] [--stall S] [--max-lag S]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from interceptors.server import (
    AioLoadReporting,
    AioLoadShedding,
    LoadReporting,
    LoadShedding,
    OrcaService,
    ServerLoad,
)


def _bytes(value: bytes) -> bytes:
    return value


def _service(work: Any) -> Any:
    handler = grpc.unary_unary_rpc_method_handler(work, request_deserializer=_bytes, response_serializer=_bytes)
    return grpc.method_handlers_generic_handler("bench.Balance", {"Work": handler})


def sync_main(args: argparse.Namespace) -> None:
    name: bytes = args.name.encode()

    served = itertools.count()

    def work(request: bytes, context: Any) -> bytes:
        next(served)
        ends = time.thread_time() + args.work
        while time.thread_time() < ends:
            pass
        return name

    load = ServerLoad(interval=0.2, cpus=1)
    chain: list[Any] = []
    if args.reports != "off":
        chain.append(LoadReporting(load, per_call=args.reports == "on"))
    shedding = LoadShedding(args.limit, load=load) if args.limit else None
    if shedding is not None:
        chain.append(shedding)
    server = grpc.server(futures.ThreadPoolExecutor(16), interceptors=chain, options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((_service(work),))
    if args.reports == "oob":
        OrcaService(load, min_report_interval=0.1).add_to(server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    Path(args.port_file).write_text(str(port))
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    stopping.wait()
    server.stop(None)
    if args.record_file:
        refused = 0 if shedding is None else shedding.refused
        Path(args.record_file).write_text(json.dumps({"served": next(served), "refused": refused}))


async def aio_main(args: argparse.Namespace) -> None:
    name: bytes = args.name.encode()
    served = itertools.count()

    async def work(request: bytes, context: Any) -> bytes:
        count = next(served)
        if args.stall_every and count % args.stall_every == args.stall_every - 1:
            time.sleep(args.stall)  # noqa: ASYNC251 (the bug: a blocking call on the event loop)
        await asyncio.sleep(args.work)
        return name

    load = ServerLoad(interval=0.1)
    chain: list[Any] = []
    if args.reports != "off":
        chain.append(AioLoadReporting(load, per_call=args.reports == "on"))
    shedding = None
    if args.limit or args.max_lag:
        shedding = AioLoadShedding(args.limit or None, load=load, max_lag=args.max_lag or None, pushback=0.001)
        chain.append(shedding)
    server = grpc.aio.server(interceptors=chain, options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((_service(work),))
    if args.reports == "oob":
        OrcaService(load, min_report_interval=0.05).add_to(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    Path(args.port_file).write_text(str(port))  # noqa: ASYNC240 (once, before any call)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await stopping.wait()
    await server.stop(None)
    if args.record_file:
        refused = 0 if shedding is None else shedding.refused
        record = json.dumps({"served": next(served), "refused": refused})
        Path(args.record_file).write_text(record)  # noqa: ASYNC240 (once, at the end)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--kind", choices=["sync", "aio"], default="sync")
    parser.add_argument("--work", type=float, default=0.0005)
    parser.add_argument("--reports", choices=["on", "oob", "off"], default="on")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--record-file", default="")
    parser.add_argument("--stall-every", type=int, default=0)
    parser.add_argument("--stall", type=float, default=0.1)
    parser.add_argument("--max-lag", type=float, default=0.0)
    arguments = parser.parse_args()
    if arguments.kind == "sync":
        sync_main(arguments)
    else:
        asyncio.run(aio_main(arguments))
