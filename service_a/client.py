"""python -m service_a.client [--target HOST:PORT] [-n N] [-c C] [--timeout S] [--priorities P,...]: send N
requests to service A.

Prints each outcome (OK, FALLBACK, or the error code), then a summary: successes, fallbacks, errors by code and
p50/p99 latency (by priority, with ``--priorities``); ``--json`` prints the summary as one JSON object instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import grpc
from demo.v1 import service_a_pb2_grpc, service_b_pb2

from interceptors import Priority, replaced_by_fallback
from service_b.runtime import seconds, target, whole


@dataclass(frozen=True)
class Outcome:
    index: int
    result: str  # "OK", "FALLBACK", or the status code's name
    latency_ms: float
    detail: str
    priority: str = ""  # the x-priority it was sent with ("": none)


@dataclass(frozen=True)
class Summary:
    requests: int
    successes: int
    fallbacks: int
    errors: dict[str, int]
    p50_ms: float
    p99_ms: float
    max_ms: float


async def drive(
    target: str,
    requests: int,
    concurrency: int,
    timeout: float | None,
    interval: float = 0.0,
    priorities: Sequence[str] = (),
) -> list[Outcome]:
    """Send ``requests`` calls to service A, ``concurrency`` at a time, each with ``timeout``, starting one every
    ``interval`` seconds at most; with ``priorities``, each in turn (the first call has the first), as
    x-priority."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = service_a_pb2_grpc.ServiceAStub(channel)
        slots = asyncio.Semaphore(concurrency)

        async def one(index: int) -> Outcome:
            await asyncio.sleep((index - 1) * interval)
            priority = priorities[(index - 1) % len(priorities)] if priorities else ""
            metadata = (("x-priority", priority),) if priority else None
            async with slots:
                started = time.monotonic()
                request = service_b_pb2.HelloRequest(name=f"request-{index}")
                call = stub.Hello(request, timeout=timeout, metadata=metadata)
                try:
                    reply = await call
                except grpc.aio.AioRpcError as error:
                    latency = (time.monotonic() - started) * 1000
                    return Outcome(index, error.code().name, latency, error.details() or "", priority)
                latency = (time.monotonic() - started) * 1000
                replaced = replaced_by_fallback(await call.trailing_metadata())
                result = "FALLBACK" if replaced else "OK"
                return Outcome(index, result, latency, f"{reply.message_a} / {reply.message_b}", priority)

        return list(await asyncio.gather(*(one(i) for i in range(1, requests + 1))))


def summarize(outcomes: list[Outcome]) -> Summary:
    results = Counter(o.result for o in outcomes)
    latencies = sorted(o.latency_ms for o in outcomes) or [0.0]
    p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98] if len(latencies) > 1 else latencies[0]
    return Summary(
        requests=len(outcomes),
        successes=results.pop("OK", 0),
        fallbacks=results.pop("FALLBACK", 0),
        errors=dict(sorted(results.items())),
        p50_ms=round(statistics.median(latencies), 1),
        p99_ms=round(p99, 1),
        max_ms=round(latencies[-1], 1),
    )


def describe(summary: Summary) -> str:
    errors = ", ".join(f"{code} {n}" for code, n in summary.errors.items()) or "none"
    return (
        f"{summary.requests} requests: {summary.successes} OK, {summary.fallbacks} fallback, errors: {errors}; "
        f"latency p50 {summary.p50_ms:.0f} ms, p99 {summary.p99_ms:.0f} ms, max {summary.max_ms:.0f} ms"
    )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m service_a.client", description=__doc__)
    parser.add_argument("--target", type=target, default="127.0.0.1:3000", help="service A's address")
    parser.add_argument(
        "-n", "--requests", type=whole(1, 1_000_000), default=20, help="how many requests, up to a million (default 20)"
    )
    parser.add_argument(
        "-c", "--concurrency", type=whole(1, 1000), default=4, help="how many at once, up to 1000 (default 4)"
    )
    parser.add_argument("--timeout", type=seconds, default=3.0, help="each request's deadline, seconds")
    parser.add_argument("--interval", type=seconds, default=0.0, help="seconds between request starts")
    parser.add_argument(
        "--priorities",
        type=priority_names,
        default=(),
        help="send the requests with these priorities in turn, e.g. critical,sheddable (x-priority; default none)",
    )
    parser.add_argument("--json", action="store_true", help="print only the summary, as JSON")
    return parser.parse_args(argv)


def priority_names(text: str) -> tuple[str, ...]:
    """A comma-separated list of priority names, each checked."""
    try:
        return tuple(Priority.of(name).name.lower() for name in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def by_priority(outcomes: list[Outcome]) -> dict[str, Summary]:
    """A summary of the outcomes of each priority, in the order first sent."""
    names = dict.fromkeys(o.priority for o in outcomes)
    return {name: summarize([o for o in outcomes if o.priority == name]) for name in names}


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    outcomes = asyncio.run(
        drive(args.target, args.requests, args.concurrency, args.timeout or None, args.interval, args.priorities)
    )
    summary = summarize(outcomes)
    if args.json:
        print(json.dumps(asdict(summary)))
        return
    for o in outcomes:
        print(f"#{o.index:<3} {o.priority or '-':<9} {o.result:<18} {o.latency_ms:8.1f} ms  {o.detail}")
    print(describe(summary))
    if args.priorities:
        for name, part in by_priority(outcomes).items():
            print(f"    {name}: {describe(part)}")


if __name__ == "__main__":
    main()
