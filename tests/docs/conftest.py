from __future__ import annotations

from collections.abc import Iterator

import pytest

from .catalog import Catalog, serving


@pytest.fixture
def catalog() -> Iterator[str]:
    """A catalog server answering every method (the first Watch breaks after two items): its address."""
    yield from serving(Catalog())
