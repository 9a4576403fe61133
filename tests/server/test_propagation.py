"""Context propagation through real chains of servers: caller -> A -> B -> C, every relay a real sync or aio
server calling the next through one of the client's call paths (in the handler, a thread or a task)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from scripted.v1 import scripted_pb2_grpc as pb_grpc

import interceptors.aio
from interceptors import CircuitBreaker, Fallback, RetryPolicy, Timeout, resilient_channel
from interceptors.grpc._propagation import forwarded
from interceptors.grpc._pushback import _parse_retry_info, _parse_status, retry_info_details
from interceptors.server import AioContextPropagation, ContextPropagation, aforward, forward

from ..support.clients import wait_until
from ..support.relay import RELAYS, RelayServer, relay_id
from ..support.server import AIO_LOOP, Reply, Request, ScriptedServer

RESERVE = 0.05
ROOM_TO_ANSWER = 0.8
"""A reserve for tests whose answer must reach the caller in time through a loaded process (two suites at once
delay an aio relay's loop by up to ~0.2 s, and a relay's answer by more on a slow day: 0.3 s was not always enough,
nor, with eight workers each, 0.5 s); the rule under test holds for any reserve."""
PAIRS = list(zip(RELAYS, RELAYS[3:] + RELAYS[:3], strict=True))
"""(A, B): every relay appears once as A and once as B, sync and aio mixed."""


def pair_id(pair: tuple[Any, Any]) -> str:
    return f"A={relay_id(pair[0])},B={relay_id(pair[1])}"


class Chain:
    """caller -> A -> B -> C: ``stub`` calls A; C is a scripted server of the other kind than B."""

    def __init__(self, a: Any, b: Any, *policies: Any) -> None:
        self.c = ScriptedServer("aio" if b[0] == "sync" else "sync")
        self.b = RelayServer(b, self.c.target, *policies, reserve=RESERVE)
        self.a = RelayServer(a, self.b.target, *policies, reserve=RESERVE)
        self.channel = grpc.insecure_channel(self.a.target, options=[("grpc.enable_retries", 0)])
        self.stub = pb_grpc.ScriptedStub(self.channel)
        assert self.stub.Unary(Request(id="warm"), timeout=10).id == "warm"  # every hop connected

    def close(self) -> None:
        self.channel.close()
        for server in (self.a, self.b, self.c):
            server.close() if isinstance(server, RelayServer) else server.stop()


@pytest.fixture(params=PAIRS, ids=[pair_id(p) for p in PAIRS])
def chain(request: pytest.FixtureRequest) -> Iterator[Chain]:
    made = Chain(*request.param)
    yield made
    made.close()


def test_each_hop_gets_the_remaining_deadline_less_its_reserve(chain: Chain) -> None:
    started = time.monotonic()
    reply = chain.stub.Unary(Request(id="d"), timeout=3.0)
    elapsed = time.monotonic() - started
    assert reply.time_remaining <= 3.0 - 2 * RESERVE  # C saw at most the caller's time less two reserves
    assert reply.time_remaining >= 3.0 - 2 * RESERVE - elapsed - 2 * 0.03  # less three of grpc's 10 ms units a hop


def test_without_a_deadline_none_is_invented(chain: Chain) -> None:
    remaining = chain.stub.Unary(Request(id="n")).time_remaining
    assert remaining == -1 or remaining > 1e9  # aio servers say None, sync ones about 9e18


def test_cancelling_the_call_into_a_cancels_b_and_c(chain: Chain) -> None:
    call = chain.stub.Unary.future(Request(id="slow", sleep_ms=10_000), timeout=30)
    wait_until(lambda: chain.c.attempts("slow") == 1)
    cancelled_at = time.monotonic()
    call.cancel()
    wait_until(lambda: "slow" in chain.c.recorder.cancelled, timeout=2)
    assert time.monotonic() - cancelled_at < 0.5  # C's handler saw it (typically within 10 ms: see the note)
    wait_until(lambda: chain.b.cancelled == 1)  # and so did B's
    wait_until(lambda: chain.a.cancelled == 1)


def test_a_deadline_passing_cancels_the_work_below(chain: Chain) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        chain.stub.Unary(Request(id="late", sleep_ms=10_000), timeout=0.4)
    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    wait_until(lambda: "late" in chain.c.recorder.cancelled, timeout=2)


@pytest.mark.parametrize("relay", [r for r in RELAYS if r[0] == "sync"], ids=relay_id)
def test_a_pooled_thread_keeps_nothing_of_the_call_before(relay: Any) -> None:
    """One worker thread serves every call: a call without a deadline after one with gets none downstream."""
    c = ScriptedServer("aio")
    a = RelayServer(relay, c.target, workers=1)
    try:
        with grpc.insecure_channel(a.target, options=[("grpc.enable_retries", 0)]) as channel:
            stub = pb_grpc.ScriptedStub(channel)
            for i in range(3):
                assert 0 < stub.Unary(Request(id=f"d{i}"), timeout=2).time_remaining < 2
                assert stub.Unary(Request(id=f"n{i}")).time_remaining in (-1, pytest.approx(-1))
    finally:
        a.close()
        c.stop()


@pytest.mark.parametrize("relay", [r for r in RELAYS if r[1] in ("future", "intercepted-future", "aio")], ids=relay_id)
def test_a_call_made_for_an_incoming_call_tells_the_deadline_it_inherited(relay: Any) -> None:
    """``time_remaining()`` of the call a handler makes without a timeout of its own: the incoming call's time
    less the reserve, which is its deadline (sync and aio alike: one rule, in the call core). grpc.aio's own
    intercepted calls do not tell it (NotImplementedError), whatever the interceptor."""
    c = ScriptedServer("aio")
    a = RelayServer(relay, c.target, reserve=RESERVE)
    try:
        with grpc.insecure_channel(a.target, options=[("grpc.enable_retries", 0)]) as channel:
            started = time.monotonic()
            reply = pb_grpc.ScriptedStub(channel).Unary(Request(id="left", text="time_remaining"), timeout=5)
            elapsed = time.monotonic() - started
    finally:
        a.close()
        c.stop()
    left = float(reply.text)
    assert 5 - RESERVE - elapsed - 0.03 <= left <= 5 - RESERVE, reply.text


@pytest.mark.parametrize("relay", [RELAYS[0], RELAYS[4], RELAYS[5], RELAYS[7]], ids=relay_id)
def test_concurrent_calls_each_pass_on_their_own_deadline(relay: Any) -> None:
    c = ScriptedServer("aio")
    a = RelayServer(relay, c.target, reserve=RESERVE)
    try:
        with grpc.insecure_channel(a.target, options=[("grpc.enable_retries", 0)]) as channel:
            stub = pb_grpc.ScriptedStub(channel)
            stub.Unary(Request(id="warm"), timeout=10)
            deadlines = {f"c{i}": 3.0 + (i % 8) for i in range(32)}

            def one(id: str) -> tuple[float, float]:
                started = time.monotonic()
                remaining: float = stub.Unary(Request(id=id, sleep_ms=50), timeout=deadlines[id]).time_remaining
                return remaining, time.monotonic() - started

            with concurrent.futures.ThreadPoolExecutor(32) as pool:
                seen = dict(zip(deadlines, pool.map(one, deadlines), strict=True))
    finally:
        a.close()
        c.stop()
    for id, (remaining, elapsed) in seen.items():  # its own deadline: its neighbours' are 1 s apart
        assert deadlines[id] - RESERVE - elapsed - 2 * 0.03 <= remaining <= deadlines[id] - RESERVE, id


@pytest.mark.parametrize("relay", RELAYS, ids=relay_id)
def test_a_fallback_answers_a_short_deadline_in_time(relay: Any) -> None:
    """The demo's composed chain in A, B slow: a caller with 1.5 s gets A's fallback before its deadline."""
    b = ScriptedServer("aio")
    chain = (Fallback(), RetryPolicy(max_attempts=3), CircuitBreaker(failure_threshold=5), Timeout(1.0))
    a = RelayServer(relay, b.target, *chain, reserve=ROOM_TO_ANSWER)
    try:
        with grpc.insecure_channel(a.target, options=[("grpc.enable_retries", 0)]) as channel:
            stub = pb_grpc.ScriptedStub(channel)
            stub.Unary(Request(id="warm"), timeout=10)
            for i in range(3):
                started = time.monotonic()
                reply = stub.Unary(Request(id=f"f{i}", sleep_ms=3000), timeout=1.5)
                assert time.monotonic() - started < 1.5
                assert reply == type(reply)()  # the fallback's answer: the response type's default instance
                wait_until(lambda i=i: b.attempts(f"f{i}") == 1)  # type: ignore[misc]
    finally:
        a.close()
        b.stop()


@pytest.mark.parametrize("relay", [RELAYS[0], RELAYS[5]], ids=relay_id)
def test_a_fallback_answers_a_longer_deadline_in_time(relay: Any) -> None:
    """Above a second grpc sends timeouts in 10 ms units: the fallback still answers, in the reserve."""
    b = ScriptedServer("sync")
    a = RelayServer(relay, b.target, Fallback(), reserve=ROOM_TO_ANSWER)
    try:
        with grpc.insecure_channel(a.target, options=[("grpc.enable_retries", 0)]) as channel:
            stub = pb_grpc.ScriptedStub(channel)
            stub.Unary(Request(id="warm"), timeout=10)
            started = time.monotonic()
            reply = stub.Unary(Request(id="long", sleep_ms=5000), timeout=1.5)
            assert reply == type(reply)() and 1.5 - ROOM_TO_ANSWER - 0.1 < time.monotonic() - started < 1.5
    finally:
        a.close()
        b.stop()


@pytest.mark.parametrize("relay", [RELAYS[0], RELAYS[5]], ids=relay_id)
def test_a_tighter_timeout_in_the_middle_is_its_own(relay: Any) -> None:
    """A's own Timeout, shorter than the inherited deadline, fires as a Timeout (its event, its error)."""
    b = ScriptedServer("aio")
    fired: list[Any] = []
    a = RelayServer(relay, b.target, Timeout(0.3, on_timeout_exceeded=fired.append), reserve=RESERVE)
    try:
        with grpc.insecure_channel(a.target, options=[("grpc.enable_retries", 0)]) as channel:
            stub = pb_grpc.ScriptedStub(channel)
            stub.Unary(Request(id="warm"), timeout=10)
            for i in range(4):
                with pytest.raises(grpc.RpcError) as raised:
                    stub.Unary(Request(id=f"t{i}", sleep_ms=2000), timeout=3)
                assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        a.close()
        b.stop()
    assert len(fired) == 4


