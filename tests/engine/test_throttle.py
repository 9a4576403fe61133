"""AdaptiveThrottle: rejects locally in proportion to the calls the dependency refused, over a sliding window."""

# mypy: disable-error-code="arg-type,misc"
# (the cases pass values of the wrong type on purpose)

from __future__ import annotations

import asyncio
import threading

import pytest

from interceptors import AdaptiveThrottle, CircuitBreaker, Executor, ThrottledError
from interceptors.events import Throttled
from interceptors.testing import FakeClock

from ..support.calls import Boom, CallerMistake


def feed(throttle: AdaptiveThrottle, outcomes: str) -> tuple[int, int]:
    """Call through the throttle: "o" succeeds, "x" fails; returns (rejected, sent)."""
    executor, rejected, sent = Executor(throttle), 0, 0

    def call(fails: bool) -> None:
        nonlocal sent
        sent += 1
        if fails:
            raise Boom

    for outcome in outcomes:
        try:
            executor.call(call, outcome == "x")
        except ThrottledError:
            rejected += 1
        except Boom:
            pass
    return rejected, sent


@pytest.mark.parametrize(("failing", "expected"), [(0.0, 0.0), (0.5, 0.0), (1.0, 0.9)])
def test_the_rejection_rate_at_0_50_and_100_percent_failure(clock: FakeClock, failing: float, expected: float) -> None:
    """k = 2: while half the calls are accepted nothing is shed; when none are, up to the maximum."""
    throttle = AdaptiveThrottle(clock=clock)
    pattern = {0.0: "o", 0.5: "ox", 1.0: "x"}[failing]
    for _ in range(200):
        # record outcomes without draws: admit and record as the chain does
        throttle._tally.add(first=len(pattern), second=pattern.count("o"))
    assert throttle.rejection_rate == pytest.approx(expected)


def test_a_failing_dependency_sheds_nearly_everything_and_recovers_with_the_accept_rate(clock: FakeClock) -> None:
    throttle = AdaptiveThrottle(window=10, clock=clock)
    rejected, sent = feed(throttle, "x" * 2000)
    assert rejected + sent == 2000 and 0.85 < rejected / 2000 < 0.95  # the 10 % left probe the dependency
    down = throttle.rejection_rate
    clock.advance(1)
    rejected_while_recovering, _ = feed(throttle, "o" * 1000)  # accepted again: rejections fall with the accepts
    assert rejected_while_recovering < 1000 * down / 2
    assert throttle.rejection_rate == 0
    feed(throttle, "x" * 100)
    clock.advance(10)
    assert throttle.rejection_rate == 0  # the window forgot the outage: no fixed open period


def test_a_fresh_channel_is_not_shed_for_its_first_failures(clock: FakeClock) -> None:
    """A backend failing twice then answering: below ``min_requests`` (default 10) nothing is rejected."""
    for _ in range(20):  # 20 fresh channels
        throttle = AdaptiveThrottle(clock=clock)
        assert feed(throttle, "xx") == (0, 2)
        assert throttle.rejection_rate == 0
        assert feed(throttle, "o" * 5) == (0, 5)
    assert throttle.min_requests == 10


def test_nothing_is_rejected_below_min_requests_and_the_formula_applies_from_it(clock: FakeClock) -> None:
    throttle = AdaptiveThrottle(min_requests=5, clock=clock)
    assert feed(throttle, "xxxx") == (0, 4)
    assert throttle.rejection_rate == 0  # 4 requests, none accepted: still below the minimum
    feed(throttle, "x")
    assert throttle.rejection_rate == pytest.approx(min(0.9, (5 - 2 * 0) / (5 + 1)))
    eager = AdaptiveThrottle(min_requests=0, clock=clock)
    eager._tally.add(first=1)
    assert eager.rejection_rate == pytest.approx(0.5)  # no minimum: the SRE book's formula from the first request


