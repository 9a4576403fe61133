"""``python -m interceptors.fleet``: the fleet switch from a shell (see :class:`FleetSwitch`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m interceptors.fleet",
        description="Switch a fleet policy on every replica: force a breaker open or closed, disable a limiter, "
        "or clear the switch (replicas follow within a second).",
    )
    parser.add_argument("action", choices=("open", "closed", "disable", "clear", "show"))
    parser.add_argument("key", help="the policy's key (its name in the store)")
    parser.add_argument("--prefix", required=True, help="the prefix the replicas' FleetStore uses")
    parser.add_argument(
        "--url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"), help="the store (default $REDIS_URL)"
    )
    parser.add_argument("--cluster", action="store_true", help="the store is a Valkey/Redis cluster")
    parser.add_argument("--ttl", type=float, help="seconds until the switch clears itself (default: never)")
    args = parser.parse_args(argv)
    try:
        import redis
        from redis.cluster import RedisCluster
    except ImportError:
        parser.error("redis-py is missing: pip install 'grpc-resilience-interceptors[fleet]'")
    from . import FleetStore, FleetSwitch

    try:
        client = (RedisCluster if args.cluster else redis.Redis).from_url(args.url, socket_timeout=5)
        switch = FleetSwitch(FleetStore(client, prefix=args.prefix))
        if args.action == "show":
            print(switch.state(args.key) or "clear")
        elif args.action == "clear":
            switch.clear(args.key)
        else:
            switch.set(args.key, "disabled" if args.action == "disable" else args.action, ttl=args.ttl)
    except ValueError as error:
        parser.error(str(error))
    except redis.RedisError as error:
        print(f"python -m interceptors.fleet: the store at {args.url} failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
