"""Streaming calls get the whole chain, as gRPC's own retries treat them (gRFC A6): retried until they commit (the
first response message, or requests beyond the replay buffer), with their requests replayed in order; fallbacks
answer them; a StreamResume continues a server stream that failed after commit; breakers count the final status.

Every kind of stream, on sync and aio servers, from every stream path (helpers and grpc's interceptor hooks, sync
and aio).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import pytest

from interceptors import (
    Backoff,
    Bulkhead,
    CircuitBreaker,
    CircuitState,
    Fallback,
    RetryPolicy,
    StreamResume,
    Timeout,
    replaced_by_fallback,
)

from ..support.clients import STREAM_KINDS, Client, arequests, requests, wait_until
from ..support.server import AIO_LOOP, Reply, Request, ScriptedServer, check_deadline
from .test_streams import expected

STREAM_PATHS = ["call", "aio", "intercepted-call", "intercepted-aio"]
AIO_STREAM_PATHS = ["aio", "intercepted-aio"]
FAST = Backoff(initial=0.01, maximum=0.02)


@pytest.fixture(params=STREAM_PATHS)
def path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Ended:
    """What a caller got from a stream: the messages read, then the error (None if it ended OK), and its status."""

    def __init__(self, messages: list[Any], error: grpc.RpcError | None, code: Any, trailing: Any) -> None:
        self.messages, self.error, self.code = messages, error, code
        self.trailing = {key: value for key, value in trailing or ()}  # grpcio < 1.63: dict() of aio metadata fails


def call(client: Client, kind: str, n: int, timeout: float | None = None, **fields: Any) -> Ended:
    """A streaming call of ``kind``: ``n`` requests (one request asking ``n`` replies, for server streams)."""
    if client.is_aio:
        ended: Ended = AIO_LOOP.run(_aio_call(client.stub, kind, n, timeout, fields))
        return ended
    messages: list[Any] = []
    if kind == "server_stream":
        stream = client.stub.ServerStream(Request(count=n, **fields), timeout=timeout)
    elif kind == "client_stream":
        future = client.stub.ClientStream.future(requests(n, **fields), timeout=timeout)
        try:
            messages.append(future.result())
        except grpc.RpcError as error:
            return Ended(messages, error, future.code(), future.trailing_metadata())
        return Ended(messages, None, future.code(), future.trailing_metadata())
    else:
        stream = client.stub.BidiStream(requests(n, **fields), timeout=timeout)
    try:
        for message in stream:
            messages.append(message)
    except grpc.RpcError as error:
        return Ended(messages, error, stream.code(), stream.trailing_metadata())
    return Ended(messages, None, stream.code(), stream.trailing_metadata())


async def _aio_call(stub: Any, kind: str, n: int, timeout: float | None, fields: dict[str, Any]) -> Ended:
    messages: list[Any] = []
    if kind == "server_stream":
        call = stub.ServerStream(Request(count=n, **fields), timeout=timeout)
    elif kind == "client_stream":
        call = stub.ClientStream(arequests(n, **fields), timeout=timeout)
        try:
            messages.append(await call)
        except grpc.RpcError as error:
            return Ended(messages, error, await call.code(), await call.trailing_metadata())
        return Ended(messages, None, await call.code(), await call.trailing_metadata())
    else:
        call = stub.BidiStream(arequests(n, **fields), timeout=timeout)
    try:
        async for message in call:
            messages.append(message)
    except grpc.RpcError as error:
        return Ended(messages, error, await call.code(), await call.trailing_metadata())
    return Ended(messages, None, await call.code(), await call.trailing_metadata())


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_a_stream_failing_before_its_first_message_is_retried(server: ScriptedServer, path: str, kind: str) -> None:
    """UNAVAILABLE twice before any reply, then OK: 3 attempts; the caller sees each message once, and the
    successful attempt got every request, in order."""
    with Client(path, server.target, RetryPolicy(delay=FAST)) as client:
        ended = call(client, kind, 5, id=f"pre-{kind}", fail_first=2)
    assert ended.error is None and ended.code is grpc.StatusCode.OK
    assert server.attempts(f"pre-{kind}") == 3
    assert [m.text for m in ended.messages] == expected(kind, 5)
    if kind == "server_stream":
        assert [m.index for m in ended.messages] == list(range(5))
        assert {m.attempt for m in ended.messages} == {3}
    elif kind == "client_stream":
        assert ended.messages[0].index == 5 and ended.messages[0].attempt == 3
    else:
        assert [m.index for m in ended.messages] == list(range(5)) and ended.messages[0].attempt == 3


def test_a_server_stream_failing_after_its_first_message_is_not_retried(server: ScriptedServer, path: str) -> None:
    """Committed at the first message: the caller gets the messages, then the error, and nothing is repeated."""
    with Client(path, server.target, RetryPolicy(delay=FAST)) as client:
        ended = call(client, "server_stream", 10, id="post", fail_first=1, fail_after=3)
    assert [m.index for m in ended.messages] == [0, 1, 2]
    assert ended.error is not None and ended.error.code() is grpc.StatusCode.UNAVAILABLE
    assert ended.code is grpc.StatusCode.UNAVAILABLE
    assert server.attempts("post") == 1


@pytest.mark.parametrize("kind", ["client_stream", "bidi_stream"])
def test_requests_beyond_the_replay_buffer_commit_the_call(server: ScriptedServer, path: str, kind: str) -> None:
    """A bound smaller than the first request: the call commits as it is sent, and is not retried."""
    with Client(path, server.target, RetryPolicy(delay=FAST), replay_buffer=3) as client:
        ended = call(client, kind, 5, id=f"overflow-{kind}", fail_first=1)
        assert ended.error is not None and ended.error.code() is grpc.StatusCode.UNAVAILABLE
        assert server.attempts(f"overflow-{kind}") == 1
        healthy = call(client, kind, 5, id=f"healthy-{kind}")  # past the bound, a healthy call is whole
    assert [m.text for m in healthy.messages] == expected(kind, 5)


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_retried_streams_carry_previous_attempts_and_their_own_deadline(
    server: ScriptedServer, path: str, kind: str
) -> None:
    """As for unary calls: grpc-previous-rpc-attempts on retries, each attempt bounded by the per-attempt Timeout."""
    chain = (RetryPolicy(delay=FAST), Timeout(0.8))
    with Client(path, server.target, *chain) as client:
        started = time.monotonic()
        ended = call(client, kind, 2, timeout=20, id=f"meta-{kind}", fail_first=2)
    assert ended.error is None
    seen = [s for s in server.recorder.seen if s.id == f"meta-{kind}"]
    assert [s.metadata.get("grpc-previous-rpc-attempts") for s in seen] == [None, "1", "2"]
    for s, after in zip(seen, [started, *(s.at for s in seen[:-1])], strict=True):  # each after the one before
        check_deadline(s, timeout=0.8, sent_after=after)


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_streams_wait_out_the_servers_pushback(server: ScriptedServer, path: str, kind: str) -> None:
    server.script.trailers = (("grpc-retry-pushback-ms", "200"),)
    with Client(path, server.target, RetryPolicy(delay=FAST)) as client:
        ended = call(client, kind, 2, id=f"push-{kind}", fail_first=1)
    assert ended.error is None
    first, second = (s.at for s in server.recorder.seen if s.id == f"push-{kind}")
    assert second - first >= 0.2


def test_a_server_stream_fallback_answers_messages(server: ScriptedServer, path: str) -> None:
    def cached(request: Any, failure: BaseException) -> list[Any]:
        return [Reply(id=request.id, text="cached", index=i) for i in range(3)]

    with Client(path, server.target, Fallback(cached), RetryPolicy(max_attempts=2, delay=FAST)) as client:
        ended = call(client, "server_stream", 5, id="fb", fail_first=5)
    assert ended.error is None and ended.code is grpc.StatusCode.OK
    assert [(m.text, m.index) for m in ended.messages] == [("cached", 0), ("cached", 1), ("cached", 2)]
    assert replaced_by_fallback(tuple(ended.trailing.items())) == "UNAVAILABLE"
    assert server.attempts("fb") == 2


def test_the_default_fallback_of_a_server_stream_is_an_empty_stream(server: ScriptedServer, path: str) -> None:
    with Client(path, server.target, Fallback(), RetryPolicy(max_attempts=1)) as client:
        ended = call(client, "server_stream", 5, id="empty", fail_first=5)
    assert ended.error is None and ended.messages == []
    assert ended.trailing.get("resilience-fallback") == "UNAVAILABLE"


def test_an_async_fallback_may_answer_an_async_iterable(server: ScriptedServer) -> None:
    async def cached(request: Any, failure: BaseException) -> Any:
        async def replies() -> Any:
            for i in range(2):
                yield Reply(text="async", index=i)

        return replies()

    with Client("aio", server.target, Fallback(cached), RetryPolicy(max_attempts=1)) as client:
        ended = call(client, "server_stream", 5, id="afb", fail_first=5)
    assert [(m.text, m.index) for m in ended.messages] == [("async", 0), ("async", 1)]


def test_a_fallback_does_not_answer_after_messages_were_delivered(server: ScriptedServer, path: str) -> None:
    with Client(path, server.target, Fallback(), RetryPolicy(delay=FAST)) as client:
        ended = call(client, "server_stream", 10, id="late-fb", fail_first=1, fail_after=2)
    assert len(ended.messages) == 2 and ended.error is not None
    assert ended.error.code() is grpc.StatusCode.UNAVAILABLE


def test_a_client_stream_fallback_answers_a_response(server: ScriptedServer, path: str) -> None:
    with Client(path, server.target, Fallback(message={"text": "default"}), RetryPolicy(max_attempts=2)) as client:
        ended = call(client, "client_stream", 3, id="cfb", fail_first=5)
    assert ended.error is None and ended.messages[0].text == "default"
    assert ended.trailing.get("resilience-fallback") == "UNAVAILABLE"


def test_a_bidi_fallback_function_answers_messages(server: ScriptedServer, path: str) -> None:
    chain = (Fallback(lambda failure: [Reply(text="bidi-fallback")]), RetryPolicy(max_attempts=1))
    with Client(path, server.target, *chain) as client:
        ended = call(client, "bidi_stream", 3, id="bfb", fail_first=5)
    assert [m.text for m in ended.messages] == ["bidi-fallback"]


def resume_after(request: Any, delivered: Sequence[Any]) -> Any:
    resumed = Request()
    resumed.CopyFrom(request)
    resumed.start = delivered[-1].index + 1 if delivered else request.start
    return resumed


def test_resume_continues_a_server_stream_across_two_failures(server: ScriptedServer, path: str) -> None:
    """Two attempts fail after 3 replies each; the hook resumes from the last index: one gap-free sequence."""
    chain = (RetryPolicy(delay=FAST), StreamResume(resume_after))
    with Client(path, server.target, *chain) as client:
        ended = call(client, "server_stream", 10, id="resume", fail_first=2, fail_after=3)
    assert ended.error is None and ended.code is grpc.StatusCode.OK
    assert [m.index for m in ended.messages] == list(range(10))
    assert [m.attempt for m in ended.messages] == [1, 1, 1, 2, 2, 2, 3, 3, 3, 3]
    assert [m.previous_attempts for m in ended.messages][::3] == ["", "1", "2", "2"]
    assert server.attempts("resume") == 3


def test_resumes_count_against_max_attempts(server: ScriptedServer, path: str) -> None:
    chain = (RetryPolicy(max_attempts=2, delay=FAST), StreamResume(resume_after))
    with Client(path, server.target, *chain) as client:
        ended = call(client, "server_stream", 10, id="resume-max", fail_first=5, fail_after=2)
    assert [m.index for m in ended.messages] == [0, 1, 2, 3]
    assert ended.error is not None and ended.error.code() is grpc.StatusCode.UNAVAILABLE
    assert server.attempts("resume-max") == 2


def test_a_resume_hook_answering_none_ends_the_stream(server: ScriptedServer, path: str) -> None:
    chain = (RetryPolicy(delay=FAST), StreamResume(lambda request, delivered: None))
    with Client(path, server.target, *chain) as client:
        ended = call(client, "server_stream", 10, id="resume-none", fail_first=1, fail_after=2)
    assert len(ended.messages) == 2 and ended.error is not None
    assert server.attempts("resume-none") == 1


def test_a_resume_hook_that_raises_ends_the_stream(
    server: ScriptedServer, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    chain = (RetryPolicy(delay=FAST), StreamResume(lambda request, delivered: 1 / 0))
    with Client(path, server.target, *chain) as client:
        ended = call(client, "server_stream", 10, id="resume-raises", fail_first=1, fail_after=2)
    assert len(ended.messages) == 2 and ended.error is not None
    assert ended.error.code() is grpc.StatusCode.UNAVAILABLE
    assert server.attempts("resume-raises") == 1
    assert "resume function raised" in caplog.text


def test_stream_resume_needs_a_retry_policy() -> None:
    with pytest.raises(ValueError, match="needs a RetryPolicy"):
        Client("call", "127.0.0.1:1", StreamResume(resume_after), warm=False)
    with pytest.raises(ValueError, match="resume must be a function"):
        StreamResume("offset")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [-1, 1.5, True, "1MB", 1 << 40])
def test_a_bad_replay_buffer_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="replay_buffer"):
        Client("call", "127.0.0.1:1", RetryPolicy(), warm=False, replay_buffer=value)
    with pytest.raises(ValueError, match="replay_buffer"):
        Client("intercepted-aio", "127.0.0.1:1", RetryPolicy(), warm=False, replay_buffer=value)


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_a_breaker_records_a_streams_final_status_once(server: ScriptedServer, path: str, kind: str) -> None:
    breaker = CircuitBreaker(failure_threshold=100)
    with Client(path, server.target, breaker) as client:
        assert call(client, kind, 3, id=f"ok-{kind}").error is None
        if kind == "server_stream":  # committed, then failed: one failure, recorded at its end
            assert call(client, kind, 5, id="late-failure", fail_first=1, fail_after=2).error is not None
    failures = 1 if kind == "server_stream" else 0
    wait_until(lambda: breaker.metrics.successes + breaker.metrics.failures == 1 + failures)
    time.sleep(0.05)
    assert (breaker.metrics.successes, breaker.metrics.failures) == (1, failures)


def test_a_bulkhead_holds_a_streams_place_until_it_ends(server: ScriptedServer) -> None:
    bulkhead = Bulkhead(1)
    with Client("call", server.target, bulkhead) as client:
        stream = client.stub.ServerStream(Request(count=3, id="held"))
        assert next(stream).index == 0
        assert bulkhead.in_flight == 1  # committed, still being read
        assert [m.index for m in stream] == [1, 2]
        wait_until(lambda: bulkhead.in_flight == 0)


def test_cancelling_a_sync_stream_cancels_its_attempt_and_every_later_one(server: ScriptedServer) -> None:
    with Client("call", server.target, RetryPolicy(delay=Backoff(0.2, 0.2))) as client:
        stream = client.stub.ServerStream(Request(count=3, id="cancel-sync", sleep_ms=2000))
        wait_until(lambda: server.attempts("cancel-sync") == 1)
        assert stream.cancel()
        with pytest.raises(grpc.RpcError) as raised:
            next(stream)
        wait_until(lambda: "cancel-sync" in server.recorder.cancelled)
    assert raised.value.code() is grpc.StatusCode.CANCELLED
    assert stream.code() is grpc.StatusCode.CANCELLED and stream.cancelled()
    time.sleep(0.3)
    assert server.attempts("cancel-sync") == 1


def test_cancelling_a_committed_sync_stream_cancels_it(server: ScriptedServer) -> None:
    with Client("call", server.target, RetryPolicy(delay=FAST)) as client:
        stream = client.stub.BidiStream(_slow_requests())
        assert next(stream).text == "r0"
        assert stream.cancel()
        with pytest.raises(grpc.RpcError) as raised:
            list(stream)
    assert raised.value.code() is grpc.StatusCode.CANCELLED


def _slow_requests() -> Iterator[Any]:
    yield Request(text="r0")
    time.sleep(5)
    yield Request(text="r1")


def test_a_sync_stream_its_caller_lets_go_of_is_cancelled(server: ScriptedServer) -> None:
    """As grpc's own: breaking out of the iteration and dropping the stream cancels the attempt it was reading."""
    with Client("call", server.target, RetryPolicy(delay=FAST)) as client:
        for message in client.stub.ServerStream(Request(id="let-go", count=3, pause_ms=5000)):
            assert message.index == 0
            break
        del message
        wait_until(lambda: "let-go" in server.recorder.cancelled)


