"""Channel helpers turn grpcio's built-in retries off; per-method chains; caller cancellation stops everything."""

from __future__ import annotations

import asyncio
import json
import time
import warnings
from typing import Any

import grpc
import pytest
from scripted.v1 import scripted_pb2_grpc as pb_grpc

import interceptors
import interceptors.aio
from interceptors import (
    CircuitBreaker,
    CircuitState,
    ResilienceInterceptor,
    RetriesExceededError,
    RetryPolicy,
    StackedRetriesWarning,
    Timeout,
    resilient_channel,
)
from interceptors.engine import Policy
from interceptors.events import RetryStarted
from interceptors.grpc._channel import channel_options
from interceptors.testing import FakeClock

from ..support.clients import Client
from ..support.server import AIO_LOOP, Request, ScriptedServer

UNARY = "/scripted.v1.Scripted/Unary"
SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "scripted.v1.Scripted"}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.01s",
                    "maxBackoff": "0.01s",
                    "backoffMultiplier": 1,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)
OPTIONS = [("grpc.service_config", SERVICE_CONFIG)]


def test_builtin_retries_would_multiply_attempts(server: ScriptedServer) -> None:
    """Why the helpers exist: under our 2 attempts, grpcio's own retry policy makes 4 of each."""
    channel = grpc.intercept_channel(
        grpc.insecure_channel(server.target, options=OPTIONS), ResilienceInterceptor(RetryPolicy(max_attempts=2))
    )
    with pytest.raises(grpc.RpcError):
        pb_grpc.ScriptedStub(channel).Unary(Request(id="x", fail_first=100))
    channel.close()
    assert server.attempts("x") == 8


@pytest.mark.parametrize("path", ["call", "aio"])
def test_helpers_run_a_service_configs_retries_as_policies_not_twice(server: ScriptedServer, path: str) -> None:
    """A service config given as a channel option is converted: its 4 attempts, not 4 of grpc's under each."""
    with Client(path, server.target, options=OPTIONS) as client:
        outcome = client.unary(Request(id="x", fail_first=100))
    assert outcome.code is grpc.StatusCode.UNAVAILABLE and server.attempts("x") == 4


@pytest.mark.parametrize("path", ["call", "aio"])
@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("{not json", "not JSON"),
        ("[]", "JSON object"),
        (json.dumps({"methodConfig": [{"name": [{}], "hedgingPolicy": {"maxAttempts": 1}}]}), "maxAttempts"),
    ],
    ids=["not-json", "not-object", "bad-hedging"],
)
def test_helpers_refuse_bad_service_configs(path: str, config: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"service config.*{message}"):
        Client(path, "127.0.0.1:1", RetryPolicy(), options=[("grpc.service_config", config)], warm=False)


def test_a_service_config_without_retries_is_kept() -> None:
    config = json.dumps(
        {"methodConfig": [{"name": [{}], "timeout": "1s"}], "loadBalancingConfig": [{"round_robin": {}}]}
    )
    assert ("grpc.service_config", config) in channel_options([("grpc.service_config", config)], retries=True)
    given = json.loads(interceptors.from_service_config(config).grpc_config or "")
    assert given == {"methodConfig": [{"name": [{}]}], "loadBalancingConfig": [{"round_robin": {}}]}  # timeout: ours


@pytest.mark.parametrize("options", ["grpc.enable_retries", [("grpc.enable_retries",)], [(1, 2)], 7])
def test_bad_channel_options_are_named(options: object) -> None:
    with pytest.raises(ValueError, match="options"):
        resilient_channel("127.0.0.1:1", RetryPolicy(), options=options)  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["call", "aio"])