@pytest.mark.parametrize("relay", RELAYS, ids=relay_id)
def test_too_little_time_left_sends_nothing_and_the_fallback_answers(relay: Any) -> None:
    b = ScriptedServer("sync")
    a = RelayServer(relay, b.target, Fallback(), reserve=0.3)
    try:
        with grpc.insecure_channel(a.target, options=[("grpc.enable_retries", 0)]) as channel:
            stub = pb_grpc.ScriptedStub(channel)
            stub.Unary(Request(id="warm"), timeout=10)
            reply = stub.Unary(Request(id="short"), timeout=0.2)
            assert reply == type(reply)() and b.attempts("short") == 0
    finally:
        a.close()
        b.stop()


def _retry_delay(status_details: Any) -> tuple[int, str, float]:
    status = _parse_status(status_details)
    delay = _parse_retry_info(status.details[0].value).retry_delay
    return status.code, status.message, delay.seconds + delay.nanos / 1e9


@pytest.mark.parametrize("relay", RELAYS, ids=relay_id)
def test_a_downstream_status_and_its_pushback_reach_the_caller(relay: Any) -> None:
    trailers, attempts = _relayed_failure(relay, (("grpc-retry-pushback-ms", "300"),))
    assert trailers["grpc-retry-pushback-ms"] == "300"
    code, message, delay = _retry_delay(trailers["grpc-status-details-bin"])
    assert (code, message, delay) == (grpc.StatusCode.UNAVAILABLE.value[0], "scripted failure", 0.3)
    assert attempts == 2  # A's retry waited out the pushback once, then forwarded the status


