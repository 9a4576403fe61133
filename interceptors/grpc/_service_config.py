"""gRPC service configs (gRFC A2, A6) as chains of policies.

A service config's ``methodConfig`` entries become per-method chains, in this order (first outermost)::

    Fallback > CachePolicy > Timeout(timeout) > RetryPolicy | HedgePolicy > AdaptiveThrottle > Bulkhead
        > RateLimiter > AdaptiveLimiter > CircuitBreaker > Timeout(per attempt)

- ``timeout``: the call's deadline (a Timeout around everything; the caller's own deadline still binds if sooner),
  never handed to grpc, whose own service-config deadline fails calls long before it passes (grpc/grpc#34547).
- ``retryPolicy``: a RetryPolicy with gRPC's backoff, ``min(initialBackoff * backoffMultiplier**(n-1), maxBackoff) *
  random(0.8, 1.2)`` (gRFC A6 as amended), retrying ``retryableStatusCodes``; ``maxAttempts`` above 5 counts as 5;
  ``perAttemptRecvTimeout`` (gRFC A6's later addition) becomes the per-attempt Timeout.
- ``hedgingPolicy``: a HedgePolicy (``maxAttempts`` capped at 5, ``hedgingDelay``, ``nonFatalStatusCodes``).
- ``retryThrottling``: one token bucket (:meth:`RetryBudget.token_bucket`) shared by every retry and hedge of the
  config.
- ``resilience`` (this library's extension, which gRPC ignores): what service configs cannot say, one object per
  policy, options named as the policy's keyword options in camelCase, durations as JSON durations (``"0.5s"``) or
  seconds::

    "resilience": {
      "fallback": {"message": {"text": "unavailable"}},       // or {} for the response type's default
      "cache": {"ttl": "10s", "staleIfError": "300s"},
      "circuitBreaker": {"failureRate": 0.5, "failureWindow": 20, "delay": "1s"},
      "attemptTimeout": "0.5s",
      "adaptiveThrottle": {"k": 2}, "bulkhead": {"maxConcurrent": 10, "maxWait": "0.05s"},
      "rateLimiter": {"maxCalls": 100, "period": "1s"}, "adaptiveLimiter": {"maxLimit": 50},
      "globalRateLimiter": {"key": "b-quota", "maxCalls": 200}  // with from_service_config(..., fleet_store=)
    }

  The policies of one entry are shared by every method it names (one breaker for them all).

Names: ``{"service": "pkg.Svc", "method": "M"}`` is one method, ``{"service": "pkg.Svc"}`` the service's other
methods, ``{}`` every other method; the most specific wins. A config gRPC would refuse is refused with the JSON
path of what is wrong (what grpc gets is also put to grpc itself); keys are camelCase, and objects whose fields are
all known refuse unknown keys; null is absent.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

import grpc

from ..engine._adaptive_limiter import AdaptiveLimiter
from ..engine._budget import RetryBudget
from ..engine._bulkhead import Bulkhead
from ..engine._cache import CachePolicy
from ..engine._circuit_breaker import CircuitBreaker
from ..engine._delays import Backoff
from ..engine._errors import TimeoutExceededError
from ..engine._fallback import Fallback
from ..engine._hedge import HedgePolicy
from ..engine._options import MAX_SECONDS, cut, shown
from ..engine._policy import Policy
from ..engine._priority import Priority
from ..engine._rate_limiter import RateLimiter
from ..engine._retry import RetryPolicy
from ..engine._throttle import AdaptiveThrottle
from ..engine._timeout import Timeout
from ..fleet._rate_limiter import GlobalRateLimiter
from ..fleet._store import FleetStore
from ._channel import SERVICE_CONFIG, channel_options, option_pairs
from ._core import CallMetrics, Flavour, Router
from ._grpc_shapes import is_idle
from ._status import NO_CODES, on_codes

__all__ = ["MAX_ATTEMPTS", "ServiceConfig", "from_service_config"]

MAX_ATTEMPTS = 5
"""gRPC's client-side cap on ``maxAttempts`` of retry and hedging policies."""

A6_JITTER = 0.2
"""gRPC's retry backoff spreads each delay by 20 % either way, after the cap (gRFC A6 as amended in 2024)."""

