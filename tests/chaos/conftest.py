"""Fixtures of the chaos tests: the client kind and the chain, each in turn."""

from __future__ import annotations

import pytest

from bench.chaos import CHAINS


@pytest.fixture(params=["sync", "aio"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=sorted(CHAINS))
def chain(request: pytest.FixtureRequest) -> str:
    return str(request.param)
