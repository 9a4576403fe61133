"""python -m service_b [--port 3001] [--scenario NAME] [fault options]: the demo's backend."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from interceptors.server import Faults

from .app import SCENARIOS, serve
from .runtime import port, positive, rate, seconds, seed, setup_logging


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m service_b", description="Service B of the demo pair.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=port, default=3001, help="port to listen on; 0 picks a free one")
    parser.add_argument(
        "--scenario", choices=sorted(SCENARIOS), help="the article's faults for a scenario; options below override"
    )
    parser.add_argument("--delay", type=seconds, help="every call waits this long first")
    parser.add_argument("--fail-rate", type=rate, help="share of calls answered UNAVAILABLE (0..1)")
    parser.add_argument("--slow-rate", type=rate, help="share of the other calls that wait --slow-delay more")
    parser.add_argument("--slow-delay", type=seconds, help="the extra wait of slow calls")
    parser.add_argument("--retry-after", type=seconds, help="pushback sent with failures, seconds (default 1)")
    parser.add_argument("--down", action="store_true", default=None, help="answer every call UNAVAILABLE")
    parser.add_argument("--seed", type=seed, help="seed for reproducible faults")
    parser.add_argument(
        "--max-concurrent",
        type=positive,
        help="refuse calls beyond this many at once, up to 100000 (RESOURCE_EXHAUSTED with pushback); default: none",
    )
    parser.add_argument(
        "--priorities",
        action="store_true",
        help="with --max-concurrent: refuse the least important calls (x-priority) first",
    )
    return parser.parse_args(argv)


def faults(args: argparse.Namespace) -> Faults:
    options = dict(SCENARIOS[args.scenario]) if args.scenario else {}
    for name in ("delay", "fail_rate", "slow_rate", "slow_delay", "retry_after", "down", "seed"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    return Faults(**options)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    log = setup_logging("service_b")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, faults(args), log, args.max_concurrent, args.priorities))


if __name__ == "__main__":
    main()
