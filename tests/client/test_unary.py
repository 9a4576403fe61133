"""Unary-unary calls through every client path against sync and aio servers: attempts, statuses, metadata."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from interceptors import (
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    RetriesExceededError,
    RetryPolicy,
    Timeout,
)

from ..support.clients import PATHS, Client, wait_until
from ..support.server import Request, ScriptedServer

UNAVAILABLE, INVALID_ARGUMENT = grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INVALID_ARGUMENT
paths = pytest.mark.parametrize("path", PATHS)


@paths
def test_unavailable_twice_then_ok_takes_three_attempts(server: ScriptedServer, path: str) -> None:
    with Client(path, server.target, RetryPolicy(max_attempts=3)) as client:
        outcome = client.unary(Request(id="a", fail_first=2, text="hi"))
    assert outcome.code is grpc.StatusCode.OK
    assert (outcome.reply.text, outcome.reply.attempt) == ("hi", 3)
    assert server.attempts("a") == 3


@paths
def test_invalid_argument_is_raised_as_is_after_one_attempt(server: ScriptedServer, path: str) -> None:
    server.script.code, server.script.details = INVALID_ARGUMENT, "bad name"
    server.script.trailers = (("why", "no"),)
    with Client(path, server.target, RetryPolicy(max_attempts=5), CircuitBreaker(failure_threshold=1)) as client:
        outcome = client.unary(Request(id="b", fail_first=1))
    assert server.attempts("b") == 1
    assert isinstance(outcome.error, grpc.RpcError)
    assert not isinstance(outcome.error, RetriesExceededError)
    assert (outcome.code, outcome.details, outcome.trailing.get("why")) == (INVALID_ARGUMENT, "bad name", "no")


@paths
def test_retries_exhausted_give_the_last_real_status(server: ScriptedServer, path: str) -> None:
    server.script.details = "backend down"
    server.script.trailers = (("x-shard", "7"),)
    with Client(path, server.target, RetryPolicy(max_attempts=3)) as client:
        outcome = client.unary(Request(id="c", fail_first=10))
    assert server.attempts("c") == 3
    assert isinstance(outcome.error, grpc.RpcError) and isinstance(outcome.error, RetriesExceededError)
    assert outcome.error.attempts == 3
    assert (outcome.code, outcome.details, outcome.trailing.get("x-shard")) == (UNAVAILABLE, "backend down", "7")


@paths
def test_each_retry_carries_previous_attempts_metadata(server: ScriptedServer, path: str) -> None:
    with Client(path, server.target, RetryPolicy(max_attempts=3)) as client:
        outcome = client.unary(Request(id="d", fail_first=2), metadata=(("x-user", "u1"),))
    assert outcome.reply.previous_attempts == "2"
    seen = [s for s in server.recorder.seen if s.id == "d"]
    assert [s.metadata.get("grpc-previous-rpc-attempts") for s in seen] == [None, "1", "2"]
    assert all(s.metadata.get("x-user") == "u1" for s in seen)


@paths
def test_open_breaker_rejects_without_reaching_the_server_then_one_probe(server: ScriptedServer, path: str) -> None:
    breaker = CircuitBreaker(failure_threshold=2, delay=0.2)
    with Client(path, server.target, breaker) as client:
        for _ in range(2):
            assert client.unary(Request(id="e", fail_first=2)).code is UNAVAILABLE
        assert breaker.state is CircuitState.OPEN
        rejected = client.unary(Request(id="e"))
        assert server.attempts("e") == 2  # never sent
        assert isinstance(rejected.error, grpc.RpcError) and isinstance(rejected.error, CircuitOpenError)
        assert rejected.code is UNAVAILABLE and "circuit breaker is open" in rejected.details
        assert 0 < int(rejected.trailing["grpc-retry-pushback-ms"]) <= 200  # when the breaker lets a probe through
        server.script.sleep = 0.3  # the probe is slow: a second call meanwhile must be rejected

        wait_until(lambda: breaker.state is CircuitState.HALF_OPEN)
        probe = client.in_thread(Request(id="e"))
        wait_until(lambda: server.attempts("e") == 3)
        assert client.unary(Request(id="e")).code is UNAVAILABLE  # half-open: the one trial is in flight
        assert probe().code is grpc.StatusCode.OK
    assert server.attempts("e") == 3
    assert breaker.state is CircuitState.CLOSED


@paths
def test_deadline_exceeded_is_retried_only_while_time_is_left(server: ScriptedServer, path: str) -> None:
    with Client(path, server.target, RetryPolicy(max_attempts=5, delay=0), Timeout(0.1)) as client:
        client.unary(Request(id="warm"))  # a first call costs more than later ones: on a loaded machine, past its time
        outcome = client.unary(Request(id="f", sleep_ms=150), timeout=0.25)
    assert outcome.code is grpc.StatusCode.DEADLINE_EXCEEDED
    # attempts at 0 and 0.1 s timed out (our Timeout) and were retried; a third gets the 0.05 s left of the
    # caller's deadline, unless the machine was too slow to start it in time; none goes past that deadline
    assert 2 <= server.attempts("f") <= 3
    assert outcome.elapsed < 0.25 + 0.2


@paths
def test_classification_is_configurable_per_policy(server: ScriptedServer, path: str) -> None:
    from interceptors import on_codes

    server.script.code = grpc.StatusCode.RESOURCE_EXHAUSTED
    retry = RetryPolicy(max_attempts=3, handle=on_codes(grpc.StatusCode.RESOURCE_EXHAUSTED))
    with Client(path, server.target, retry) as client:
        assert client.unary(Request(id="busy", fail_first=2)).code is grpc.StatusCode.OK
        server.script.code = UNAVAILABLE
        assert client.unary(Request(id="down", fail_first=2)).code is UNAVAILABLE
    assert (server.attempts("busy"), server.attempts("down")) == (3, 1)


def test_failures_raised_below_are_treated_like_failures_returned(server: ScriptedServer) -> None:
    """Another interceptor under ours may raise instead of returning a failed call."""
    from scripted.v1 import scripted_pb2_grpc as pb_grpc

    class Unavailable(grpc.RpcError, grpc.Call):
        def code(self) -> grpc.StatusCode:
            return UNAVAILABLE

        def details(self) -> str:
            return "raised below"

        def trailing_metadata(self) -> tuple[()]:
            return ()

        initial_metadata = trailing_metadata

        def is_active(self) -> bool:
            return False

        def time_remaining(self) -> float:
            return 0.0

        def cancel(self) -> bool:
            return False

        def add_callback(self, callback: object) -> bool:
            return False

    channel, raised = retrying_over_raises(server, Unavailable, times=2)
    assert pb_grpc.ScriptedStub(channel).Unary(Request(id="r")).attempt == 1
    assert len(raised) == 2 and server.attempts("r") == 1
    channel.close()


def test_blocking_calls_run_in_the_callers_thread(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """grpc's blocking continuation is recognised, so blocking calls never pay for a worker thread."""
    from interceptors.engine import _workers

    def no_background(*_: object) -> None:
        raise AssertionError("a blocking call went to a worker thread")

    monkeypatch.setattr(_workers.Workers, "submit", no_background)
    with Client("call", server.target, RetryPolicy()) as client:
        assert client.unary(Request(id="b", fail_first=1)).reply.attempt == 2
    with Client("with_call", server.target, RetryPolicy()) as client:
        assert client.unary(Request(id="c", fail_first=1)).reply.attempt == 2


