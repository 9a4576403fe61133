"""A call's priority on the wire, on every client path against sync and aio servers: ``x-priority`` from the
caller's context (``prioritized``), else from the channel's default; on every attempt; the caller's own kept."""

from __future__ import annotations

import grpc
import pytest

import interceptors.aio
from interceptors import Bulkhead, Priority, ResilienceInterceptor, RetryPolicy, prioritized, resilient_channel

from ..support.clients import PATHS, STREAM_KINDS, Client
from ..support.server import Request, ScriptedServer

paths = pytest.mark.parametrize("path", PATHS)


def priorities_seen(server: ScriptedServer, id: str = "") -> list[str | None]:
    return [seen.metadata.get("x-priority") for seen in server.recorder.seen if seen.id == id]


@paths
def test_the_priority_of_the_callers_context_goes_with_every_attempt(server: ScriptedServer, path: str) -> None:
    with Client(path, server.target, RetryPolicy(max_attempts=3)) as client:
        with prioritized("critical"):
            assert client.unary(Request(id="a", fail_first=2)).code is grpc.StatusCode.OK
        assert client.unary(Request(id="b")).code is grpc.StatusCode.OK
    assert priorities_seen(server, "a") == ["critical"] * 3
    assert [s.metadata.get("grpc-previous-rpc-attempts") for s in server.recorder.seen if s.id == "a"] == [
        None,
        "1",
        "2",
    ]
    assert priorities_seen(server, "b") == [None]  # none said: none sent, the server's default applies


@paths
def test_a_channels_default_priority_applies_where_the_context_says_none(server: ScriptedServer, path: str) -> None:
    with Client(path, server.target, Bulkhead(10), priority="low") as client:
        client.unary(Request(id="default"))
        with prioritized(Priority.HIGH):
            client.unary(Request(id="context"))
    assert priorities_seen(server, "default") == ["low"]
    assert priorities_seen(server, "context") == ["high"]


@paths
def test_a_method_without_policies_still_carries_the_priority(server: ScriptedServer, path: str) -> None:
    with Client(path, server.target, priority="sheddable") as client:  # no policy at all
        client.unary(Request(id="plain"))
        with prioritized("critical"):
            client.unary(Request(id="said"))
    assert priorities_seen(server, "plain") == ["sheddable"]
    assert priorities_seen(server, "said") == ["critical"]


@paths
def test_the_callers_own_header_is_sent_as_it_is_and_once(server: ScriptedServer, path: str) -> None:
    with Client(path, server.target, RetryPolicy(max_attempts=2)) as client, prioritized("critical"):
        client.unary(Request(id="own", fail_first=1), metadata=(("x-priority", "low"),))
    assert priorities_seen(server, "own") == ["low", "low"]
    assert all(
        list(dict.fromkeys(seen.metadata)) == list(seen.metadata) for seen in server.recorder.seen
    )  # one value each (a dict keeps the last of a key)


@pytest.mark.parametrize("kind", STREAM_KINDS)
@pytest.mark.parametrize("path", ["call", "aio", "intercepted-call", "intercepted-aio"])
def test_streams_carry_the_priority_too(server: ScriptedServer, path: str, kind: str) -> None:
    with Client(path, server.target, RetryPolicy(max_attempts=2)) as client, prioritized("high"):
        client.stream(kind, 2, id="s")
    assert priorities_seen(server, "s") == ["high"]


def test_a_channel_refuses_a_priority_that_names_no_level() -> None:
    makers = [
        lambda: resilient_channel("127.0.0.1:1", priority="urgent"),
        lambda: ResilienceInterceptor(priority="urgent"),
        lambda: interceptors.aio.resilience_interceptors(priority="urgent"),
    ]
    for make in makers:
        with pytest.raises(ValueError, match="priority must be a Priority or one of sheddable, low, normal"):
            make()
    with pytest.raises(ValueError, match="priority must be"):
        prioritized("urgent").__enter__()
