"""CachePolicy through gRPC, on every call path and both server kinds: a fresh answer makes no call and says so in
its trailers, a stale one answers a failure as a fallback would, each caller gets its own copy, streams go through
uncached."""

from __future__ import annotations

import grpc
import pytest

from interceptors import CACHE_METADATA_KEY, FALLBACK_METADATA_KEY, CachePolicy, CircuitBreaker, HedgePolicy
from interceptors.testing import FakeClock

from ..support.clients import PATHS, STREAM_KINDS, Client, returns_call
from ..support.server import Request, ScriptedServer
from .test_stream_retries import STREAM_PATHS, call

paths = pytest.mark.parametrize("path", PATHS)


@paths
def test_a_fresh_answer_makes_no_call(server: ScriptedServer, path: str) -> None:
    with Client(path, server.target, CachePolicy(ttl=60)) as client:
        first = client.unary(Request(id="cached", text="hello"))
        second = client.unary(Request(id="cached", text="hello"))
        other = client.unary(Request(id="cached", text="other"))
    assert server.attempts("cached") == 2  # the first and the other request
    assert second.error is None and second.code is grpc.StatusCode.OK
    assert second.reply == first.reply and other.reply.attempt == 2
    if returns_call(path):
        assert second.trailing[CACHE_METADATA_KEY] == "hit"
        assert CACHE_METADATA_KEY not in first.trailing


@paths
def test_each_caller_gets_its_own_copy(server: ScriptedServer, path: str) -> None:
    with Client(path, server.target, CachePolicy(ttl=60)) as client:
        client.unary(Request(id="copy")).reply.text = "changed by a caller"
        assert client.unary(Request(id="copy")).reply.text == ""


@paths
def test_a_stale_answer_replaces_a_failure(server: ScriptedServer, path: str) -> None:
    clock = FakeClock()
    cache = CachePolicy(ttl=1, stale_if_error=60, clock=clock)
    with Client(path, server.target, cache) as client:
        fresh = client.unary(Request(id="stale"))
        clock.advance(5)
        server.script.fail_first = 1000
        stale = client.unary(Request(id="stale"))
        clock.advance(60)
        failed = client.unary(Request(id="stale"))
    assert stale.error is None and stale.reply == fresh.reply
    if returns_call(path):
        assert stale.trailing[CACHE_METADATA_KEY] == "stale"
        assert stale.trailing[FALLBACK_METADATA_KEY] == "UNAVAILABLE"
    assert failed.code is grpc.StatusCode.UNAVAILABLE


@paths
def test_a_stale_answer_replaces_an_open_breaker(server: ScriptedServer, path: str) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, delay=60, clock=clock)
    with Client(path, server.target, CachePolicy(ttl=1, stale_if_error=600, clock=clock), breaker) as client:
        fresh = client.unary(Request(id="kept"))
        breaker.open()
        clock.advance(2)
        rejected = client.unary(Request(id="kept"))
    assert rejected.error is None and rejected.reply == fresh.reply
    assert server.attempts("kept") == 1


@pytest.mark.parametrize("path", STREAM_PATHS)
@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_streams_go_through_uncached(server: ScriptedServer, path: str, kind: str) -> None:
    with Client(path, server.target, CachePolicy(ttl=60)) as client:
        call(client, kind, 2, id=f"stream-{kind}")
        call(client, kind, 2, id=f"stream-{kind}")
    assert server.attempts(f"stream-{kind}") == 2


@paths
def test_a_cache_outside_a_hedge_keeps_the_answer_of_the_attempt_that_won(server: ScriptedServer, path: str) -> None:
    with Client(path, server.target, CachePolicy(ttl=60), HedgePolicy(delay=0.02)) as client:
        first = client.unary(Request(id="raced", sleep_ms=300, sleep_attempts=1), timeout=10)
        again = client.unary(Request(id="raced", sleep_ms=300, sleep_attempts=1), timeout=10)
    assert first.error is None and first.reply.id == "raced"
    assert again.reply == first.reply
