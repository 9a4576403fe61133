from __future__ import annotations

import os

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # quiet grpc core's info lines (GOAWAY on server stop)

from collections.abc import Iterator

import pytest

from interceptors.testing import FakeClock

from .support.server import ScriptedServer

MARKED_BY_PATH = {"chaos": "tests/chaos/", "soak": "tests/chaos/test_soak.py", "e2e": "tests/e2e/"}
"""Markers given by where a test lives, so that a slice runs with ``-m`` (e.g. ``-m "not chaos and not e2e"``)."""


LONGEST_FIRST = (
    "tests/test_bench_smoke.py",
    "tests/fleet/test_fleet_store_faults.py",
    "tests/client/test_memory_bounds.py",
    "tests/e2e/",
    "tests/chaos/test_process_faults.py",
    "tests/chaos/test_network_faults.py",
    "tests/chaos/",
    "tests/client/test_load_bounds.py",
)
"""Where the longest tests live (tens of seconds each, or many of several seconds): the suite starts them first, so
that its workers (``make test WORKERS=N``, which hands out tests one at a time) do not end waiting for one of them."""


def _rank(where: str) -> int:
    return next((n for n, prefix in enumerate(LONGEST_FIRST) if where.startswith(prefix)), len(LONGEST_FIRST))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = config.rootpath
    for item in items:
        where = item.path.relative_to(root).as_posix()
        for marker, prefix in MARKED_BY_PATH.items():
            if where.startswith(prefix):
                item.add_marker(marker)
    items.sort(key=lambda item: _rank(item.path.relative_to(root).as_posix()))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sync", "aio"], ids=["sync-server", "aio-server"])
def server(request: pytest.FixtureRequest) -> Iterator[ScriptedServer]:
    """A scripted gRPC server on 127.0.0.1, sync and aio in turn."""
    running = ScriptedServer(request.param)
    yield running
    running.stop()
