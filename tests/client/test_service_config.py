"""gRPC service configs as policies: gRFC A6's examples, its rejection rules (with the JSON path of what is wrong),
and the same attempts and backoff bounds as grpc's built-in retries, measured side by side on one server."""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import re
import time
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scripted.v1 import scripted_pb2_grpc as pb_grpc

import interceptors.aio
from interceptors import (
    AdaptiveThrottle,
    Backoff,
    Bulkhead,
    CircuitBreaker,
    Fallback,
    HedgePolicy,
    RetryPolicy,
    Timeout,
    TimeoutExceededError,
    from_service_config,
    resilient_channel,
)
from interceptors.events import RetryScheduled

from ..support.clients import Client
from ..support.heard import Heard
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
    assert retry.delay == Backoff(0.1, 1.0, multiplier=2, jitter_factor=0.2)  # A6 as amended: d * random(0.8, 1.2)
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
                            "adaptiveThrottle": {"k": 2, "minRequests": 5},
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
    assert throttle.min_requests == 5  # type: ignore[attr-defined]
    assert throttle.k == 2 and bulkhead.max_concurrent == 4 and bulkhead.max_wait == 0.05  # type: ignore[attr-defined]
    assert breaker.config.failure_rate == 0.5 and breaker.config.delay == 1.0  # type: ignore[attr-defined]
    assert [type(p) for p in converted.policies] == [Timeout]
    left = json.loads(converted.grpc_config or "")
    assert left["loadBalancingConfig"] == [{"round_robin": {}}]
    assert "retryPolicy" not in left["methodConfig"][0] and "resilience" not in left["methodConfig"][0]
    assert "timeout" not in left["methodConfig"][0]  # a Timeout enforces it: grpcio's own is wrong (#34547)


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
        ({"retryThrottling": {"maxTokens": 10, "tokenRatio": 5e-324}}, r"retryThrottling.tokenRatio: must be at le"),
        (config(resilience={"circuitBreaker": {"failurePeriod": 1e-300}}), r"circuitBreaker: .*failure_period"),
        (config(retryPolicy={**RETRY_EXAMPLE, "retryableStatusCodes": []}), "retryableStatusCodes: must be a non-e"),
        (config(retryPolicy={**RETRY_EXAMPLE, "retryableStatusCodes": ["NOPE"]}), r"retryableStatusCodes\[0\]"),
        (config(retryPolicy={**RETRY_EXAMPLE, "retryableStatusCodes": ["OK"]}), r"retryableStatusCodes\[0\]"),
        (config(retryPolicy={**RETRY_EXAMPLE, "perAttemptRecvTimeout": "0s"}), "perAttemptRecvTimeout: must be lo"),
        (
            config(retryPolicy={**RETRY_EXAMPLE, "retryableStatusCodes": 0, "perAttemptRecvTimeout": "1s"}),
            r"retryableStatusCodes: must be a list of status codes, got 0",
        ),
        (config(hedgingPolicy={**HEDGING_EXAMPLE, "maxAttempts": 1}), r"hedgingPolicy.maxAttempts: must be at le"),
        (config(hedgingPolicy={**HEDGING_EXAMPLE, "hedgingDelay": "soon"}), r"hedgingDelay: must be a duration"),
        (config(hedgingPolicy={**HEDGING_EXAMPLE, "nonFatalStatusCodes": [99]}), r"nonFatalStatusCodes\[0\]"),
        ({"retryThrottling": {"maxTokens": 10}}, r"retryThrottling.tokenRatio: is required"),
        ({"retryThrottling": {"maxTokens": 0, "tokenRatio": 0.1}}, r"retryThrottling.maxTokens: must be a number"),
        ({"retryThrottling": {"maxTokens": 10, "tokenRatio": 0}}, r"retryThrottling.tokenRatio: must be a number"),
        (
            config(resilience={"breaker": {}}),
            r"resilience\.breaker: unknown key; known: fallback, cache, attemptTimeout",
        ),
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