@pytest.mark.parametrize("retrying", [True, False], ids=["retry-policy", "no-retry-policy"])
def test_builtin_retries_are_off_only_where_a_retry_policy_retries(
    server: ScriptedServer, path: str, retrying: bool
) -> None:
    """grpcio's retry machinery (and with it its transparent retries) strips an application's
    grpc-previous-rpc-attempts: a channel whose RetryPolicy sends that header turns it off; a channel without a
    RetryPolicy keeps it, and with it transparent retries (the header a caller sends is then dropped by grpcio)."""
    chain = (RetryPolicy(max_attempts=2),) if retrying else (CircuitBreaker(),)
    with Client(path, server.target, *chain, methods={"/other.v1.Other/*": []}) as client:
        client.unary(Request(id="h", fail_first=1 if retrying else 0), metadata=(("grpc-previous-rpc-attempts", "7"),))
    seen = [s.metadata.get("grpc-previous-rpc-attempts") for s in server.recorder.seen if s.id == "h"]
    assert seen == (["7", "1"] if retrying else [None])
    assert ResilienceInterceptor(methods={UNARY: [RetryPolicy()]})._router.retries
    assert not ResilienceInterceptor(CircuitBreaker(), methods={UNARY: [Timeout(1)]})._router.retries


def test_helpers_warn_when_builtin_retries_are_asked_for_under_a_retry_policy() -> None:
    with pytest.warns(StackedRetriesWarning, match="enable_retries"):
        resilient_channel("127.0.0.1:1", RetryPolicy(), options=[("grpc.enable_retries", 1)]).close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resilient_channel("127.0.0.1:1", RetryPolicy()).close()
        resilient_channel("127.0.0.1:1", CircuitBreaker(), options=[("grpc.enable_retries", 1)]).close()


def test_per_method_chains(server: ScriptedServer) -> None:
    three, five = RetryPolicy(max_attempts=3), RetryPolicy(max_attempts=5)

    def attempts(*policies: RetryPolicy, methods: dict[str, list[RetryPolicy]]) -> tuple[int, object]:
        id = f"m{time.monotonic_ns()}"
        with Client("call", server.target, *policies, methods=methods) as client:
            outcome = client.unary(Request(id=id, fail_first=100))
        return server.attempts(id), outcome.error

    assert attempts(methods={UNARY: [three]})[0] == 3
    assert attempts(methods={"/scripted.v1.Scripted/*": [three]})[0] == 3
    count, error = attempts(methods={"/other.v1.Other/*": [three]})
    assert count == 1  # not matched: the call passes untouched
    assert isinstance(error, grpc.RpcError) and not isinstance(error, RetriesExceededError)
    # the most specific entry wins: method over service over the default chain
    assert attempts(three, methods={UNARY: [five], "/scripted.v1.Scripted/*": [three]})[0] == 5
    assert attempts(three, methods={"/scripted.v1.Scripted/*": [five]})[0] == 5
    assert attempts(three, methods={"/other.v1.Other/*": [five]})[0] == 3
    assert attempts(three, methods={UNARY: []})[0] == 1  # an empty chain passes the method through


@pytest.mark.parametrize(
    "methods",
    [
        {"Unary": [RetryPolicy()]},
        {"/svc/": [RetryPolicy()]},
        {"/a/b/c": [RetryPolicy()]},
        {UNARY: RetryPolicy()},
        {None: [RetryPolicy()]},
        {UNARY: 3},
        {UNARY: "retry"},
        {UNARY: [RetryPolicy(), "timeout"]},
        [(UNARY, [RetryPolicy()])],
        "methods",
    ],
)
def test_bad_method_keys_and_values(methods: object) -> None:
    with pytest.raises(ValueError, match="methods"):
        ResilienceInterceptor(methods=methods)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="methods"):
        interceptors.aio.resilience_interceptors(methods=methods)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("chain", "problem"),
    [
        ([RetryPolicy(clock=FakeClock()), Timeout(1)], "clock"),
        ([CircuitBreaker()] * 2, "once"),
        ([Timeout(1), Timeout(1)], None),  # two equal policies are two policies
    ],
)
def test_per_method_chains_are_checked_when_the_interceptor_is_built(chain: list[Policy], problem: str | None) -> None:
    if problem is None:
        ResilienceInterceptor(methods={UNARY: chain})
        return
    with pytest.raises(ValueError, match=rf"methods\['{UNARY}'\].*{problem}"):
        ResilienceInterceptor(methods={UNARY: chain})
    with pytest.raises(ValueError, match=problem):
        interceptors.aio.resilient_channel("127.0.0.1:1", methods={"/scripted.v1.Scripted/*": chain})
    with pytest.raises(ValueError, match=f"policies.*{problem}"):
        resilient_channel("127.0.0.1:1", *chain)


