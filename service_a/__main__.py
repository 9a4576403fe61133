"""python -m service_a [--port 3000] [--service-b HOST:PORT] [--policy NAME] [--metrics-port N] [--store-url URL]:
the demo's front service."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os

from service_b.runtime import port, setup_logging, target

from .app import POLICIES, serve


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m service_a", description="Service A of the demo pair.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=port, default=3000, help="port to listen on; 0 picks a free one")
    parser.add_argument(
        "--service-b", type=target, default="127.0.0.1:3001", help="where service B listens (host:port)"
    )
    parser.add_argument("--policy", choices=POLICIES, default="composed", help="policies around calls to B")
    parser.add_argument(
        "--metrics-port", type=port, default=None, help="serve Prometheus metrics on this port (0: a free one)"
    )
    parser.add_argument(
        "--store-url",
        default=os.environ.get("REDIS_URL"),
        help="the Valkey/Redis the fleet-quota policy shares (default $REDIS_URL)",
    )
    args = parser.parse_args(argv)
    if args.policy == "fleet-quota" and not args.store_url:
        parser.error("--policy fleet-quota needs --store-url (or $REDIS_URL)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    log = setup_logging("service_a")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, args.service_b, args.policy, log, args.metrics_port, args.store_url))


if __name__ == "__main__":
    main()