@pytest.mark.parametrize(
    ("bad", "path"),
    [
        ({"retryThrottling": {"maxTokens": 10, "tokenRatio": 0.0001}}, r"retryThrottling\.tokenRatio: must be at le"),
        (config(timeout="1s\n"), r"methodConfig\[0\]\.timeout: must be a duration"),
        (config(timeout="\u0661s"), r"methodConfig\[0\]\.timeout: must be a duration"),  # an Arabic-Indic 1
        (config(timeout="1.\u0665s"), r"methodConfig\[0\]\.timeout: must be a duration"),
        (config(retryPolicy={**RETRY_EXAMPLE, "maxBackoff": "1s\n"}), r"retryPolicy\.maxBackoff: must be a dur"),
        (config(resilience={"attemptTimeout": "1s\n"}), r"resilience\.attemptTimeout: must be a duration"),
        (config(resilience={"circuitBreaker": {"delay": "1s\n"}}), r"resilience\.circuitBreaker: .*delay"),
        ({"methodConfig": [{"name": [{"service": 0}]}]}, r"methodConfig\[0\]\.name\[0\]\.service: must be a str"),
        ({"methodConfig": [{"name": [{"service": "pkg/Svc"}]}]}, r"methodConfig\[0\]\.name\[0\]\.service: .*'/'"),
        ({"methodConfig": [{"name": [{"service": SERVICE, "method": "A/B"}]}]}, r"name\[0\]\.method: .*'/'"),
        ({"methodConfig": [{"name": [{"service": SERVICE, "method": "*"}]}]}, r"name\[0\]\.method: '\*' is no wild"),
        (config(retryPolicy={**RETRY_EXAMPLE, "max_attempts": 3}), r"retryPolicy\.max_attempts: .*'maxAttempts'"),
        (config(retryPolicy={**RETRY_EXAMPLE, "MaxAttempts": 3}), r"retryPolicy\.MaxAttempts: .*'maxAttempts'"),
        (config(retryPolicy={**RETRY_EXAMPLE, "jitter": 0.2}), r"retryPolicy\.jitter: unknown key; known: maxAtt"),
        (config(hedgingPolicy={**HEDGING_EXAMPLE, "hedging_delay": "1s"}), r"hedging_delay: .*'hedgingDelay'"),
        ({"retryThrottling": {**THROTTLING_EXAMPLE, "max_tokens": 3}}, r"retryThrottling\.max_tokens: .*'maxTokens'"),
        (config(retry_policy=RETRY_EXAMPLE), r"methodConfig\[0\]\.retry_policy: .*camelCase: 'retryPolicy'"),
        (config(Timeout="1s"), r"methodConfig\[0\]\.Timeout: .*camelCase: 'timeout'"),
        (config(retryPolicies=RETRY_EXAMPLE), r"methodConfig\[0\]\.retryPolicies: unknown key; did you mean 'retryP"),
        (config(retries=RETRY_EXAMPLE), r"methodConfig\[0\]\.retries: unknown key; known: name, waitForReady"),
        ({"methodConfig": [{"name": [{"Service": SERVICE}]}]}, r"name\[0\]\.Service: .*camelCase: 'service'"),
        ({"method_config": []}, r"method_config: .*camelCase: 'methodConfig'"),
        ({"methodConfigs": []}, r"methodConfigs: unknown key; did you mean 'methodConfig'"),
        ({"LoadBalancingConfig": []}, r"LoadBalancingConfig: .*'loadBalancingConfig'"),
        ({"retryPolicy": RETRY_EXAMPLE}, r"retryPolicy: belongs in a methodConfig entry"),
        ({"retry_policy": RETRY_EXAMPLE}, r"retry_policy: belongs in a methodConfig entry"),
        (config(resilience={"bulkhead": {"max_concurrent": 3}}), r"bulkhead\.max_concurrent: .*'maxConcurrent'"),
        (config(resilience={"bulkhead": {"MaxConcurrent": 3}}), r"bulkhead\.MaxConcurrent: .*'maxConcurrent'"),
        (config(resilience={"CircuitBreaker": {}}), r"resilience\.CircuitBreaker: .*camelCase: 'circuitBreaker'"),
    ],
)
def test_what_grpc_refuses_and_misspelt_keys_are_refused_with_the_json_path(bad: Any, path: str) -> None:
    with pytest.raises(ValueError, match=f"^service config: .*{path}"):
        from_service_config(bad)


