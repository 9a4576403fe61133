"""Every ```python block of the documentation site (docs/) runs as written, on its own, against a real catalog
server on 127.0.0.1 in place of "localhost:3001", and prints what the ```text block right after it shows (or
nothing). The getting-started files (blocks with a title) are run by test_docs_files.py; the README's
sections the site includes are run by the README's tests."""

from __future__ import annotations

import contextlib
import io
import itertools
import warnings
from pathlib import Path
from typing import Any

import grpc
import pytest
from sybil import Sybil
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = sorted(DOCS.rglob("*.md"))


def _output_block(example: Any) -> None:
    """Only parsed, never run: what the block before it prints."""


def examples_of(page: Path) -> list[tuple[Any, str]]:
    """Each untitled ```python block of ``page``, and what it prints: the ```text block right after it (nothing
    but blank lines between), or nothing."""
    blocks = sorted(
        Sybil(parsers=[PythonCodeBlockParser(), CodeBlockParser("text", _output_block)]).parse(page),
        key=lambda example: example.region.start,
    )
    found = []
    for block, after in itertools.pairwise([*blocks, None]):
        if block is None or block.region.lexemes.get("arguments") != "python":
            continue
        printed = ""
        if after is not None and after.region.lexemes.get("arguments") == "text":
            between = page.read_text()[block.region.end : after.region.start]
            printed = "" if between.strip() else str(after.region.parsed)
        found.append((block, printed))
    return found


EXAMPLES = [
    (f"{page.relative_to(DOCS)}:{block.line}", block, printed) for page in PAGES for block, printed in examples_of(page)
]


def test_the_site_has_examples_on_every_policy_page() -> None:
    pages = {where.split(":")[0] for where, _, _ in EXAMPLES}
    assert {f"policies/{p.name}" for p in (DOCS / "policies").glob("*.md") if p.name != "index.md"} <= pages
    assert len(EXAMPLES) >= 15


@pytest.mark.parametrize(("where", "example", "printed"), EXAMPLES, ids=[where for where, _, _ in EXAMPLES])
def test_the_example_runs_as_written(where: str, example: Any, printed: str, catalog: str) -> None:
    code = str(example.region.parsed).replace("localhost:3001", catalog)
    namespace: dict[str, Any] = {"__name__": "docs"}
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), warnings.catch_warnings():
            warnings.simplefilter("error")  # an example a user copies warns of nothing
            exec(compile("\n" * example.line + code, str(example.path), "exec"), namespace)
    finally:
        for value in namespace.values():
            if isinstance(value, grpc.Channel):
                value.close()
    assert out.getvalue().splitlines() == printed.splitlines(), where


def test_what_a_block_prints_is_read_from_the_text_block_right_after_it(tmp_path: Path) -> None:
    """The pairing above can fail: a text block after another block, or after prose, belongs to no example."""
    page = tmp_path / "page.md"
    page.write_text(
        '```python\nprint("a")\n```\n\n```text\na\n```\n\n```python\nx = 1\n```\n\nprose\n\n```text\nb\n```\n'
    )
    assert [(str(block.region.parsed).strip(), printed) for block, printed in examples_of(page)] == [
        ('print("a")', "a\n"),
        ("x = 1", ""),
    ]


def test_every_python_block_of_the_site_is_run() -> None:
    """By this test, or, with a title (a file to write), by test_docs_files.py: none is passed over."""
    for page in PAGES:
        fences = [line for line in page.read_text().splitlines() if line.startswith("```python")]
        untitled = [line for line in fences if line == "```python"]
        assert len(untitled) == len(examples_of(page)), page
        assert all(line.startswith('```python title="') for line in fences if line not in untitled), page
