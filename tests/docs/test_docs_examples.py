"""Every ```python block of the documentation site (docs/) runs as written, on its own, against a real catalog
server on 127.0.0.1 in place of "localhost:3001", and prints what the ```text block right after it shows (or
nothing). The getting-started files (blocks with a title) are run by test_getting_started.py; the README's
sections the site includes are run by the README's tests."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import grpc
import pytest
from sybil import Sybil
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser

from .test_readme_examples import catalog  # noqa: F401  (the fixture)

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = sorted(DOCS.rglob("*.md"))


def _output_block(example: Any) -> None:
    """Only parsed, never run: what the block before it prints."""


def examples() -> list[tuple[str, Any, str]]:
    """(where, the python block, what it prints) for every untitled python block of the site."""
    found = []
    for page in PAGES:
        blocks = sorted(
            Sybil(parsers=[PythonCodeBlockParser(), CodeBlockParser("text", _output_block)]).parse(page),
            key=lambda example: example.region.start,
        )
        for block, after in zip(blocks, [*blocks[1:], None][: len(blocks)], strict=True):
            if block.region.lexemes.get("arguments") != "python":
                continue
            printed = ""
            if after is not None and after.region.lexemes.get("arguments") == "text":
                between = page.read_text()[block.region.end : after.region.start]
                printed = "" if between.strip() else str(after.region.parsed)
            found.append((f"{page.relative_to(DOCS)}:{block.line}", block, printed))
    return found


EXAMPLES = examples()


def test_the_site_has_examples_on_every_policy_page() -> None:
    pages = {where.split(":")[0] for where, _, _ in EXAMPLES}
    assert {f"policies/{p.name}" for p in (DOCS / "policies").glob("*.md") if p.name != "index.md"} <= pages
    assert len(EXAMPLES) >= 15


@pytest.mark.parametrize(("where", "example", "printed"), EXAMPLES, ids=[where for where, _, _ in EXAMPLES])
def test_the_example_runs_as_written(where: str, example: Any, printed: str, catalog: str) -> None:  # noqa: F811
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


def test_a_wrong_output_block_is_seen(tmp_path: Path) -> None:
    """The pairing above can fail: a block's printed lines are read from the text block after it."""
    page = tmp_path / "page.md"
    page.write_text('```python\nprint("a")\n```\n\n```text\nb\n```\n\n```python\nx = 1\n```\n')
    blocks = sorted(
        Sybil(parsers=[PythonCodeBlockParser(), CodeBlockParser("text", _output_block)]).parse(page),
        key=lambda example: example.region.start,
    )
    assert [str(b.region.parsed).strip() for b in blocks] == ['print("a")', "b", "x = 1"]
    assert [b.region.lexemes["arguments"] for b in blocks] == ["python", "text", "python"]
