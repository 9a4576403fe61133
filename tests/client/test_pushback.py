"""Server pushback: grpc-retry-pushback-ms, google.rpc.RetryInfo and retry-after drive retry and breaker delays."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from interceptors import CircuitBreaker, CircuitState, Fallback, RetryPolicy
from interceptors.grpc import GrpcSemantics, _pushback

from ..support.clients import PATHS, Client
from ..support.server import Request, ScriptedServer


def retry_info(
    seconds: float, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE, message: str = "scripted failure"
) -> bytes:
    detail = status_pb2.Status(code=code.value[0], message=message)
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(round(seconds * 1e9))  # a valid Duration: whole seconds, then nanos below one
    detail.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return bytes(detail.SerializeToString())


def raw_retry_info(seconds: int, nanos: int, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> bytes:
    """A rich status whose RetryInfo holds these Duration fields as they are, valid or not."""
    detail = status_pb2.Status(code=code.value[0], message="scripted failure")
    delay = duration_pb2.Duration(seconds=seconds, nanos=nanos)
    detail.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return bytes(detail.SerializeToString())


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
    server.script.trailers = (("retry-after", "2"),)
    breaker = CircuitBreaker(failure_threshold=1, delay=60, pushback=True)
    with Client("call", server.target, breaker) as client:
        client.unary(Request(id="b", fail_first=1))
        assert breaker.state is CircuitState.OPEN
        assert 1 < breaker.remaining_delay <= 2


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
        # a RetryInfo that is no proto3 Duration (nanos in -999999999..999999999, of the seconds' sign; seconds
        # within 10 000 years) is unparsable: ignored, and the next place is read
        ((("grpc-status-details-bin", raw_retry_info(0, 2_000_000_000)),), None),
        ((("grpc-status-details-bin", raw_retry_info(0, 1_000_000_000)),), None),
        ((("grpc-status-details-bin", raw_retry_info(1, -5)),), None),
        ((("grpc-status-details-bin", raw_retry_info(10**12, 0)),), None),
        ((("grpc-status-details-bin", raw_retry_info(0, 2_000_000_000)), ("retry-after", "3")), 3.0),
        ((("grpc-status-details-bin", raw_retry_info(1, 999_999_999)),), 1.999999999),
        # a rich status for another code than the call's (a proxy rewrote the status): its RetryInfo is ignored
        ((("grpc-status-details-bin", retry_info(1.5, code=grpc.StatusCode.INTERNAL)),), None),
        ((("grpc-status-details-bin", retry_info(1.5, code=grpc.StatusCode.OK)), ("retry-after", "3")), 3.0),
        # every delay read is capped at what grpc-retry-pushback-ms can carry (an int32 of milliseconds)
        ((("grpc-retry-pushback-ms", "1000000000000"),), 2147483.647),
        ((("grpc-status-details-bin", raw_retry_info(10**9, 0)),), 2147483.647),
        ((("retry-after", "1e300"),), 2147483.647),
    ],
)
def test_pushback_parsing(trailers: Any, expected: float | None) -> None:
    assert GrpcSemantics("/s.S/M").pushback(_Failed(trailers)) == expected


@pytest.mark.parametrize(
    "rich",
    [raw_retry_info(0, 2_000_000_000), retry_info(1.5, code=grpc.StatusCode.INTERNAL)],
    ids=["invalid-nanos", "other-code"],
)
def test_an_untrustworthy_retry_info_is_logged_once(
    rich: bytes, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_pushback, "_warned", set())
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert GrpcSemantics("/s.S/Once").pushback(_Failed((("grpc-status-details-bin", rich),))) is None
    warnings = [r.getMessage() for r in caplog.records if "grpc-status-details-bin" in r.getMessage()]
    assert len(warnings) == 1 and "/s.S/Once" in warnings[0]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "rich",
    [raw_retry_info(0, 2_000_000_000), retry_info(5.0, code=grpc.StatusCode.INTERNAL)],
    ids=["invalid-nanos", "other-code"],
)
def test_a_real_server_s_untrustworthy_retry_info_is_not_waited(server: ScriptedServer, path: str, rich: bytes) -> None:
    """The call is UNAVAILABLE; the retry waits its own delay (0), not the 2 s or 5 s the rich status says."""
    server.script.trailers = (("grpc-status-details-bin", rich),)
    scheduled: list[Any] = []
    retry = RetryPolicy(max_attempts=2, delay=0.0, on_retry_scheduled=scheduled.append)
    with Client(path, server.target, retry) as client:
        outcome = client.unary(Request(id="u", fail_first=1))
    assert outcome.code is grpc.StatusCode.OK
    assert [event.delay for event in scheduled] == [0.0]


def test_retry_info_without_grpcio_status() -> None:
    status_type, retry_info_type = _pushback._minimal_rpc_types()
    status = status_type.FromString(retry_info(0.75))
    detail = status.details[0]
    assert detail.type_url.endswith("google.rpc.RetryInfo")
    assert retry_info_type.FromString(detail.value).retry_delay.nanos == 750_000_000


def test_retry_info_is_read_whatever_the_rich_status_says_besides_its_code() -> None:
    """A proxy may rewrite grpc-message and not the rich status: the delay asked for still holds. A rich status for
    another code is another status (gRPC requires them to match): its RetryInfo is not the call's."""
    reworded = retry_info(1.0, message="rewritten by a proxy")
    assert GrpcSemantics("/s.S/M").pushback(_Failed((("grpc-status-details-bin", reworded),))) == 1.0
    recoded = retry_info(1.0, code=grpc.StatusCode.INTERNAL, message="rewritten by a proxy")
    assert GrpcSemantics("/s.S/M").pushback(_Failed((("grpc-status-details-bin", recoded),))) is None