def test_aio_method_names_arrive_as_bytes() -> None:
    router = ResilienceInterceptor(RetryPolicy(), methods={UNARY: []})._router
    assert router.route(UNARY.encode()) is None
    assert router.route(b"/x.Y/Z") is not None


def test_cancelling_an_aio_call_during_backoff_stops_retrying(server: ScriptedServer) -> None:
    breaker = CircuitBreaker(failure_threshold=100)
    retries: list[RetryStarted] = []  # what the client started, however late a loaded server records it
    retry = RetryPolicy(max_attempts=100, delay=0.05, on_retry=retries.append)

    async def main() -> None:
        async with interceptors.aio.resilient_channel(server.target, retry, breaker) as channel:
            call = pb_grpc.ScriptedStub(channel).Unary(Request(id="c", fail_first=1000))
            await asyncio.sleep(0.12)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call

    AIO_LOOP.run(main())
    attempts = 1 + len(retries)
    assert 1 <= attempts <= 4
    time.sleep(0.2)
    assert 1 + len(retries) == attempts  # none started after the cancel
    assert server.attempts("c") <= attempts


def test_cancelling_an_aio_trial_call_frees_the_breaker(server: ScriptedServer) -> None:
    breaker = CircuitBreaker(failure_threshold=1, delay=60)
    breaker.half_open()

    async def main() -> None:
        async with interceptors.aio.resilient_channel(server.target, breaker) as channel:
            stub = pb_grpc.ScriptedStub(channel)
            call = stub.Unary(Request(id="slow", sleep_ms=2000))
            await asyncio.sleep(0.1)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert (await stub.Unary(Request(id="quick"))).attempt == 1  # the trial slot was released

    AIO_LOOP.run(main())
    assert breaker.state is CircuitState.CLOSED


def test_cancelling_a_future_cancels_the_attempt_in_flight(server: ScriptedServer) -> None:
    channel = resilient_channel(server.target, RetryPolicy(max_attempts=5))
    future = pb_grpc.ScriptedStub(channel).Unary.future(Request(id="slow", sleep_ms=3000))
    time.sleep(0.1)
    started = time.monotonic()
    assert future.cancel()
    assert future.cancelled() and time.monotonic() - started < 0.5
    time.sleep(0.2)
    assert server.attempts("slow") == 1
    assert "slow" in server.recorder.cancelled
    channel.close()


def test_on_codes_needs_status_codes() -> None:
    from interceptors import on_codes

    for codes in ((), (14,), ("UNAVAILABLE",)):
        with pytest.raises(ValueError, match="on_codes"):
            on_codes(*codes)


