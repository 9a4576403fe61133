"""Soak, short: 10 000 mixed calls (OK, retried, timed out, answered by the fallback, cancelled), sync and aio at
once, through the composed chain; the process's threads, fds, asyncio tasks and RSS may not grow past their bounds
(``make soak`` runs a million; 20 000 here took ~25 s of the suite's CPU)."""

from __future__ import annotations

import pytest

from bench import soak


@pytest.mark.timeout(180)  # ~15 s beside the suite's other workers, twice that and more beside a second suite
def test_ten_thousand_mixed_calls_leave_nothing_behind() -> None:
    result = soak.run(calls=10_000, workers=4, warm=1000)
    outcomes, events = result["outcomes"], result["events"]
    assert result["calls"] >= 10_000 - 8  # each worker's share is whole
    assert not [kind for kind in outcomes if kind.startswith("exception:")], outcomes
    assert {"OK", "fallback", "cancelled"} <= set(outcomes), outcomes
    assert events.get("retries", 0) > 0 and events.get("attempt timeouts", 0) > 0, events
    growth = result["growth"]
    assert result["within_bounds"], f"grew {growth} (bounds {soak.BOUNDS})"
