"""Keyed policies on every client path against sync and aio servers: a breaker per method opens for that method
alone."""

from __future__ import annotations

import grpc
import pytest

from interceptors import CircuitBreaker, CircuitOpenError, Keyed

from ..support.clients import PATHS, Client
from ..support.server import Request, ScriptedServer


@pytest.mark.parametrize("path", PATHS)
def test_a_breaker_per_method_opens_for_the_failing_method_alone(server: ScriptedServer, path: str) -> None:
    keyed = Keyed(lambda method: CircuitBreaker(failure_threshold=2, delay=60, name=method))
    with Client(path, server.target, keyed) as client:
        for i in range(2):
            assert client.unary(Request(id=f"f{i}", fail_first=1)).code is grpc.StatusCode.UNAVAILABLE
        refused = client.unary(Request(id="refused"))
        assert isinstance(refused.error, CircuitOpenError) or "circuit" in refused.details.lower()
        assert server.attempts("refused") == 0
        assert [reply.index for reply in client.stream("server_stream", 3, id="s")] == [0, 1, 2]  # its own breaker
    unary = keyed.policy_for("/scripted.v1.Scripted/Unary")
    stream = keyed.policy_for("/scripted.v1.Scripted/ServerStream")
    assert isinstance(unary, CircuitBreaker) and unary.state.value == "open"
    assert isinstance(stream, CircuitBreaker) and stream.state.value == "closed"
