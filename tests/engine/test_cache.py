"""CachePolicy on the fake clock: fresh answers without a call, stale ones in place of failures within their age,
expiry, bounded memory (entries, bytes, oversize answers), and inputs that must not fail a call."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from interceptors import CacheEntry, CachePolicy, Executor, Fallback, MemoryCache, RetryPolicy
from interceptors.events import CacheHit, CacheMiss
from interceptors.testing import FakeClock

from ..support.calls import Boom, CallerMistake


class Backend:
    """Answers ``f"{request}#{n}"`` (n: its calls so far), or raises ``failing`` while it is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.failing: Exception | None = None

    def __call__(self, execution: Any) -> Any:
        self.calls += 1
        if self.failing is not None:
            raise self.failing
        return f"{execution.request}#{self.calls}"


def ask(executor: Executor, backend: Backend, request: Any) -> Any:
    return executor.call_with_execution(backend, request=request)


def test_a_fresh_answer_comes_from_the_cache_without_a_call(clock: FakeClock) -> None:
    hits: list[CacheHit] = []
    misses: list[CacheMiss] = []
    executor = Executor(CachePolicy(ttl=10, clock=clock, on_hit=hits.append, on_miss=misses.append))
    backend = Backend()
    assert ask(executor, backend, "a") == "a#1"
    clock.advance(9.9)
    assert ask(executor, backend, "a") == "a#1"
    assert ask(executor, backend, "b") == "b#2"  # another request, another key
    assert backend.calls == 2
    assert [(h.result, h.stale, round(h.age, 3)) for h in hits] == [("a#1", False, 9.9)]
    assert len(misses) == 2


def test_an_answer_expires_after_its_ttl(clock: FakeClock) -> None:
    executor, backend = Executor(CachePolicy(ttl=10, clock=clock)), Backend()
    ask(executor, backend, "a")
    clock.advance(10)
    assert ask(executor, backend, "a") == "a#2"


def test_a_stale_answer_replaces_a_failure_within_its_age(clock: FakeClock) -> None:
    hits: list[CacheHit] = []
    cache = CachePolicy(ttl=10, stale_if_error=60, clock=clock, on_hit=hits.append)
    executor, backend = Executor(cache), Backend()
    ask(executor, backend, "a")
    clock.advance(30)
    backend.failing = Boom("down")
    assert ask(executor, backend, "a") == "a#1"
    assert hits[-1].stale and isinstance(hits[-1].failure, Boom) and hits[-1].age == 30
    clock.advance(40)  # 70 s old: past ttl + stale_if_error
    with pytest.raises(Boom):
        ask(executor, backend, "a")
    backend.failing = None
    assert ask(executor, backend, "a") == "a#4"


def test_a_stale_answer_replaces_only_failures_it_handles(clock: FakeClock) -> None:
    cache = CachePolicy(ttl=1, stale_if_error=60, handle=Boom, clock=clock)
    executor, backend = Executor(cache), Backend()
    ask(executor, backend, "a")
    clock.advance(5)
    backend.failing = CallerMistake()
    with pytest.raises(CallerMistake):
        ask(executor, backend, "a")


def test_without_stale_if_error_a_failure_is_a_failure(clock: FakeClock) -> None:
    executor, backend = Executor(CachePolicy(ttl=1, clock=clock)), Backend()
    ask(executor, backend, "a")
    clock.advance(2)
    backend.failing = Boom()
    with pytest.raises(Boom):
        ask(executor, backend, "a")


def test_failures_and_fallbacks_are_never_kept(clock: FakeClock) -> None:
    executor = Executor(CachePolicy(ttl=10, clock=clock), Fallback(value="fallback"))
    backend = Backend()
    backend.failing = Boom()
    assert ask(executor, backend, "a") == "fallback"
    backend.failing = None
    assert ask(executor, backend, "a") == "a#2"  # the fallback's answer was not kept
    assert ask(executor, backend, "a") == "a#2"


def test_a_cached_answer_is_not_retried_or_counted_as_an_attempt(clock: FakeClock) -> None:
    executor, backend = Executor(CachePolicy(ttl=10, clock=clock), RetryPolicy(clock=clock)), Backend()
    ask(executor, backend, "a")
    assert ask(executor, backend, "a") == "a#1" and backend.calls == 1


def test_the_store_keeps_at_most_max_entries_least_recently_used_first_out(clock: FakeClock) -> None:
    cache = CachePolicy(ttl=100, max_entries=3, clock=clock)
    executor, backend = Executor(cache), Backend()
    for request in "abc":
        ask(executor, backend, request)
    ask(executor, backend, "a")  # used: "b" is now the least recently used
    ask(executor, backend, "d")
    assert isinstance(cache.store, MemoryCache) and len(cache.store) == 3
    assert ask(executor, backend, "a") == "a#1"
    assert ask(executor, backend, "b") == "b#5"  # it was dropped


