"""The pages of docs/ that hand a new user files to write (blocks with a title) and commands to run, followed as
written in an empty directory: getting-started.md (a greeter of one's own, compiled by its own protoc command, its
server.py and client.py run as programs) and example-service.md (the examples' catalog service, serving the README's
short tour, the site's first example, as a user runs it)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sybil import Document, Region, Sybil
from sybil.parsers.markdown.lexers import RawFencedCodeBlockLexer

DOCS = Path(__file__).resolve().parents[2] / "docs"
README = DOCS.parent / "README.md"
INFO = r"(?P<language>\w+)(?: title=\"(?P<title>[^\"]+)\")?$\n"
ENVIRONMENT = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def blocks(page: Path) -> list[tuple[str, str | None, str]]:
    """(language, title or None, source) of each fenced block of ``page``, in order."""
    lexer = RawFencedCodeBlockLexer(
        info_pattern=re.compile(INFO, re.MULTILINE),
        mapping={"language": "language", "title": "title", "source": "source"},
    )

    def parser(document: Document) -> list[Region]:
        return list(lexer(document))

    document = Sybil(parsers=[parser]).parse(page)
    return [
        (region.lexemes["language"], region.lexemes.get("title"), str(region.lexemes["source"]))
        for _, region in sorted(document.regions, key=lambda item: item[0])
    ]


def written(page: Path, directory: Path) -> list[tuple[str, str | None, str]]:
    """The page's files written into ``directory``, its stubs compiled by its own protoc command; its blocks."""
    found = blocks(page)
    for _, title, source in found:
        if title:
            (directory / title).parent.mkdir(parents=True, exist_ok=True)
            (directory / title).write_text(source)
    commands = "".join(source for language, title, source in found if language == "sh" and title is None)
    protoc = next(line for line in commands.splitlines() if "grpc_tools.protoc" in line)
    subprocess.run(["bash", "-c", protoc], cwd=directory, env=ENVIRONMENT, check=True, timeout=60)
    return found


@contextmanager
def running(directory: Path, *command: str) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, *command], cwd=directory, env=ENVIRONMENT, stdout=subprocess.PIPE, text=True
    )
    try:
        yield process
    finally:
        process.kill()
        process.wait(10)


def run(directory: Path, *command: str) -> str:
    done = subprocess.run(
        [sys.executable, *command], cwd=directory, env=ENVIRONMENT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_getting_started_runs_as_a_new_user_runs_it(tmp_path: Path) -> None:
    found = written(DOCS / "getting-started.md", tmp_path)
    assert {title for _, title, _ in found if title} == {"greeter.proto", "server.py", "client.py"}
    assert (tmp_path / "greeter_pb2_grpc.py").exists()
    with running(tmp_path, "server.py") as server:
        assert server.stdout is not None
        port = server.stdout.readline().strip()  # what `python server.py > port` writes
        printed = run(tmp_path, "client.py", port)
    assert printed.splitlines() == next(source for language, _, source in found if language == "text").splitlines()


def test_the_examples_service_serves_the_first_example_as_written(tmp_path: Path) -> None:
    found = written(DOCS / "example-service.md", tmp_path)
    assert {title for _, title, _ in found if title} == {"catalog/v1/catalog.proto", "catalog_server.py"}
    tour = blocks(README)  # the short tour, which the site's home page includes
    example, printed = next(
        (source, tour[n + 1][2]) for n, (_, _, source) in enumerate(tour) if "the catalog is resting" in source
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    (tmp_path / "example.py").write_text(example.replace("localhost:3001", f"localhost:{port}"))
    with running(tmp_path, "catalog_server.py", port):
        listening(int(port))  # as `python catalog_server.py &` is, by the time a user types the next command
        assert run(tmp_path, "example.py").splitlines() == printed.splitlines()


def listening(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on port {port}"
            time.sleep(0.05)