def _relayed_failure(relay: Any, trailers: Any) -> tuple[dict[str, Any], int]:
    """A caller's call into A, relaying to B, which fails every attempt with ``trailers``: the caller gets B's
    status (asserted); the trailing metadata it got, and the attempts B saw."""
    b = ScriptedServer("aio")
    b.script.fail_first, b.script.trailers = 100, trailers
    a = RelayServer(relay, b.target, RetryPolicy(max_attempts=2))
    try:
        with (
            grpc.insecure_channel(a.target, options=[("grpc.enable_retries", 0)]) as channel,
            pytest.raises(grpc.RpcError) as raised,
        ):
            pb_grpc.ScriptedStub(channel).Unary(Request(id="p"), timeout=10)
    finally:
        a.close()
        b.stop()
    error: Any = raised.value
    assert (error.code(), error.details()) == (grpc.StatusCode.UNAVAILABLE, "scripted failure")
    return dict(error.trailing_metadata()), b.attempts("p")


UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
LONGEST_MS = 2**31 - 1
"""The longest pushback grpc-retry-pushback-ms carries (an int32 of milliseconds, about 24.8 days)."""


@pytest.mark.parametrize("relay", RELAYS, ids=relay_id)
@pytest.mark.parametrize(
    "trailers",
    [
        (("grpc-retry-pushback-ms", str(10**12)),),
        (("grpc-status-details-bin", retry_info_details(UNAVAILABLE, "scripted failure", 1e9)),),
    ],
    ids=["pushback-ms-1e12", "retry-info-1e9s"],
)
def test_a_huge_downstream_pushback_reaches_the_caller_capped_with_the_downstream_status(
    relay: Any, trailers: Any
) -> None:
    """B asks for 31.7 years: A does not retry (the pushback reaches past the deadline) and answers B's status,
    UNAVAILABLE, with the pushback capped at what the header carries — not DEADLINE_EXCEEDED."""
    forwarded, attempts = _relayed_failure(relay, trailers)
    assert forwarded["grpc-retry-pushback-ms"] == str(LONGEST_MS)
    code, message, delay = _retry_delay(forwarded["grpc-status-details-bin"])
    assert (code, message, delay) == (UNAVAILABLE, "scripted failure", LONGEST_MS / 1000)
    assert attempts == 1