def test_cancelling_the_task_that_reads_an_aio_stream_cancels_it(server: ScriptedServer) -> None:
    async def read_then_cancel(stub: Any) -> Any:
        call = stub.ServerStream(Request(count=3, id="cancel-aio", sleep_ms=2000))
        reader = asyncio.ensure_future(call.read())
        await asyncio.sleep(0.2)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        return await call.code()

    with Client("aio", server.target, RetryPolicy(delay=FAST)) as client:
        code = AIO_LOOP.run(read_then_cancel(client.stub))
        wait_until(lambda: "cancel-aio" in server.recorder.cancelled)
    assert code is grpc.StatusCode.CANCELLED
    assert server.attempts("cancel-aio") == 1


@pytest.mark.parametrize("aio_path", AIO_STREAM_PATHS)
def test_cancelling_a_committed_aio_stream_cancels_its_attempt(server: ScriptedServer, aio_path: str) -> None:
    """After commit, ``cancel()`` cancels the attempt being read: its requests still to come are no longer read.
    (Breaking out of ``async for`` does not end a grpc.aio call, grpc's own neither: ``cancel()`` does.)"""
    stopped: list[str] = []

    async def read_one(stub: Any) -> Any:
        call = stub.BidiStream(_slow_arequests(stopped))
        async for message in call:
            assert message.text == "r0"
            break
        assert call.cancel()
        return await call.code(), call.cancelled()

    with Client(aio_path, server.target, RetryPolicy(delay=FAST)) as client:
        assert AIO_LOOP.run(read_one(client.stub)) == (grpc.StatusCode.CANCELLED, True)
        wait_until(lambda: stopped == ["cancelled"])


