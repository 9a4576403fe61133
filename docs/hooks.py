"""MkDocs hook: the benchmark report and the chaos report (bench/results/, written by `make bench` and
`make chaos`) become the site's Benchmarks pages, with their plots, as they are in the repository."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"
PAGES = {"REPORT.md": "benchmarks/report.md", "CHAOS.md": "benchmarks/chaos.md"}


def on_files(files: Files, config: Any) -> Files:
    for name, uri in PAGES.items():
        files.append(File.generated(config, uri, abs_src_path=str(RESULTS / name)))
    for plot in sorted(RESULTS.glob("*.png")):
        files.append(File.generated(config, f"benchmarks/{plot.name}", abs_src_path=str(plot)))
    return files