def test_forwarding_caps_every_place_a_pushback_is_in() -> None:
    """What is forwarded says one delay, at most an int32 of milliseconds, in all three places; the downstream's
    own rich status goes on with its other details, its RetryInfo capped."""
    capped = LONGEST_MS / 1000
    _, _, trailers = forwarded(_failed_call((("grpc-retry-pushback-ms", str(10**12)),)))
    got: dict[str, Any] = dict(trailers)
    assert got["grpc-retry-pushback-ms"] == str(LONGEST_MS)
    assert _retry_delay(got["grpc-status-details-bin"])[2] == capped
    _, _, trailers = forwarded(_failed_call((("retry-after", "1e300"),)))
    got = dict(trailers)
    assert (got["retry-after"], got["grpc-retry-pushback-ms"]) == ("2147483", str(LONGEST_MS))
    own = _parse_status(retry_info_details(UNAVAILABLE, "scripted failure", 1e9))
    own.details.add().Pack(error_details_pb2.ErrorInfo(reason="DOWN", domain="b.example"))
    _, _, trailers = forwarded(_failed_call((("grpc-status-details-bin", own.SerializeToString()),)))
    got = dict(trailers)
    assert got["grpc-retry-pushback-ms"] == str(LONGEST_MS)
    status = _parse_status(got["grpc-status-details-bin"])
    assert (status.code, status.message, len(status.details)) == (UNAVAILABLE, "scripted failure", 2)
    assert _retry_delay(got["grpc-status-details-bin"])[2] == capped
    info = error_details_pb2.ErrorInfo()
    assert status.details[1].Unpack(info) and info.reason == "DOWN"


@pytest.mark.parametrize("relay", RELAYS, ids=relay_id)
def test_an_open_breakers_pushback_reaches_the_caller(relay: Any) -> None:
    b = ScriptedServer("sync")
    b.script.fail_first = 100
    a = RelayServer(relay, b.target, CircuitBreaker(failure_threshold=1, delay=5.0))
    try:
        with grpc.insecure_channel(a.target, options=[("grpc.enable_retries", 0)]) as channel:
            stub = pb_grpc.ScriptedStub(channel)
            with pytest.raises(grpc.RpcError):
                stub.Unary(Request(id="o"), timeout=10)  # opens the breaker
            with pytest.raises(grpc.RpcError) as raised:
                stub.Unary(Request(id="o"), timeout=10)
    finally:
        a.close()
        b.stop()
    error: Any = raised.value
    assert error.code() is grpc.StatusCode.UNAVAILABLE and "circuit" in error.details().lower()
    trailers = dict(error.trailing_metadata())
    assert 4000 < int(trailers["grpc-retry-pushback-ms"]) <= 5000
    assert 4 < _retry_delay(trailers["grpc-status-details-bin"])[2] <= 5
    assert b.attempts("o") == 1


