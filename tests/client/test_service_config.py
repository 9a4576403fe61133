"""gRPC service configs as policies: gRFC A6's examples, its rejection rules (with the JSON path of what is wrong),
and the same attempts and backoff bounds as grpc's built-in retries, measured side by side on one server."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import grpc
import pytest
from scripted.v1 import scripted_pb2_grpc as pb_grpc

from interceptors import (
    AdaptiveThrottle,
    Backoff,
    Bulkhead,
    CircuitBreaker,
    Fallback,
    HedgePolicy,
    RetryPolicy,
    Timeout,
    from_service_config,
    resilient_channel,
)

from ..support.clients import Client
from ..support.server import Request, ScriptedServer

SERVICE = "scripted.v1.Scripted"
UNARY = f"/{SERVICE}/Unary"

RETRY_EXAMPLE = {  # A6, "Retry Policy"
    "maxAttempts": 4,
    "initialBackoff": ".1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
HEDGING_EXAMPLE = {
    "maxAttempts": 4,
    "hedgingDelay": ".5s",
    "nonFatalStatusCodes": ["UNAVAILABLE", "INTERNAL", "ABORTED"],
}
THROTTLING_EXAMPLE = {"maxTokens": 10, "tokenRatio": 0.1}


def config(**entry: Any) -> dict[str, Any]:
    return {"methodConfig": [{"name": [{"service": SERVICE}], **entry}]}


def test_a6_retry_example() -> None:
    (retry,) = from_service_config(config(retryPolicy=RETRY_EXAMPLE)).methods[f"/{SERVICE}/*"]
    assert isinstance(retry, RetryPolicy)
    assert retry.max_attempts == 4 and retry.reraise and retry.jitter_factor == 0
    assert retry.delay == Backoff(0.1, 1.0, multiplier=2, full_jitter=True)
    assert retry.handle is not None
    assert retry.handle(grpc_error(grpc.StatusCode.UNAVAILABLE))
    assert not retry.handle(grpc_error(grpc.StatusCode.INTERNAL))


def test_a6_hedging_examples() -> None:
    (hedge,) = from_service_config(config(hedgingPolicy=HEDGING_EXAMPLE)).methods[f"/{SERVICE}/*"]
    assert isinstance(hedge, HedgePolicy) and hedge.max_attempts == 4 and hedge.delay == 0.5
    assert hedge.non_fatal is not None and hedge.non_fatal(grpc_error(grpc.StatusCode.ABORTED))
    assert not hedge.non_fatal(grpc_error(grpc.StatusCode.NOT_FOUND))
    at_once = {**HEDGING_EXAMPLE, "hedgingDelay": "0s"}
    (hedge,) = from_service_config(config(hedgingPolicy=at_once)).methods[f"/{SERVICE}/*"]
    assert hedge.delay == 0.0  # type: ignore[attr-defined]


def test_a6_throttling_example_is_one_budget_for_every_retry_and_hedge() -> None:
    converted = from_service_config(
        {
            "methodConfig": [
                {"name": [{"service": SERVICE, "method": "Unary"}], "retryPolicy": RETRY_EXAMPLE},
                {"name": [{}], "hedgingPolicy": HEDGING_EXAMPLE},
            ],
            "retryThrottling": THROTTLING_EXAMPLE,
        }
    )
    budget = converted.budget
    assert budget is not None and budget.tokens == 10
    (retry,) = converted.methods[UNARY]
    (hedge,) = converted.policies
    assert retry.budget is budget and hedge.budget is budget  # type: ignore[attr-defined]


def test_names_timeouts_caps_and_the_extension_block() -> None:
    converted = from_service_config(
        json.dumps(
            {
                "methodConfig": [
                    {
                        "name": [{"service": SERVICE, "method": "Unary"}, {"service": "other.v1.Other"}],
                        "timeout": "2.5s",
                        "retryPolicy": {**RETRY_EXAMPLE, "maxAttempts": 9, "perAttemptRecvTimeout": "0.3s"},
                        "resilience": {
                            "fallback": {"message": {"text": "later"}},
                            "adaptiveThrottle": {"k": 2},
                            "bulkhead": {"maxConcurrent": 4, "maxWait": "0.05s"},
                            "circuitBreaker": {"failureRate": 0.5, "failureWindow": 20, "delay": "1s"},
                        },
                    },
                    {"name": [{}], "timeout": "10s"},
                ],
                "loadBalancingConfig": [{"round_robin": {}}],
            }
        )
    )
    chain = converted.methods[UNARY]
    assert chain is converted.methods["/other.v1.Other/*"]
    assert [type(p) for p in chain] == [
        Fallback,
        Timeout,
        RetryPolicy,
        AdaptiveThrottle,
        Bulkhead,
        CircuitBreaker,
        Timeout,
    ]
    fallback, call_timeout, retry, throttle, bulkhead, breaker, attempt_timeout = chain
    assert fallback.message == {"text": "later"}  # type: ignore[attr-defined]
    assert call_timeout.seconds == 2.5 and attempt_timeout.seconds == 0.3  # type: ignore[attr-defined]
    assert retry.max_attempts == 5  # type: ignore[attr-defined]  # capped, as gRPC caps it
    assert throttle.k == 2 and bulkhead.max_concurrent == 4 and bulkhead.max_wait == 0.05  # type: ignore[attr-defined]
    assert breaker.config.failure_rate == 0.5 and breaker.config.delay == 1.0  # type: ignore[attr-defined]
    assert [type(p) for p in converted.policies] == [Timeout]
    left = json.loads(converted.grpc_config or "")
    assert left["loadBalancingConfig"] == [{"round_robin": {}}]
    assert "retryPolicy" not in left["methodConfig"][0] and "resilience" not in left["methodConfig"][0]
    assert left["methodConfig"][0]["timeout"] == "2.5s"  # grpc keeps the deadline too: the sooner one binds


RETRY = "retryPolicy"


@pytest.mark.parametrize(
    ("bad", "path"),
    [
        ("{", "not JSON"),
        ([], r"\$: must be a JSON object"),
        ({"methodConfig": {}}, "methodConfig: must be a list"),
        ({"methodConfig": [3]}, r"methodConfig\[0\]: must be an object"),
        ({"methodConfig": [{"name": {}}]}, r"methodConfig\[0\].name: must be a list"),
        ({"methodConfig": [{"name": [{"method": "M"}]}]}, "a method needs its service"),
        ({"methodConfig": [{"name": [{"service": 3}]}]}, r"name\[0\].service: must be a string"),
        ({"methodConfig": [{"name": [{}]}, {"name": [{}]}]}, r"methodConfig\[1\].name\[0\]: duplicate name"),
        ({"methodConfig": [{"name": [{"service": "s"}, {"service": "s"}]}]}, "duplicate name"),
        (config(timeout="1"), r"timeout: must be a duration"),
        (config(timeout="1m"), r"timeout: must be a duration"),
        (config(timeout="-1s"), r"timeout: must be a duration"),
        (config(timeout="1.0000000001s"), r"timeout: must be a duration"),
        (config(timeout="0s"), r"timeout: must be longer than 0s"),
        (config(retryPolicy=RETRY_EXAMPLE, hedgingPolicy=HEDGING_EXAMPLE), "cannot both be set"),
        (config(retryPolicy=[]), r"retryPolicy: must be an object"),
        (config(retryPolicy={**RETRY_EXAMPLE, "maxAttempts": 1}), r"retryPolicy.maxAttempts: must be at least 2"),
        (config(retryPolicy={**RETRY_EXAMPLE, "maxAttempts": 2.5}), r"maxAttempts: must be an integer"),
        (config(retryPolicy={k: v for k, v in RETRY_EXAMPLE.items() if k != "maxAttempts"}), "maxAttempts: is req"),
        (config(retryPolicy={**RETRY_EXAMPLE, "initialBackoff": "0s"}), r"initialBackoff: must be longer than 0s"),
        (config(retryPolicy={**RETRY_EXAMPLE, "maxBackoff": 1}), r"maxBackoff: must be a duration"),
        (config(retryPolicy={k: v for k, v in RETRY_EXAMPLE.items() if k != "maxBackoff"}), "maxBackoff: is req"),
        (config(retryPolicy={**RETRY_EXAMPLE, "backoffMultiplier": 0}), r"backoffMultiplier: must be a number > 0"),
        (config(retryPolicy={**RETRY_EXAMPLE, "backoffMultiplier": 10**400}), r"backoffMultiplier: must be a numb"),
        (config(retryPolicy={**RETRY_EXAMPLE, "maxAttempts": float("inf")}), r"maxAttempts: must be an integer"),
        (config(retryPolicy={**RETRY_EXAMPLE, "maxAttempts": float("nan")}), r"maxAttempts: must be an integer"),
        ({"retryThrottling": {"maxTokens": 10, "tokenRatio": 5e-324}}, r"retryThrottling.tokenRatio: must be at le"),
        (config(resilience={"circuitBreaker": {"failurePeriod": 1e-300}}), r"circuitBreaker: .*failure_period"),
        (config(retryPolicy={**RETRY_EXAMPLE, "retryableStatusCodes": []}), "retryableStatusCodes: must be a non-e"),
        (config(retryPolicy={**RETRY_EXAMPLE, "retryableStatusCodes": ["NOPE"]}), r"retryableStatusCodes\[0\]"),
        (config(retryPolicy={**RETRY_EXAMPLE, "retryableStatusCodes": ["OK"]}), r"retryableStatusCodes\[0\]"),
        (config(retryPolicy={**RETRY_EXAMPLE, "perAttemptRecvTimeout": "0s"}), "perAttemptRecvTimeout: must be lo"),
        (config(hedgingPolicy={**HEDGING_EXAMPLE, "maxAttempts": 1}), r"hedgingPolicy.maxAttempts: must be at le"),
        (config(hedgingPolicy={**HEDGING_EXAMPLE, "hedgingDelay": "soon"}), r"hedgingDelay: must be a duration"),
        (config(hedgingPolicy={**HEDGING_EXAMPLE, "nonFatalStatusCodes": [99]}), r"nonFatalStatusCodes\[0\]"),
        ({"retryThrottling": {"maxTokens": 10}}, r"retryThrottling.tokenRatio: is required"),
        ({"retryThrottling": {"maxTokens": 0, "tokenRatio": 0.1}}, r"retryThrottling.maxTokens: must be a number"),
        ({"retryThrottling": {"maxTokens": 10, "tokenRatio": 0}}, r"retryThrottling.tokenRatio: must be a number"),
        (config(resilience={"breaker": {}}), r"resilience: unknown keys \['breaker'\]"),
        (config(resilience={"circuitBreaker": {"failureRate": 2}}), r"resilience.circuitBreaker: .*failure_rate"),
        (config(resilience={"circuitBreaker": {"colour": "red"}}), r"resilience.circuitBreaker: .*colour"),
        (config(resilience={"bulkhead": 3}), r"resilience.bulkhead: must be an object"),
        (config(resilience={"attemptTimeout": "0.1"}), r"resilience.attemptTimeout: must be a duration"),
        (
            config(retryPolicy={**RETRY_EXAMPLE, "perAttemptRecvTimeout": "1s"}, resilience={"attemptTimeout": "1s"}),
            "already sets it",
        ),
    ],
)
def test_invalid_configs_are_refused_with_the_json_path(bad: Any, path: str) -> None:
    with pytest.raises(ValueError, match=f"service config: .*{path}"):
        from_service_config(bad if isinstance(bad, str) else json.dumps(bad))


def test_the_helpers_take_service_config_once() -> None:
    with pytest.raises(ValueError, match="once"):
        resilient_channel(
            "127.0.0.1:1", service_config="{}", options=[("grpc.service_config", "{}")]
        )  # fmt: skip
    with pytest.raises(ValueError, match="JSON string or a mapping"):
        resilient_channel("127.0.0.1:1", service_config=3)  # type: ignore[arg-type]


def builtin(target: str, service_config: str) -> Any:
    """A bare grpc channel with grpc's own retries, configured by ``service_config``."""
    return grpc.insecure_channel(target, options=[("grpc.service_config", service_config)])


