"""Hedging on real servers (sync and aio) from every call path: a slow attempt gets a hedge, the first answer wins,
the loser is cancelled (the server sees it), a fatal status ends the call, an exhausted budget stops hedging
without failing calls; server streams hedge until they commit."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from scripted.v1 import scripted_pb2_grpc as pb_grpc

import interceptors.aio
from interceptors import HedgePolicy, RetryBudget, Timeout, resilient_channel
from interceptors.events import HedgeCancelled, HedgeStarted, HedgeWon

from ..support.clients import PATHS, Client, wait_until
from ..support.lateness import WakeLateness
from ..support.server import AIO_LOOP, Request, ScriptedServer
from .test_stream_retries import STREAM_PATHS, call


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_the_tail_is_cut_at_the_hedging_delay(server: ScriptedServer, path: str) -> None:
    """The issue's scenario: 10 % of calls take 1 s (their first attempt), the rest 5 ms; a 50 ms hedging delay
    brings p99 under 100 ms (on a quiet machine) at about 1.1 attempts per call, and the slow attempts are
    cancelled."""
    with Client(path, server.target, HedgePolicy(delay=0.05)) as client, WakeLateness() as lateness:
        client.unary(Request(id="warm"))
        latencies, fast = [], []
        for i in range(100):
            slow = i % 10 == 0
            request = Request(id=f"c{i}", sleep_ms=1000 if slow else 5, sleep_attempts=1 if slow else 0)
            outcome = client.unary(request, timeout=5)
            assert outcome.error is None, outcome
            latencies.append(outcome.elapsed)
            if not slow:
                fast.append(outcome.elapsed)
        latencies.sort()
        # a slow call ends when its hedge, sent at 50 ms, answers as a fast call does: on a quiet machine within the
        # issue's 100 ms; on a loaded one, where fast calls take tens of milliseconds, within the delay and twice the
        # fast calls' p90 (unhedged, it would take 1 s), and + however late this process's threads woke meanwhile
        # (two suites at once held one hedge 67 ms where no fast call took past 55 ms)
        bound = max(0.1, 0.05 + 2 * sorted(fast)[80]) + lateness.seconds
        assert latencies[98] < bound, (latencies[-12:], sorted(fast)[80], lateness.seconds)
        attempts = sum(server.attempts(f"c{i}") for i in range(100))
        assert attempts <= 115 + sum(t > 0.05 for t in fast)  # and a fast call that took past the delay is hedged
        slow_ids = {f"c{i}" for i in range(0, 100, 10)}
        wait_until(lambda: slow_ids <= server.recorder.cancelled, timeout=3)


def test_the_hedge_that_answers_says_it_is_a_later_attempt(server: ScriptedServer, path: str) -> None:
    heard: list[object] = []
    policy = HedgePolicy(delay=0.03, on_hedge=heard.append, on_hedge_won=heard.append, on_hedge_cancelled=heard.append)
    with Client(path, server.target, policy, Timeout(2)) as client:
        outcome = client.unary(Request(id="h", sleep_ms=1000, sleep_attempts=1), timeout=5)
    assert outcome.error is None and outcome.reply.attempt == 2
    assert outcome.reply.previous_attempts == "1"
    assert 1.0 < outcome.reply.time_remaining <= 2.05  # the per-attempt Timeout bounds the hedge (grpc rounds up)
    assert [type(e) for e in heard] == [HedgeStarted, HedgeWon, HedgeCancelled]
    wait_until(lambda: "h" in server.recorder.cancelled, timeout=3)


def test_a_fatal_status_ends_the_call_and_cancels_the_slow_attempt(server: ScriptedServer, path: str) -> None:
    server.script.code = grpc.StatusCode.INVALID_ARGUMENT
    with Client(path, server.target, HedgePolicy(delay=0.03)) as client:
        outcome = client.unary(Request(id="f", fail_first=2, sleep_ms=2000, sleep_attempts=1), timeout=5)
    assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT
    assert outcome.elapsed < 1.0
    wait_until(lambda: "f" in server.recorder.cancelled, timeout=3)


def test_a_non_fatal_status_leaves_the_slow_attempt_running(server: ScriptedServer, path: str) -> None:
    with Client(path, server.target, HedgePolicy(delay=0.03)) as client:
        outcome = client.unary(Request(id="n", fail_first=2, sleep_ms=300, sleep_attempts=1), timeout=5)
    # attempt 2 fails UNAVAILABLE at once, attempt 1 still runs: it fails too after its sleep (fail_first=2)
    assert outcome.code is grpc.StatusCode.UNAVAILABLE and server.attempts("n") == 2
    assert outcome.elapsed >= 0.25


@pytest.mark.parametrize("hedge_path", ["call", "aio"])
def test_a_servers_pushback_delays_the_next_hedge(server: ScriptedServer, hedge_path: str) -> None:
    server.script.trailers = (("grpc-retry-pushback-ms", "600"),)
    with Client(hedge_path, server.target, HedgePolicy(delay=0.3)) as client:  # the failure comes well before
        outcome = client.unary(Request(id="p", fail_first=1), timeout=5)
    assert outcome.error is None and outcome.reply.attempt == 2
    first, second = (s.at for s in server.recorder.seen if s.id == "p")
    assert second - first >= 0.59


@pytest.mark.parametrize("hedge_path", ["call", "aio"])
def test_a_servers_do_not_retry_pushback_stops_hedging(server: ScriptedServer, hedge_path: str) -> None:
    server.script.trailers = (("grpc-retry-pushback-ms", "-1"),)
    with Client(hedge_path, server.target, HedgePolicy(delay=0.3, max_attempts=3)) as client:
        outcome = client.unary(Request(id="p", fail_first=1), timeout=5)
    assert outcome.code is grpc.StatusCode.UNAVAILABLE and server.attempts("p") == 1


def test_an_exhausted_budget_stops_hedging_without_failing_calls(server: ScriptedServer, path: str) -> None:
    budget = RetryBudget.token_bucket(max_tokens=10, token_ratio=0.01)
    for _ in range(6):
        budget.record_outcome(failed=True)  # 4 tokens left: at most half, no hedges
    with Client(path, server.target, HedgePolicy(delay=0.02, budget=budget)) as client:
        for i in range(3):
            outcome = client.unary(Request(id=f"b{i}", sleep_ms=150, sleep_attempts=1), timeout=5)
            assert outcome.error is None and outcome.reply.attempt == 1
    assert all(server.attempts(f"b{i}") == 1 for i in range(3))


@pytest.mark.parametrize("hedge_path", ["call", "future", "aio", "intercepted-call", "intercepted-aio"])
def test_a_failure_with_no_hedge_allowed_after_it_ends_the_call(server: ScriptedServer, hedge_path: str) -> None:
    budget = RetryBudget.token_bucket(max_tokens=10, token_ratio=0.01)
    for _ in range(6):
        budget.record_outcome(failed=True)  # no hedges
    with Client(hedge_path, server.target, HedgePolicy(delay=0.5, budget=budget)) as client:
        outcome = client.unary(Request(id="x", fail_first=1), timeout=5)
    assert outcome.code is grpc.StatusCode.UNAVAILABLE and outcome.elapsed < 1.0 and server.attempts("x") == 1


@pytest.mark.parametrize("stream_path", STREAM_PATHS)
def test_a_server_stream_is_hedged_until_it_commits(server: ScriptedServer, stream_path: str) -> None:
    with Client(stream_path, server.target, HedgePolicy(delay=0.03)) as client:
        ended = call(client, "server_stream", 5, timeout=5, id="s", sleep_ms=2000, sleep_attempts=1)
    assert ended.error is None
    assert [m.index for m in ended.messages] == [0, 1, 2, 3, 4]
    assert {m.attempt for m in ended.messages} == {2}
    wait_until(lambda: "s" in server.recorder.cancelled, timeout=3)


@pytest.mark.parametrize("stream_path", STREAM_PATHS)
def test_streamed_requests_are_not_hedged(server: ScriptedServer, stream_path: str) -> None:
    with Client(stream_path, server.target, HedgePolicy(delay=0.01)) as client:
        ended = call(client, "client_stream", 3, timeout=5, id="cs", sleep_ms=100)
    assert ended.error is None and server.attempts("cs") == 1


@pytest.mark.parametrize("hedge_path", ["aio", "intercepted-aio"])
def test_aio_losers_are_cancelled_before_the_winner_is_returned(hedge_path: str) -> None:
    """A caller that does not yield to its loop right after the winning ``await`` (it blocks, or computes) must not
    keep the losers running: they are cancelled before the answer is handed back, not on the loop's next turn."""
    server = ScriptedServer("sync")  # an aio server would share the blocked test loop
    try:
        with Client(hedge_path, server.target, HedgePolicy(delay=0.05)) as client:

            async def call_then_block() -> tuple[Any, bool]:
                # both attempts sleep 300 ms: the first answers 50 ms before its hedge, which is the loser
                reply = await client.stub.Unary(Request(id="l", sleep_ms=300, sleep_attempts=2), timeout=5)
                ends = time.monotonic() + 1.0
                while "l" not in server.recorder.cancelled and time.monotonic() < ends:
                    time.sleep(0.005)  # noqa: ASYNC251  (the point: the loop is held, its next turn never comes)
                return reply, "l" in server.recorder.cancelled

            reply, cancelled = AIO_LOOP.run(call_then_block())
        assert reply.attempt == 1
        assert cancelled, "the hedge attempt was still running while the caller held the loop"
    finally:
        server.stop()


