"""The catalog service the examples of the README and the site call (protos/catalog/v1/catalog.proto), served on
127.0.0.1 for the tests that run them."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
from catalog.v1 import catalog_pb2 as pb
from catalog.v1 import catalog_pb2_grpc as pb_grpc


def serving(servicer: pb_grpc.CatalogServicer) -> Iterator[str]:
    """A catalog server on 127.0.0.1 for ``servicer`` while the generator is open: its address."""
    server = grpc.server(futures.ThreadPoolExecutor(8))
    pb_grpc.add_CatalogServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


class Catalog(pb_grpc.CatalogServicer):
    """Answers every method; the first Watch breaks after two items, as a stream to resume would."""

    def __init__(self) -> None:
        self.watches = 0

    def Get(self, request: Any, context: Any) -> Any:
        return pb.Item(id=request.id, message=request.id)

    def Count(self, request: Any, context: Any) -> Any:
        return pb.Total(count=1)

    def Watch(self, request: Any, context: Any) -> Any:
        self.watches += 1
        for offset in range(request.offset, 5):
            if self.watches == 1 and offset == 2:
                context.abort(grpc.StatusCode.UNAVAILABLE, "the stream broke")
            yield pb.Item(id=f"i{offset}", message=f"item {offset}", offset=offset)

    def Upload(self, requests: Any, context: Any) -> Any:
        return pb.Total(count=sum(1 for _ in requests))

    def Sync(self, requests: Any, context: Any) -> Any:
        for count, _ in enumerate(requests, 1):
            yield pb.Total(count=count)
