"""Fault injection and access logs on real sync and aio servers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from scripted.v1 import scripted_pb2 as pb
from scripted.v1 import scripted_pb2_grpc as pb_grpc

from interceptors.grpc import _handlers
from interceptors.server import (
    AccessLog,
    AioAccessLog,
    AioContextPropagation,
    AioFaultInjection,
    AioLoadShedding,
    ContextPropagation,
    FaultInjection,
    Faults,
    LoadShedding,
)

from ..support.clients import wait_until
from ..support.server import AIO_LOOP, Reply, Request, ScriptedServer

UNARY = "/scripted.v1.Scripted/Unary"


class Server(ScriptedServer):
    """A scripted server of ``kind`` with an access log to ``log`` and fault injection, each if given; a stub to
    call it with, and ``injector`` to change its faults."""

    def __init__(self, kind: str, *, faults: Faults | None = None, methods: Any = None, log: Any = None) -> None:
        chain: list[Any] = []
        if log is not None:
            chain.append(AccessLog(log) if kind == "sync" else AioAccessLog(log))
        if faults is not None:
            self.injector: Any = (FaultInjection if kind == "sync" else AioFaultInjection)(faults, methods=methods)
            chain.append(self.injector)
        super().__init__(kind, interceptors=chain)
        self.channel = grpc.insecure_channel(self.target, options=[("grpc.enable_retries", 0)])
        self.stub = pb_grpc.ScriptedStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.stop()


@pytest.fixture(params=["sync", "aio"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make(kind: str, **options: Any) -> Iterator[Server]:
    server = Server(kind, **options)
    try:
        yield server
    finally:
        server.close()


def test_down_answers_unavailable_trailers_only_with_pushback(kind: str) -> None:
    for server in make(kind, faults=Faults(down=True, retry_after=1.5)):
        with pytest.raises(grpc.RpcError) as raised:
            server.stub.Unary.with_call(Request(id="x"))
        error: Any = raised.value
        assert error.code() is grpc.StatusCode.UNAVAILABLE and error.details() == "injected fault"
        trailers = dict(error.trailing_metadata())
        assert (trailers["retry-after"], trailers["grpc-retry-pushback-ms"]) == ("1.5", "1500")
        assert not error.initial_metadata()  # Trailers-Only: nothing was sent before the status
        assert server.recorder.attempts("x") == 0  # the service never ran


def test_fail_rate_is_reproducible_with_a_seed(kind: str) -> None:
    def codes() -> list[str]:
        result = []
        for server in make(kind, faults=Faults(fail_rate=0.5, seed=42)):
            for i in range(40):
                try:
                    server.stub.Unary(Request(id=str(i)))
                    result.append("OK")
                except grpc.RpcError as error:
                    result.append(error.code().name)
        return result

    first, second = codes(), codes()
    assert first == second
    assert 8 < first.count("UNAVAILABLE") < 32


def test_delay_and_slow_calls(kind: str) -> None:
    for server in make(kind, faults=Faults(delay=0.1)):
        started = time.monotonic()
        assert server.stub.Unary(Request(id="d")).attempt == 1
        assert time.monotonic() - started >= 0.1
    for server in make(kind, faults=Faults(slow_rate=1.0, slow_delay=0.15)):
        started = time.monotonic()
        server.stub.Unary(Request(id="s"))
        assert time.monotonic() - started >= 0.15


def test_only_the_named_methods_get_faults(kind: str) -> None:
    for server in make(kind, faults=Faults(down=True), methods=["/scripted.v1.Scripted/ServerStream"]):
        assert server.stub.Unary(Request(id="u")).attempt == 1
        with pytest.raises(grpc.RpcError):
            list(server.stub.ServerStream(Request(count=3)))


def test_streams_fail_before_any_message(kind: str) -> None:
    for server in make(kind, faults=Faults(down=True)):
        call = server.stub.ServerStream(Request(count=3))
        with pytest.raises(grpc.RpcError):
            next(iter(call))
        with pytest.raises(grpc.RpcError):
            list(server.stub.BidiStream(iter([Request(text="a")])))


def test_faults_can_be_switched_while_serving(kind: str) -> None:
    for server in make(kind, faults=Faults()):
        injector = server.injector
        assert server.stub.Unary(Request(id="a")).attempt == 1
        injector.faults = Faults(down=True)
        with pytest.raises(grpc.RpcError):
            server.stub.Unary(Request(id="b"))
        injector.faults = Faults()
        assert server.stub.Unary(Request(id="c")).attempt == 1
        with pytest.raises(ValueError, match="faults"):
            injector.faults = "down"


def test_no_faults_unless_configured(kind: str) -> None:
    for server in make(kind, faults=Faults()):
        assert [server.stub.Unary(Request(id=str(i))).attempt for i in range(20)] == [1] * 20


def test_a_client_waiting_less_than_the_delay_cancels_it(kind: str) -> None:
    for server in make(kind, faults=Faults(delay=5)):
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as raised:
            server.stub.Unary(Request(id="t"), timeout=0.2)
        assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 1


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"delay": -1}, "delay"),
        ({"fail_rate": 1.5}, "fail_rate"),
        ({"slow_rate": -0.1}, "slow_rate"),
        ({"slow_delay": "x"}, "slow_delay"),
        ({"retry_after": -2}, "retry_after"),
        ({"code": grpc.StatusCode.OK}, "code"),
        ({"code": 14}, "code"),
        ({"delay": float("inf")}, "delay"),
        ({"down": "yes"}, "down"),
        ({"details": 7}, "details"),
        ({"seed": "x"}, "seed"),
    ],
)
def test_bad_fault_options(options: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        Faults(**options)


@pytest.mark.parametrize(
    ("make_interceptor", "name"),
    [
        (lambda: FaultInjection(Faults(), methods="/scripted.v1.Scripted/Unary"), "methods"),
        (lambda: AioFaultInjection(Faults(), methods=[1]), "methods"),  # type: ignore[list-item]
        (lambda: FaultInjection(Faults(), methods=7), "methods"),  # type: ignore[arg-type]
        (lambda: FaultInjection("down"), "faults"),  # type: ignore[arg-type]
        (lambda: AccessLog("interceptors.access"), "logger"),  # type: ignore[arg-type]
        (lambda: AioAccessLog(logger=print), "logger"),  # type: ignore[arg-type]
        (lambda: ContextPropagation(reserve=-0.1), "reserve"),
        (lambda: AioContextPropagation(reserve="50ms"), "reserve"),  # type: ignore[arg-type]
        (lambda: ContextPropagation(forward="yes"), "forward"),  # type: ignore[arg-type]
    ],
)
def test_bad_interceptor_options(make_interceptor: Any, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        make_interceptor()


def test_access_log_records_method_code_and_latency(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger(f"test.access.{kind}")
    with caplog.at_level(logging.INFO, logger=log.name):
        for server in make(kind, log=log, faults=Faults(fail_rate=0.0)):
            server.stub.Unary(Request(id="ok", sleep_ms=20))
            server.recorder.script.code = grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.RpcError):
                server.stub.Unary(Request(id="missing", fail_first=1))
            assert len(list(server.stub.ServerStream(Request(id="stream", count=2)))) == 2
            time.sleep(0.1)
    records = [(r.method, r.code, r.levelname) for r in caplog.records if r.name == log.name]  # type: ignore[attr-defined]
    assert records == [
        (UNARY, "OK", "INFO"),
        (UNARY, "NOT_FOUND", "ERROR"),
        ("/scripted.v1.Scripted/ServerStream", "OK", "INFO"),
    ]
    first = next(r for r in caplog.records if r.name == log.name)
    assert first.latency_ms >= 20  # type: ignore[attr-defined]


def test_access_log_reports_a_crashing_handler_as_unknown(caplog: pytest.LogCaptureFixture) -> None:
    class Crashing(pb_grpc.ScriptedServicer):
        async def Unary(self, request: Any, context: Any) -> Any:
            raise RuntimeError("bug")

    log = logging.getLogger("test.access.crash")

    async def main() -> None:
        server = grpc.aio.server(interceptors=[AioAccessLog(log)])
        pb_grpc.add_ScriptedServicer_to_server(Crashing(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await pb_grpc.ScriptedStub(channel).Unary(Request())
        await server.stop(None)
        assert raised.value.code() is grpc.StatusCode.UNKNOWN
        await asyncio.sleep(0)

    with caplog.at_level(logging.INFO, logger=log.name):
        AIO_LOOP.run(main())
    assert [r.code for r in caplog.records if r.name == log.name] == ["UNKNOWN"]  # type: ignore[attr-defined]


def _access_lines(caplog: pytest.LogCaptureFixture, log: logging.Logger) -> list[tuple[str, str]]:
    return [(r.method, r.code) for r in caplog.records if r.name == log.name]  # type: ignore[attr-defined]


def test_access_log_reports_what_the_client_saw_of_deadlines_and_cancellation(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger(f"test.access.ended.{kind}")
    with caplog.at_level(logging.INFO, logger=log.name):
        for server in make(kind, log=log):
            with pytest.raises(grpc.RpcError) as raised:
                server.stub.Unary(Request(id="late", sleep_ms=2000), timeout=0.2)
            assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            call = server.stub.Unary.future(Request(id="gone", sleep_ms=2000), timeout=30)
            wait_until(lambda s=server: s.attempts("gone") == 1)  # type: ignore[misc]
            call.cancel()
            wait_until(lambda: len(_access_lines(caplog, log)) == 2)
    assert _access_lines(caplog, log) == [(UNARY, "DEADLINE_EXCEEDED"), (UNARY, "CANCELLED")]


def test_unknown_methods_and_undecodable_requests_get_a_line_and_a_clean_status(
    kind: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_handlers, "_warned", set())
    log = logging.getLogger(f"test.access.bad.{kind}")
    garbage = b"\xff\xff\xff\x00garbage"
    with caplog.at_level(logging.INFO):
        for server in make(kind, log=log):
            raw: dict[str, Any] = {
                name: server.channel.unary_unary(f"/scripted.v1.Scripted/{name}") for name in ("Unary", "Nope")
            }
            for _ in range(3):
                with pytest.raises(grpc.RpcError) as raised:
                    raw["Unary"](garbage, timeout=5)
                error: Any = raised.value
                assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
                assert error.details().startswith("the request could not be decoded")
            with pytest.raises(grpc.RpcError) as raised:
                raw["Nope"](b"", timeout=5)
            assert raised.value.code() is grpc.StatusCode.UNIMPLEMENTED
            client_stream: Any = server.channel.stream_unary("/scripted.v1.Scripted/ClientStream")
            with pytest.raises(grpc.RpcError) as raised:
                client_stream(iter([Request(text="ok").SerializeToString(), garbage]), timeout=5)
            assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.RpcError) as raised:
                raw["Unary"](b"x" * (5 * 1024 * 1024), timeout=5)  # refused by grpc's core, before Python
            assert raised.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            other_type = Reply(id="r", time_remaining=2.5, text="t").SerializeToString()  # decodes, oddly
            assert pb.Reply.FromString(raw["Unary"](other_type, timeout=5)).id == "r"
            assert server.stub.Unary(Request(id="fine")).attempt == 1  # still serving
    assert _access_lines(caplog, log) == [
        *[(UNARY, "INVALID_ARGUMENT")] * 3,
        ("/scripted.v1.Scripted/Nope", "UNIMPLEMENTED"),
        ("/scripted.v1.Scripted/ClientStream", "INVALID_ARGUMENT"),
        (UNARY, "OK"),
        (UNARY, "OK"),
    ]
    assert not [r for r in caplog.records if r.exc_info]  # no traceback anywhere
    warnings = [r for r in caplog.records if r.name == "interceptors.server"]
    assert len(warnings) == 2  # once per method


def test_a_shed_call_gets_its_access_line(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger(f"test.access.shed.{kind}")
    shedding: Any = (LoadShedding if kind == "sync" else AioLoadShedding)(1)
    chain = [AccessLog(log) if kind == "sync" else AioAccessLog(log), shedding]
    server = ScriptedServer(kind, interceptors=chain)
    try:
        with caplog.at_level(logging.INFO, logger=log.name), grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.ScriptedStub(channel)
            hog = stub.Unary.future(Request(id="hog", sleep_ms=300))
            wait_until(lambda: server.attempts("hog") == 1)
            with pytest.raises(grpc.RpcError):
                stub.Unary(Request(id="shed"))
            hog.result()
    finally:
        server.stop()
    assert _access_lines(caplog, log) == [(UNARY, "RESOURCE_EXHAUSTED"), (UNARY, "OK")]


def test_an_aio_handler_reading_with_context_read_gets_the_refusal_too() -> None:
    class Reader(pb_grpc.ScriptedServicer):
        async def ClientStream(self, request_iterator: Any, context: Any) -> Any:
            texts = []
            while (request := await context.read()) is not grpc.aio.EOF:
                texts.append(request.text)
            return Reply(text="".join(texts))

    async def main() -> list[Any]:
        server = grpc.aio.server(interceptors=[AioAccessLog()])
        pb_grpc.add_ScriptedServicer_to_server(Reader(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        outcomes: list[Any] = []
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            client_stream: Any = channel.stream_unary("/scripted.v1.Scripted/ClientStream")
            fine = [Request(text="a").SerializeToString(), Request(text="b").SerializeToString()]
            outcomes.append(pb.Reply.FromString(await client_stream(iter(fine), timeout=5)).text)
            try:
                await client_stream(iter([fine[0], b"\xff\xff\x00garbage"]), timeout=5)
            except grpc.aio.AioRpcError as error:
                outcomes.append(error.code())
        await server.stop(None)
        return outcomes

    assert AIO_LOOP.run(main()) == ["ab", grpc.StatusCode.INVALID_ARGUMENT]
