"""Fallbacks answer real protobuf responses with code OK on every path, and say so in trailing metadata."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import pytest
from scripted.v1 import scripted_pb2 as pb
from scripted.v1 import scripted_pb2_grpc as pb_grpc

import interceptors.aio
from interceptors import (
    FALLBACK_METADATA_KEY,
    FALLBACK_OUT_OF_TIME_KEY,
    CircuitBreaker,
    Fallback,
    FallbackMisfitWarning,
    ResilienceInterceptor,
    RetryPolicy,
    Timeout,
    resilient_channel,
)

from ..support.clients import PATHS, Client, returns_call, wait_until
from ..support.server import AIO_LOOP, Request, ScriptedServer

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
def test_a_fallback_that_fits_no_method_is_refused_when_the_stub_is_made(
    server: ScriptedServer, path: str, fallback: Fallback, problem: str
) -> None:
    """Checked against the response types as soon as they are known: when the helper's stub is made (a fallback of
    use to no method of the service is a mistake: ValueError naming them all), or, through grpc's own interceptor
    hooks, at the first call, which is never failed for it: a warning names the methods, and the fallback steps
    aside."""
    if not path.startswith("intercepted-"):
        with pytest.raises(ValueError, match=rf"fits no method of scripted.v1.Scripted: .*/Unary.*{problem}"):
            Client(path, server.target, fallback)
        return
    with (
        pytest.warns(FallbackMisfitWarning, match=rf"/Unary.*{problem}.*/BidiStream.*methods="),
        Client(path, server.target, fallback) as client,
    ):
        assert client.unary(Request(id="bad")).error is None
    assert server.attempts("bad") == 1


def test_every_stub_made_for_a_fallback_that_fits_no_method_is_refused(server: ScriptedServer) -> None:
    """Not only the first: a stub made again on the same channel is refused again (the helpers, sync and aio)."""
    fallback = Fallback(message={"nonexistent": 1})
    with resilient_channel(server.target, fallback) as channel:
        for _ in range(2):
            with pytest.raises(ValueError, match="fits no method"):
                pb_grpc.ScriptedStub(channel)

    async def aio() -> None:
        async with interceptors.aio.resilient_channel(server.target, fallback) as channel:
            for _ in range(2):
                with pytest.raises(ValueError, match="fits no method"):
                    pb_grpc.ScriptedStub(channel)

    AIO_LOOP.run(aio())


def test_fallback_function_sees_the_request_and_the_grpc_failure(server: ScriptedServer) -> None:
    seen: list[tuple[Any, Any]] = []

    def answer(request: Any, failure: BaseException) -> Any:
        seen.append((request.id, failure.code()))  # type: ignore[attr-defined]
        return pb.Reply(text="ok")

    with Client("call", server.target, Fallback(answer)) as client:
        client.unary(Request(id="x", fail_first=1))
    assert seen == [("x", grpc.StatusCode.UNAVAILABLE)]


@paths
@pytest.mark.parametrize(
    "answer",
    [lambda request, failure: 1 / 0, lambda request, failure: "a str", lambda failure: None],
    ids=["raises", "str", "none"],
)
def test_a_fallback_that_cannot_answer_gives_back_the_grpc_failure(
    server: ScriptedServer, path: str, answer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 8, defect 12: the caller gets the grpc.RpcError it would have got without the fallback; the fallback's
    error is logged (and chained on the error), never handed to the caller."""
    server.script.details = "backend down"
    with Client(path, server.target, Fallback(answer), RetryPolicy(max_attempts=2)) as client:
        outcome = client.unary(Request(id="x", fail_first=100))
    assert isinstance(outcome.error, grpc.RpcError) and outcome.reply is None
    assert (outcome.code, outcome.details) == (grpc.StatusCode.UNAVAILABLE, "backend down")
    assert server.attempts("x") == 2
    assert "the fallback could not answer" in caplog.text


