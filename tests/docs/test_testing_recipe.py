"""The README's recipe for testing one's own code with grpcio-testing, run as written (its streams and grpcio-testing's
floor: tests/client/test_grpc_testing.py)."""

from __future__ import annotations

from typing import Any

import pytest

from .test_readme import python_blocks


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