def test_the_store_keeps_at_most_max_bytes_and_no_oversize_answer() -> None:
    store = MemoryCache(max_entries=100, max_bytes=1000)
    for i in range(10):
        store.put(i, CacheEntry(f"v{i}", 300, 0.0))
    assert len(store) == 3 and store.bytes == 900
    store.put("huge", CacheEntry("x", 1001, 0.0))
    assert store.get("huge") is None and len(store) == 3


def test_an_answer_larger_than_max_entry_bytes_is_not_kept(clock: FakeClock) -> None:
    cache = CachePolicy(ttl=10, max_entry_bytes=100, clock=clock)
    executor = Executor(cache)
    assert executor.call_with_execution(lambda e: "x" * 500, request="big") == "x" * 500
    assert isinstance(cache.store, MemoryCache) and len(cache.store) == 0


def test_calls_without_a_key_go_uncached(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    def broken(request: Any) -> Any:
        raise KeyError(request)

    backend = Backend()
    with caplog.at_level(logging.ERROR, "interceptors"):
        for cache in (CachePolicy(ttl=10, clock=clock, key=broken), CachePolicy(ttl=10, clock=clock)):
            executor = Executor(cache)
            for request in ([1, 2], None, ["unhashable"]):
                ask(executor, backend, request)
                ask(executor, backend, request)
    assert backend.calls == 12
    assert len([r for r in caplog.records if "key function failed" in r.getMessage()]) == 1


def test_a_key_function_picks_what_tells_requests_apart(clock: FakeClock) -> None:
    executor, backend = Executor(CachePolicy(ttl=10, clock=clock, key=lambda r: r.split("?")[0])), Backend()
    assert ask(executor, backend, "page?trace=1") == "page?trace=1#1"
    assert ask(executor, backend, "page?trace=2") == "page?trace=1#1"


def test_a_store_that_raises_fails_no_call(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def get(self, key: Any) -> CacheEntry | None:
            raise ConnectionError("store down")

        def put(self, key: Any, entry: CacheEntry) -> None:
            raise ConnectionError("store down")

        def remove(self, key: Any) -> None:
            raise ConnectionError("store down")

    executor, backend = Executor(CachePolicy(ttl=10, store=Broken(), clock=clock)), Backend()
    with caplog.at_level(logging.ERROR, "interceptors"):
        assert [ask(executor, backend, "a") for _ in range(3)] == ["a#1", "a#2", "a#3"]
    assert len([r for r in caplog.records if "store's" in r.getMessage()]) == 2  # get and put, each once


def test_async_calls_are_cached_too(clock: FakeClock) -> None:
    executor, backend = Executor(CachePolicy(ttl=10, stale_if_error=10, clock=clock)), Backend()

    async def calls() -> list[Any]:
        async def answer(execution: Any) -> Any:
            return backend(execution)

        first = await executor.acall_with_execution(answer, request="a")
        second = await executor.acall_with_execution(answer, request="a")
        clock.advance(15)
        backend.failing = Boom()
        stale = await executor.acall_with_execution(answer, request="a")
        return [first, second, stale]

    assert asyncio.run(calls()) == ["a#1", "a#1", "a#1"]
    assert backend.calls == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ttl": 0}, "ttl must be > 0"),
        ({"ttl": 1, "stale_if_error": -1}, "stale_if_error must be > 0"),
        ({"ttl": 1, "key": "id"}, r"key must be a function of \(request\)"),
        ({"ttl": 1, "max_entries": 0}, "max_entries must be an integer"),
        ({"ttl": 1, "max_bytes": 1.5}, "max_bytes must be an integer"),
        ({"ttl": 1, "store": object()}, "store must have get"),
    ],
)
def test_bad_options_are_refused_naming_them(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CachePolicy(**options)


def test_what_a_store_gives_that_is_no_answer_fails_no_call(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    class Odd:
        def __init__(self, entry: Any) -> None:
            self.entry = entry

        def get(self, key: Any) -> Any:
            return self.entry

        def put(self, key: Any, entry: CacheEntry) -> None:
            pass

        def remove(self, key: Any) -> None:
            pass

    backend = Backend()
    with caplog.at_level(logging.ERROR, "interceptors"):
        for entry in ("not an entry", CacheEntry("x", 1, clock.now() + 100)):  # garbage; from another clock's future
            assert ask(Executor(CachePolicy(ttl=10, store=Odd(entry), clock=clock)), backend, "a").startswith("a#")
    assert backend.calls == 2
    assert any("must give a CacheEntry" in r.getMessage() for r in caplog.records)


def test_an_entry_that_cannot_be_read_back_is_a_miss(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    from interceptors.engine import Semantics

    class Fragile(Semantics):
        def from_kept(self, kept: Any) -> Any:
            raise ValueError("truncated")

    executor, backend = Executor(CachePolicy(ttl=10, clock=clock)), Backend()
    with caplog.at_level(logging.ERROR, "interceptors"):
        for _ in range(2):
            executor.call_with_execution(backend, request="a", semantics=Fragile())
    assert backend.calls == 2
    assert any("kept answer's reading failed" in r.getMessage() for r in caplog.records)
