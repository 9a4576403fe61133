"""LogEvents: one listener for every kind of event, logging words and the event's fields as extras."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog
from pythonjsonlogger.json import JsonFormatter

from interceptors import Backoff, CircuitBreaker, Executor, ResilienceError, RetryPolicy
from interceptors.events import LogEvents, RetryScheduled
from interceptors.testing import FakeClock


class Unavailable(Exception):
    def code(self) -> object:
        class Code:
            name = "UNAVAILABLE"

        return Code()

    def details(self) -> str:
        return "try later"


def failing() -> None:
    raise Unavailable


FAILED = (Unavailable, ResilienceError)


def test_every_event_is_logged_with_its_fields_as_extras(caplog: pytest.LogCaptureFixture, clock: FakeClock) -> None:
    events = LogEvents("test.events")
    retry = RetryPolicy(max_attempts=2, delay=Backoff(1, 1), jitter_factor=0, on_retry_scheduled=events, clock=clock)
    breaker = CircuitBreaker(name="b", failure_threshold=1, on_state_change=events, clock=clock)
    with caplog.at_level(logging.INFO, "test.events"), pytest.raises(FAILED):
        Executor(retry, breaker).call(failing)
    changed, scheduled = (r for r in caplog.records if r.name == "test.events")
    assert scheduled.event == "retry_scheduled"  # type: ignore[attr-defined]
    assert (scheduled.policy, scheduled.attempt, scheduled.delay) == ("RetryPolicy", 1, 1.0)  # type: ignore[attr-defined]
    assert scheduled.failure == "UNAVAILABLE: try later"  # type: ignore[attr-defined]
    assert scheduled.getMessage().startswith("retry_scheduled attempt=1 delay=1.0")
    assert (changed.event, changed.policy, changed.old, changed.new) == ("circuit_state_changed", "b", "closed", "open")  # type: ignore[attr-defined]
    assert changed.metrics == {"executions": 1, "failures": 1, "successes": 0, "slow_calls": 0}  # type: ignore[attr-defined]


def test_messages_give_some_kinds_their_own_words_and_json_formatters_get_the_fields(clock: FakeClock) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("{message}", style="{"))
    logger = logging.getLogger("test.events.json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    events = LogEvents(logger, messages={RetryScheduled: lambda e: f"Retry {e.attempt} after {e.delay:g}s"})
    retry = RetryPolicy(max_attempts=2, delay=0.5, jitter_factor=0, on_retry_scheduled=events, clock=clock)
    with pytest.raises(FAILED):
        Executor(retry).call(failing)
    line = json.loads(stream.getvalue().splitlines()[0])
    assert line["message"] == "Retry 1 after 0.5s"
    assert line["event"] == "retry_scheduled" and line["policy"] == "RetryPolicy" and line["method"] is None
    assert line["failure"] == "UNAVAILABLE: try later"


def test_structlog_renders_the_fields(clock: FakeClock) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=structlog.processors.JSONRenderer(), foreign_pre_chain=[structlog.stdlib.ExtraAdder()]
        )
    )
    logger = logging.getLogger("test.events.structlog")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    retry = RetryPolicy(max_attempts=2, delay=0.5, jitter_factor=0, on_retry_scheduled=LogEvents(logger), clock=clock)
    with pytest.raises(FAILED):
        Executor(retry).call(failing)
    line = json.loads(stream.getvalue().splitlines()[0])
    assert line["event"] == "retry_scheduled"  # structlog's own "event" key: the kind, as our extra names it
    assert (line["policy"], line["attempt"], line["delay"]) == ("RetryPolicy", 1, 0.5)
    assert line["failure"] == "UNAVAILABLE: try later"


def test_nothing_is_formatted_below_the_level(clock: FakeClock) -> None:
    calls: list[object] = []

    def words(event: object) -> str:
        calls.append(event)
        return "never"

    events = LogEvents("test.events.quiet", level=logging.DEBUG, messages={RetryScheduled: words})
    logging.getLogger("test.events.quiet").setLevel(logging.WARNING)
    with pytest.raises(FAILED):
        Executor(RetryPolicy(max_attempts=2, delay=0.1, on_retry_scheduled=events, clock=clock)).call(failing)
    assert calls == []


@pytest.mark.parametrize(
    ("options", "message"),
    [({"logger": 3}, "logger"), ({"level": "INFO"}, "level"), ({"messages": {"RetryScheduled": str}}, "messages")],
)
def test_bad_options_are_named(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LogEvents(**options)  # type: ignore[arg-type]