def _failed_call(trailers: tuple[tuple[str, Any], ...], code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> Any:
    """A real grpc.RpcError from a scripted server answering ``code`` with ``trailers``."""
    server = ScriptedServer("sync")
    server.script.fail_first, server.script.code, server.script.trailers = 1, code, trailers
    try:
        with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError) as raised:
            pb_grpc.ScriptedStub(channel).Unary(Request(id="x"), timeout=10)
    finally:
        server.stop()
    return raised.value


@pytest.mark.parametrize(
    ("trailers", "expected"),
    [
        ((("grpc-retry-pushback-ms", "-1"),), {"grpc-retry-pushback-ms": "-1"}),  # "do not retry" goes on too
        ((("grpc-retry-pushback-ms", "junk"),), {"grpc-retry-pushback-ms": "-1"}),  # malformed: do not retry
        ((("retry-after", "2"),), {"retry-after": "2", "grpc-retry-pushback-ms": "2000"}),
        ((("other", "x"),), {}),  # the downstream's other trailers are its own
    ],
)
def test_what_is_forwarded(trailers: Any, expected: dict[str, str]) -> None:
    code, details, forwarded_trailers = forwarded(_failed_call(trailers))
    assert (code, details) == (grpc.StatusCode.UNAVAILABLE, "scripted failure")
    got = dict(forwarded_trailers)
    status_details = got.pop("grpc-status-details-bin", None)
    assert got == expected
    assert (status_details is not None) == ("retry-after" in expected)


def test_a_downstreams_own_rich_status_goes_on_as_it_was() -> None:
    rich = retry_info_details(grpc.StatusCode.UNAVAILABLE.value[0], "scripted failure", 0.7)
    _, _, trailers = forwarded(_failed_call((("grpc-status-details-bin", rich),)))
    assert dict(trailers) == {"grpc-status-details-bin": rich, "grpc-retry-pushback-ms": "700"}


@pytest.mark.parametrize(
    "rich",
    [
        b"\xff\x00garbage",
        retry_info_details(grpc.StatusCode.INTERNAL.value[0], "scripted failure", 0.7),  # another code
        retry_info_details(grpc.StatusCode.UNAVAILABLE.value[0], "rewritten", 0.7),  # another message
    ],
)
def test_a_rich_status_that_contradicts_the_call_is_dropped(rich: bytes) -> None:
    _, _, trailers = forwarded(_failed_call((("grpc-status-details-bin", rich), ("grpc-retry-pushback-ms", "300"))))
    forwarded_trailers = dict(trailers)
    assert forwarded_trailers["grpc-retry-pushback-ms"] == "300"
    code, message, delay = _retry_delay(forwarded_trailers["grpc-status-details-bin"])  # made anew, consistent
    assert (code, message, delay) == (grpc.StatusCode.UNAVAILABLE.value[0], "scripted failure", 0.3)


def test_an_error_without_a_status_is_raised_as_it_is() -> None:
    with pytest.raises(grpc.RpcError) as raised:
        forwarded(grpc.RpcError())
    assert type(raised.value) is grpc.RpcError


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_handlers_can_forward_by_hand(kind: str) -> None:
    error = _failed_call((("grpc-retry-pushback-ms", "300"),), grpc.StatusCode.RESOURCE_EXHAUSTED)

    class Sync(pb_grpc.ScriptedServicer):
        def Unary(self, request: Any, context: Any) -> Any:
            forward(context, error)

    class Aio(pb_grpc.ScriptedServicer):
        async def Unary(self, request: Any, context: Any) -> Any:
            await aforward(context, error)

    server = CustomServer(kind, Sync() if kind == "sync" else Aio())
    try:
        with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError) as raised:
            pb_grpc.ScriptedStub(channel).Unary(Request(), timeout=10)
    finally:
        server.stop()
    failure: Any = raised.value
    assert (failure.code(), failure.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "scripted failure")
    assert dict(failure.trailing_metadata())["grpc-retry-pushback-ms"] == "300"


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_a_stream_opened_for_the_incoming_call_is_cancelled_with_it(kind: str) -> None:
    """The handler reads a downstream server stream from a thread (sync) or a shielded task (aio)."""
    downstream = ScriptedServer("aio")
    channel = resilient_channel(downstream.target) if kind == "sync" else None

    class Sync(pb_grpc.ScriptedServicer):
        def Unary(self, request: Any, context: Any) -> Any:
            def read() -> int:
                assert channel is not None
                return len(list(pb_grpc.ScriptedStub(channel).ServerStream(Request(id="s", sleep_ms=10_000))))

            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pool.submit(contextvars.copy_context().run, read).exception()
            return Reply()

    class Aio(pb_grpc.ScriptedServicer):
        async def Unary(self, request: Any, context: Any) -> Any:
            async def read() -> int:
                async with interceptors.aio.resilient_channel(downstream.target) as aio_channel:
                    stream = pb_grpc.ScriptedStub(aio_channel).ServerStream(Request(id="s", sleep_ms=10_000))
                    return len([reply async for reply in stream])

            await asyncio.shield(asyncio.ensure_future(read()))
            return Reply()

    server = CustomServer(kind, Sync() if kind == "sync" else Aio(), propagation=True)
    try:
        with grpc.insecure_channel(server.target) as caller:
            call = pb_grpc.ScriptedStub(caller).Unary.future(Request(), timeout=30)
            wait_until(lambda: downstream.attempts("s") == 1)
            call.cancel()
            wait_until(lambda: "s" in downstream.recorder.cancelled, timeout=2)
    finally:
        server.stop()
        downstream.stop()
        if channel is not None:
            channel.close()