def garbage_retry_info() -> bytes:
    """A valid google.rpc.Status whose RetryInfo detail holds bytes that are no RetryInfo."""
    detail = status_pb2.Status(code=grpc.StatusCode.UNAVAILABLE.value[0], message="scripted failure")
    detail.details.add(type_url="type.googleapis.com/google.rpc.RetryInfo", value=b"\xff\xff\xff\x0fgarbage")
    return bytes(detail.SerializeToString())


@pytest.mark.parametrize("path", PATHS)
def test_retry_info_is_honoured_when_a_proxy_rewrote_the_message(server: ScriptedServer, path: str) -> None:
    """Issue 8, defect 4: grpcio-status refuses such a rich status; the server's 0.15 s must still be waited."""
    server.script.details = "rewritten by a proxy"
    server.script.trailers = (("grpc-status-details-bin", retry_info(0.15, message="the server's own words")),)
    with Client(path, server.target, RetryPolicy(max_attempts=3, delay=0)) as client:
        outcome = client.unary(Request(id="p", fail_first=2))
    assert outcome.code is grpc.StatusCode.OK
    assert all(gap >= 0.15 for gap in gaps(server, "p"))


@pytest.mark.parametrize("path", PATHS)
def test_an_undecodable_retry_info_is_ignored_by_every_policy(
    server: ScriptedServer, path: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 8, defect 9: the failure is handled as the plain UNAVAILABLE it carries; nothing raises DecodeError."""
    monkeypatch.setattr(_pushback, "_warned", set())  # it warns once per method and header
    server.script.trailers = (("grpc-status-details-bin", garbage_retry_info()),)
    breaker = CircuitBreaker(failure_threshold=2, delay=60, pushback=True)
    with caplog.at_level(logging.WARNING), Client(path, server.target, RetryPolicy(max_attempts=3), breaker) as client:
        retried = client.unary(Request(id="r", fail_first=100))
    assert retried.code is grpc.StatusCode.UNAVAILABLE and isinstance(retried.error, grpc.RpcError)
    assert server.attempts("r") == 2 and breaker.state is CircuitState.OPEN  # opened, for its own delay
    assert 59 < breaker.remaining_delay <= 60
    fallback = Fallback(message={"text": "fallback"})
    with Client(path, server.target, fallback, RetryPolicy(max_attempts=2), CircuitBreaker(pushback=True)) as client:
        assert client.unary(Request(id="f", fail_first=100)).reply.text == "fallback"
    assert "grpc-status-details-bin" in caplog.text


@pytest.mark.parametrize(
    "trailers",
    [
        (("grpc-status-details-bin", garbage_retry_info()),),
        (("grpc-status-details-bin", "not binary"),),
        (("grpc-status-details-bin", b""),),
        (("grpc-retry-pushback-ms", "9" * 400),),
        (("retry-after", "1e400"),),
        (("retry-after", b"\xff\xfe"),),
    ],
)
def test_malformed_pushback_never_raises(trailers: Any) -> None:
    delay = GrpcSemantics("/s.S/M").pushback(_Failed(trailers))
    assert delay is None or delay >= 0 or delay == -1.0


def test_pushback_readers_that_fail_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    def broken(failure: BaseException) -> float:
        raise RuntimeError("reader bug")

    class Broken(_Failed):
        def trailing_metadata(self) -> Any:
            raise RuntimeError("no trailers")

    assert GrpcSemantics("/s.S/M").pushback(Broken(())) is None
    breaker = CircuitBreaker(failure_threshold=1, pushback=broken, delay=5)
    breaker.acquire_permit().record(_Failed(()))
    assert breaker.state is CircuitState.OPEN and 4 < breaker.remaining_delay <= 5
    assert "reader bug" in caplog.text
