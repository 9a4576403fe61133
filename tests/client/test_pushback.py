"""Server pushback: grpc-retry-pushback-ms, google.rpc.RetryInfo and retry-after drive retry and breaker delays."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from interceptors import CircuitBreaker, CircuitState, RetryPolicy
from interceptors.grpc import GrpcSemantics, _pushback

from ..support.clients import PATHS, Client
from ..support.scripted import Request, ScriptedServer


def retry_info(
    seconds: float, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE, message: str = "scripted failure"
) -> bytes:
    detail = status_pb2.Status(code=code.value[0], message=message)
    detail.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=int(seconds * 1e9))))
    return detail.SerializeToString()


def gaps(server: ScriptedServer, id: str) -> list[float]:
    times = [s.at for s in server.recorder.seen if s.id == id]
    return [b - a for a, b in itertools.pairwise(times)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "trailers",
    [
        (("grpc-retry-pushback-ms", "150"),),
        (("grpc-status-details-bin", retry_info(0.15)),),
        (("retry-after", "0.15"),),
        (("retry-after", "9"), ("grpc-retry-pushback-ms", "150")),  # pushback-ms wins
    ],
    ids=["pushback-ms", "retry-info", "retry-after", "precedence"],
)
def test_retry_waits_at_least_the_pushback(server: ScriptedServer, path: str, trailers: Any) -> None:
    server.script.trailers = trailers
    with Client(path, server.target, RetryPolicy(max_attempts=3, delay=0.0)) as client:
        outcome = client.unary(Request(id="p", fail_first=2))
    assert outcome.code is grpc.StatusCode.OK
    assert all(gap >= 0.15 for gap in gaps(server, "p"))


@pytest.mark.parametrize("path", ["call", "aio"])
def test_pushback_is_capped(server: ScriptedServer, path: str) -> None:
    server.script.trailers = (("grpc-retry-pushback-ms", "60000"),)
    with Client(path, server.target, RetryPolicy(max_attempts=2, max_pushback=0.1)) as client:
        outcome = client.unary(Request(id="p", fail_first=1))
    assert outcome.code is grpc.StatusCode.OK
    assert 0.1 <= gaps(server, "p")[0] < 1


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("value", ["-1", "soon", ""])
def test_negative_or_malformed_pushback_means_do_not_retry(
    server: ScriptedServer, path: str, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    server.script.trailers = (("grpc-retry-pushback-ms", value),)
    with caplog.at_level(logging.WARNING), Client(path, server.target, RetryPolicy(max_attempts=5)) as client:
        outcome = client.unary(Request(id=f"no-{value}", fail_first=1))
    assert server.attempts(f"no-{value}") == 1
    assert outcome.code is grpc.StatusCode.UNAVAILABLE


def test_breaker_open_delay_from_pushback(server: ScriptedServer) -> None:
    server.script.trailers = (("retry-after", "0.2"),)
    breaker = CircuitBreaker(failure_threshold=1, delay=60, pushback=True)
    with Client("call", server.target, breaker) as client:
        client.unary(Request(id="b", fail_first=1))
    assert breaker.state is CircuitState.OPEN
    assert 0.1 < breaker.remaining_delay <= 0.2


class _Failed(grpc.RpcError):
    def __init__(self, trailers: Any, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        self._trailers, self._code = trailers, code

    def trailing_metadata(self) -> Any:
        return self._trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "scripted failure"


@pytest.mark.parametrize(
    ("trailers", "expected"),
    [
        ((), None),
        ((("other", "1"),), None),
        ((("grpc-retry-pushback-ms", "250"),), 0.25),
        ((("grpc-retry-pushback-ms", " 0 "),), 0.0),
        ((("grpc-retry-pushback-ms", "-5"),), -1.0),
        ((("grpc-retry-pushback-ms", "1.5"),), -1.0),
        ((("retry-after", "2"),), 2.0),
        ((("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT"),), None),
        ((("retry-after", "-3"),), None),
        ((("retry-after", "nan"),), None),
        ((("grpc-status-details-bin", retry_info(1.5)),), 1.5),
        ((("grpc-status-details-bin", b"\xff\x00garbage"),), None),
        ((("grpc-status-details-bin", b"\xff\x00garbage"), ("retry-after", "3")), 3.0),
    ],
)
def test_pushback_parsing(trailers: Any, expected: float | None) -> None:
    assert GrpcSemantics("/s.S/M").pushback(_Failed(trailers)) == expected


def test_retry_info_without_grpcio_status() -> None:
    parse_status, parse_retry_info = _pushback._minimal_rpc_types()
    status = parse_status(retry_info(0.75))
    detail = status.details[0]
    assert detail.type_url.endswith("google.rpc.RetryInfo")
    assert parse_retry_info(detail.value).retry_delay.nanos == 750_000_000


def test_retry_info_is_read_whatever_the_rich_status_says_besides() -> None:
    """A proxy may rewrite grpc-message (or the code) and not the rich status: the delay asked for still holds."""
    mismatched = retry_info(1.0, code=grpc.StatusCode.INTERNAL, message="rewritten by a proxy")
    assert GrpcSemantics("/s.S/M").pushback(_Failed((("grpc-status-details-bin", mismatched),))) == 1.0