class CustomServer:
    """A sync or aio server of one Scripted servicer, with context propagation if asked."""

    def __init__(self, kind: str, servicer: Any, propagation: bool = False) -> None:
        if kind == "sync":
            chain: list[Any] = [ContextPropagation()] if propagation else []
            server = grpc.server(concurrent.futures.ThreadPoolExecutor(8), interceptors=chain)
            pb_grpc.add_ScriptedServicer_to_server(servicer, server)
            self.target = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
            server.start()
            self.stop = lambda: server.stop(None)
            return

        async def start() -> Any:
            aio_server = grpc.aio.server(interceptors=[AioContextPropagation()] if propagation else [])
            pb_grpc.add_ScriptedServicer_to_server(servicer, aio_server)
            self.target = f"127.0.0.1:{aio_server.add_insecure_port('127.0.0.1:0')}"
            await aio_server.start()
            return aio_server

        aio_server = AIO_LOOP.run(start())
        self.stop = lambda: AIO_LOOP.run(aio_server.stop(None))


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_streaming_handlers_propagate_and_forward_too(kind: str) -> None:
    """A server-streaming handler calls downstream for each message it sends: each call gets the stream's deadline
    less the reserve; a downstream failure mid-stream ends the stream with the downstream's status and pushback."""
    downstream = ScriptedServer("aio")
    downstream.script.trailers = (("grpc-retry-pushback-ms", "200"),)
    sync_channel = resilient_channel(downstream.target) if kind == "sync" else None

    class Sync(pb_grpc.ScriptedServicer):
        def ServerStream(self, request: Any, context: Any) -> Any:
            assert sync_channel is not None
            stub = pb_grpc.ScriptedStub(sync_channel)
            for i in range(request.count):
                yield stub.Unary(Request(id=f"{request.id}{i}", fail_first=request.fail_first if i == 2 else 0))

    class Aio(pb_grpc.ScriptedServicer):
        async def ServerStream(self, request: Any, context: Any) -> Any:
            async with interceptors.aio.resilient_channel(downstream.target) as channel:
                stub = pb_grpc.ScriptedStub(channel)
                for i in range(request.count):
                    yield await stub.Unary(
                        Request(id=f"{request.id}{i}", fail_first=request.fail_first if i == 2 else 0)
                    )

    server = CustomServer(kind, Sync() if kind == "sync" else Aio(), propagation=True)
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.ScriptedStub(channel)
            replies = list(stub.ServerStream(Request(id="ok", count=3), timeout=3))
            assert [r.id for r in replies] == ["ok0", "ok1", "ok2"]
            assert all(0 < r.time_remaining <= 3 - RESERVE for r in replies)
            stream = iter(stub.ServerStream(Request(id="bad", count=4, fail_first=1), timeout=3))
            received = [next(stream).id, next(stream).id]
            with pytest.raises(grpc.RpcError) as raised:
                next(stream)
    finally:
        server.stop()
        downstream.stop()
        if sync_channel is not None:
            sync_channel.close()
    assert received == ["bad0", "bad1"]
    error: Any = raised.value
    assert (error.code(), error.details()) == (grpc.StatusCode.UNAVAILABLE, "scripted failure")
    assert dict(error.trailing_metadata())["grpc-retry-pushback-ms"] == "200"