@pytest.mark.parametrize("path", ["call", "aio"])
def test_helpers_make_a_secure_channel_with_credentials(server: ScriptedServer, path: str) -> None:
    """TLS to a plaintext server cannot succeed: the helper did make a secure channel."""

    async def make_aio() -> Any:
        return interceptors.aio.resilient_channel(server.target, credentials=grpc.ssl_channel_credentials())

    if path == "aio":
        channel = AIO_LOOP.run(make_aio())

        async def call() -> Any:
            return await pb_grpc.ScriptedStub(channel).Unary(Request(id="tls"), timeout=2)

        with pytest.raises(grpc.RpcError) as raised:
            AIO_LOOP.run(call())
        AIO_LOOP.run(channel.close())
    else:
        with (
            resilient_channel(server.target, credentials=grpc.ssl_channel_credentials()) as sync_channel,
            pytest.raises(grpc.RpcError) as raised,
        ):
            pb_grpc.ScriptedStub(sync_channel).Unary(Request(id="tls"), timeout=2)
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
    assert server.attempts("tls") == 0


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        ({"target": 123}, "target"),
        ({"target": ""}, "target"),
        ({"target": None}, "target"),
        ({"credentials": "x"}, "credentials"),
        ({"credentials": grpc.access_token_call_credentials("t")}, "credentials"),
        ({"compression": "gzip"}, "compression"),
    ],
)
@pytest.mark.parametrize("path", ["call", "aio"])
def test_helpers_name_a_bad_target_credentials_or_compression(arguments: dict[str, Any], name: str, path: str) -> None:
    settings: dict[str, Any] = {"target": "127.0.0.1:1", **arguments}
    target = settings.pop("target")

    async def make_aio() -> Any:
        return interceptors.aio.resilient_channel(target, RetryPolicy(), **settings)

    make = (lambda: AIO_LOOP.run(make_aio())) if path == "aio" else lambda: resilient_channel(target, **settings)
    with pytest.raises(ValueError, match=name):
        make()


@pytest.mark.parametrize("intercepted", ["sync", "aio"])
def test_an_intercepted_channel_with_grpcs_retries_on_warns_once_that_the_header_is_stripped(
    server: ScriptedServer, intercepted: str
) -> None:
    """grpcio strips grpc-previous-rpc-attempts from the calls of a channel with its own retries on (its default),
    and an interceptor cannot see a channel's options: its first retry warns, once, naming the option; with the
    option the server sees the header."""
    retry = RetryPolicy(max_attempts=2, delay=0.01)

    def retried(options: list[tuple[str, Any]], id: str) -> list[Any]:
        if intercepted == "sync":
            raw = grpc.insecure_channel(server.target, options)
            channel = grpc.intercept_channel(raw, ResilienceInterceptor(retry))
            stub = pb_grpc.ScriptedStub(channel)
            for n in range(2):
                assert stub.Unary(Request(id=f"{id}{n}", fail_first=1), timeout=5).attempt == 2
            channel.close()
        else:

            async def call() -> None:
                chain = interceptors.aio.resilience_interceptors(retry)
                async with grpc.aio.insecure_channel(server.target, options, interceptors=chain) as channel:
                    stub = pb_grpc.ScriptedStub(channel)
                    for n in range(2):
                        assert (await stub.Unary(Request(id=f"{id}{n}", fail_first=1), timeout=5)).attempt == 2

            AIO_LOOP.run(call())
        return [s.metadata.get("grpc-previous-rpc-attempts") for s in server.recorder.seen if s.id.startswith(id)]

    with pytest.warns(StackedRetriesWarning, match=r"grpc-previous-rpc-attempts.*grpc\.enable_retries") as heard:
        seen = retried([], "default")
    stacked = [w for w in heard if issubclass(w.category, StackedRetriesWarning)]  # not what else a GC let go of
    assert len(stacked) == 1  # once per interceptor, however many retries
    assert "1" not in seen  # stripped, as the warning says
    with pytest.warns(StackedRetriesWarning):
        seen = retried([("grpc.enable_retries", 0)], "off")  # it cannot tell: it warns all the same
    assert "1" in seen


def test_a_warning_names_the_line_of_the_users_code() -> None:
    """Not a line of the library's: the one that made the channel (sync and aio helpers)."""
    with pytest.warns(StackedRetriesWarning) as heard:
        resilient_channel("127.0.0.1:1", RetryPolicy(), options=[("grpc.enable_retries", 1)]).close()

    async def made() -> None:
        await interceptors.aio.resilient_channel(
            "127.0.0.1:1", RetryPolicy(), options=[("grpc.enable_retries", 1)]
        ).close()

    with pytest.warns(StackedRetriesWarning) as heard_aio:
        AIO_LOOP.run(made())
    assert {w.filename for w in [*heard, *heard_aio] if w.category is StackedRetriesWarning} == {__file__}
