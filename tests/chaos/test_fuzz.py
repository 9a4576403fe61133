"""Hypothesis against everything read off the wire and every option of every policy: a value we cannot use is a
clear ValueError or TypeError at construction, or an RpcError at call time — never anything else."""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interceptors import (
    AdaptiveLimiter,
    AdaptiveThrottle,
    Backoff,
    Bulkhead,
    CircuitBreaker,
    Executor,
    Fallback,
    HedgePolicy,
    LatencyQuantile,
    RandomDelay,
    RateLimiter,
    ResilienceError,
    RetryBudget,
    RetryPolicy,
    Timeout,
)
from interceptors.engine._options import MIN_WINDOW
from interceptors.grpc._pushback import DO_NOT_RETRY, pushback_seconds, retry_info_details
from interceptors.testing import FakeClock

from ..support.clients import Client
from ..support.server import Request, ScriptedServer

retry_info_details(14, "warm", 1.0)  # builds the rich status types once, before Hypothesis times its draws
WIRE_KEYS = ["grpc-retry-pushback-ms", "retry-after", "grpc-status-details-bin", "x-other"]
numbers_as_text = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", "1e309", "-0", "0x10", "NaN", "inf", "1_000", "١٢", "9" * 5000]),
)
ascii_values = st.one_of(numbers_as_text, st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60))
detail_bytes = st.one_of(
    st.binary(max_size=200),
    st.builds(
        retry_info_details,
        st.integers(min_value=0, max_value=16),
        st.text(max_size=20),
        st.floats(min_value=-1e12, max_value=1e12, allow_nan=False),
    ),
)


def trailer(key: str) -> st.SearchStrategy[tuple[str, str | bytes]]:
    value = detail_bytes if key.endswith("-bin") else ascii_values
    return st.tuples(st.just(key), value)


trailers = st.lists(st.sampled_from(WIRE_KEYS).flatmap(trailer), max_size=4)


class _Trailers:
    def __init__(self, pairs: Any) -> None:
        self._pairs = pairs

    def trailing_metadata(self) -> Any:
        return self._pairs


LOADED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
"""Generation and each example may be slow on a machine running two suites at once: no time limits."""


@LOADED
@given(trailers)
def test_pushback_from_any_trailers_is_a_delay_do_not_retry_or_nothing(pairs: list[tuple[str, Any]]) -> None:
    delay = pushback_seconds(_Trailers(pairs), "/fuzz.v1.Fuzz/Call")
    assert delay is None or delay == DO_NOT_RETRY or (math.isfinite(delay) and delay >= 0)


@LOADED
@given(st.one_of(st.none(), st.integers(), st.text(), st.lists(st.integers()), st.lists(st.tuples(st.integers()))))
def test_trailing_metadata_of_any_shape_never_raises(value: Any) -> None:
    delay = pushback_seconds(_Trailers(value), "/fuzz.v1.Fuzz/Call")
    assert delay is None or delay == DO_NOT_RETRY or delay >= 0


@pytest.mark.parametrize("path", ["call", "aio"])
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(pairs=trailers, code=st.sampled_from([grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED]))
def test_a_server_sending_any_trailers_gets_an_rpc_error_or_an_answer(
    server: ScriptedServer, path: str, pairs: list[tuple[str, Any]], code: grpc.StatusCode
) -> None:
    server.script.trailers, server.script.code = tuple(pairs), code
    # no jitter: a retry's draw from the random module, in a thread of an earlier example's call while Hypothesis
    # draws the next one, looked to Hypothesis like a strategy using it (HypothesisDeprecationWarning)
    retry = RetryPolicy(max_attempts=2, delay=0.001, jitter_factor=0, max_pushback=0.05)
    breaker = CircuitBreaker(failure_threshold=100_000, pushback=True, max_pushback=0.05)
    with Client(path, server.target, retry, breaker) as client:
        outcome = client.unary(Request(id="fuzz", fail_first=1), timeout=2)
    assert outcome.error is None or isinstance(outcome.error, grpc.RpcError)
    server.script.trailers = ()


# every option of every policy, with values of every kind


weird = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just(object()),
    st.just(lambda *a: None),
    st.just(ValueError),
    st.just((ConnectionError, "x")),
)
POLICIES: list[Callable[..., Any]] = [
    RetryPolicy,
    CircuitBreaker,
    Timeout,
    Fallback,
    Bulkhead,
    RateLimiter,
    AdaptiveThrottle,
    AdaptiveLimiter,
    HedgePolicy,
    RetryBudget,
    Backoff,
    RandomDelay,
    LatencyQuantile,
]


def options_of(make: Callable[..., Any]) -> list[str]:
    return [
        name
        for name, parameter in inspect.signature(make).parameters.items()
        if name not in ("self", "clock") and parameter.kind is not parameter.VAR_POSITIONAL
    ]