@pytest.mark.parametrize(
    ("bad", "path"),
    [
        (config(waitForReady="yes"), r"methodConfig\[0\]\.waitForReady: must be true or false, got 'yes'"),
        (config(waitForReady=1), r"methodConfig\[0\]\.waitForReady: must be true or false, got 1"),
        (config(maxRequestMessageBytes=-1), r"methodConfig\[0\]\.maxRequestMessageBytes: must be a number of bytes"),
        (config(maxResponseMessageBytes=1.5), r"methodConfig\[0\]\.maxResponseMessageBytes: must be a number of b"),
        (config(maxResponseMessageBytes=1024.0), r"methodConfig\[0\]\.maxResponseMessageBytes: must be a number of"),
        (config(maxRequestMessageBytes=True), r"methodConfig\[0\]\.maxRequestMessageBytes: must be a number of b"),
        (config(maxRequestMessageBytes=2**32), r"methodConfig\[0\]\.maxRequestMessageBytes: must be a number of b"),
        (config(maxRequestMessageBytes="12k"), r"methodConfig\[0\]\.maxRequestMessageBytes: must be a number of b"),
        ({"loadBalancingConfig": {}}, r"loadBalancingConfig: must be a list"),
        ({"loadBalancingConfig": None}, r"loadBalancingConfig: must be a list"),
        ({"loadBalancingConfig": []}, r"loadBalancingConfig: must name at least one policy"),
        ({"loadBalancingConfig": [3]}, r"loadBalancingConfig\[0\]: must be an object of one key"),
        ({"loadBalancingConfig": [{}]}, r"loadBalancingConfig\[0\]: must be an object of one key"),
        ({"loadBalancingConfig": [{"round_robin": {}, "pick_first": {}}]}, r"loadBalancingConfig\[0\]: must be an"),
        ({"loadBalancingConfig": [{"round_robin": []}]}, r"loadBalancingConfig\[0\]\.round_robin: must be an obj"),
        ({"loadBalancingConfig": [{"round_robbin": {}}]}, r"grpc refuses it: .*loadBalancingConfig.*round_robbin"),
        (
            {"loadBalancingConfig": [{"weighted_round_robin": {"errorUtilizationPenalty": -1}}]},
            r"grpc refuses it: .*loadBalancingConfig.*errorUtilizationPenalty",
        ),
        ({"loadBalancingPolicy": 3}, r"loadBalancingPolicy: must be a string"),
        ({"loadBalancingPolicy": "nope"}, r"grpc refuses it: .*loadBalancingPolicy.*nope"),
        ({"healthCheckConfig": []}, r"healthCheckConfig: must be an object"),
        ({"healthCheckConfig": {"serviceName": 3}}, r"healthCheckConfig\.serviceName: must be a string"),
        ({"healthCheckConfig": {"service_name": "x"}}, r"healthCheckConfig\.service_name: .*'serviceName'"),
    ],
)
def test_what_grpc_gets_is_checked_when_the_channel_is_made(bad: Any, path: str) -> None:
    """The part of a config the policies do not do goes to grpc, which would refuse every call of a channel whose
    config it refuses (INVALID_ARGUMENT): it is refused as the channel is made, with the path."""
    with pytest.raises(ValueError) as refused:
        from_service_config(bad)
    if "says no more here" in str(refused.value):  # an older grpcio names the field in its log line only
        path = "grpc refuses it: Failed to create"
    assert re.match(f"^service config: {path}", str(refused.value)), refused.value
    with pytest.raises(ValueError, match=f"^service config: {path}"):
        resilient_channel("127.0.0.1:1", service_config=bad)


