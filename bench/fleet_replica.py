"""One replica of service A for the fleet benchmark (bench/fleet.py): ``--threads`` threads call B as fast as they
can through one policy for ``--seconds``, then write every call's outcome and the policy's mode changes as JSON.

Policies: ``global`` (GlobalRateLimiter), ``local`` (a per-process RateLimiter of the same rate), ``fleet-breaker``
(FleetCircuitBreaker), ``breaker`` (CircuitBreaker). Times are ``time.monotonic()``, one clock for every process of
the machine.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import redis
from demo.v1 import service_b_pb2, service_b_pb2_grpc

from interceptors import CircuitBreaker, RateLimiter, RejectedError, resilient_channel
from interceptors.engine import Policy
from interceptors.events import FleetModeChanged
from interceptors.fleet import FleetCircuitBreaker, FleetStore, GlobalRateLimiter

REQUEST = service_b_pb2.HelloRequest(name="fleet")


def policy(args: argparse.Namespace, modes: list[tuple[float, str]]) -> Policy:
    def heard(event: FleetModeChanged) -> None:
        modes.append((time.monotonic(), event.mode))

    store = FleetStore(redis.Redis.from_url(args.url, socket_timeout=0.25, socket_connect_timeout=0.25), prefix="bench")
    breaker = {"failure_threshold": 5, "delay": 1.0}
    made: Policy
    if args.policy == "global":
        made = GlobalRateLimiter(store, args.key, args.rate, on_mode=heard)
    elif args.policy == "local":
        made = RateLimiter(args.rate)
    elif args.policy == "fleet-breaker":
        made = FleetCircuitBreaker(store, args.key, on_mode=heard, **breaker)  # type: ignore[arg-type]
    else:
        made = CircuitBreaker(**breaker)  # type: ignore[arg-type]
    return made


def _connected(stub: Any, ready: Path, go: Path) -> float:
    """One call answered (connected before the clock starts), ``ready`` written, then the start ``go`` holds."""
    tried = time.monotonic() + 10
    while time.monotonic() < tried:
        try:
            stub.Hello(REQUEST, timeout=2)
            break
        except RejectedError:  # a permit leased ahead may not be paid for yet (burst)
            time.sleep(0.02)
        except grpc.RpcError:  # the run will show it
            break
    ready.write_text("ready")
    waited = time.monotonic() + 60
    while not go.exists():
        if time.monotonic() > waited:
            raise SystemExit("no start came")
        time.sleep(0.005)
    return float(go.read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", default="b")
    parser.add_argument("--policy", choices=("global", "local", "fleet-breaker", "breaker"), required=True)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--ready", type=Path, required=True, help="written once connected")
    parser.add_argument("--go", type=Path, required=True, help="appears holding when to start calling (monotonic)")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--deadline", type=float, default=0.2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    modes: list[tuple[float, str]] = []
    calls: list[tuple[float, float, str]] = []  # (start, seconds, code)
    lock = threading.Lock()
    with resilient_channel(args.target, policy(args, modes)) as channel:
        stub = service_b_pb2_grpc.ServiceBStub(channel)
        start = _connected(stub, args.ready, args.go)
        time.sleep(max(start - time.monotonic(), 0.0))
        ends = start + args.seconds

        def work() -> None:
            mine: list[tuple[float, float, str]] = []
            while (started := time.monotonic()) < ends:
                try:
                    stub.Hello(REQUEST, timeout=args.deadline)
                    code = "OK"
                except RejectedError:
                    code = "REJECTED"  # by the policy, nothing sent
                except grpc.RpcError as error:
                    code = error.code().name
                mine.append((started, time.monotonic() - started, code))
                if code != "OK":
                    time.sleep(0.001)  # a breath before the next
            with lock:
                calls.extend(mine)

        threads = [threading.Thread(target=work) for _ in range(args.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    result: dict[str, Any] = {"calls": calls, "modes": modes}
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
