"""Every ```python block of the README runs as written: each on its own (its imports its own), against a real
catalog server on 127.0.0.1 in place of "localhost:3001" (the address the examples dial), and does what its text
says. The blocks that need more (the first example's many methods, the fleet's store, the testing recipe) have
tests of their own (test_readme.py, test_testing_recipe.py); every block is run by one or the other."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import grpc
import pytest

from .test_readme import EXAMPLES, README

RUN_ELSEWHERE = {
    "## Usage: gRPC clients": "test_readme.py: every method of a service of many response types",
    "## Running a fleet": "test_readme.py: against a real valkey-server",
    "### Testing your own code's policies, without sockets": "test_testing_recipe.py: its test function",
}
"""The blocks run by tests of their own: the first block after each of these headings."""


def heading_of(line: int) -> str:
    """The README heading a line is under."""
    lines = README.read_text().splitlines()[:line]
    return next(text for text in reversed(lines) if text.startswith("#"))


def elsewhere() -> set[int]:
    first: dict[str, int] = {}
    for example in EXAMPLES:
        first.setdefault(heading_of(example.line), example.line)
    return {first[heading] for heading in RUN_ELSEWHERE}


GENERIC = [example for example in EXAMPLES if example.line not in elsewhere()]


WHAT_IT_PRINTS = {
    "the catalog is resting": ["lamp"],  # the short tour
    "StreamResume(from_last)": [f"{offset} item {offset}" for offset in range(5)],  # resumed once, each item once
    "HedgePolicy(delay=0.05": ["lamp"],
    "executor.call(fetch": ["fresh key", "fresh key"],
    'handle_result=lambda status: status == "PENDING"': ["DONE"],
    "registry.reload(config(attempts=5))": ["lamp", "lamp"],
    "OrcaService(load).add_to(server)": ["b'hello'"],
}
"""What a block prints, by what it holds (the others print nothing)."""


def printed_by(code: str) -> list[str]:
    return next((lines for marker, lines in WHAT_IT_PRINTS.items() if marker in code), [])


def test_every_block_is_run_by_a_test() -> None:
    assert len(EXAMPLES) == len(GENERIC) + len(RUN_ELSEWHERE)
    headings = {heading_of(example.line) for example in EXAMPLES}
    assert set(RUN_ELSEWHERE) <= headings
    assert all(sum(marker in str(example.parsed) for example in GENERIC) == 1 for marker in WHAT_IT_PRINTS)


@pytest.mark.parametrize("example", GENERIC, ids=[f"README.md:{example.line}" for example in GENERIC])
def test_the_example_runs_as_written(example: Any, catalog: str) -> None:
    code = str(example.parsed).replace("localhost:3001", catalog)
    namespace: dict[str, Any] = {"__name__": "readme"}
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile("\n" * (example.line) + code, str(README), "exec"), namespace)
    finally:
        for value in namespace.values():
            if isinstance(value, grpc.Channel):
                value.close()
        if "provider" in namespace:  # the metrics example's MeterProvider: its reader thread ends
            namespace["provider"].shutdown()
    assert printed.getvalue().splitlines() == printed_by(code)