@pytest.mark.parametrize("path", ["call", "aio"])
def test_the_standard_fields_grpc_takes_reach_it(server: ScriptedServer, path: str) -> None:
    standard = {
        "methodConfig": [
            {
                "name": [{"service": SERVICE}],
                "waitForReady": True,
                "maxRequestMessageBytes": "1024",
                "maxResponseMessageBytes": 4096,
                "retryPolicy": RETRY_EXAMPLE,
            }
        ],
        "loadBalancingConfig": [{"unknown_first": {}}, {"pick_first": {}}],  # grpc takes the first it knows
    }
    converted = from_service_config(standard)
    given = json.loads(converted.grpc_config or "")
    assert given["methodConfig"][0] == {
        "name": [{"service": SERVICE}],
        "waitForReady": True,
        "maxRequestMessageBytes": "1024",
        "maxResponseMessageBytes": 4096,
    }
    assert given["loadBalancingConfig"] == standard["loadBalancingConfig"]
    with Client(path, server.target, service_config=standard) as client:
        assert client.unary(Request(id="standard", fail_first=1), timeout=5).code is grpc.StatusCode.OK
    assert server.attempts("standard") == 2
    with Client(path, server.target, service_config=standard) as client:  # grpc enforces its part
        outcome = client.unary(Request(id="too-big", text="x" * 2000), timeout=5)
    assert outcome.code is grpc.StatusCode.RESOURCE_EXHAUSTED and server.attempts("too-big") == 0


def test_unknown_top_level_keys_go_to_grpc_which_ignores_them() -> None:
    """gRPC reads top-level fields of its own (some behind flags, e.g. ``connectionScaling``) and ignores those it
    does not know: only misspellings of the standard ones are refused."""
    converted = from_service_config({"connectionScaling": {"maxConnectionsPerSubchannel": 2}})
    assert json.loads(converted.grpc_config or "") == {"connectionScaling": {"maxConnectionsPerSubchannel": 2}}


def test_null_is_the_same_as_absent_as_in_grpc() -> None:
    converted = from_service_config(
        {
            "methodConfig": [
                {
                    "name": [{"service": SERVICE, "method": None}, {"service": None}],
                    "timeout": None,
                    "waitForReady": None,
                    "retryPolicy": None,
                    "hedgingPolicy": None,
                    "resilience": None,
                }
            ],
            "retryThrottling": None,
            "healthCheckConfig": {"serviceName": None},
            "loadBalancingPolicy": None,
        }
    )
    assert converted.methods == {f"/{SERVICE}/*": ()} and converted.policies == () and converted.budget is None
    hedging = {"maxAttempts": 2, "hedgingDelay": None, "nonFatalStatusCodes": None}
    (hedge,) = from_service_config(config(hedgingPolicy=hedging)).methods[f"/{SERVICE}/*"]
    assert isinstance(hedge, HedgePolicy) and hedge.delay == 0.0