async def _slow_arequests(stopped: list[str]) -> Any:
    yield Request(text="r0")
    try:
        await asyncio.sleep(5)
    except asyncio.CancelledError:
        stopped.append("cancelled")
        raise
    yield Request(text="r1")


def test_requests_are_read_from_the_caller_once(server: ScriptedServer, path: str) -> None:
    """The caller's iterator is consumed once however many attempts replay it."""
    reads: list[int] = []
    lock = threading.Lock()

    def counted() -> Iterator[Any]:
        for i in range(4):
            with lock:
                reads.append(i)
            yield Request(text=f"r{i}", id="once", fail_first=2)

    with Client(path, server.target, RetryPolicy(delay=FAST)) as client:
        if client.is_aio:

            async def run() -> Any:
                return await client.stub.ClientStream(counted())

            reply = AIO_LOOP.run(run())
        else:
            reply = client.stub.ClientStream(counted())
    assert reply.text == "r0r1r2r3" and reply.attempt == 3
    assert reads == [0, 1, 2, 3]


def test_a_ping_pong_bidi_stream_is_retried_whole(server: ScriptedServer, path: str) -> None:
    """Requests that wait for the replies (a queue the caller fills after each reply; aio: ``write()``): the first
    attempt fails at its first request, the retry replays it while the failed attempt still waits for the next one,
    and every request is sent once to the attempt that answers."""
    id = f"ping-pong-{path}"
    if path in AIO_STREAM_PATHS:
        with Client(path, server.target, RetryPolicy(delay=FAST)) as client:

            async def ping_pong() -> tuple[list[str], Any]:
                call = client.stub.BidiStream()
                replies = []
                for i in range(3):
                    await call.write(Request(text=f"r{i}", id=id, fail_first=1))
                    replies.append((await call.read()).text)
                await call.done_writing()
                assert await call.read() is grpc.aio.EOF
                return replies, await call.code()

            replies, code = AIO_LOOP.run(ping_pong())
    else:
        outbox: queue.Queue[Any] = queue.Queue()

        def requests() -> Iterator[Any]:
            while (request := outbox.get(timeout=10)) is not None:
                yield request

        with Client(path, server.target, RetryPolicy(delay=FAST)) as client:
            stream = client.stub.BidiStream(requests())
            replies = []
            for i in range(3):
                outbox.put(Request(text=f"r{i}", id=id, fail_first=1))
                replies.append(next(stream).text)
            outbox.put(None)
            assert next(stream, None) is None
            code = stream.code()
    assert replies == ["r0", "r1", "r2"] and code is grpc.StatusCode.OK
    assert server.attempts(id) == 2