_DURATION = re.compile(r"(\d+(\.\d{1,9})?|\.\d{1,9})s", re.ASCII)  # whole strings only (fullmatch)
_CODES = {code.name: code for code in grpc.StatusCode}
_CODE_NUMBERS = {code.value[0]: code for code in grpc.StatusCode}

# the extension's policies, in chain order after the retry or hedge: (key, type, its positional option)
_LOAD_POLICIES: tuple[tuple[str, Callable[..., Policy], str | None], ...] = (
    ("adaptiveThrottle", AdaptiveThrottle, None),
    ("bulkhead", Bulkhead, "max_concurrent"),
    ("rateLimiter", RateLimiter, "max_calls"),
    ("globalRateLimiter", GlobalRateLimiter, "max_calls"),  # built with the fleet store: see _fleet_policy
    ("adaptiveLimiter", AdaptiveLimiter, None),
    ("circuitBreaker", CircuitBreaker, None),
)
_EXTENSION_KEYS = ("fallback", "cache", "attemptTimeout", *(key for key, _, _ in _LOAD_POLICIES))

# the keys of each object of a config (gRFC A2, A6; the extension's above): JSON keys are camelCase
_TOP_KEYS = ("methodConfig", "loadBalancingConfig", "loadBalancingPolicy", "retryThrottling", "healthCheckConfig")
_ENTRY_KEYS: tuple[str, ...] = ("name", "waitForReady", "timeout", "maxRequestMessageBytes", "maxResponseMessageBytes")
_ENTRY_KEYS += ("retryPolicy", "hedgingPolicy", "resilience")
_NAME_KEYS = ("service", "method")
_RETRY_KEYS: tuple[str, ...] = ("maxAttempts", "initialBackoff", "maxBackoff", "backoffMultiplier")
_RETRY_KEYS += ("retryableStatusCodes", "perAttemptRecvTimeout")
_HEDGING_KEYS = ("maxAttempts", "hedgingDelay", "nonFatalStatusCodes")
_THROTTLING_KEYS = ("maxTokens", "tokenRatio")
_HEALTH_CHECK_KEYS = ("serviceName",)
_MESSAGE_SIZES = ("maxRequestMessageBytes", "maxResponseMessageBytes")


@dataclass(frozen=True)
class ServiceConfig:
    """A service config as policies: ``policies``, the chain of methods no entry names (its default entry's), and
    ``methods``, chains by ``/pkg.Service/Method`` and ``/pkg.Service/*``: pass both to the interceptors or
    helpers (``ResilienceInterceptor(*config.policies, methods=config.methods)``). ``budget`` is the token bucket
    of ``retryThrottling``, if any; ``grpc_config`` is what is left of the config for grpc itself (load balancing,
    ``waitForReady``, ...) as JSON, or None when nothing is."""

    policies: tuple[Policy, ...]
    methods: Mapping[str, tuple[Policy, ...]]
    budget: RetryBudget | None
    grpc_config: str | None


MAX_DEPTH = 255
"""How deep gRPC's JSON parser lets a service config nest (objects and arrays, the config itself included)."""

_SHOWN = 60  # the most characters of a value an error echoes
_LARGEST = float.fromhex("0x1.fffffffffffffp+1023")  # the largest float: no larger int can be one


class _Invalid(ValueError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"service config: {path}: {reason}")


def _shown(value: object) -> str:
    return shown(value, _SHOWN)


def _cut(text: str, limit: int = _SHOWN) -> str:
    return cut(text, limit)


def _at(path: str, key: str) -> str:
    """The JSON path of member ``key`` of the object at ``path`` (the config itself is ``$``)."""
    name = _cut(key)
    return name if path == "$" else f"{path}.{name}"