def test_a_quiet_channel_is_never_shed(clock: FakeClock) -> None:
    """Fewer than ``min_requests`` calls in a window, all failing: the throttle would save the dependency nothing."""
    throttle = AdaptiveThrottle(window=10, clock=clock)
    for _ in range(100):
        assert feed(throttle, "x") == (0, 1)
        clock.advance(1.2)  # 9 calls in any 10 s
    assert throttle.rejection_rate == 0
    busy = AdaptiveThrottle(window=10, clock=clock)
    rejected, _ = feed(busy, "x" * 100)
    assert rejected > 0  # at the minimum and above, it sheds as before


def test_random_failures_that_leave_most_calls_answered_are_never_shed(clock: FakeClock) -> None:
    throttle = AdaptiveThrottle(clock=clock)
    rejected, sent = feed(throttle, "oox" * 700)  # a third fail at random
    assert rejected == 0 and sent == 2100


def test_failures_it_does_not_handle_are_accepts_and_a_lower_k_sheds_earlier(clock: FakeClock) -> None:
    throttle = AdaptiveThrottle(k=1.1, handle=Boom, clock=clock)
    executor = Executor(throttle)

    def mistaken() -> None:
        raise CallerMistake

    for _ in range(50):
        with pytest.raises(CallerMistake):
            executor.call(mistaken)
    assert throttle.rejection_rate == 0
    rejected, _ = feed(AdaptiveThrottle(k=1.1, clock=clock), "ox" * 100)  # wants 10 accepts in 11: half is too few
    assert rejected > 0


def test_a_burst_of_calls_to_a_healthy_dependency_is_never_shed(clock: FakeClock) -> None:
    """Calls count when they end: many in flight at once, none answered yet, is no sign of refusal."""
    throttle = AdaptiveThrottle(clock=clock)

    async def burst() -> None:
        release = asyncio.Event()

        async def slow() -> None:
            await release.wait()

        calls = [asyncio.ensure_future(Executor(throttle).acall(slow)) for _ in range(500)]
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(*calls)

    asyncio.run(burst())
    assert (throttle._tally.first, throttle._tally.second) == (500, 500)


def test_listeners_hear_each_rejection(clock: FakeClock) -> None:
    events: list[Throttled] = []
    throttle = AdaptiveThrottle(on_throttled=events.append, clock=clock)
    rejected, _ = feed(throttle, "x" * 200)
    assert len(events) == rejected > 0 and all(0 < e.rejection_rate <= 0.9 for e in events)


def test_rejections_by_policies_further_in_and_cancellations_count_for_nothing(clock: FakeClock) -> None:
    throttle = AdaptiveThrottle(clock=clock)
    breaker = CircuitBreaker(failure_threshold=1, clock=clock)
    breaker.force_open()
    executor = Executor(throttle, breaker)
    for _ in range(100):
        with pytest.raises(Exception, match="held open"):
            executor.call(lambda: None)
    assert throttle.rejection_rate == 0 and throttle._tally.first == 0

    async def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(Executor(throttle).acall(cancelled))
    assert throttle._tally.first == 0


