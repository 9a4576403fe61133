"""The README's examples, run as a new user would run them: verbatim, but for the address they dial.

The first example (its policies, a helper channel, an intercepted one, and both for asyncio) against a service whose
methods answer different message types, streams included: every stub is made, every method answers, the fallback
answers the methods whose response has its field and steps aside for the others, with one warning per service.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from catalog.v1 import catalog_pb2 as pb
from catalog.v1 import catalog_pb2_grpc as pb_grpc
from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser

from interceptors import FALLBACK_METADATA_KEY, FallbackMisfitWarning

from ..support.server import AIO_LOOP
from .catalog import serving

README = Path(__file__).resolve().parents[2] / "README.md"
FALLBACK_TEXT = "error accessing service B"


EXAMPLES = list(Sybil(parsers=[PythonCodeBlockParser()]).parse(README))
"""The README's ```python blocks, as Sybil finds them (dedented where a list item indents them)."""


def python_blocks(after: str) -> list[str]:
    """The ```python blocks of the README that follow the heading ``after``."""
    starts = README.read_text()[: README.read_text().index(after)].count("\n") + 1
    return [str(example.parsed) for example in EXAMPLES if example.line > starts]


class Unavailable(pb_grpc.CatalogServicer):
    """Every method fails UNAVAILABLE, after reading its requests."""

    def _fail(self, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNAVAILABLE, "down")

    def Get(self, request: Any, context: Any) -> Any:
        return self._fail(context)

    def Count(self, request: Any, context: Any) -> Any:
        return self._fail(context)

    def Watch(self, request: Any, context: Any) -> Any:
        self._fail(context)
        yield pb.Item()

    def Upload(self, requests: Any, context: Any) -> Any:
        list(requests)
        return self._fail(context)

    def Sync(self, requests: Any, context: Any) -> Any:
        list(requests)
        self._fail(context)
        yield pb.Total()


@pytest.fixture(scope="module")
def catalog() -> Iterator[str]:
    yield from serving(Unavailable())


def items() -> Iterator[Any]:
    yield pb.Item(id="a")


def test_the_first_example_serves_a_service_of_many_response_types(catalog: str) -> None:
    code = python_blocks("## Usage: gRPC clients")[0].replace("localhost:3001", catalog)
    example: dict[str, Any] = {}

    async def run() -> None:  # in a coroutine, as the example says of grpc.aio channels
        exec(compile(code, "README.md", "exec"), example)

    AIO_LOOP.run(run())
    with warnings.catch_warnings(record=True) as heard:
        warnings.simplefilter("always")
        sync_stubs = [pb_grpc.CatalogStub(example[name]) for name in ("channel", "intercepted")]
        aio_stubs = [pb_grpc.CatalogStub(example[name]) for name in ("aio_channel", "aio_intercepted")]
        for stub in sync_stubs:
            _sync_calls(stub)
        for stub in aio_stubs:
            AIO_LOOP.run(_aio_calls(stub))
    misfits = [str(w.message) for w in heard if issubclass(w.category, FallbackMisfitWarning)]
    assert len(misfits) == 4, misfits  # once per channel, for the one service
    for message in misfits:
        assert all(f"/catalog.v1.Catalog/{name}" in message for name in ("Count", "Upload", "Sync"))
        assert "/catalog.v1.Catalog/Get " not in message and "methods=" in message
    example["channel"].close()
    example["intercepted"].close()
    AIO_LOOP.run(example["aio_channel"].close())
    AIO_LOOP.run(example["aio_intercepted"].close())


def _sync_calls(stub: Any) -> None:
    reply, call = stub.Get.with_call(pb.ItemRequest(id="a"), timeout=10)
    assert reply.message == FALLBACK_TEXT and dict(call.trailing_metadata())[FALLBACK_METADATA_KEY] == "UNAVAILABLE"
    assert [item.message for item in stub.Watch(pb.ItemRequest(id="a"), timeout=10)] == [FALLBACK_TEXT]
    for fails in (
        lambda: stub.Count(pb.ItemRequest(id="a"), timeout=10),
        lambda: stub.Upload(items(), timeout=10),
        lambda: list(stub.Sync(items(), timeout=10)),
    ):
        with pytest.raises(grpc.RpcError) as failed:
            fails()
        assert failed.value.code() is grpc.StatusCode.UNAVAILABLE


async def _aio_calls(stub: Any) -> None:
    call = stub.Get(pb.ItemRequest(id="a"), timeout=10)
    assert (await call).message == FALLBACK_TEXT
    assert dict(await call.trailing_metadata())[FALLBACK_METADATA_KEY] == "UNAVAILABLE"
    assert [item.message async for item in stub.Watch(pb.ItemRequest(id="a"), timeout=10)] == [FALLBACK_TEXT]
    with pytest.raises(grpc.RpcError) as failed:
        await stub.Count(pb.ItemRequest(id="a"), timeout=10)
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.RpcError) as failed:
        await stub.Upload(items(), timeout=10)
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.RpcError) as failed:
        _ = [total async for total in stub.Sync(items(), timeout=10)]
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE


def test_the_fleet_example_runs_against_a_real_store(catalog: str) -> None:
    import redis

    from ..support.clients import wait_until
    from ..support.valkey import Valkey

    server = Valkey().start()
    try:
        code = python_blocks("## Running a fleet")[0]
        code = code.replace("redis://localhost:6379", server.url).replace("localhost:3001", catalog)
        example: dict[str, Any] = {}
        exec(compile(code, "README.md", "exec"), example)
        with pytest.raises(grpc.RpcError) as failed:
            pb_grpc.CatalogStub(example["channel"]).Get(pb.Item(id="a"), timeout=5)
        assert failed.value.code() is grpc.StatusCode.UNAVAILABLE  # the catalog is down: the chain let the call go
        store = redis.Redis.from_url(server.url)
        parts = ("bucket", "counts", "outcomes")  # the limiter's bucket, the budget's and the breaker's counts
        wait_until(lambda: {f"service-a:{{service-b}}:{part}".encode() for part in parts} <= set(store.keys()))
        example["channel"].close()
        example["store"].close()
    finally:
        server.stop()


def test_the_readme_links_only_what_works_on_pypi() -> None:
    """PyPI shows the README alone, with no repository around it: every link and image is an absolute URL."""
    text = README.read_text()
    targets = re.findall(r"\]\(([^)\s]*)", text) + re.findall(r"<img[^>]+src=\"([^\"]*)\"", text)
    assert targets  # failsafe-go's site, Keep a Changelog, ...
    assert [t for t in targets if not t.startswith("https://")] == []
