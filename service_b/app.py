"""Service B: answers "hello from service B", with the faults it is told to inject."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from demo.v1 import service_b_pb2, service_b_pb2_grpc

from interceptors import Priorities, Priority
from interceptors.server import AioFaultInjection, AioLoadShedding, Faults

from .runtime import start_server

SERVICE = service_b_pb2.DESCRIPTOR.services_by_name["ServiceB"].full_name
HELLO = f"/{SERVICE}/Hello"
MESSAGE = "hello from service B"

SCENARIOS: dict[str, dict[str, Any]] = {
    # the article's service B for each scenario
    "timeout": {"delay": 5.0},
    "retry": {"fail_rate": 0.5, "retry_after": 1.0},
    "breaker": {"fail_rate": 0.5, "slow_rate": 0.5, "slow_delay": 1.0, "retry_after": 1.0},
    "fallback": {"down": True},
    "composed": {"fail_rate": 0.3, "slow_rate": 0.3, "slow_delay": 1.5, "retry_after": 1.0},
    # beyond the article: propagation and shedding
    "deadline": {"delay": 2.0},  # B slow; a caller with a short deadline
    "overload": {"delay": 0.1},  # each call keeps B busy for 100 ms; with --max-concurrent, B sheds the excess
    "priorities": {"delay": 0.1},  # the same, shedding the least important calls first (with --priorities)
}


class ServiceB(service_b_pb2_grpc.ServiceBServicer):
    async def Hello(self, request: Any, context: Any) -> Any:
        return service_b_pb2.HelloReply(message=MESSAGE)


def describe(faults: Faults) -> dict[str, Any]:
    """The faults that differ from none, for the log."""
    quiet = Faults()
    return {
        f.name: getattr(faults, f.name)
        for f in dataclasses.fields(faults)
        if f.init and f.name != "code" and getattr(faults, f.name) != getattr(quiet, f.name)
    }


async def serve(
    host: str,
    port: int,
    faults: Faults,
    log: logging.Logger,
    max_concurrent: int | None = None,
    priorities: bool = False,
) -> None:
    """Serve until cancelled, injecting ``faults`` into Hello; with ``max_concurrent``, calls beyond that many at
    once are refused at once (RESOURCE_EXHAUSTED with pushback) before their faults or work begin. With
    ``priorities``, the least important calls are refused first and a call may wait 50 ms for a place, times its
    share (callers are believed up to CRITICAL: B's one caller is A)."""
    chain: list[Any] = [AioFaultInjection(faults, methods=[HELLO])]  # health and reflection stay healthy
    if max_concurrent is not None:
        rules = Priorities(max_claimed=Priority.CRITICAL) if priorities else None
        chain.insert(0, AioLoadShedding(max_concurrent, priorities=rules, max_wait=0.05 if priorities else 0.0))
    server, bound = await start_server(
        host, port, [(ServiceB(), service_b_pb2_grpc.add_ServiceBServicer_to_server, SERVICE)], interceptors=chain
    )
    log.info(
        "serving",
        extra={"port": bound, "faults": describe(faults), "max_concurrent": max_concurrent, "priorities": priorities},
    )
    try:
        await server.wait_for_termination()
    except asyncio.CancelledError:
        await server.stop(grace=1)
