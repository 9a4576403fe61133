"""The policies over grpcio-testing's channel (interceptors.testing.resilient_testing_channel), on one fake time:
unary and streaming methods, the test playing the server; run on every Python and at the dependency floors."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import grpc
import grpc_testing
import pytest
from catalog.v1 import catalog_pb2 as pb
from catalog.v1 import catalog_pb2_grpc as pb_grpc

from interceptors import CircuitBreaker, CircuitState, RetryPolicy
from interceptors.testing import FakeClock, resilient_testing_channel

CATALOG = pb.DESCRIPTOR.services_by_name["Catalog"]


def test_a_unary_call_is_retried_with_its_pushback_and_the_breaker_opens_on_the_fake_time() -> None:
    clock = FakeClock()
    server = grpc_testing.channel([CATALOG], clock)
    breaker = CircuitBreaker(failure_threshold=2, delay=60, clock=clock)
    stub = pb_grpc.CatalogStub(resilient_testing_channel(server, RetryPolicy(max_attempts=2, clock=clock), breaker))
    with ThreadPoolExecutor() as caller:
        item = caller.submit(stub.Get, pb.ItemRequest(id="a"), timeout=5)
        _, _, rpc = server.take_unary_unary(CATALOG.methods_by_name["Get"])
        rpc.terminate(None, (("grpc-retry-pushback-ms", "1500"),), grpc.StatusCode.UNAVAILABLE, "busy")
        _, _, rpc = server.take_unary_unary(CATALOG.methods_by_name["Get"])
        rpc.terminate(None, (), grpc.StatusCode.UNAVAILABLE, "down")
        with pytest.raises(grpc.RpcError) as failed:
            item.result()
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
    assert clock.sleeps == [1.5]  # the server's pushback, taken on the fake time
    with pytest.raises(grpc.RpcError) as refused:
        stub.Get(pb.ItemRequest(id="b"), timeout=5)  # the breaker is open: nothing reaches the server
    assert refused.value.details() == "circuit breaker is open for another 60s"
    assert breaker.state is CircuitState.OPEN
    clock.advance(60)
    assert breaker.state is CircuitState.HALF_OPEN  # the fake time moved on


def test_a_server_stream_is_retried_until_it_delivers() -> None:
    clock = FakeClock()
    server = grpc_testing.channel([CATALOG], clock)
    stub = pb_grpc.CatalogStub(resilient_testing_channel(server, RetryPolicy(max_attempts=3, clock=clock)))
    with ThreadPoolExecutor() as caller:
        items = caller.submit(lambda: [item.id for item in stub.Watch(pb.ItemRequest(id="w"), timeout=5)])
        _, _, rpc = server.take_unary_stream(CATALOG.methods_by_name["Watch"])
        rpc.terminate((), grpc.StatusCode.UNAVAILABLE, "down")
        metadata, _, rpc = server.take_unary_stream(CATALOG.methods_by_name["Watch"])
        assert dict(metadata)["grpc-previous-rpc-attempts"] == "1"
        rpc.send_response(pb.Item(id="a"))
        rpc.send_response(pb.Item(id="b"))
        rpc.terminate((), grpc.StatusCode.OK, "")
        assert items.result() == ["a", "b"]
    assert len(clock.sleeps) == 1  # the backoff, on the fake time


def test_a_client_stream_is_replayed_to_its_retry() -> None:
    clock = FakeClock()
    server = grpc_testing.channel([CATALOG], clock)
    stub = pb_grpc.CatalogStub(resilient_testing_channel(server, RetryPolicy(max_attempts=2, clock=clock)))
    sent = [pb.Item(id="x"), pb.Item(id="y")]
    with ThreadPoolExecutor() as caller:
        total = caller.submit(stub.Upload, iter(sent), timeout=5)
        for code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.OK):
            _, rpc = server.take_stream_unary(CATALOG.methods_by_name["Upload"])
            received = [rpc.take_request(), rpc.take_request()]
            rpc.requests_closed()
            assert received == sent  # the retry gets every request again
            rpc.terminate(pb.Total(count=2) if code is grpc.StatusCode.OK else None, (), code, "")
        assert total.result().count == 2


def test_what_it_schedules_runs_on_after_one_that_raises(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    ran: list[str] = []

    def fails() -> None:
        raise RuntimeError("a behavior that fails")

    clock.call_in(fails, 1)
    clock.call_in(lambda: ran.append("after"), 1)
    with caplog.at_level(logging.ERROR, logger="interceptors"):
        clock.sleep(1)  # a policy's sleep is not the one to fail
    assert ran == ["after"]
    assert "a behavior scheduled on a FakeClock failed" in caplog.text