class _NotJson:
    """What the JSON text held that JSON values cannot: NaN, infinities, numbers out of range."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    @classmethod
    def constant(cls, name: str) -> _NotJson:
        return cls(f"{name} is not a JSON number")

    @classmethod
    def number(cls, text: str) -> float | _NotJson:
        value = float(text)
        return value if math.isfinite(value) else cls(f"{_cut(text)} is out of range")

    @classmethod
    def integer(cls, text: str) -> int | _NotJson:
        try:
            return int(text)
        except ValueError:  # past Python's limit on digits
            return cls(f"an integer of {len(text)} digits is out of range")


_STRUCTURE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)  # strings whole, or a bracket


def _too_deep(text: str) -> int:
    """Where ``text`` nests past :data:`MAX_DEPTH` (-1: it does not)."""
    depth = 0
    for token in _STRUCTURE.finditer(text):
        mark = token.group()
        if mark in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return token.start()
        elif mark in "]}":
            depth -= 1
    return -1


def _parsed(text: str | bytes) -> Any:
    """JSON text as JSON values; what JSON cannot hold is left as :class:`_NotJson` for :func:`_json` to name."""
    try:
        if isinstance(text, bytes):
            text = text.decode(json.detect_encoding(text))
        return json.loads(
            text, parse_constant=_NotJson.constant, parse_float=_NotJson.number, parse_int=_NotJson.integer
        )
    except RecursionError:
        where = _too_deep(text) if isinstance(text, str) else -1
        raise _Invalid("$", f"nested deeper than {MAX_DEPTH} levels (gRPC's limit), at character {where}") from None
    except ValueError as error:
        raise ValueError(f"service config: not JSON: {_cut(str(error), 200)}") from None


def _lone_surrogate(text: str) -> int:
    """Where ``text`` holds half of a UTF-16 pair, which no JSON text may (-1: nowhere)."""
    if text.isascii():
        return -1
    try:
        text.encode()
    except UnicodeEncodeError as error:
        return error.start
    return -1


def _json(value: object, path: str, depth: int = 1) -> Any:
    """``value`` as plain JSON values (dict, list, str, int, float, bool, None); raises naming the path of what
    JSON cannot hold (keys that are not strings, NaN, objects of other types, nesting past gRPC's limit)."""
    if depth > MAX_DEPTH:
        reason = f"nested deeper than {MAX_DEPTH} levels (gRPC's limit; a config may contain itself)"
        raise _Invalid(_cut(path, 100), reason)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if _lone_surrogate(value) >= 0:
            raise _Invalid(path, f"not Unicode: a lone surrogate at character {_lone_surrogate(value)}")
        return value
    if isinstance(value, int):
        if value.bit_length() > 13_000:  # about 4 000 digits: past what Python prints
            raise _Invalid(path, "an integer of over 4 000 digits is out of range")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid(path, f"must be a finite number, got {_shown(value)}")
        return value
    if isinstance(value, Mapping):
        members = {}
        for key, member in value.items():
            if not isinstance(key, str):
                raise _Invalid(path, f"keys must be strings, got {_shown(key)}")
            if _lone_surrogate(key) >= 0:
                raise _Invalid(path, f"keys must be Unicode, got {_shown(key)} (a lone surrogate)")
            members[key] = _json(member, _at(path, key), depth + 1)
        return members
    if isinstance(value, (list, tuple)):
        return [_json(item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value)]
    if isinstance(value, _NotJson):
        raise _Invalid(path, value.reason)
    raise _Invalid(path, f"must be a JSON value (object, array, string, number, boolean, null), got {_shown(value)}")


def _fold(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


def _keys(config: Mapping[str, Any], path: str, known: tuple[str, ...], *, closed: bool = True) -> None:
    """Refuse the keys of ``config`` (at ``path``) that are not ``known``: every one when the object is ``closed``
    (its fields are all known), else only misspellings of known ones, which gRPC would ignore, silently."""
    longest = max(map(len, known))
    for key in config:
        if key in known:
            continue
        folded = _fold(key)
        right = next((name for name in known if _fold(name) == folded), None)
        if right is not None:
            raise _Invalid(_at(path, key), f"unknown key; gRPC's JSON keys are camelCase: {right!r}")
        near = difflib.get_close_matches(key, known, n=1, cutoff=0.8) if len(key) <= 2 * longest else []
        if near:
            raise _Invalid(_at(path, key), f"unknown key; did you mean {near[0]!r}?")
        if closed:
            raise _Invalid(_at(path, key), f"unknown key; known: {', '.join(known)}")


def _top_keys(config: Mapping[str, Any]) -> None:
    """The config's own keys: a method config entry's key is refused, a misspelt standard one too; gRPC reads
    others of its own (some behind flags, e.g. ``connectionScaling``) and ignores the rest."""
    for key in config:
        if key not in _TOP_KEYS and any(_fold(key) == _fold(name) for name in _ENTRY_KEYS):
            raise _Invalid(_at("$", key), "belongs in a methodConfig entry")
    _keys(config, "$", _TOP_KEYS, closed=False)


def from_service_config(
    config: str | bytes | Mapping[str, Any], *, fleet_store: FleetStore | None = None
) -> ServiceConfig:
    """The policies a gRPC service config asks for (see the module's doc). Raises ValueError naming the JSON path
    of the first thing that is wrong, for configs gRPC would refuse and extension blocks the policies refuse.
    ``fleet_store``: the :class:`~interceptors.fleet.FleetStore` of the extension's ``globalRateLimiter`` blocks."""
    if fleet_store is not None and not isinstance(fleet_store, FleetStore):
        raise ValueError(f"fleet_store must be a FleetStore, got {_shown(fleet_store)}")
    config = _json(_parsed(config) if isinstance(config, (str, bytes)) else config, "$")
    if not isinstance(config, dict):
        raise _Invalid("$", f"must be a JSON object, got {_shown(config)}")
    _top_keys(config)
    _grpc_globals(config)
    budget = _throttling(config.get("retryThrottling"))
    entries = config.get("methodConfig", [])
    if not isinstance(entries, list):
        raise _Invalid("methodConfig", f"must be a list, got {_shown(entries)}")
    default: tuple[Policy, ...] = ()
    methods: dict[str, tuple[Policy, ...]] = {}
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        path = f"methodConfig[{index}]"
        if not isinstance(entry, Mapping):
            raise _Invalid(path, f"must be an object, got {_shown(entry)}")
        _keys(entry, path, _ENTRY_KEYS)
        _grpc_fields(entry, path)
        chain = _chain(entry, path, budget, fleet_store)
        for key in _names(entry.get("name"), f"{path}.name", seen):
            if key == "":
                default = chain
            else:
                methods[key] = chain
    grpc_config = _for_grpc(config)
    refusal = None if grpc_config is None else _refused_by_grpc(grpc_config)
    if refusal is not None:
        raise ValueError(f"service config: grpc refuses it: {_cut(refusal, 300)}")
    return ServiceConfig(default, methods, budget, grpc_config)


def _grpc_globals(config: Mapping[str, Any]) -> None:
    """The top-level fields grpc reads: ``loadBalancingConfig``, ``loadBalancingPolicy``, ``healthCheckConfig``."""
    if "loadBalancingConfig" in config:
        path, choices = "loadBalancingConfig", config["loadBalancingConfig"]
        if not isinstance(choices, list):
            raise _Invalid(path, f"must be a list of {{policy name: its config}} objects, got {_shown(choices)}")
        if not choices:
            raise _Invalid(path, "must name at least one policy (grpc takes the first it knows)")
        for index, choice in enumerate(choices):
            where = f"{path}[{index}]"
            if not isinstance(choice, Mapping) or len(choice) != 1:
                raise _Invalid(where, f"must be an object of one key, a policy's name, got {_shown(choice)}")
            ((name, settings),) = choice.items()
            if not isinstance(settings, Mapping):
                raise _Invalid(_at(where, name), f"must be an object, the policy's config, got {_shown(settings)}")
    policy = config.get("loadBalancingPolicy")
    if policy is not None and not isinstance(policy, str):
        raise _Invalid("loadBalancingPolicy", f"must be a string, such as 'round_robin', got {_shown(policy)}")
    health = config.get("healthCheckConfig")
    if health is None:
        return
    if not isinstance(health, Mapping):
        raise _Invalid("healthCheckConfig", f"must be an object, got {_shown(health)}")
    _keys(health, "healthCheckConfig", _HEALTH_CHECK_KEYS, closed=False)
    service = health.get("serviceName")
    if service is not None and not isinstance(service, str):
        raise _Invalid("healthCheckConfig.serviceName", f"must be a string, got {_shown(service)}")


def _grpc_fields(entry: Mapping[str, Any], path: str) -> None:
    """The fields of a method config entry grpc reads: ``waitForReady`` and the message sizes."""
    ready = entry.get("waitForReady")
    if ready is not None and not isinstance(ready, bool):
        raise _Invalid(f"{path}.waitForReady", f"must be true or false, got {_shown(ready)}")
    for key in _MESSAGE_SIZES:
        size = entry.get(key)
        if size is None:
            continue
        digits = isinstance(size, str) and size.isascii() and size.isdigit() and len(size) <= 10
        number = int(size) if digits else size  # proto3 JSON: an integer, or one as a string
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number < 2**32:
            raise _Invalid(f"{path}.{key}", f"must be a number of bytes in 0..4294967295, got {_shown(size)}")


def _refused_by_grpc(grpc_config: str) -> str | None:
    """What grpc says is wrong with ``grpc_config`` (what it gets of a config), or None when it takes it.

    grpc parses a channel's service config when the channel is made, and a channel whose config it refuses fails
    every call with INVALID_ARGUMENT saying why: that is asked of a throwaway channel, which never connects (a new
    channel is IDLE unless grpc refused its config). Only grpc knows the load balancing policies it has, and what
    their configs may say."""
    channel: Any = grpc.insecure_channel("localhost:1", options=[(SERVICE_CONFIG, grpc_config)])
    try:
        if is_idle(channel):
            return None
        channel.unary_unary("/grpc.ServiceConfig/Check")(b"", timeout=1)
    except grpc.RpcError as refused:
        if refused.code() is grpc.StatusCode.INVALID_ARGUMENT:
            said = str(refused.details())
            reason = said.partition("errors validating service config: ")[2] or said.partition("':")[2]
            return reason or f"{said} (grpcio {grpc.__version__} says no more here; its log line names the field)"
    finally:
        channel.close()
    return None


def _names(names: object, path: str, seen: set[str]) -> list[str]:
    """The keys the entry's names stand for: ``/svc/Method``, ``/svc/*``, or "" for the default."""
    if names is None:
        return []
    if not isinstance(names, list):
        raise _Invalid(path, f"must be a list, got {_shown(names)}")
    keys = []
    for index, name in enumerate(names):
        where = f"{path}[{index}]"
        if not isinstance(name, Mapping):
            raise _Invalid(where, f"must be an object, got {_shown(name)}")
        _keys(name, where, _NAME_KEYS)
        service, method = name.get("service"), name.get("method")
        service, method = "" if service is None else service, "" if method is None else method  # null: absent
        for field, value in (("service", service), ("method", method)):
            if not isinstance(value, str):
                raise _Invalid(f"{where}.{field}", f"must be a string, got {_shown(value)}")
            if "/" in value:
                raise _Invalid(
                    f"{where}.{field}", f"must not contain '/' (names are 'pkg.Service', 'Method'), got {_shown(value)}"
                )
        if method == "*":
            raise _Invalid(
                f"{where}.method", "'*' is no wildcard in gRPC: leave the method out to name the whole service"
            )
        if method and not service:
            raise _Invalid(where, "a method needs its service")
        key = f"/{service}/{method or '*'}" if service else ""
        if key in seen:
            raise _Invalid(where, f"duplicate name {_shown(name)}")
        seen.add(key)
        keys.append(key)
    return keys


def _chain(
    entry: Mapping[str, Any], path: str, budget: RetryBudget | None, fleet_store: FleetStore | None
) -> tuple[Policy, ...]:
    retry, hedging = entry.get("retryPolicy"), entry.get("hedgingPolicy")
    if retry is not None and hedging is not None:
        raise _Invalid(path, "retryPolicy and hedgingPolicy cannot both be set")
    extension = entry.get("resilience")
    if extension is None:
        extension = {}
    if not isinstance(extension, Mapping):
        raise _Invalid(f"{path}.resilience", f"must be an object, got {_shown(extension)}")
    _keys(extension, f"{path}.resilience", _EXTENSION_KEYS)
    chain: list[Policy] = []
    if "fallback" in extension:
        chain.append(_policy(Fallback, None, extension["fallback"], f"{path}.resilience.fallback"))
    if "cache" in extension:
        chain.append(_policy(CachePolicy, None, extension["cache"], f"{path}.resilience.cache"))
    if entry.get("timeout") is not None:
        chain.append(Timeout(_duration(entry["timeout"], f"{path}.timeout", positive=True)))
    attempt_timeout = extension.get("attemptTimeout")
    if attempt_timeout is not None:
        attempt_timeout = _duration(attempt_timeout, f"{path}.resilience.attemptTimeout", positive=True)
    if retry is not None:
        policy, attempt_timeout = _retry(retry, f"{path}.retryPolicy", budget, attempt_timeout)
        chain.append(policy)
    if hedging is not None:
        chain.append(_hedging(hedging, f"{path}.hedgingPolicy", budget))
    for key, policy_type, positional in _LOAD_POLICIES:
        if key in extension:
            where = f"{path}.resilience.{key}"
            if policy_type is GlobalRateLimiter:
                policy_type = _fleet_policy(policy_type, fleet_store, extension[key], where)
            chain.append(_policy(policy_type, positional, extension[key], where))
    if attempt_timeout is not None:
        chain.append(Timeout(attempt_timeout))
    return tuple(chain)


def _retry(
    config: object, path: str, budget: RetryBudget | None, attempt_timeout: float | None
) -> tuple[RetryPolicy, float | None]:
    """The RetryPolicy of a ``retryPolicy``, and the per-attempt timeout: ``perAttemptRecvTimeout``, or the
    extension's ``attemptTimeout``. An attempt it cuts is retried whatever ``retryableStatusCodes`` says (which may
    then be empty or left out), as gRPC's C core (with ``grpc.experimental.enable_hedging``) and grpc-java do."""
    if not isinstance(config, Mapping):
        raise _Invalid(path, f"must be an object, got {_shown(config)}")
    _keys(config, path, _RETRY_KEYS)
    attempts = _attempts(config, path)
    initial = _duration(_required(config, "initialBackoff", path), f"{path}.initialBackoff", positive=True)
    maximum = _duration(_required(config, "maxBackoff", path), f"{path}.maxBackoff", positive=True)
    multiplier = _required(config, "backoffMultiplier", path)
    if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)) or not 0 < multiplier < _LARGEST:
        raise _Invalid(f"{path}.backoffMultiplier", f"must be a number > 0, got {_shown(multiplier)}")
    per_attempt = config.get("perAttemptRecvTimeout")
    if per_attempt is not None:
        per_attempt = _duration(per_attempt, f"{path}.perAttemptRecvTimeout", positive=True)
        if attempt_timeout is not None:
            raise _Invalid(f"{path}.perAttemptRecvTimeout", "the entry's resilience.attemptTimeout already sets it")
        attempt_timeout = per_attempt
    codes_path = f"{path}.retryableStatusCodes"
    if per_attempt is None:
        codes = _codes(_required(config, "retryableStatusCodes", path), codes_path, required=True)
    else:
        listed = config.get("retryableStatusCodes")
        codes = _codes([] if listed is None else listed, codes_path, required=False)
    delay = Backoff(min(initial, maximum), maximum, multiplier=multiplier, jitter_factor=A6_JITTER)
    handle = _retryable(codes, attempt_timeout)
    policy = RetryPolicy(
        max_attempts=attempts, delay=delay, jitter_factor=0, handle=handle, budget=budget, reraise=True
    )
    return policy, attempt_timeout