def test_a_throttle_counts_exactly_with_32_threads(clock: FakeClock) -> None:
    throttle = AdaptiveThrottle(clock=clock)
    executor = Executor(throttle)

    def work() -> None:
        for _ in range(100):
            executor.call(lambda: None)

    threads = [threading.Thread(target=work) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (throttle._tally.first, throttle._tally.second) == (3200, 3200)


async def test_a_throttle_counts_exactly_with_32_tasks(clock: FakeClock) -> None:
    throttle = AdaptiveThrottle(clock=clock)
    executor = Executor(throttle)

    async def ok() -> None:
        await asyncio.sleep(0)

    await asyncio.gather(*(executor.acall(ok) for _ in range(32 * 100)))
    assert (throttle._tally.first, throttle._tally.second) == (3200, 3200)


@pytest.mark.parametrize(
    ("make", "option"),
    [
        (lambda: AdaptiveThrottle(k=0.5), "k"),
        (lambda: AdaptiveThrottle(k="2"), "k"),
        (lambda: AdaptiveThrottle(max_rejection_rate=0), "max_rejection_rate"),
        (lambda: AdaptiveThrottle(max_rejection_rate=1.1), "max_rejection_rate"),
        (lambda: AdaptiveThrottle(window=-1), "window"),
        (lambda: AdaptiveThrottle(handle=3), "handle"),
        (lambda: AdaptiveThrottle(on_throttled=1), "on_throttled"),
        (lambda: AdaptiveThrottle(min_requests=-1), "min_requests"),
        (lambda: AdaptiveThrottle(min_requests=2.5), "min_requests"),
        (lambda: AdaptiveThrottle(min_requests=True), "min_requests"),
    ],
)
def test_bad_throttle_options_are_named(make: object, option: str) -> None:
    with pytest.raises(ValueError, match=option):
        make()  # type: ignore[operator]


def test_it_backs_off_as_the_dependency_reports_utilization_near_one(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    reported: list[object] = [0.5]

    def utilization() -> float | None:
        value = reported[0]
        if isinstance(value, Exception):
            raise value
        return value  # type: ignore[return-value]

    def rates(steps: int) -> list[float]:
        """The rate after each of ``steps`` steps (one each window / 20 = 0.1 s, as calls come)."""
        seen = []
        for _ in range(steps):
            clock.advance(0.15)
            throttle._loaded()  # what a call does
            seen.append(round(throttle.rejection_rate, 6))
        return seen

    throttle = AdaptiveThrottle(utilization=utilization, max_utilization=0.8, window=2, clock=clock)
    assert rates(2) == [0.0, 0.0] and feed(throttle, "o" * 100) == (0, 100)
    assert throttle.rejection_rate == 0.0  # reading it moves nothing
    reported[0] = 0.9  # over by 0.1: the rate rises by 0.1 a step, before any refusal
    assert rates(3) == [0.1, 0.2, 0.3]
    rejected, _ = feed(throttle, "o" * 2000)
    assert 0.25 < rejected / 2000 < 0.35  # 0.3
    clock.advance(0.15)
    rejections = []
    for _ in range(200):
        try:
            Executor(throttle).call(lambda: None)
        except ThrottledError as rejection:
            rejections.append(str(rejection))
    assert rejections and all(r.endswith("reports utilization 0.90 (40% rejected)") for r in rejections)
    reported[0] = 1.7  # far over (a CPU's, say): up to max_rejection_rate
    assert rates(2) == [0.9, 0.9]
    reported[0] = 0.6  # under by 0.2: it falls as fast
    assert rates(3) == [0.7, 0.5, 0.3]
    for unknown in (None, float("nan"), "busy", RuntimeError("no report")):
        reported[0] = unknown  # left as it is: a silent backend is no idle one
        assert rates(1) == [0.3]
    assert caplog.text.count("utilization() raised") == 1
    reported[0] = 0.85  # asks for 0.05 a step
    refused = AdaptiveThrottle(utilization=utilization, max_utilization=0.8, clock=clock)
    refused._loaded()
    assert refused.rejection_rate == pytest.approx(0.05)
    refused._tally.add(first=100, second=0)  # refusals ask for more: the larger rate wins
    assert refused.rejection_rate == pytest.approx(0.9)


def test_concurrent_callers_move_the_utilizations_rate_once_a_step(clock: FakeClock) -> None:
    throttle = AdaptiveThrottle(utilization=lambda: 0.9, max_utilization=0.8, window=2, clock=clock)
    throttle._loaded()  # 0.1
    clock.advance(0.15)
    barrier = threading.Barrier(8)

    def step() -> None:
        barrier.wait()
        throttle._loaded()

    threads = [threading.Thread(target=step) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert throttle.rejection_rate == pytest.approx(0.2)  # one step, not eight


def test_a_bad_utilization_option_is_named() -> None:
    with pytest.raises(ValueError, match="utilization must be a function"):
        AdaptiveThrottle(utilization=0.9)
    with pytest.raises(ValueError, match="max_utilization"):
        AdaptiveThrottle(max_utilization=0)