def test_token_ratio_keeps_three_decimals_cutting_the_rest_as_grpc_does() -> None:
    budget = from_service_config({"retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1239}}).budget
    assert budget is not None
    budget.record_outcome(failed=True)
    budget.record_outcome(failed=False)
    assert budget.tokens == pytest.approx(9.123)


@pytest.mark.parametrize("make", [resilient_channel, interceptors.aio.resilient_channel], ids=["sync", "aio"])
@pytest.mark.parametrize(
    ("name", "field"), [({"service": "pkg/Svc"}, "service"), ({"service": "s", "method": "*"}, "method")]
)
def test_the_helpers_refuse_a_bad_name_with_its_json_path(make: Any, name: dict[str, str], field: str) -> None:
    with pytest.raises(ValueError, match=rf"^service config: methodConfig\[0\]\.name\[0\]\.{field}: "):
        make("127.0.0.1:1", service_config={"methodConfig": [{"name": [name], "retryPolicy": RETRY_EXAMPLE}]})


def nested(depth: int) -> Any:
    """A list ``depth`` lists deep."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


class Opaque:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


DEEPEST = r"loadBalancingConfig\[0\]\[0\].* \(781 characters\): nested deeper than 255"  # 254 [0], cut
RETRY_AT = r"methodConfig\[0\]\.retryPolicy\.maxAttempts"


@pytest.mark.parametrize(
    ("bad", "path"),
    [
        # where Python's json stops first (3.11: at its recursion limit) by the character, else (3.12, 3.13: json
        # goes deeper) by the JSON path
        ("[" * 1000 + "]" * 1000, r"\$(: nested deeper than 255 levels .* at character 255|\[0\]\[0\].*: nested)"),
        ('{"a":' * 2000 + "1" + "}" * 2000, r"(\$: nested deeper than 255 levels|a\.a\.a.*: nested deeper than 255)"),
        (json.dumps({"loadBalancingConfig": nested(300)}), DEEPEST),
        ({"loadBalancingConfig": nested(300)}, DEEPEST),
        (
            json.dumps(config(retryPolicy=RETRY_EXAMPLE)).replace('"maxAttempts": 4', '"maxAttempts": Infinity'),
            RETRY_AT,
        ),
        (json.dumps(config(retryPolicy=RETRY_EXAMPLE)).replace('"maxAttempts": 4', '"maxAttempts": 1e400'), RETRY_AT),
        (json.dumps(config(retryPolicy=RETRY_EXAMPLE)).replace('"maxAttempts": 4', '"maxAttempts": NaN'), RETRY_AT),
        (
            json.dumps(config(retryPolicy=RETRY_EXAMPLE)).replace('"maxAttempts": 4', '"maxAttempts": ' + "9" * 5000),
            RETRY_AT,
        ),
        (config(retryPolicy={**RETRY_EXAMPLE, "maxAttempts": float("inf")}), RETRY_AT + ": must be a finite number"),
        (
            config(retryPolicy={**RETRY_EXAMPLE, "backoffMultiplier": float("nan")}),
            r"methodConfig\[0\]\.retryPolicy\.backoffMultiplier: must be a finite number, got nan",
        ),
        ({"methodConfig": [{("a",): 1}]}, r"methodConfig\[0\]: keys must be strings, got \('a',\)"),
        (
            {"methodConfig": [{"name": [{"service": object()}]}]},
            r"methodConfig\[0\]\.name\[0\]\.service: must be a JSON value",
        ),
        (
            {"methodConfig": [{"name": [{"service": Opaque()}]}]},
            r"methodConfig\[0\]\.name\[0\]\.service: must be a JSON value",
        ),
        (
            {"methodConfig": [{"name": [{"service": b"pkg.Svc"}]}]},
            r"methodConfig\[0\]\.name\[0\]\.service: must be a JSON value",
        ),
        (
            {"loadBalancingConfig": [{"round_robin": {"x": 10**5000}}]},
            r"loadBalancingConfig\[0\]\.round_robin\.x: an integer of over",
        ),
        (b'{"methodConfig": [\xff]}', "not JSON"),
        (
            '{"loadBalancingConfig": [{"round_robin": {"x": "\\ud800"}}]}',
            r"loadBalancingConfig\[0\]\.round_robin\.x: not Unicode: a lone",
        ),
        (
            {"loadBalancingConfig": [{"round_robin": {"x\ud800": 1}}]},
            r"loadBalancingConfig\[0\]\.round_robin: keys must be Unicode",
        ),
    ],
)
def test_values_json_cannot_hold_are_refused_with_the_json_path(bad: Any, path: str) -> None:
    with pytest.raises(ValueError, match=f"^service config: {path}"):
        from_service_config(bad)


def test_a_config_that_contains_itself_is_refused() -> None:
    looped: dict[str, Any] = {}
    looped["loadBalancingConfig"] = [looped]
    with pytest.raises(ValueError, match=r"^service config: loadBalancingConfig.*: nested deeper than 255 levels"):
        from_service_config(looped)


@pytest.mark.parametrize(
    "bad",
    [
        config(timeout="1" * 10_000_000 + "x"),
        config(retryPolicy={**RETRY_EXAMPLE, "retryableStatusCodes": ["X" * 10_000_000]}),
        {"methodConfig": [{"name": {"x" * 10_000_000: 1}}]},
        {"methodConfig": "m" * 10_000_000},
        {"methodConfig": [{"k" * 10_000_000: 1}]},
        {"retry" + "_" * 10_000_000 + "Policy": {}},
    ],
    ids=["duration", "status code", "name", "methodConfig", "key", "misplaced key"],
)
def test_a_huge_bad_value_is_not_echoed_whole(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"^service config: ") as refused:
        from_service_config(bad)
    assert len(str(refused.value)) < 400, str(refused.value)[:400]


KEYS = [  # gRFC A2 and A6, the extension, a load balancing policy
    *["methodConfig", "loadBalancingConfig", "loadBalancingPolicy", "retryThrottling", "healthCheckConfig"],
    *["serviceName", "name", "service", "method", "waitForReady", "timeout", "maxRequestMessageBytes"],
    *["maxResponseMessageBytes", "retryPolicy", "hedgingPolicy", "resilience", "maxAttempts", "initialBackoff"],
    *["maxBackoff", "backoffMultiplier", "retryableStatusCodes", "perAttemptRecvTimeout", "hedgingDelay"],
    *["nonFatalStatusCodes", "maxTokens", "tokenRatio", "fallback", "circuitBreaker", "attemptTimeout", "bulkhead"],
    *["maxConcurrent", "round_robin"],
]
SPECIAL = st.sampled_from(
    [
        *[None, True, False, 0, -1, 1, 2, 5, 2**32, 10**30, 0.0001, 2.5, float("inf"), float("nan"), "", "0s"],
        *["1s", ".5s", "-1s", "1s\n", "\u0661s", "1e400s", "*", "a/b", "UNAVAILABLE", "OK", "14", "round_robin"],
        *[[], {}, [{}], "\ud800", object(), b"bytes", (1, 2)],  # the last four: not JSON (a mapping may hold them)
    ]
)
JSON_LEAVES = st.one_of(SPECIAL, SPECIAL, SPECIAL, st.integers(), st.floats(), st.text(max_size=12))
JSON_KEYS = st.one_of(
    st.sampled_from(KEYS),
    st.sampled_from(KEYS).map(lambda key: re.sub("([A-Z])", r"_\1", key).lower()),
    st.sampled_from(KEYS).map(str.upper),
    st.text(max_size=6),
    st.tuples(st.text(max_size=2)),  # not JSON
)
JSONISH = st.recursive(
    JSON_LEAVES,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(JSON_KEYS, children, max_size=5)),
    max_leaves=20,
)
FULL = {  # every field a service config may have, valid
    "methodConfig": [
        {
            "name": [{"service": SERVICE, "method": "Unary"}, {"service": "other.v1.Other"}],
            "timeout": "2.5s",
            "waitForReady": True,
            "maxRequestMessageBytes": 1024,
            "maxResponseMessageBytes": "2048",
            "retryPolicy": {**RETRY_EXAMPLE, "perAttemptRecvTimeout": "0.5s"},
            "resilience": {
                "fallback": {"message": {"text": "later"}},
                "circuitBreaker": {"failureRate": 0.5, "failureWindow": 20, "delay": "1s"},
                "bulkhead": {"maxConcurrent": 4, "maxWait": "0.05s"},
                "rateLimiter": {"maxCalls": 100, "period": "1s"},
            },
        },
        {"name": [{}], "hedgingPolicy": HEDGING_EXAMPLE},
    ],
    "retryThrottling": THROTTLING_EXAMPLE,
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": "svc"},
}


def places(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key or index) in ``value``."""
    found: list[tuple[Any, Any]] = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, member in items:
        found.append((value, key))
        found.extend(places(member))
    return found


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), as_text=st.booleans())
def test_any_json_value_builds_or_is_refused_with_a_value_error(data: st.DataObject, as_text: bool) -> None:
    """Fuzz: a JSON-ish value, or a valid config with up to three values replaced, keys renamed (wrong case) or
    deleted, given as a mapping or as JSON text, builds, or is refused with a ValueError saying it is the service
    config's fault — never another exception."""
    value: Any = copy.deepcopy(FULL)
    if data.draw(st.booleans(), label="anything"):
        value = copy.deepcopy(data.draw(JSONISH, label="value"))  # drawn constants are shared: not to be changed
    for _ in range(data.draw(st.integers(min_value=0, max_value=3), label="changes")):
        where = places(value)
        if not where:
            break
        container, key = data.draw(st.sampled_from(where), label="at")
        change = data.draw(st.sampled_from(["replace", "rename", "delete"]), label="change")
        if change == "replace" or isinstance(container, list):
            container[key] = copy.deepcopy(data.draw(JSONISH, label="by"))
        elif change == "rename":
            container[data.draw(JSON_KEYS, label="as")] = container.pop(key)
        else:
            del container[key]
    if as_text:
        with contextlib.suppress(TypeError, ValueError):  # what JSON text cannot say stays a mapping
            value = json.dumps(value)
    try:
        from_service_config(value)
    except ValueError as error:
        refused = str(error)
        assert refused.startswith("service config:"), refused


