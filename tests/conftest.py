from __future__ import annotations

import os

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # quiet grpc core's info lines (GOAWAY on server stop)

from collections.abc import Iterator

import pytest

from interceptors.testing import FakeClock

from .support.server import ScriptedServer


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sync", "aio"], ids=["sync-server", "aio-server"])
def server(request: pytest.FixtureRequest) -> Iterator[ScriptedServer]:
    """A scripted gRPC server on 127.0.0.1, sync and aio in turn."""
    running = ScriptedServer(request.param)
    yield running
    running.stop()
