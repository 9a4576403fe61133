"""The benchmark code runs end to end at a tiny size and writes its report; it checks no timings."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import balance, engine, fleet, priorities, report, run, streams


@pytest.mark.timeout(600)  # every suite in turn, mostly waiting: ~75 s alone, ~140 s beside a suite's other workers,
# ~5 min beside a second suite
def test_every_suite_runs_and_the_report_is_written(tmp_path: Path) -> None:
    suites = {
        "engine": lambda: engine.run(quick=True),
        "healthy": lambda: run.healthy(batches=2, n=2),
        "concurrency": lambda: run.concurrency(workers=4, calls=2, rounds=1),
        "article_breaker": lambda: run.article_breaker(calls=6, workers=3),
        "outage": lambda: run.outage(before=0.2, during=0.4, after=0.4, rate=20, workers=4),
        "slow_backend": lambda: run.slow_backend(calls=2, workers=2, delay=0.4, allowed=0.1),
        "amplification": lambda: run.amplification(calls=3, rate=20, workers=3),
        "goaway": lambda: run.goaway(seconds=0.2, workers=2, rounds=1),
        "streams": lambda: streams.run(batches=2),
        "reload": lambda: run.reload(seconds=0.3, workers=4, rate=40, every=0.05, rounds=1),
        "balance": lambda: balance.run(quick=True),
    }
    results = run.run(suites, tmp_path)
    written = (tmp_path / "REPORT.md").read_text()
    for heading in (
        "## 1.",
        "## 2.",
        "## 3.",
        "## 4a.",
        "## 4b.",
        "## 4c.",
        "## 4d.",
        "## 4e.",
        "## 5.",
        "## 6.",
        "## 10.",
        "## 11.",
    ):
        assert heading in written
    for name in suites:
        assert (tmp_path / f"{name}.json").exists()
    assert (tmp_path / "article_breaker_cdf.png").stat().st_size > 0
    assert (tmp_path / "outage_timeline.png").stat().st_size > 0
    assert (tmp_path / "frontier.png").stat().st_size > 0
    assert "healthy path, sync" in report.console(results)


@pytest.mark.timeout(300)  # nine server processes, each given 20 s to start
def test_the_priorities_suite_runs_and_its_section_is_written() -> None:
    written = "\n".join(report._priorities(priorities.run(quick=True)))
    assert "## 9. Priorities and tenants under overload" in written
    assert "| 3x capacity | priorities |" in written and "| quota per tenant |" in written


@pytest.mark.timeout(300)  # five runs of four replica processes, each given 5 s to start
def test_the_fleet_suite_runs_and_its_section_is_written() -> None:
    written = "\n".join(report._fleet(fleet.run(quick=True)))
    assert "## 8. A fleet of replicas on one store" in written and "a quick run" in written
