"""Token buckets by key on the fake clock: the rule (a burst, then one call per interval), the wait a refused call
is told, and bounded memory (full buckets forgotten, a cap past which new keys share one bucket)."""

from __future__ import annotations

import pytest

from interceptors.engine._buckets import OVERFLOW, KeyedBuckets
from interceptors.testing import FakeClock


def test_a_key_may_burst_then_make_one_call_per_interval(clock: FakeClock) -> None:
    buckets = KeyedBuckets(0.25, 3, 10, clock)
    assert [buckets.take("a") for _ in range(3)] == [("a", 0.0)] * 3
    key, wait = buckets.take("a")
    assert key == "a" and wait == pytest.approx(0.25)  # the next token comes in one interval
    assert buckets.take("b") == ("b", 0.0)  # every key has its own bucket
    clock.advance(0.1)
    assert buckets.take("a")[1] == pytest.approx(0.15)  # a refused call takes nothing: still 0.15 s to go
    clock.advance(0.15)
    assert buckets.take("a") == ("a", 0.0)
    assert buckets.take("a")[1] == pytest.approx(0.25)
    clock.advance(10)
    assert [buckets.take("a")[1] for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(0.25)]  # saved up to burst


def test_full_buckets_are_forgotten_when_room_is_needed_and_the_cap_is_kept(clock: FakeClock) -> None:
    buckets = KeyedBuckets(1.0, 1, 3, clock)
    for key in "abc":
        assert buckets.take(key) == (key, 0.0)
    assert buckets.take("d") == (OVERFLOW, 0.0)  # every kept bucket is in use: "d" counts in the shared one
    assert buckets.take("e") == (OVERFLOW, pytest.approx(1.0))  # ... which "e" shares: no escape by new names
    assert buckets.overflowed == 2 and len(buckets) == 3
    clock.advance(1.0)  # every bucket full again: nothing to keep
    assert buckets.take("e") == ("e", 0.0)
    assert len(buckets) == 1


def test_a_flood_of_new_keys_keeps_memory_and_admissions_within_the_cap(clock: FakeClock) -> None:
    buckets = KeyedBuckets(1.0, 1, 100, clock)
    admitted = 0
    for i in range(100_000):  # 10 s of new names, one each 0.1 ms
        admitted += buckets.take(f"tenant-{i}")[1] == 0.0
        clock.advance(0.0001)
    assert len(buckets) <= 100  # the cap (the shared bucket aside)
    # a kept bucket is forgotten only once full again (1 s): at most 100 new names a second get their own, and the
    # rest share one bucket (one call a second)
    assert admitted <= 100 * 11 + 11


def test_a_bucket_made_after_a_sweep_is_forgotten_as_soon_as_it_is_full_again(clock: FakeClock) -> None:
    buckets = KeyedBuckets(1.0, 5, 2, clock)
    assert [buckets.take("heavy")[1] for _ in range(5)] == [0.0] * 5  # full again at 5 s
    assert buckets.take("x") == ("x", 0.0)  # full again at 1 s
    clock.advance(0.5)
    assert buckets.take("y")[0] == OVERFLOW  # nothing full again yet
    clock.advance(0.5)
    assert buckets.take("z") == ("z", 0.0)  # "x" forgotten; "z" full again at 2 s
    clock.advance(1.5)
    assert buckets.take("w") == ("w", 0.0)  # "z" is full again: forgotten, though "heavy" is not
