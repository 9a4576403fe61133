"""The replay buffer of client-streaming and bidi calls: each attempt sends every request in order, the caller's
iterator is read once, and an attempt replaced while it waits for the caller's next request loses nothing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from interceptors.engine import Execution
from interceptors.grpc._streams import AsyncReplay, Replay, replay_of
from interceptors.testing import FakeClock


def execution() -> Execution:
    return Execution(lambda _: None, clock=FakeClock())


@pytest.mark.parametrize("limit", [1000, 2])
def test_an_attempt_replaced_while_reading_loses_nothing(limit: int) -> None:
    """Attempt 1's reader waits for the caller's third request as attempt 2 starts: that request, read for the
    replaced attempt, goes to attempt 2 too (also when it is the one that outgrows the buffer)."""
    gate = threading.Event()

    def caller() -> Iterator[bytes]:
        yield b"0"
        yield b"1"
        gate.wait(5)
        yield b"2"
        yield b"3"

    replay, call = Replay(caller(), limit), execution()
    first = replay.attempt(call)
    assert [next(first), next(first)] == [b"0", b"1"]
    stale: list[Any] = []
    reader = threading.Thread(target=lambda: stale.append(next(first, None)))
    reader.start()
    second = replay.attempt(call)
    gate.set()
    reader.join(5)
    assert call.committed is (limit == 2)  # the replaced attempt's read outgrew the buffer: it is still sent
    assert list(second) == [b"0", b"1", b"2", b"3"]
    assert stale in ([b"2"], [None])
    assert next(first, None) is None  # replaced: it reads no more


def test_requests_are_read_once_and_dropped_once_committed() -> None:
    reads: list[int] = []

    def caller() -> Iterator[bytes]:
        for i in range(5):
            reads.append(i)
            yield bytes([i])

    replay, call = Replay(caller(), 1 << 20), execution()
    assert len(list(replay.attempt(call))) == 5
    assert len(list(replay.attempt(call))) == 5 and reads == [0, 1, 2, 3, 4]
    replay.commit()
    assert len(list(replay.attempt(call))) == 5
    assert replay._kept == []  # sent by the committed attempt: nothing kept
    with pytest.raises(RuntimeError, match="committed"):
        next(replay.attempt(call))


def test_aio_calls_replay_sync_and_async_iterables() -> None:
    async def caller() -> AsyncIterator[bytes]:
        for i in range(3):
            yield bytes([i])

    async def both() -> tuple[list[bytes], list[bytes], list[bytes]]:
        replay, call = AsyncReplay(caller(), 1 << 20), execution()
        first = [m async for m in replay.attempt(call)]
        second = [m async for m in replay.attempt(call)]
        return first, second, list(replay_of([b"a", b"b"], 1).attempt(call))  # type: ignore[arg-type]

    first, second, plain = asyncio.run(both())
    assert first == second == [b"\x00", b"\x01", b"\x02"] and plain == [b"a", b"b"]
