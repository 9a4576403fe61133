"""docs/getting-started.md as a new user follows it, in an empty directory: its greeter.proto, compiled by its own
protoc command, its server.py and client.py run as programs, and the client prints what the page says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from sybil import Document, Region, Sybil
from sybil.parsers.markdown.lexers import RawFencedCodeBlockLexer

PAGE = Path(__file__).resolve().parents[2] / "docs" / "getting-started.md"
INFO = r"(?P<language>\w+)(?: title=\"(?P<title>[^\"]+)\")?$\n"


def blocks() -> list[tuple[str, str | None, str]]:
    """(language, title or None, source) of each fenced block of the page, in order."""
    lexer = RawFencedCodeBlockLexer(
        info_pattern=re.compile(INFO, re.MULTILINE),
        mapping={"language": "language", "title": "title", "source": "source"},
    )

    def parser(document: Document) -> list[Region]:
        return list(lexer(document))

    document = Sybil(parsers=[parser]).parse(PAGE)
    return [
        (region.lexemes["language"], region.lexemes.get("title"), str(region.lexemes["source"]))
        for _, region in sorted(document.regions, key=lambda item: item[0])
    ]


def test_the_page_runs_as_a_new_user_runs_it(tmp_path: Path) -> None:
    found = blocks()
    files = {title: source for _, title, source in found if title}
    assert set(files) == {"greeter.proto", "server.py", "client.py"}
    for name, source in files.items():
        (tmp_path / name).write_text(source)
    shell = [source for language, title, source in found if language == "sh" and title is None]
    protoc = next(command for command in shell if "grpc_tools.protoc" in command)
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", "-c", protoc], cwd=tmp_path, env=environment, check=True, timeout=60)
    assert (tmp_path / "greeter_pb2_grpc.py").exists()

    server = subprocess.Popen(
        [sys.executable, "server.py"], cwd=tmp_path, env=environment, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = server.stdout.readline().strip()  # what `python server.py > port` writes
        client = subprocess.run(
            [sys.executable, "client.py", port],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.kill()
        server.wait(10)
    assert client.returncode == 0, client.stderr
    printed = next(source for language, _, source in found if language == "text")
    assert client.stdout.splitlines() == printed.splitlines()