def gaps(server: ScriptedServer, id: str) -> list[float]:
    at = [s.at for s in server.recorder.seen if s.id == id]
    return [b - a for a, b in itertools.pairwise(at)]


@pytest.mark.parametrize("path", ["call", "aio"])
@pytest.mark.parametrize(
    ("max_attempts", "fail_first", "code", "attempts"),
    [
        (4, 2, grpc.StatusCode.UNAVAILABLE, 3),
        (4, 100, grpc.StatusCode.UNAVAILABLE, 4),
        (7, 100, grpc.StatusCode.UNAVAILABLE, 5),  # both cap at 5
        (4, 100, grpc.StatusCode.INTERNAL, 1),  # not retryable
    ],
)
def test_the_same_attempts_and_backoff_bounds_as_grpcs_own_retries(
    server: ScriptedServer, path: str, max_attempts: int, fail_first: int, code: grpc.StatusCode, attempts: int
) -> None:
    server.script.code = code
    policy = {**RETRY_EXAMPLE, "maxAttempts": max_attempts, "initialBackoff": "0.02s", "maxBackoff": "0.06s"}
    service_config = json.dumps(config(retryPolicy=policy))
    bare = builtin(server.target, service_config)
    grpc.channel_ready_future(bare).result(10)
    with Client(path, server.target, service_config=service_config) as ours:
        for run in range(3):
            theirs = f"grpc-{run}-{time.monotonic_ns()}"
            mine = f"ours-{run}-{time.monotonic_ns()}"
            try:
                pb_grpc.ScriptedStub(bare).Unary(Request(id=theirs, fail_first=fail_first), timeout=10)
                their_code = grpc.StatusCode.OK
            except grpc.RpcError as error:
                their_code = error.code()
            outcome = ours.unary(Request(id=mine, fail_first=fail_first), timeout=10)
            assert outcome.code is their_code
            assert server.attempts(theirs) == server.attempts(mine) == attempts
            for id in (theirs, mine):
                bounds = [min(0.02 * 2**n, 0.06) for n in range(attempts - 1)]
                assert all(gap <= bound + 0.05 for gap, bound in zip(gaps(server, id), bounds, strict=True)), (
                    id,
                    gaps(server, id),
                )
            seen = [s.metadata.get("grpc-previous-rpc-attempts") for s in server.recorder.seen if s.id == mine]
            assert seen == [None, *[str(n) for n in range(1, attempts)]]
    bare.close()


@pytest.mark.parametrize("path", ["call", "aio"])
def test_a_service_configs_hedging_runs_through_the_helpers(server: ScriptedServer, path: str) -> None:
    hedging = {"maxAttempts": 2, "hedgingDelay": "0.05s", "nonFatalStatusCodes": ["UNAVAILABLE"]}
    with Client(path, server.target, service_config=json.dumps(config(hedgingPolicy=hedging))) as client:
        outcome = client.unary(Request(id="h", sleep_ms=2000, sleep_attempts=1), timeout=5)
    assert outcome.error is None and outcome.reply.attempt == 2 and outcome.elapsed < 1.0


def grpc_error(code: grpc.StatusCode) -> grpc.RpcError:
    from grpc.aio import AioRpcError, Metadata

    return AioRpcError(code, Metadata(), Metadata(), "scripted")
