"""The priorities benchmark's server: a grpc.aio server whose one method takes ``--service`` seconds, behind load
shedding (priority-blind or with priorities) and a quota per tenant, counting the calls its handler served.

python -m bench.priority_server --port-file F --record-file R [--limit N] [--service S]
    [--shedding none|blind|priorities] [--max-wait S] [--normal-share F] [--quota Q] [--burst B]

On SIGTERM it writes what the handler served, by priority, by tenant and as retries, to the record file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

from interceptors import Priorities, Priority
from interceptors.server import AioLoadShedding, AioQuota, by_metadata

METHOD = "/bench.Priorities/Work"
TENANT = "x-tenant"


def _bytes(value: bytes) -> bytes:
    return value


async def main(args: argparse.Namespace) -> None:
    served: Counter[str] = Counter()

    async def work(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        metadata = {key: str(value) for key, value in context.invocation_metadata() or ()}
        retry = metadata.get("grpc-previous-rpc-attempts", "0") not in ("", "0")
        served[f"priority:{metadata.get('x-priority', 'none')}"] += 1
        served[f"tenant:{metadata.get(TENANT, 'none')}"] += 1
        served["retries" if retry else "first attempts"] += 1
        await asyncio.sleep(args.service)
        return b"ok"

    chain: list[Any] = []
    if args.quota:
        chain.append(AioQuota(args.quota, burst=args.burst or None, key=by_metadata(TENANT)))
    if args.shedding == "blind":
        chain.append(AioLoadShedding(args.limit, max_wait=args.max_wait))
    elif args.shedding == "priorities":
        shares: dict[Priority | str, float] = {"normal": args.normal_share, "high": max(args.normal_share, 0.9)}
        rules = Priorities(max_claimed=Priority.CRITICAL, shares=shares)
        chain.append(AioLoadShedding(args.limit, max_wait=args.max_wait, priorities=rules))
    handler = grpc.unary_unary_rpc_method_handler(work, request_deserializer=_bytes, response_serializer=_bytes)
    service = grpc.method_handlers_generic_handler("bench.Priorities", {"Work": handler})
    server = grpc.aio.server(interceptors=chain, options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((service,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    args.port_file.write_text(str(port))
    await stopping.wait()
    await server.stop(grace=None)
    args.record_file.write_text(json.dumps(served))


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--record-file", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--service", type=float, default=0.05)
    parser.add_argument("--shedding", choices=["none", "blind", "priorities"], default="none")
    parser.add_argument("--max-wait", type=float, default=0.0, help="seconds a call may wait for a place")
    parser.add_argument("--normal-share", type=float, default=0.8, help="the part of the limit normal calls fill")
    parser.add_argument("--burst", type=int, default=0, help="a tenant's calls at once (0: its quota)")
    parser.add_argument("--quota", type=int, default=0, help="calls a second per tenant (0: no quota)")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
