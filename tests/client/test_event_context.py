"""Events say where they come from: the policy's name (``name=``, by default its class) and the call's method, on
every path, so that one listener can serve many chains."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from interceptors import Backoff, CircuitBreaker, Fallback, HedgePolicy, RetryPolicy, Timeout
from interceptors.events import CircuitStateChanged, FallbackExecuted, HedgeStarted, RetryStarted, TimeoutExceeded

from ..support.clients import PATHS, Client
from ..support.server import Request, ScriptedServer

UNARY = "/scripted.v1.Scripted/Unary"


@pytest.mark.parametrize("path", PATHS)
def test_events_name_the_policy_and_the_method(server: ScriptedServer, path: str) -> None:
    heard: list[Any] = []
    fallback = Fallback(on_fallback=heard.append)
    retry = RetryPolicy(name="retry-b", max_attempts=2, delay=Backoff(0.01, 0.02), on_retry=heard.append)
    breaker = CircuitBreaker(name="breaker-b", failure_threshold=2, on_state_change=heard.append)
    with Client(path, server.target, fallback, retry, breaker) as client:
        outcome = client.unary(Request(id="e", fail_first=5), timeout=5)
    assert outcome.code is grpc.StatusCode.OK  # the fallback's answer
    started, changed, answered = heard
    assert isinstance(started, RetryStarted) and (started.policy, started.method) == ("retry-b", UNARY)
    assert isinstance(changed, CircuitStateChanged) and (changed.policy, changed.method) == ("breaker-b", None)
    assert isinstance(answered, FallbackExecuted) and (answered.policy, answered.method) == ("Fallback", UNARY)


@pytest.mark.parametrize("path", ["call", "aio"])
def test_timeout_and_hedge_events_name_the_method(server: ScriptedServer, path: str) -> None:
    heard: list[Any] = []
    # the hedge is due at 0.05 s, the Timeout at 1 s: room for a loaded machine's late timer (at 0.3 s, one was late)
    chain = (Timeout(1.0, on_timeout_exceeded=heard.append), HedgePolicy(delay=0.05, on_hedge=heard.append))
    with Client(path, server.target, *chain) as client:
        client.unary(Request(id="t", sleep_ms=3000), timeout=5)
    kinds = {type(e): e for e in heard}
    assert (kinds[HedgeStarted].policy, kinds[HedgeStarted].method) == ("HedgePolicy", UNARY)
    assert (kinds[TimeoutExceeded].policy, kinds[TimeoutExceeded].method) == ("Timeout", UNARY)


@pytest.mark.parametrize("bad", ["", "  ", 3])
def test_a_name_must_be_a_non_empty_string(bad: object) -> None:
    with pytest.raises(ValueError, match="name"):
        RetryPolicy(name=bad)  # type: ignore[arg-type]
