"""Fallbacks answer real protobuf responses with code OK on every path, and say so in trailing metadata."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from scripted.v1 import scripted_pb2 as pb

from interceptors import FALLBACK_METADATA_KEY, CircuitBreaker, Fallback, RetryPolicy, Timeout

from ..support.clients import PATHS, Client, returns_call
from ..support.scripted import Request, ScriptedServer

paths = pytest.mark.parametrize("path", PATHS)


@paths
@pytest.mark.parametrize(
    ("fallback", "expected_text"),
    [
        (Fallback(), ""),
        (Fallback(message={"text": "from cache", "attempt": 7}), "from cache"),
        (Fallback(lambda request, failure: pb.Reply(id=request.id, text=f"for {request.id}")), "for fb"),
    ],
    ids=["default", "dict", "function"],
)
def test_fallback_variants(server: ScriptedServer, path: str, fallback: Fallback, expected_text: str) -> None:
    with Client(path, server.target, fallback, RetryPolicy(max_attempts=2)) as client:
        outcome = client.unary(Request(id="fb", fail_first=10))
    assert server.attempts("fb") == 2
    assert outcome.error is None and outcome.code is grpc.StatusCode.OK
    assert type(outcome.reply) is pb.Reply
    assert outcome.reply.text == expected_text
    if returns_call(path):
        assert outcome.trailing[FALLBACK_METADATA_KEY] == "UNAVAILABLE"


@paths
def test_fallback_answers_an_open_breaker_and_a_timeout(server: ScriptedServer, path: str) -> None:
    breaker = CircuitBreaker(failure_threshold=1, delay=60)
    breaker.open()
    with Client(path, server.target, Fallback(message={"text": "later"}), breaker) as client:
        outcome = client.unary(Request(id="open"))
    assert (outcome.reply.text, outcome.code, server.attempts("open")) == ("later", grpc.StatusCode.OK, 0)
    with Client(path, server.target, Fallback(message={"text": "slow"}), Timeout(0.05)) as client:
        outcome = client.unary(Request(id="slow", sleep_ms=300))
    assert outcome.reply.text == "slow"
    if returns_call(path):
        assert outcome.trailing[FALLBACK_METADATA_KEY] == "DEADLINE_EXCEEDED"


@paths
def test_caller_errors_are_not_answered(server: ScriptedServer, path: str) -> None:
    server.script.code = grpc.StatusCode.PERMISSION_DENIED
    with Client(path, server.target, Fallback(message={"text": "no"})) as client:
        outcome = client.unary(Request(id="denied", fail_first=1))
    assert outcome.code is grpc.StatusCode.PERMISSION_DENIED and outcome.reply is None


@paths
@pytest.mark.parametrize(
    ("fallback", "problem"),
    [
        (Fallback(message={"nonexistent": 1}), "nonexistent"),
        (Fallback(message={"attempt": "many"}), "attempt"),
        (Fallback(value="a str"), "scripted.v1.Reply"),
        (Fallback(value=None), "scripted.v1.Reply"),
    ],
    ids=["unknown-field", "wrong-type", "value-str", "value-none"],
)
def test_a_bad_fallback_fails_before_anything_is_sent(
    server: ScriptedServer, path: str, fallback: Fallback, problem: str
) -> None:
    """Checked against the response type as soon as it is known: when the helper's stub is made, or at the first
    call through grpc's own interceptor hooks; either way nothing reaches the server."""
    with (
        pytest.raises(ValueError, match=rf"/scripted.v1.Scripted/Unary.*{problem}"),
        Client(path, server.target, fallback) as client,
    ):
        client.unary(Request(id="bad"))
    assert server.attempts("bad") == 0


def test_fallback_function_sees_the_request_and_the_grpc_failure(server: ScriptedServer) -> None:
    seen: list[tuple[Any, Any]] = []

    def answer(request: Any, failure: BaseException) -> Any:
        seen.append((request.id, failure.code()))  # type: ignore[attr-defined]
        return pb.Reply(text="ok")

    with Client("call", server.target, Fallback(answer)) as client:
        client.unary(Request(id="x", fail_first=1))
    assert seen == [("x", grpc.StatusCode.UNAVAILABLE)]