@pytest.mark.parametrize("path", ["future", "intercepted-future"])
def test_a_slow_fallback_holds_up_no_other_future(server: ScriptedServer, path: str) -> None:
    """Issue 8, defect 11: futures run their policies apart, so one blocking fallback delays only its own call. The
    fallback blocks until the other calls have ended: held up by it, they would not end at all (no bound on how
    long a loaded machine takes). A Timeout of the others fires meanwhile: the 3 s call it bounds ends with
    DEADLINE_EXCEEDED no sooner than its 0.3 s, while the fallback still blocks."""
    started, released = threading.Event(), threading.Event()

    def slow(request: Any, failure: BaseException) -> Any:
        started.set()
        released.wait(10)
        return pb.Reply(text="slow fallback")

    slow_channel = Client(path, server.target, Fallback(slow))
    other = Client(path, server.target, RetryPolicy())
    bounded = Client(path, server.target, Timeout(0.3), RetryPolicy())  # 0.3 s for the whole call
    try:
        other.unary(Request(id="warm"))
        bounded.unary(Request(id="warm"))
        stalled = slow_channel.stub.Unary.future(Request(id="down", fail_first=1))
        assert started.wait(5)
        healthy = [other.stub.Unary.future(Request(id=f"ok-{i}")) for i in range(20)]
        assert all(f.result(5).attempt == 1 for f in healthy)
        sent = time.monotonic()
        timed = bounded.stub.Unary.future(Request(id="slow", sleep_ms=3000))
        with pytest.raises(grpc.RpcError) as raised:
            timed.result(5)
        timed_time = time.monotonic() - sent
        assert not released.is_set() and not stalled.done()  # all of it while the fallback blocked
        released.set()
        assert stalled.result(5).text == "slow fallback"
    finally:
        released.set()
        slow_channel.close()
        other.close()
        bounded.close()
    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED  # the server sleeps 3 s: the Timeout's
    assert timed_time >= 0.29


@paths
def test_a_fallback_answers_the_callers_deadline_in_its_reserve(server: ScriptedServer, path: str) -> None:
    """Fallback > Retry > Timeout(0.3 s) with the caller's 0.6 s: the retry starts in time and its attempt is cut by
    the caller's deadline, which the fallback answers in its reserve (issue 21: the caller got DEADLINE_EXCEEDED).
    The retry has ~0.28 s: room to reach a loaded server (with 0.07 s, one CI run's retry never arrived)."""
    chain = (
        Fallback(message={"text": "cached"}),
        RetryPolicy(max_attempts=3, delay=0.01, jitter_factor=0),
        Timeout(0.3),
    )
    with Client(path, server.target, *chain) as client:
        client.unary(Request(id="warm"))  # a first call costs more than later ones: on a loaded machine, past its time
        outcome = client.unary(Request(id="late", sleep_ms=2000), timeout=0.6)
    assert outcome.error is None and outcome.reply.text == "cached", outcome
    wait_until(lambda: server.attempts("late") == 2)  # the retry was sent, with the caller's deadline less the reserve
    assert outcome.elapsed < 0.6 + 0.05  # by the caller's deadline (and, on a quiet machine, 20 ms before it)
    if returns_call(path):
        assert outcome.trailing[FALLBACK_METADATA_KEY] == "DEADLINE_EXCEEDED"
        assert outcome.trailing[FALLBACK_OUT_OF_TIME_KEY] == "true"


@paths
def test_a_fallback_without_a_reserve_leaves_the_callers_deadline_final(server: ScriptedServer, path: str) -> None:
    chain = (Fallback(message={"text": "cached"}, reserve=None), RetryPolicy(delay=0.01, jitter_factor=0), Timeout(0.3))
    with Client(path, server.target, *chain) as client:
        client.unary(Request(id="warm"))  # a first call costs more than later ones: on a loaded machine, past its time
        outcome = client.unary(Request(id="late", sleep_ms=2000), timeout=0.6)
    assert outcome.code is grpc.StatusCode.DEADLINE_EXCEEDED
    wait_until(lambda: server.attempts("late") == 2)  # the retry, cut by the caller's deadline, was sent


def test_a_misfit_warning_names_the_line_of_the_users_code(server: ScriptedServer) -> None:
    """The line that made the stub (a helper's channel), or that made the first call (grpc's interceptor hooks)."""
    fallback = Fallback(value=pb.Reply(text="fallback"))  # fits the unary responses, not the streams
    with pytest.warns(FallbackMisfitWarning) as heard, resilient_channel(server.target, fallback) as channel:
        pb_grpc.ScriptedStub(channel)
    intercepted = grpc.intercept_channel(
        grpc.insecure_channel(server.target, options=[("grpc.enable_retries", 0)]), ResilienceInterceptor(fallback)
    )
    with pytest.warns(FallbackMisfitWarning) as heard_intercepted, intercepted:
        pb_grpc.ScriptedStub(intercepted).Unary(Request(id="misfit"), timeout=5)
    misfits = [w for w in [*heard, *heard_intercepted] if w.category is FallbackMisfitWarning]
    assert len(misfits) == 2
    assert {w.filename for w in misfits} == {__file__}