def test_the_helpers_take_service_config_once() -> None:
    with pytest.raises(ValueError, match="once"):
        resilient_channel(
            "127.0.0.1:1", service_config="{}", options=[("grpc.service_config", "{}")]
        )  # fmt: skip
    with pytest.raises(ValueError, match="JSON string or a mapping"):
        resilient_channel("127.0.0.1:1", service_config=3)  # type: ignore[arg-type]


EARLY = 0.003  # a timer may fire a clock tick early


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
    """The same attempts and codes as grpc's own retries; both wait at least 0.8 d before retry n+1 (the server
    sees the gaps), and ours schedules each wait within A6's d * random(0.8, 1.2) (its RetryScheduled events say
    so exactly: what a loaded machine adds to a wait is no part of the rule, so no upper bound is timed)."""
    server.script.code = code
    policy = {**RETRY_EXAMPLE, "maxAttempts": max_attempts, "initialBackoff": "0.02s", "maxBackoff": "0.06s"}
    service_config = json.dumps(config(retryPolicy=policy))
    bare = builtin(server.target, service_config)
    grpc.channel_ready_future(bare).result(10)
    heard = Heard()
    try:
        with Client(path, server.target, service_config=service_config, metrics=heard) as ours:
            for run in range(3):
                theirs = f"grpc-{run}-{time.monotonic_ns()}"
                mine = f"ours-{run}-{time.monotonic_ns()}"
                try:
                    pb_grpc.ScriptedStub(bare).Unary(Request(id=theirs, fail_first=fail_first), timeout=10)
                    their_code = grpc.StatusCode.OK
                except grpc.RpcError as error:
                    their_code = error.code()
                heard.events.clear()
                outcome = ours.unary(Request(id=mine, fail_first=fail_first), timeout=10)
                scheduled = heard.of(RetryScheduled)
                assert outcome.code is their_code
                assert server.attempts(theirs) == server.attempts(mine) == attempts
                nominal = [min(0.02 * 2**n, 0.06) for n in range(attempts - 1)]  # A6: d * random(0.8, 1.2)
                assert [e.attempt for e in scheduled] == list(range(1, attempts))
                assert all(0.8 * d <= e.delay <= 1.2 * d for e, d in zip(scheduled, nominal, strict=True)), scheduled
                for id in (theirs, mine):
                    measured = gaps(server, id)  # the backoff and a round trip
                    assert all(gap >= 0.8 * d - EARLY for gap, d in zip(measured, nominal, strict=True)), (id, measured)
                seen = [s.metadata.get("grpc-previous-rpc-attempts") for s in server.recorder.seen if s.id == mine]
                assert seen == [None, *[str(n) for n in range(1, attempts)]]
    finally:
        bare.close()