@pytest.mark.parametrize("aio_path", AIO_STREAM_PATHS)
def test_an_aio_client_stream_written_with_write_is_retried_whole(server: ScriptedServer, aio_path: str) -> None:
    async def written(stub: Any) -> Any:
        call = stub.ClientStream()
        for i in range(3):
            await call.write(Request(text=f"c{i}", id="written", fail_first=1))
        await call.done_writing()
        return await call

    with Client(aio_path, server.target, RetryPolicy(delay=FAST)) as client:
        assert AIO_LOOP.run(written(client.stub)).text == "c0c1c2"
    assert server.attempts("written") == 2


def test_a_deadline_after_a_streams_first_message_is_not_counted_by_the_breaker(
    server: ScriptedServer, path: str
) -> None:
    """Only a deadline with no answer says the dependency is unwell (gRPC's interop timeout_on_sleeping_server): a
    stream that delivered messages and then ran out of its caller's time counts for nothing; one that delivered
    none still counts."""
    breaker = CircuitBreaker(failure_threshold=1)
    with Client(path, server.target, breaker) as client:
        client.unary(Request(id="warm"))
        answered = call(client, "server_stream", 3, timeout=0.3, id="answered", pause_ms=2000)
        assert answered.code is grpc.StatusCode.DEADLINE_EXCEEDED and len(answered.messages) == 1
        time.sleep(0.05)  # a stream's end is counted when grpc reports it
        assert breaker.state is CircuitState.CLOSED and breaker.metrics.failures == 0
        silent = call(client, "server_stream", 3, timeout=0.3, id="silent", sleep_ms=2000)
        assert silent.code is grpc.StatusCode.DEADLINE_EXCEEDED and not silent.messages
    wait_until(lambda: breaker.state is CircuitState.OPEN)
