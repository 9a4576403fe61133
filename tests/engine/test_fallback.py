from __future__ import annotations

from typing import Any

import pytest

from interceptors import Executor, Fallback, Timeout
from interceptors.engine import Execution, Semantics
from interceptors.events import FallbackExecuted
from interceptors.testing import FakeClock

from ..support.calls import Boom, CallerMistake, Calls


def test_value_answers_a_failure() -> None:
    events: list[FallbackExecuted] = []
    failure = Boom()

    def fails() -> None:
        raise failure

    assert Executor(Fallback(value="cached", on_fallback=events.append)).call(fails) == "cached"
    assert events == [FallbackExecuted(failure=failure, result="cached", policy="Fallback")]


def test_success_is_untouched() -> None:
    events: list[FallbackExecuted] = []
    assert Executor(Fallback(value="cached", on_fallback=events.append)).call(lambda: "real") == "real"
    assert events == []


def test_function_of_request_and_failure() -> None:
    fallback = Fallback(lambda request, failure: f"{request}: {type(failure).__name__}")
    result = Executor(fallback).call_with_execution(lambda _: Calls()(), request="GET /")
    assert result == "GET /: Boom"


def test_function_of_the_failure_alone() -> None:
    def answer(failure: BaseException) -> str:
        return f"answered {type(failure).__name__}"

    assert Executor(Fallback(answer)).call(Calls()) == "answered Boom"
    assert Executor(Fallback(lambda failure: 7)).call(Calls()) == 7
    assert Executor(Fallback(lambda *args: len(args))).call(Calls()) == 2  # takes anything: (request, failure)


def test_unhandled_failures_pass_through() -> None:
    with pytest.raises(CallerMistake):
        Executor(Fallback(value=0, handle=Boom)).call(Calls(error=CallerMistake))


def test_base_exceptions_are_never_answered() -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Executor(Fallback(value=0)).call(interrupted)


def test_default_and_message_come_from_the_transport() -> None:
    class Responses(Semantics):
        def default_response(self) -> Any:
            return {"message": ""}

        def response_from_fields(self, fields: Any) -> Any:
            return {"message": "", **fields}

    def fails(_: object) -> None:
        raise Boom

    semantics = Responses()
    assert Executor(Fallback()).call_with_execution(fails, semantics=semantics) == {"message": ""}
    built = Executor(Fallback(message={"message": "b is down"})).call_with_execution(fails, semantics=semantics)
    assert built == {"message": "b is down"}
    assert Executor(Fallback()).call(Calls()) is None  # plain calls: None


def test_a_failing_fallback_function_gives_back_the_failure(caplog: pytest.LogCaptureFixture) -> None:
    """The caller gets the failure it would have got without the fallback; the fallback's error is chained and
    logged, never handed to the caller instead."""

    def broken(request: object, failure: BaseException) -> None:
        raise ZeroDivisionError("no fallback either")

    with pytest.raises(Boom) as raised:
        Executor(Fallback(broken)).call(Calls())
    assert isinstance(raised.value.__context__, ZeroDivisionError)
    assert "ZeroDivisionError: no fallback either" in caplog.text


async def test_a_failing_async_fallback_function_gives_back_the_failure() -> None:
    async def broken(failure: BaseException) -> None:
        raise ZeroDivisionError

    with pytest.raises(Boom) as raised:
        await Executor(Fallback(broken)).acall(Calls().async_call)
    assert isinstance(raised.value.__context__, ZeroDivisionError)


def test_sync_fallback_function_must_not_be_async(caplog: pytest.LogCaptureFixture) -> None:
    async def answer(request: object, failure: BaseException) -> str:
        return "x"

    with pytest.raises(Boom) as raised:
        Executor(Fallback(answer)).call(Calls())
    assert isinstance(raised.value.__context__, TypeError) and "awaitable" in caplog.text


async def test_async_fallback_function_is_awaited() -> None:
    async def answer(request: object, failure: BaseException) -> str:
        return "from cache"

    assert await Executor(Fallback(answer)).acall(Calls().async_call) == "from cache"
    assert await Executor(Fallback(lambda r, f: "plain")).acall(Calls().async_call) == "plain"


def test_only_one_source_of_answer() -> None:
    with pytest.raises(ValueError, match="one of"):
        Fallback(lambda r, f: 1, value=2)
    with pytest.raises(ValueError, match="one of"):
        Fallback(value=1, message={"a": 1})
    with pytest.raises(ValueError, match="message"):
        Fallback(message=[("a", 1)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="callable"):
        Fallback("not callable")  # type: ignore[arg-type]


def test_the_callers_deadline_is_answered_in_the_reserve(clock: FakeClock) -> None:
    """The inner chain sees the deadline less the reserve (at most half the time left); a failure once that has
    passed is the deadline's, and answered; with no reserve it is final."""
    seen: list[float | None] = []

    def late(execution: Execution) -> str:
        seen.append(execution.deadline)
        clock.advance(0.995)
        raise ConnectionAbortedError("the transport's deadline")

    answered = Executor(Fallback(value="cached", handle=ValueError), Timeout(60, clock=clock))
    assert answered.call_with_execution(late, deadline=clock.now() + 1.0) == "cached"
    assert seen == [pytest.approx(1.0 - 0.02)]
    final = Executor(Fallback(value="cached", handle=ValueError, reserve=None), Timeout(60, clock=clock))
    with pytest.raises(ConnectionAbortedError):
        final.call_with_execution(late, deadline=clock.now() + 1.0)
    short = Executor(Fallback(value="cached", reserve=0.5), Timeout(60, clock=clock))
    start = clock.now()
    seen.clear()
    short.call_with_execution(lambda execution: seen.append(execution.deadline), deadline=start + 0.2)
    assert seen == [pytest.approx(start + 0.1)]  # half the time left, not the whole reserve