def test_a_continuation_of_a_shape_grpc_never_made_runs_in_the_callers_thread(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One not recognised as grpc's ``.future()`` continuation is taken as blocking: its policies run in the
    caller's thread (a future's caller waits for it, which is slower, never wrong), never on the library's shared
    loop, which a blocking continuation would hold up."""
    from scripted.v1 import scripted_pb2 as pb

    from interceptors import ResilienceInterceptor
    from interceptors.engine import _loop

    def no_background(*_: object) -> None:
        raise AssertionError("a call of a continuation of unknown shape went to the background loop")

    monkeypatch.setattr(_loop.Background, "spawn", no_background)
    bare = grpc.insecure_channel(server.target)
    unary = bare.unary_unary("/scripted.v1.Scripted/Unary", pb.Request.SerializeToString, pb.Reply.FromString)
    interceptor = ResilienceInterceptor(RetryPolicy())
    details = SimpleNamespace(method="/scripted.v1.Scripted/Unary", timeout=5, metadata=None, credentials=None)
    for name, continuation in {  # a future's, a blocking call's
        "future": lambda details, request: unary.future(request, timeout=details.timeout, metadata=details.metadata),
        "blocking": lambda details, request: unary.with_call(
            request, timeout=details.timeout, metadata=details.metadata
        )[1],
    }.items():
        answered = interceptor.intercept_unary_unary(continuation, details, Request(id=name, fail_first=1))
        assert answered.result().attempt == 2
    bare.close()


def test_future_calls_also_see_failures_raised_below(server: ScriptedServer) -> None:
    from scripted.v1 import scripted_pb2_grpc as pb_grpc

    class Refused(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return UNAVAILABLE

    channel, _ = retrying_over_raises(server, Refused, times=1)
    assert pb_grpc.ScriptedStub(channel).Unary.future(Request(id="f")).result(5).attempt == 1
    channel.close()


@paths
def test_a_retry_waits_for_an_open_breaker_to_let_a_probe_through(server: ScriptedServer, path: str) -> None:
    """An open breaker's rejection carries its remaining delay as pushback, as a server's UNAVAILABLE would."""
    breaker = CircuitBreaker(failure_threshold=1, delay=0.2)
    with Client(path, server.target, RetryPolicy(max_attempts=3), breaker) as client:
        outcome = client.unary(Request(id="p", fail_first=1))
    assert outcome.code is grpc.StatusCode.OK  # attempt 1 failed, 2 was rejected and waited, 3 was the probe
    assert server.attempts("p") == 2
    assert outcome.elapsed >= 0.2


def retrying_over_raises(server: ScriptedServer, error: type[Exception], times: int) -> tuple[Any, list[int]]:
    """A channel retrying 3 times over an interceptor that raises ``error`` on its first ``times`` calls."""
    from interceptors import ResilienceInterceptor

    raised: list[int] = []

    class Raises(grpc.UnaryUnaryClientInterceptor):
        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            if len(raised) < times:
                raised.append(1)
                raise error()
            return continuation(details, request)

    channel = grpc.intercept_channel(
        grpc.insecure_channel(server.target, options=[("grpc.enable_retries", 0)]),
        ResilienceInterceptor(RetryPolicy(max_attempts=3)),
        Raises(),
    )
    return channel, raised


@pytest.mark.parametrize("how", ["wrapper", "subclass"])
def test_an_interceptor_that_hooks_in_through_ours_sees_every_call(server: ScriptedServer, how: str) -> None:
    """A stub's blocking calls are taken over from grpc's hooks only where the hook grpc calls is ours as it is:
    an interceptor that calls ours from its own hook, or a subclass that overrides it, sees every call."""
    from scripted.v1 import scripted_pb2_grpc as pb_grpc

    from interceptors import ResilienceInterceptor

    seen: list[str] = []

    class Subclass(ResilienceInterceptor):
        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            seen.append(request.id)
            return super().intercept_unary_unary(continuation, details, request)

    class Wrapper(grpc.UnaryUnaryClientInterceptor):
        def __init__(self) -> None:
            self.ours = ResilienceInterceptor(RetryPolicy(max_attempts=2))

        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            seen.append(request.id)
            return self.ours.intercept_unary_unary(continuation, details, request)

    interceptor = Wrapper() if how == "wrapper" else Subclass(RetryPolicy(max_attempts=2))
    channel = grpc.intercept_channel(
        grpc.insecure_channel(server.target, options=[("grpc.enable_retries", 0)]), interceptor
    )
    with channel:
        unary = pb_grpc.ScriptedStub(channel).Unary
        replies = [unary(Request(id=f"{how}-{turn}", fail_first=1), timeout=5) for turn in range(4)]
    assert seen == [f"{how}-{turn}" for turn in range(4)]
    assert [reply.attempt for reply in replies] == [2] * 4


@pytest.mark.parametrize("above", [False, True], ids=["outermost", "under-another"])
@pytest.mark.parametrize("how", ["call", "with_call", "future"])
def test_an_interceptor_under_ours_sees_every_attempt_and_the_callers_options(
    server: ScriptedServer, how: str, above: bool
) -> None:
    """Ours sends a blocking call's attempts to the next multicallable of grpc's channel directly, not through grpc's
    continuation, and at a stub's second blocking call, takes its later ones over from grpc's hooks: the interceptors
    under ours still see each attempt, with its timeout and metadata (retries counted) and the caller's
    wait_for_ready and compression, at every call; so they do with an interceptor above ours (grpc then makes our
    intercepted multicallable afresh each call)."""
    from scripted.v1 import scripted_pb2_grpc as pb_grpc

    from interceptors import ResilienceInterceptor

    seen: list[Any] = []

    class Records(grpc.UnaryUnaryClientInterceptor):
        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            seen.append(details)
            return continuation(details, request)

    class Above(grpc.UnaryUnaryClientInterceptor):
        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            return continuation(details, request)

    interceptors = [*([Above()] if above else []), ResilienceInterceptor(RetryPolicy(max_attempts=3)), Records()]
    channel = grpc.intercept_channel(
        grpc.insecure_channel(server.target, options=[("grpc.enable_retries", 0)]), *interceptors
    )
    with channel:
        unary = pb_grpc.ScriptedStub(channel).Unary
        for turn in range(3):
            seen.clear()
            request = Request(id=f"under-{how}-{above}-{turn}", fail_first=2)
            options: dict[str, Any] = {"wait_for_ready": True, "compression": grpc.Compression.Gzip}
            options |= {"metadata": (("x-who", "me"),), "timeout": 5}
            if how == "call":
                reply = unary(request, **options)
            elif how == "with_call":
                reply, call = unary.with_call(request, **options)
                assert call.code() is grpc.StatusCode.OK
            else:
                reply = unary.future(request, **options).result(5)
            assert reply.attempt == 3 and server.attempts(request.id) == 3
            assert [d.method for d in seen] == ["/scripted.v1.Scripted/Unary"] * 3
            assert [dict(d.metadata).get("grpc-previous-rpc-attempts") for d in seen] == [None, "1", "2"]
            assert all(dict(d.metadata)["x-who"] == "me" and 0 < d.timeout <= 5 for d in seen)
            assert all((d.wait_for_ready, d.compression) == (True, grpc.Compression.Gzip) for d in seen)
