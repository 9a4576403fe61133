"""Service A: answers its own message and service B's, calling B through one channel with the chosen policies."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
from demo.v1 import service_a_pb2, service_a_pb2_grpc, service_b_pb2, service_b_pb2_grpc

import interceptors.aio
from interceptors import (
    FALLBACK_METADATA_KEY,
    Backoff,
    CircuitBreaker,
    Fallback,
    Priorities,
    Priority,
    RateLimiter,
    RetryBudget,
    RetryPolicy,
    Timeout,
    on_codes,
    replaced_by_fallback,
)
from interceptors.engine import Policy
from interceptors.events import (
    CircuitStateChanged,
    FallbackExecuted,
    LogEvents,
    RetryScheduled,
    TimeoutExceeded,
)
from interceptors.server import AioContextPropagation
from service_b.runtime import start_server

SERVICE = service_a_pb2.DESCRIPTOR.services_by_name["ServiceA"].full_name
MESSAGE = "hello from service A"
FALLBACK_MESSAGE = "error accessing service B"
POLICIES = ("none", "timeout", "retry", "breaker", "fallback", "composed", "pushback", "quota", "fleet-quota")
QUOTA = 20
"""Calls a second to B that ``quota`` allows each replica of A, and ``fleet-quota`` all of them together."""

# A lost connection to B is noticed and retried quickly, so recovery is bounded by the breaker, not by grpc's
# reconnect backoff (which grows to two minutes by default).
CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 1000)]


def policies(name: str, log: logging.Logger, store_url: str | None = None) -> tuple[Policy, ...]:
    """The article's policy configurations, logging the article's event lines (``composed`` is all four),
    ``pushback``: fallback > retry (default classification, so shed calls too, waiting out B's pushback, within a
    retry budget) > timeout, and B's quota of :data:`QUOTA` calls a second, per replica (``quota``) or shared by
    every replica through the store at ``store_url`` (``fleet-quota``)."""
    unavailable = on_codes(grpc.StatusCode.UNAVAILABLE)
    events = LogEvents(  # one listener for every policy: the article's words, the events' fields as extras
        log,
        messages={
            TimeoutExceeded: lambda e: "Connection timed out",
            RetryScheduled: lambda e: f"Retry {e.attempt} after delay of {e.delay:.3g}s",
            CircuitStateChanged: lambda e: f"circuit breaker state changed from {e.old} to {e.new}",
            FallbackExecuted: lambda e: "Fallback executed result",
        },
    )
    timeout = Timeout(1.0, on_timeout_exceeded=events)
    retry = RetryPolicy(
        handle=unavailable,
        delay=Backoff(1.0, 10.0),
        min_attempt_time=0.1,  # no attempt squeezed into the last moments of the caller's deadline
        on_retry_scheduled=events,
    )
    breaker = CircuitBreaker(
        failure_threshold=1,  # failsafe-go's default, which the article keeps
        handle=unavailable,
        delay=1.0,
        pushback=True,  # the open delay is B's retry-after when it sends one
        on_state_change=events,
    )
    fallback = Fallback(
        message={"message": FALLBACK_MESSAGE},  # UNAVAILABLE and DEADLINE_EXCEEDED: the caller always gets an answer
        on_fallback=events,
    )
    chains: dict[str, tuple[Policy, ...]] = {
        "none": (),
        "timeout": (timeout,),
        "retry": (retry,),
        "breaker": (breaker,),
        "fallback": (fallback,),
        "composed": (fallback, retry, breaker, timeout),
        # waits out B's pushback (shed calls included), within a retry budget shared by all calls
        "pushback": (fallback, RetryPolicy(max_attempts=4, budget=RetryBudget(), on_retry_scheduled=events), timeout),
        "quota": (RateLimiter(QUOTA),),
    }
    if name == "fleet-quota":
        return (fleet_quota(store_url, events),)
    return chains[name]


def fleet_quota(store_url: str | None, events: LogEvents) -> Policy:
    """B's quota for every replica of A: a GlobalRateLimiter on the Valkey/Redis at ``store_url``."""
    import redis.asyncio

    from interceptors.fleet import FleetStore, GlobalRateLimiter

    if store_url is None:
        raise ValueError("the fleet-quota policy needs --store-url (a Valkey or Redis URL)")
    store = FleetStore(redis.asyncio.Redis.from_url(store_url, socket_timeout=0.5), prefix="demo")
    return GlobalRateLimiter(store, "service-b", QUOTA, on_mode=events)


class ServiceA(service_a_pb2_grpc.ServiceAServicer):
    """Calls B for each request. The server's AioContextPropagation bounds the call to B by our caller's deadline
    less a reserve, cancels it if our caller goes away, and answers B's failures with B's status and pushback."""

    def __init__(self, service_b: service_b_pb2_grpc.ServiceBStub) -> None:
        self._b = service_b

    async def Hello(self, request: Any, context: Any) -> Any:
        call = self._b.Hello(service_b_pb2.HelloRequest(name=request.name))
        reply = await call
        replaced = replaced_by_fallback(await call.trailing_metadata())
        if replaced:
            context.set_trailing_metadata(((FALLBACK_METADATA_KEY, replaced),))
        return service_a_pb2.FrontReply(message_a=MESSAGE, message_b=reply.message)


def exported_metrics(host: str, port: int, log: logging.Logger) -> Any:
    """Metrics of the calls to B, served for Prometheus at http://host:port/metrics (port 0: a free one, logged)."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import start_http_server

    from interceptors.otel import Metrics

    server, _ = start_http_server(port, addr=host)
    log.info("metrics", extra={"metrics_port": server.server_port})
    return Metrics(MeterProvider(metric_readers=[PrometheusMetricReader()]))


async def serve(
    host: str,
    port: int,
    service_b: str,
    policy: str,
    log: logging.Logger,
    metrics_port: int | None = None,
    store_url: str | None = None,
) -> None:
    chain = policies(policy, log, store_url)
    metrics = None if metrics_port is None else exported_metrics(host, metrics_port, log)
    async with interceptors.aio.resilient_channel(
        service_b, *chain, options=CHANNEL_OPTIONS, metrics=metrics
    ) as channel:
        servicer = ServiceA(service_b_pb2_grpc.ServiceBStub(channel))
        server, bound = await start_server(
            host,
            port,
            [(servicer, service_a_pb2_grpc.add_ServiceAServicer_to_server, SERVICE)],
            # our callers are believed up to CRITICAL (a demo on one machine): their priority goes on to B
            interceptors=[AioContextPropagation(priorities=Priorities(max_claimed=Priority.CRITICAL))],
        )
        log.info("serving", extra={"port": bound, "policy": policy, "service_b": service_b})
        try:
            await server.wait_for_termination()
        except asyncio.CancelledError:
            await server.stop(grace=1)
