"""A minimal scripted.v1 server for the benchmarks, run as its own process: python bench/server.py PORT_FILE.

Answers Unary at once (or after ``sleep_ms``); writes the port it bound to PORT_FILE once serving.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import grpc
from scripted.v1 import scripted_pb2 as pb
from scripted.v1 import scripted_pb2_grpc as pb_grpc


class Service(pb_grpc.ScriptedServicer):
    async def Unary(self, request: Any, context: Any) -> Any:
        if request.sleep_ms:
            await asyncio.sleep(request.sleep_ms / 1000)
        return pb.Reply(id=request.id, text=request.text)


async def main(port_file: Path) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_ScriptedServicer_to_server(Service(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    port_file.write_text(str(port))  # noqa: ASYNC240 - once, before serving
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
