"""The README's recipe for testing one's own code with grpcio-testing, run as written: its test function, and
the same policies on a server stream and a client stream."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import grpc_testing
import pytest
from catalog.v1 import catalog_pb2 as pb
from catalog.v1 import catalog_pb2_grpc as pb_grpc

from interceptors import RetryPolicy
from interceptors.testing import FakeClock, resilient_testing_channel

from .test_readme import python_blocks

CATALOG = pb.DESCRIPTOR.services_by_name["Catalog"]


def recipe() -> dict[str, Any]:
    code = python_blocks("### Testing your own code's policies, without sockets")[0]
    module: dict[str, Any] = {"__name__": "test_recipe"}
    exec(compile(code, "README.md", "exec"), module)
    return module


@pytest.mark.filterwarnings("error")
def test_the_readmes_recipe_runs_as_written() -> None:
    module = recipe()
    tests = [name for name in module if name.startswith("test_")]
    assert tests == ["test_item_name_retries_falls_back_and_stops_calling"]
    module[tests[0]]()


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
