from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from interceptors.fleet import FleetStore

from ..support.valkey import EXTERNAL, Valkey


@pytest.fixture
def valkey() -> Iterator[Valkey]:
    """A valkey-server of this test's own (killed, paused and restarted by store-fault tests)."""
    if EXTERNAL:
        pytest.skip("REDIS_URL names an external store, which a test cannot kill or pause")
    server = Valkey().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shared_valkey() -> Iterator[str]:
    """The URL of a store the module's tests share (their prefixes differ), or of ``REDIS_URL``'s."""
    if EXTERNAL:
        yield EXTERNAL
        return
    server = Valkey().start()
    yield server.url
    server.stop()


_prefixes = iter(range(10**9))


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    return f"t{next(_prefixes)}-{abs(hash(request.node.nodeid)) % 10**8}"


def sync_store(url: str, prefix: str, **options: object) -> FleetStore:
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    return FleetStore(client, prefix=prefix, **options)  # type: ignore[arg-type]