def _retryable(codes: list[grpc.StatusCode], cut: float | None) -> Callable[[BaseException], bool]:
    """Failures with one of ``codes``, and attempts the per-attempt Timeout (of ``cut`` seconds) cut."""
    by_code = on_codes(*codes) if codes else NO_CODES
    return by_code if cut is None else _OrCut(by_code, cut)


class _OrCut:
    """A retry's ``handle``: failures ``by_code``, and attempts the per-attempt Timeout of ``cut`` seconds cut."""

    __slots__ = ("_by_code", "_cut")

    def __init__(self, by_code: Callable[[BaseException], bool], cut: float) -> None:
        self._by_code, self._cut = by_code, cut

    def __call__(self, failure: BaseException) -> bool:
        return self._by_code(failure) or (isinstance(failure, TimeoutExceededError) and failure.timeout == self._cut)

    def __repr__(self) -> str:
        return f"{self._by_code!r} or cut by the {self._cut:g}s attempt timeout"


def _hedging(config: object, path: str, budget: RetryBudget | None) -> HedgePolicy:
    if not isinstance(config, Mapping):
        raise _Invalid(path, f"must be an object, got {_shown(config)}")
    _keys(config, path, _HEDGING_KEYS)
    attempts = _attempts(config, path)
    delay, codes = config.get("hedgingDelay"), config.get("nonFatalStatusCodes")
    delay = 0.0 if delay is None else _duration(delay, f"{path}.hedgingDelay")
    codes = _codes([] if codes is None else codes, f"{path}.nonFatalStatusCodes", required=False)
    non_fatal = on_codes(*codes) if codes else NO_CODES
    return HedgePolicy(delay=delay, max_attempts=attempts, non_fatal=non_fatal, budget=budget)


