"""Result predicates through gRPC, on every call path and both server kinds: an OK answer the predicate calls a failure
(here: the server's count of attempts for the request's id, ``Reply.attempt``, below a bar) is retried, counted by
breakers, hedged over and replaced by fallbacks; streams are judged when they commit (their first message)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from interceptors import (
    FALLBACK_METADATA_KEY,
    Backoff,
    CircuitBreaker,
    CircuitState,
    Fallback,
    HedgePolicy,
    RetryPolicy,
)

from ..support.clients import PATHS, STREAM_KINDS, Client, returns_call, wait_until
from ..support.server import AIO_LOOP, Request, ScriptedServer
from .test_stream_retries import STREAM_PATHS, call

FAST = Backoff(initial=0.01, maximum=0.02)
paths = pytest.mark.parametrize("path", PATHS)


def before(attempt: int) -> Any:
    """A predicate: the answer came from an attempt before number ``attempt`` (a "not yet")."""
    return lambda reply: reply.attempt < attempt


@paths
def test_an_answer_judged_a_failure_is_retried(server: ScriptedServer, path: str) -> None:
    with Client(path, server.target, RetryPolicy(max_attempts=5, delay=FAST, handle_result=before(3))) as client:
        outcome = client.unary(Request(id="pending"))
    assert outcome.error is None and outcome.reply.attempt == 3
    assert server.attempts("pending") == 3


@paths
def test_when_retries_run_out_the_caller_gets_the_last_answer(server: ScriptedServer, path: str) -> None:
    with Client(path, server.target, RetryPolicy(max_attempts=2, delay=FAST, handle_result=before(9))) as client:
        outcome = client.unary(Request(id="never"))
    assert outcome.error is None and outcome.code is grpc.StatusCode.OK
    assert outcome.reply.attempt == 2


@paths
def test_a_fallback_replaces_an_answer_judged_a_failure(server: ScriptedServer, path: str) -> None:
    fallback = Fallback(message={"text": "from cache"}, handle_result=before(9))
    with Client(path, server.target, fallback) as client:
        outcome = client.unary(Request(id="replaced"))
        kept = client.unary(Request(id="kept", text="fresh"))
    assert outcome.reply.text == "from cache" and outcome.code is grpc.StatusCode.OK
    if returns_call(path):
        assert outcome.trailing[FALLBACK_METADATA_KEY] == "OK"  # it replaced an OK answer
    assert server.attempts("replaced") == 1
    assert kept.reply.text == "from cache"  # every first attempt is "not yet" here


@paths
def test_the_breaker_opens_on_answers_judged_failures(server: ScriptedServer, path: str) -> None:
    breaker = CircuitBreaker(failure_threshold=2, delay=60, handle_result=before(9))
    with Client(path, server.target, breaker) as client:
        first, second = client.unary(Request(id="a")), client.unary(Request(id="b"))
        rejected = client.unary(Request(id="c"))
    assert first.error is None and second.error is None
    assert breaker.state is CircuitState.OPEN
    assert rejected.code is grpc.StatusCode.UNAVAILABLE and server.attempts("c") == 0


@paths
def test_a_hedge_starts_the_next_attempt_at_once_after_an_answer_judged_non_fatal(
    server: ScriptedServer, path: str
) -> None:
    hedge = HedgePolicy(delay=20.0, max_attempts=3, non_fatal_result=before(2))
    with Client(path, server.target, hedge) as client:
        outcome = client.unary(Request(id="hedged"), timeout=10)
    assert outcome.error is None and outcome.reply.attempt == 2
    assert outcome.elapsed < 5  # not after the hedging delay


@paths
def test_a_breaker_inside_a_hedge_judges_the_answer_of_the_attempt_that_won(server: ScriptedServer, path: str) -> None:
    """The first attempt is slow; the hedge (on the sync paths a deferred attempt, whose end grpc reports) answers
    first, and the breaker judges that answer when it comes."""
    breaker = CircuitBreaker(failure_threshold=1, delay=60, handle_result=lambda reply: True)
    with Client(path, server.target, HedgePolicy(delay=0.02), breaker) as client:
        outcome = client.unary(Request(id="raced", sleep_ms=2000, sleep_attempts=1), timeout=10)
    assert outcome.error is None and outcome.reply.attempt == 2
    assert breaker.state is CircuitState.OPEN


@pytest.mark.parametrize("path", STREAM_PATHS)
@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_a_stream_is_judged_when_it_commits(server: ScriptedServer, path: str, kind: str) -> None:
    """Server and client streams are retried (their requests are kept); a bidi stream has sent requests it no longer
    keeps when its first message comes, so its caller gets it as it is. The breaker counts each answer judged a
    failure."""
    breaker = CircuitBreaker(failure_threshold=10, handle_result=before(2))
    retry = RetryPolicy(max_attempts=3, delay=FAST, handle_result=before(2))
    with Client(path, server.target, retry, breaker) as client:
        ended = call(client, kind, 3, id=f"judged-{kind}")
    assert ended.error is None and ended.code is grpc.StatusCode.OK
    expected = 1 if kind == "bidi_stream" else 2
    assert server.attempts(f"judged-{kind}") == expected
    assert {m.attempt for m in ended.messages} - {0} == {expected}
    assert breaker.metrics.failures == 1


@pytest.mark.parametrize("path", STREAM_PATHS)
def test_a_fallback_replaces_a_server_stream_whose_first_message_is_judged_a_failure(
    server: ScriptedServer, path: str
) -> None:
    with Client(path, server.target, Fallback(message={"text": "cached"}, handle_result=before(9))) as client:
        ended = call(client, "server_stream", 3, id="stream-replaced")
    assert [m.text for m in ended.messages] == ["cached"]
    assert ended.trailing[FALLBACK_METADATA_KEY] == "OK"


@pytest.mark.parametrize("path", STREAM_PATHS)
def test_a_server_stream_replaced_by_a_fallback_is_cancelled(server: ScriptedServer, path: str) -> None:
    """No policy inside waits for its end: it is cancelled at once all the same (the server sees it while the caller
    still holds the stream, its first message read)."""
    request = Request(id="let-go", count=3, pause_ms=5000)
    with Client(path, server.target, Fallback(message={"text": "cached"}, handle_result=before(9))) as client:
        if client.is_aio:

            async def first() -> Any:
                stream = client.stub.ServerStream(request)
                message = await stream.read()
                await asyncio.get_running_loop().run_in_executor(None, wait_until, cancelled)
                return message

            def cancelled() -> bool:
                return "let-go" in server.recorder.cancelled

            assert AIO_LOOP.run(first()).text == "cached"
        else:
            stream = client.stub.ServerStream(request)
            assert next(stream).text == "cached"
            wait_until(lambda: "let-go" in server.recorder.cancelled)
            del stream