def test_every_attempt_of_a_hedged_method_has_the_channels_compression() -> None:
    """The helpers' channels compress every attempt, the caller's own included, as grpc's channel does: a server
    that accepts no gzip refuses the call alike (the sync helper's own attempt of a hedged method is a blocking call
    made otherwise than grpc's own, which must compress as well)."""
    refusing = ScriptedServer("sync", options=[("grpc.compression_enabled_algorithms_bitset", 1)])  # identity only
    try:
        bare = grpc.insecure_channel(refusing.target, compression=grpc.Compression.Gzip)
        with pytest.raises(grpc.RpcError) as grpcs:
            pb_grpc.ScriptedStub(bare).Unary(Request(id="bare"), timeout=5)
        bare.close()
        assert grpcs.value.code() is grpc.StatusCode.UNIMPLEMENTED
        policy = HedgePolicy(delay=1)
        with (
            resilient_channel(refusing.target, policy, compression=grpc.Compression.Gzip) as channel,
            pytest.raises(grpc.RpcError) as ours,
        ):
            pb_grpc.ScriptedStub(channel).Unary(Request(id="ours"), timeout=5)
        assert ours.value.code() is grpc.StatusCode.UNIMPLEMENTED

        async def aio() -> grpc.StatusCode:
            async with interceptors.aio.resilient_channel(
                refusing.target, policy, compression=grpc.Compression.Gzip
            ) as channel:
                try:
                    await pb_grpc.ScriptedStub(channel).Unary(Request(id="aio"), timeout=5)
                except grpc.RpcError as error:
                    return error.code()
            return grpc.StatusCode.OK

        assert AIO_LOOP.run(aio()) is grpc.StatusCode.UNIMPLEMENTED
    finally:
        refusing.stop()