def _throttling(config: object) -> RetryBudget | None:
    if config is None:
        return None
    path = "retryThrottling"
    if not isinstance(config, Mapping):
        raise _Invalid(path, f"must be an object, got {_shown(config)}")
    _keys(config, path, _THROTTLING_KEYS)
    tokens, ratio = _required(config, "maxTokens", path), _required(config, "tokenRatio", path)
    if isinstance(tokens, bool) or not isinstance(tokens, (int, float)) or not 0 < tokens <= 1000:
        raise _Invalid(f"{path}.maxTokens", f"must be a number in (0, 1000], got {_shown(tokens)}")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise _Invalid(f"{path}.tokenRatio", f"must be a number in (0, 1], got {_shown(ratio)}")
    kept = Decimal(repr(ratio)).quantize(Decimal("0.001"), ROUND_DOWN)  # gRPC keeps 3 decimals, cutting the rest
    if not kept:
        raise _Invalid(f"{path}.tokenRatio", f"must be at least 0.001 (gRPC keeps 3 decimals), got {_shown(ratio)}")
    return RetryBudget.token_bucket(max_tokens=tokens, token_ratio=float(kept))


def _attempts(config: Mapping[str, Any], path: str) -> int:
    attempts = _required(config, "maxAttempts", path)
    if isinstance(attempts, bool) or not isinstance(attempts, (int, float)) or attempts != int(attempts):
        raise _Invalid(f"{path}.maxAttempts", f"must be an integer, got {_shown(attempts)}")
    if attempts < 2:
        raise _Invalid(f"{path}.maxAttempts", f"must be at least 2, got {_shown(attempts)}")
    return min(int(attempts), MAX_ATTEMPTS)


