"""One set of client rules: the same scripted scenarios through every call path (the helpers' sync ways to call
and aio, and the same through grpc's own interceptor hooks) end alike, outcome by outcome and event by event."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from interceptors import (
    Backoff,
    CircuitBreaker,
    Fallback,
    HedgePolicy,
    RetryPolicy,
    StreamResume,
    Timeout,
)
from interceptors.engine import Policy

from ..support.clients import PATHS, Client, returns_call
from ..support.heard import Heard
from ..support.server import Request, ScriptedServer

FAST = Backoff(0.005, 0.01)
STREAM_PATHS = ["call", "aio", "intercepted-call", "intercepted-aio"]


def resume_after(request: Any, delivered: Sequence[Any]) -> Any:
    resumed = Request()
    resumed.CopyFrom(request)
    resumed.start = delivered[-1].index + 1 if delivered else request.start
    return resumed


Scenario = tuple[Callable[[], tuple[Policy, ...]], list[dict[str, Any]], float]
"""The chain (made afresh for each path), the calls made in turn (a request's fields), each call's timeout."""

UNARY: dict[str, Scenario] = {
    "retried to an answer": (lambda: (RetryPolicy(max_attempts=3, delay=FAST),), [{"fail_first": 2}], 5),
    "retries exhausted": (lambda: (RetryPolicy(max_attempts=2, delay=FAST),), [{"fail_first": 5}], 5),
    "breaker opens, then rejects": (
        lambda: (CircuitBreaker(failure_threshold=1, delay=60),),
        [{"fail_first": 1}, {}],
        5,
    ),
    "fallback after retries": (
        lambda: (Fallback(message={"text": "fallback"}), RetryPolicy(max_attempts=2, delay=FAST)),
        [{"fail_first": 5}],
        5,
    ),
    "hedge wins": (lambda: (HedgePolicy(delay=0.03), Timeout(2)), [{"sleep_ms": 1000, "sleep_attempts": 1}], 5),
    "attempt timeout": (lambda: (RetryPolicy(max_attempts=2, delay=FAST), Timeout(0.3)), [{"sleep_ms": 3000}], 5),
    "caller's deadline": (lambda: (RetryPolicy(delay=FAST),), [{"sleep_ms": 3000}], 0.5),
    "fallback in the caller's time": (
        lambda: (Fallback(message={"text": "in time"}), RetryPolicy(delay=FAST)),
        [{"sleep_ms": 3000}],
        0.8,
    ),
}
TIMED = {"attempt timeout", "caller's deadline", "fallback in the caller's time"}
"""Scenarios that end by a deadline: whether an attempt reached the server before it is the machine's, not a rule
(the attempts each path made are in its events)."""


def heard_of(heard: Heard) -> list[tuple[str, object]]:
    """The events, by kind and attempt (their delays and timings may differ by path)."""
    return [
        (type(event).__name__, getattr(event, "attempt", getattr(event, "attempts", None))) for event in heard.events
    ]


def unary_run(server: ScriptedServer, path: str, scenario: Scenario, timed: bool) -> list[Any]:
    chain, calls, timeout = scenario
    heard = Heard()
    seen = []
    with Client(path, server.target, *chain(), metrics=heard) as client:
        for n, fields in enumerate(calls):
            id = f"{path}-{n}"
            outcome = client.unary(Request(id=id, **fields), timeout=timeout)
            reply = outcome.reply
            trailing = outcome.trailing if returns_call(path) else "(the path returns no call)"
            seen.append(
                (
                    outcome.code.name,
                    None if reply is None else (reply.text, reply.attempt, reply.previous_attempts),
                    trailing if isinstance(trailing, str) else trailing.get("resilience-fallback"),
                    "(timed)" if timed else server.attempts(id),
                )
            )
    return [*seen, heard_of(heard)]


@pytest.mark.parametrize("name", list(UNARY))
def test_a_unary_scenario_ends_alike_on_every_path(server: ScriptedServer, name: str) -> None:
    """(The paths that give the caller only the response are compared on all but the trailers.)"""
    runs = {path: unary_run(server, path, UNARY[name], name in TIMED) for path in PATHS}
    first = runs["with_call"]
    differ = {
        path: run
        for path, run in runs.items()
        if run != first and not (not returns_call(path) and _but_trailers(run) == _but_trailers(first))
    }
    assert differ == {}, ("with_call", first)


def _but_trailers(run: list[Any]) -> list[Any]:
    return [(code, reply, attempts) for code, reply, _, attempts in run[:-1]] + run[-1:]


STREAMS: dict[str, Scenario] = {
    "resumed twice": (
        lambda: (RetryPolicy(delay=FAST), StreamResume(resume_after)),
        [{"fail_first": 2, "fail_after": 3}],
        5,
    ),
    "retried before its first message": (lambda: (RetryPolicy(delay=FAST),), [{"fail_first": 2, "fail_after": 0}], 5),
}


def stream_run(server: ScriptedServer, path: str, scenario: Scenario) -> list[Any]:
    chain, calls, timeout = scenario
    heard = Heard()
    with Client(path, server.target, *chain(), metrics=heard) as client:
        id = f"stream-{path}"
        replies = client.stream("server_stream", 6, timeout=timeout, id=id, **calls[0])
    return [[(r.index, r.attempt) for r in replies], server.attempts(id), heard_of(heard)]


@pytest.mark.parametrize("name", list(STREAMS))
def test_a_stream_scenario_ends_alike_on_every_path(server: ScriptedServer, name: str) -> None:
    runs = {path: stream_run(server, path, STREAMS[name]) for path in STREAM_PATHS}
    first = runs[STREAM_PATHS[0]]
    assert {path: run for path, run in runs.items() if run != first} == {}, (STREAM_PATHS[0], first)
