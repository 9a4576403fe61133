"""The benchmark code runs end to end at a tiny size and writes its report; it checks no timings.

Each suite runs in a test of its own (the suite's workers run them side by side), its section and console summary
rendered from its fresh result among the committed ones (bench/results); one test writes the whole report and its
plots, with fresh results of the two suites most plots draw (the tail's plot draws its committed result).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from bench import balance, compare, engine, fleet, priorities, report, run, streams
from bench.approaches import Budget

COMMITTED = Path(__file__).parents[1] / "bench" / "results"

QUICK: dict[str, Callable[[], dict[str, Any]]] = {
    "engine": lambda: engine.run(quick=True),
    "healthy": lambda: run.healthy(batches=2, n=2),
    "concurrency": lambda: run.concurrency(workers=4, calls=2, rounds=1),
    "slow_backend": lambda: run.slow_backend(calls=2, workers=2, delay=0.4, allowed=0.1),
    "amplification": lambda: run.amplification(calls=3, rate=20, workers=3),
    "goaway": lambda: run.goaway(seconds=0.2, workers=2, rounds=1),
    "streams": lambda: streams.run(batches=2, messages=50),
    "reload": lambda: run.reload(seconds=0.3, workers=4, rate=40, every=0.05, rounds=1),
    "balance": lambda: balance.run(quick=True),
    "fleet": lambda: fleet.run(quick=True),
    "priorities": lambda: priorities.run(quick=True),
}
"""Each suite at a tiny size; the two that the plots draw (article_breaker, outage) run in the report's test."""

SECTIONS = {
    "engine": "## 1. The policy engine alone",
    "healthy": "## 2. Healthy-path overhead (unary)",
    "concurrency": "## 3. Concurrency:",
    "slow_backend": "## 4c. A slow backend:",
    "amplification": "## 4d. Retry amplification across hops",
    "goaway": "## 5. Transparent retries:",
    "streams": "## 6. Streams on a healthy backend",
    "fleet": "## 8. A fleet of replicas on one store",
    "priorities": "## 9. Priorities and tenants under overload",
    "reload": "## 10. Reloading a registry under load",
    "balance": "## 11. Load reports and balancing",
}
PLOTS = {"cdf": "cdf.png", "timeline": "timeline.png", "tail": "tail.png", "frontier": "frontier.png"}


def committed() -> dict[str, Any]:
    """The committed results of every suite, with this machine's description."""
    results = {path.stem: json.loads(path.read_text()) for path in COMMITTED.glob("*.json")}
    return {**results, "machine": run.machine(), "budget": asdict(Budget())}


@pytest.mark.timeout(300)  # the longest (fleet, balance) ~30 s alone, longer beside the suite's other workers
@pytest.mark.parametrize("suite", QUICK)
def test_a_suite_runs_at_a_tiny_size_and_its_section_is_written(suite: str) -> None:
    fresh = json.loads(json.dumps(QUICK[suite]()))  # as make bench writes it and the report reads it
    results = {**committed(), suite: fresh}
    written = report._markdown(results, PLOTS)
    assert SECTIONS[suite] in written
    assert "healthy path, sync" in report.console(results)
    if suite == "fleet":
        assert "a quick run" in written
    if suite == "priorities":
        assert "| 3x capacity | priorities |" in written and "| quota per tenant |" in written


def test_every_suite_has_a_tiny_run_and_a_section() -> None:
    assert QUICK.keys() | {"article_breaker", "outage"} >= run.SUITES.keys() - {"tail", "propagation"}
    assert QUICK.keys() == SECTIONS.keys()


@pytest.mark.timeout(300)  # two suites of seven approaches each: ~30 s alone
def test_the_report_and_its_plots_are_written(tmp_path: Path) -> None:
    for path in COMMITTED.glob("*.json"):
        shutil.copy(path, tmp_path)
    results = run.run(
        {
            "article_breaker": lambda: run.article_breaker(calls=6, workers=3, delay=0.1),
            "outage": lambda: run.outage(before=0.2, during=0.4, after=0.4, rate=20, workers=4),
        },
        tmp_path,
    )
    written = (tmp_path / "REPORT.md").read_text()
    for heading in ("## 1.", "## 2.", "## 3.", "## 4a.", "## 4b.", "## 4c.", "## 4d.", "## 4e.", "## 5.", "## 6."):
        assert heading in written
    for heading in ("## 7.", "## 8.", "## 9.", "## 10.", "## 11."):
        assert heading in written
    assert "`retry-after: 0.1` (and `grpc-retry-pushback-ms: 100`), half of the rest 0.1 s slower" in written
    for plot in ("article_breaker_cdf.png", "outage_timeline.png", "frontier.png", "tail_cdf.png"):
        assert (tmp_path / plot).stat().st_size > 0
    assert "healthy path, sync" in report.console(results)


@pytest.mark.timeout(300)  # two rounds of two versions, each a process of its own: ~10 s alone
def test_a_revision_and_the_working_tree_are_measured_in_turns() -> None:
    worktrees = _worktrees()
    compared = compare.compare("HEAD", rounds=2, batches=1, calls=2)
    assert _worktrees() == worktrees  # the revision's worktree is gone
    root = Path(__file__).parents[1].resolve()
    assert not Path(compared["before"]["version"]).resolve().is_relative_to(root)  # the revision's own code
    assert Path(compared["after"]["version"]).resolve().is_relative_to(root)
    written = compare.table(compared, "HEAD")
    for flavour in ("sync", "aio"):
        for path in compare.PATHS:
            assert f"{flavour:4s} {path}" in written
            for side in compare.SIDES:
                low, high = compared[side][flavour][path]["range"]
                assert 0 < low <= compared[side][flavour][path]["ratio"] <= high


def test_an_unknown_revision_is_refused_before_anything_starts() -> None:
    worktrees = _worktrees()
    with pytest.raises(ValueError, match="no such revision: no-such-branch"):
        compare.compare("no-such-branch")
    assert _worktrees() == worktrees


def _worktrees() -> str:
    listed = subprocess.run(["git", "worktree", "list", "--porcelain"], capture_output=True, text=True, check=True)
    return listed.stdout