def bare_unary(channel: Any, request: Any) -> grpc.StatusCode:
    try:
        pb_grpc.ScriptedStub(channel).Unary(request, timeout=5)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("path", ["call", "aio"])
def test_an_attempt_cut_by_per_attempt_recv_timeout_is_retried_whatever_the_codes_as_grpc_does(
    server: ScriptedServer, path: str
) -> None:
    policy = {**RETRY_EXAMPLE, "maxAttempts": 3, "initialBackoff": "0.01s", "maxBackoff": "0.01s"}
    # (0.3 s per attempt: each reaches the server within it on a busy machine; 0.05 s did not, for grpc's own)
    service_config = json.dumps(config(retryPolicy={**policy, "perAttemptRecvTimeout": "0.3s"}))  # UNAVAILABLE
    options = [("grpc.service_config", service_config), ("grpc.experimental.enable_hedging", 1)]  # else ignored
    bare = grpc.insecure_channel(server.target, options=options)
    grpc.channel_ready_future(bare).result(10)
    with Client(path, server.target, service_config=service_config) as ours:
        for who, call in (("grpc", lambda request: bare_unary(bare, request)), ("ours", ours.unary)):
            once, always = f"{who}-once-{path}", f"{who}-always-{path}"
            first = call(Request(id=once, sleep_ms=1500, sleep_attempts=1))
            every = call(Request(id=always, sleep_ms=1500))
            assert getattr(first, "code", first) is grpc.StatusCode.OK and server.attempts(once) == 2, who
            assert server.attempts(always) == 3, who
            # grpcio ends it CANCELLED ("retry perAttemptRecvTimeout exceeded"), we DEADLINE_EXCEEDED: see the README
            code = getattr(every, "code", every)
            assert code is (grpc.StatusCode.CANCELLED if who == "grpc" else grpc.StatusCode.DEADLINE_EXCEEDED)
    bare.close()