class _Flaky:
    """Fails twice, then answers (a chain allowed to retry forever still ends)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        if self.calls <= 2:
            raise ConnectionError("flaky")
        return 1


@pytest.mark.parametrize("make", POLICIES, ids=lambda make: make.__name__)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_option_value_is_refused_clearly_or_works(make: Callable[..., Any], data: st.DataObject) -> None:
    names = options_of(make)
    chosen = data.draw(st.lists(st.sampled_from(names), max_size=3, unique=True), label="options")
    values = {name: data.draw(weird, label=name) for name in chosen}
    clock = {"clock": FakeClock()} if "clock" in inspect.signature(make).parameters else {}
    refused: Exception | None = None
    try:
        made = make(**values, **clock)
    except (ValueError, TypeError) as error:
        refused = error
    if refused is not None:
        assert str(refused), "a refusal says what was wrong"
        return
    if not hasattr(made, "wrap"):  # a budget, backoff or quantile: built, nothing to call through
        return
    executor = Executor(made)
    for fn in (lambda: 1, _Flaky()):
        with contextlib.suppress(ConnectionError, ResilienceError):
            executor.call(fn)


# every option of every policy, with the numbers that break float arithmetic: integers too large for a float,
# denormal and tiny floats, NaN and infinities, tiny and huge timedeltas

extreme_numbers = st.one_of(
    st.integers(min_value=2**1000, max_value=10**5000),
    st.integers(min_value=-(10**5000), max_value=-(2**1000)),
    st.sampled_from([10**309, -(10**309), 10**4400, 2**1024, 0, -1]),
    st.floats(min_value=5e-324, max_value=1e-3),  # denormals up to just under 1 ms
    st.floats(min_value=-1e-3, max_value=-5e-324),
    st.sampled_from([5e-324, 1e-320, 1e-300, 1e-9, 0.000999, 0.001, math.nan, math.inf, -math.inf, 1.7e308]),
    st.timedeltas(max_value=timedelta(milliseconds=2)),
    st.sampled_from([timedelta.max, timedelta(microseconds=1)]),
)
BASE: dict[Callable[..., Any], dict[str, Any]] = {
    Backoff: {"initial": 0.1, "maximum": 1.0},
    RandomDelay: {"minimum": 0.0, "maximum": 1.0},
    LatencyQuantile: {"quantile": 0.5},
    Timeout: {"seconds": 1.0},
    RateLimiter: {"max_calls": 10},
    HedgePolicy: {"delay": 0.01},
    Bulkhead: {"max_concurrent": 10},
}
"""What a policy needs to be built at all; each drawn option replaces one of these or is added."""
TIME_WINDOWS = {
    (CircuitBreaker, "failure_period"),
    (RetryBudget, "window"),
    (AdaptiveThrottle, "window"),
    (AdaptiveLimiter, "window"),
    (RateLimiter, "period"),
}
"""Options that are time windows: at least 1 ms (MIN_WINDOW)."""
NOT_NUMBERS = {(Fallback, "value")}
"""Options where any value is fine (a fallback's answer)."""
CALLED: dict[tuple[Callable[..., Any], str], str] = {(Fallback, "fn"): "fallback function"}
"""Options that errors call by another name (a positional one)."""


def build(make: Callable[..., Any], values: dict[str, Any]) -> Any:
    """``make`` called with ``values``, positional-only ones passed by position."""
    parameters = inspect.signature(make).parameters.values()
    positional = [values.pop(p.name) for p in parameters if p.kind is p.POSITIONAL_ONLY and p.name in values]
    return make(*positional, **values)


@pytest.mark.parametrize("make", [*POLICIES, FakeClock], ids=lambda make: make.__name__)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_extreme_numbers_are_refused_naming_the_option_or_work(make: Callable[..., Any], data: st.DataObject) -> None:
    """A number a float cannot hold, or a window too short to count in, is a ValueError naming the option —
    never an OverflowError or ZeroDivisionError at construction or at the first call."""
    names = [name for name in options_of(make) if (make, name) not in NOT_NUMBERS]
    if make is FakeClock:
        names = ["start"]
    option = data.draw(st.sampled_from(names), label="option")
    value = data.draw(extreme_numbers, label=option)
    clock = FakeClock(30 * 24 * 3600.0)  # a month of uptime: large times divided by tiny windows overflow
    uses_clock = make is not FakeClock and "clock" in inspect.signature(make).parameters
    refused: ValueError | None = None
    try:
        made = build(make, {**BASE.get(make, {}), option: value, **({"clock": clock} if uses_clock else {})})
    except ValueError as error:
        refused = error
    if refused is not None:
        named = CALLED.get((make, option), option)
        assert named in str(refused), f"the refusal names {named}: {refused}"
        return
    if (make, option) in TIME_WINDOWS:
        seconds = value.total_seconds() if isinstance(value, timedelta) else value
        assert seconds >= MIN_WINDOW, f"a {option} of {seconds!r} s is accepted: windows are at least 1 ms"
    if not hasattr(made, "wrap"):  # a budget, backoff, quantile or clock: built, nothing to call through
        return
    executor = Executor(made)
    for fn in (lambda: 1, _Flaky(), lambda: 1):
        with contextlib.suppress(ConnectionError, ResilienceError):
            executor.call(fn)
        clock.advance(0.0005)