def _required(config: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in config:
        raise _Invalid(f"{path}.{key}", "is required")
    return config[key]


def _duration(value: object, path: str, *, positive: bool = False) -> float:
    """A proto3 JSON duration (``"1.5s"``), in seconds."""
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise _Invalid(path, f'must be a duration such as "1.5s" (seconds, up to 9 decimals), got {_shown(value)}')
    seconds = float(value[:-1])  # type: ignore[index]
    if positive and seconds <= 0:
        raise _Invalid(path, f"must be longer than 0s, got {_shown(value)}")
    if seconds > MAX_SECONDS:
        raise _Invalid(path, f"must be at most a year, got {_shown(value)}")
    return seconds


def _codes(value: object, path: str, *, required: bool) -> list[grpc.StatusCode]:
    if not isinstance(value, list) or (required and not value):
        raise _Invalid(path, f"must be a {'non-empty ' if required else ''}list of status codes, got {_shown(value)}")
    codes: list[grpc.StatusCode] = []
    for index, item in enumerate(value):
        code = _CODES.get(item) if isinstance(item, str) else None
        if code is None and isinstance(item, int) and not isinstance(item, bool):
            code = _CODE_NUMBERS.get(item)
        if code is None or code is grpc.StatusCode.OK:
            raise _Invalid(
                f"{path}[{index}]", f'must name a failing status code, such as "UNAVAILABLE", got {_shown(item)}'
            )
        codes.append(code)
    return codes


def _policy(policy_type: Callable[..., Policy], positional: str | None, config: object, path: str) -> Policy:
    """An extension's policy: its options in camelCase, durations as JSON durations or seconds."""
    if not isinstance(config, Mapping):
        raise _Invalid(path, f"must be an object of the policy's options, got {_shown(config)}")
    options = {}
    for key, value in config.items():
        camel = re.sub(r"_+([a-z0-9])", lambda letter: letter.group(1).upper(), key[:1].lower() + key[1:])
        if camel != key:
            raise _Invalid(_at(path, key), f"unknown key; the extension's keys are camelCase: {camel!r}")
        if isinstance(value, str) and _DURATION.fullmatch(value):
            value = _duration(value, _at(path, key))
        options[re.sub(r"([A-Z])", r"_\1", key).lower()] = value
    arguments = [options.pop(positional)] if positional is not None and positional in options else []
    try:
        return policy_type(*arguments, **options)
    except (TypeError, ValueError) as error:
        raise _Invalid(path, _cut(str(error), 200)) from None


def _fleet_policy(
    policy_type: Callable[..., Policy], store: FleetStore | None, config: object, path: str
) -> Callable[..., Policy]:
    """A fleet policy's maker: the store, and the block's ``key``, before the rest of its options."""
    if store is None:
        raise _Invalid(path, "needs the fleet's store: from_service_config(config, fleet_store=FleetStore(...))")
    if not isinstance(config, Mapping) or "key" not in config:
        raise _Invalid(path, 'needs the policy\'s key in the store ("key": "...")')

    def make(*arguments: Any, key: object, **options: Any) -> Policy:
        return policy_type(store, key, *arguments, **options)

    return make


_POLICY_KEYS = ("timeout", "retryPolicy", "hedgingPolicy", "resilience")
"""What a method config entry's policies do, never handed to grpc: grpcio's own ``timeout`` fails calls long
before it passes (grpc/grpc#34547, #40633), its retries would multiply the policies' attempts."""


def _for_grpc(config: Mapping[str, Any]) -> str | None:
    """The config without what the policies now do (timeouts, retries, hedging, throttling, the extension)."""
    rest = {key: value for key, value in config.items() if key != "retryThrottling"}
    entries = [
        {key: value for key, value in entry.items() if key not in _POLICY_KEYS}
        for entry in config.get("methodConfig", [])
    ]
    if entries:
        rest["methodConfig"] = entries
    return json.dumps(rest) if rest else None


def configured(
    policies: tuple[Policy, ...], methods: Any, service_config: object, options: list[tuple[str, Any]], option: str
) -> tuple[tuple[Policy, ...], Any, list[tuple[str, Any]]]:
    """A helper's chains and channel options with a service config, given as ``service_config=`` or as the
    ``option`` channel option (not both): its chains under the ones given (``policies`` replaces its default
    chain when not empty, ``methods`` entries replace its own), what is left of it for grpc as the option."""
    given = [value for key, value in options if key == option]
    if service_config is None and not given:
        return policies, methods, options
    if service_config is not None and given:
        raise ValueError(f"give the service config once: service_config= or the {option} channel option")
    source = service_config if service_config is not None else given[0]
    if not isinstance(source, (str, bytes, Mapping)):
        raise ValueError(f"service_config must be a JSON string or a mapping, got {source!r}")
    config = from_service_config(source)
    kept = [(key, value) for key, value in options if key != option]
    if config.grpc_config is not None:
        kept.append((option, config.grpc_config))
    chains = {**config.methods, **methods} if isinstance(methods, Mapping) else methods or config.methods
    return (policies or config.policies), chains, kept


def channel_plan(
    policies: tuple[Policy, ...],
    methods: Any,
    options: Any,
    service_config: object,
    flavour: Flavour,
    metrics: CallMetrics | None,
    target: str,
    priority: Priority | str | None = None,
    registry: Any = None,
) -> tuple[Router, list[tuple[str, Any]]]:
    """What a helper's channel, sync or aio, is built from: the router of its chains (a service config's under the
    ones given, see :func:`configured`; or a registry's) and grpc's channel options (the config's part for grpc;
    grpcio's retries off where ours apply, see :func:`channel_options`, and always with a registry, whose reloads
    may bring retries in)."""
    pairs = option_pairs(options)
    if registry is not None:
        if service_config is not None or any(key == SERVICE_CONFIG for key, _ in pairs):
            raise ValueError("give the service config to the registry: Registry(config)")
        router = Router(policies, methods, flavour, metrics, target, priority, registry)
        grpc_config = registry.grpc_config
        pairs = pairs if grpc_config is None else [*pairs, (SERVICE_CONFIG, grpc_config)]
        router.unwarned = False
        return router, channel_options(pairs, retries=True)
    policies, methods, pairs = configured(policies, methods, service_config, pairs, SERVICE_CONFIG)
    router = Router(policies, methods, flavour, metrics, target, priority)
    router.unwarned = False  # the channel has grpcio's retries off where they would strip the header
    return router, channel_options(pairs, retries=router.retries)