@pytest.mark.parametrize(
    ("policy", "extension"),
    [
        ({**RETRY_EXAMPLE, "perAttemptRecvTimeout": "0.3s"}, {}),
        ({**RETRY_EXAMPLE, "retryableStatusCodes": [], "perAttemptRecvTimeout": "0.3s"}, {}),
        (
            {k: v for k, v in RETRY_EXAMPLE.items() if k != "retryableStatusCodes"} | {"perAttemptRecvTimeout": "0.3s"},
            {},
        ),
        (RETRY_EXAMPLE, {"attemptTimeout": "0.3s"}),
    ],
    ids=["listed codes", "no codes", "codes left out", "the extension's attemptTimeout"],
)
def test_the_retry_handles_what_the_per_attempt_timeout_cut(policy: dict[str, Any], extension: dict[str, Any]) -> None:
    """As gRPC's C core (and grpc-java): an attempt the per-attempt timeout cut is retried whatever the codes, which
    may then be empty; nothing else is added to what the codes say."""
    retry, *_, attempt_timeout = from_service_config(config(retryPolicy=policy, resilience=extension)).methods[
        f"/{SERVICE}/*"
    ]
    assert isinstance(retry, RetryPolicy) and retry.handle is not None and isinstance(attempt_timeout, Timeout)
    assert retry.handle(TimeoutExceededError("cut", timeout=0.3))
    assert not retry.handle(TimeoutExceededError("no time left for another attempt"))
    assert not retry.handle(grpc_error(grpc.StatusCode.DEADLINE_EXCEEDED))  # a server's own, or the call's deadline
    assert retry.handle(grpc_error(grpc.StatusCode.UNAVAILABLE)) is bool(policy.get("retryableStatusCodes"))


@pytest.mark.parametrize("path", ["call", "aio"])
def test_a_service_configs_hedging_runs_through_the_helpers(server: ScriptedServer, path: str) -> None:
    hedging = {"maxAttempts": 2, "hedgingDelay": "0.05s", "nonFatalStatusCodes": ["UNAVAILABLE"]}
    with Client(path, server.target, service_config=json.dumps(config(hedgingPolicy=hedging))) as client:
        outcome = client.unary(Request(id="h", sleep_ms=2000, sleep_attempts=1), timeout=5)
    assert outcome.error is None and outcome.reply.attempt == 2 and outcome.elapsed < 1.0


@pytest.mark.parametrize("path", ["call", "aio"])
def test_a_service_configs_timeout_is_the_calls_deadline_enforced_by_a_timeout_not_by_grpc(
    server: ScriptedServer, path: str
) -> None:
    """grpcio's own service-config timeout fails calls at once, unsent (grpc/grpc#34547, #40633): the helpers
    enforce it with a Timeout and never hand it to grpc."""
    with Client(path, server.target, service_config=json.dumps(config(timeout="1s"))) as client:
        outcome = client.unary(Request(id="in-time", sleep_ms=300), timeout=5)
    assert outcome.code is grpc.StatusCode.OK and server.attempts("in-time") == 1
    with Client(path, server.target, service_config=json.dumps(config(timeout="0.2s"))) as client:
        outcome = client.unary(Request(id="late", sleep_ms=300), timeout=5)
    assert outcome.code is grpc.StatusCode.DEADLINE_EXCEEDED and server.attempts("late") == 1
    assert outcome.elapsed >= 0.18  # at the config's deadline, not at once


def grpc_error(code: grpc.StatusCode) -> grpc.RpcError:
    from grpc.aio import AioRpcError, Metadata

    return AioRpcError(code, Metadata(), Metadata(), "scripted")
