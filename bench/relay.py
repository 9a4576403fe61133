"""A hop of a chain of services for the benchmarks: serves ServiceB.Hello by calling the next hop's, through a
channel with the policies of ``--chain``.

With ``--propagation manual`` the handler passes its caller's deadline on by hand (``context.time_remaining()``)
and answers the next hop's failure with its code and details, as services had to before the library's server
side; with ``library`` (the default) the server's AioContextPropagation does both, and more.

python -m bench.relay --port-file F --downstream HOST:PORT --chain retry|recommended|... [--propagation manual]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any

import grpc
from demo.v1 import service_b_pb2_grpc

import interceptors.aio
from bench.approaches import CHAINS, Budget
from interceptors.server import AioContextPropagation


class ManualRelay(service_b_pb2_grpc.ServiceBServicer):
    def __init__(self, downstream: Any) -> None:
        self._downstream = downstream

    async def Hello(self, request: Any, context: Any) -> Any:
        try:
            return await self._downstream.Hello(request, timeout=context.time_remaining())
        except grpc.aio.AioRpcError as error:
            await context.abort(error.code(), error.details() or "")


class Relay(service_b_pb2_grpc.ServiceBServicer):
    def __init__(self, downstream: Any) -> None:
        self._downstream = downstream

    async def Hello(self, request: Any, context: Any) -> Any:
        return await self._downstream.Hello(request)


async def main(args: argparse.Namespace) -> None:
    async with interceptors.aio.resilient_channel(args.downstream, *CHAINS[args.chain](Budget())) as channel:
        library = args.propagation == "library"
        server = grpc.aio.server(
            interceptors=[AioContextPropagation()] if library else [], options=[("grpc.so_reuseport", 0)]
        )
        relay = (Relay if library else ManualRelay)(service_b_pb2_grpc.ServiceBStub(channel))
        service_b_pb2_grpc.add_ServiceBServicer_to_server(relay, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        args.port_file.write_text(str(port))
        stopping = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        await stopping.wait()
        await server.stop(grace=0)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--downstream", required=True)
    parser.add_argument("--chain", choices=sorted(CHAINS), required=True)
    parser.add_argument("--propagation", choices=["library", "manual"], default="library")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
