"""gRPC service configs (gRFC A2, A6) as chains of policies.

A service config's ``methodConfig`` entries become per-method chains, in this order (first outermost)::

    Fallback > Timeout(timeout) > RetryPolicy | HedgePolicy > AdaptiveThrottle > Bulkhead > RateLimiter
        > AdaptiveLimiter > CircuitBreaker > Timeout(per attempt)

- ``timeout``: the call's deadline (a Timeout around everything; the caller's own deadline still binds if sooner).
- ``retryPolicy``: a RetryPolicy with gRPC's backoff, ``random(0, min(initialBackoff * backoffMultiplier**(n-1),
  maxBackoff))``, retrying ``retryableStatusCodes``; ``maxAttempts`` above 5 counts as 5, as in gRPC;
  ``perAttemptRecvTimeout`` (gRFC A6's later addition) becomes the per-attempt Timeout.
- ``hedgingPolicy``: a HedgePolicy (``maxAttempts`` capped at 5, ``hedgingDelay``, ``nonFatalStatusCodes``).
- ``retryThrottling``: one token bucket (:meth:`RetryBudget.token_bucket`) shared by every retry and hedge of the
  config.
- ``resilience`` (this library's extension, which gRPC ignores): what service configs cannot say, one object per
  policy, options named as the policy's keyword options in camelCase, durations as JSON durations (``"0.5s"``) or
  seconds::

    "resilience": {
      "fallback": {"message": {"text": "unavailable"}},       // or {} for the response type's default
      "circuitBreaker": {"failureRate": 0.5, "failureWindow": 20, "delay": "1s"},
      "attemptTimeout": "0.5s",
      "adaptiveThrottle": {"k": 2}, "bulkhead": {"maxConcurrent": 10, "maxWait": "0.05s"},
      "rateLimiter": {"maxCalls": 100, "period": "1s"}, "adaptiveLimiter": {"maxLimit": 50}
    }

  The policies of one entry are shared by every method it names (one breaker for them all).

Names: ``{"service": "pkg.Svc", "method": "M"}`` is one method, ``{"service": "pkg.Svc"}`` the service's other
methods, ``{}`` every other method; the most specific wins. A config gRPC would refuse is refused with the JSON
path of what is wrong.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from ..engine.adaptive_limiter import AdaptiveLimiter
from ..engine.budget import RetryBudget
from ..engine.bulkhead import Bulkhead
from ..engine.circuit_breaker import CircuitBreaker
from ..engine.delays import Backoff
from ..engine.fallback import Fallback
from ..engine.hedge import HedgePolicy
from ..engine.options import MAX_SECONDS, shown
from ..engine.policy import Policy
from ..engine.rate_limiter import RateLimiter
from ..engine.retry import RetryPolicy
from ..engine.throttle import AdaptiveThrottle
from ..engine.timeout import Timeout
from .status import on_codes

__all__ = ["MAX_ATTEMPTS", "ServiceConfig", "from_service_config"]

MAX_ATTEMPTS = 5
"""gRPC's client-side cap on ``maxAttempts`` of retry and hedging policies."""

_DURATION = re.compile(r"^(\d+(\.\d{1,9})?|\.\d{1,9})s$")
_CODES = {code.name: code for code in grpc.StatusCode}
_CODE_NUMBERS = {code.value[0]: code for code in grpc.StatusCode}

# the extension's policies, in chain order after the retry or hedge: (key, type, its positional option)
_LOAD_POLICIES: tuple[tuple[str, Callable[..., Policy], str | None], ...] = (
    ("adaptiveThrottle", AdaptiveThrottle, None),
    ("bulkhead", Bulkhead, "max_concurrent"),
    ("rateLimiter", RateLimiter, "max_calls"),
    ("adaptiveLimiter", AdaptiveLimiter, None),
    ("circuitBreaker", CircuitBreaker, None),
)
_EXTENSION_KEYS = frozenset({"fallback", "attemptTimeout"} | {key for key, _, _ in _LOAD_POLICIES})


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


class _Invalid(ValueError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"service config: {path}: {reason}")


def from_service_config(config: str | bytes | Mapping[str, Any]) -> ServiceConfig:
    """The policies a gRPC service config asks for (see the module's doc). Raises ValueError naming the JSON path
    of the first thing that is wrong, for configs gRPC would refuse and extension blocks the policies refuse."""
    if isinstance(config, (str, bytes)):
        try:
            config = json.loads(config)
        except ValueError as error:
            raise ValueError(f"service config: not JSON: {error}") from None
    if not isinstance(config, Mapping):
        raise _Invalid("$", f"must be a JSON object, got {config!r}")
    budget = _throttling(config.get("retryThrottling"))
    entries = config.get("methodConfig", [])
    if not isinstance(entries, list):
        raise _Invalid("methodConfig", f"must be a list, got {entries!r}")
    default: tuple[Policy, ...] = ()
    methods: dict[str, tuple[Policy, ...]] = {}
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        path = f"methodConfig[{index}]"
        if not isinstance(entry, Mapping):
            raise _Invalid(path, f"must be an object, got {entry!r}")
        chain = _chain(entry, path, budget)
        for key in _names(entry.get("name"), f"{path}.name", seen):
            if key == "":
                default = chain
            else:
                methods[key] = chain
    grpc_config = _for_grpc(config)
    return ServiceConfig(default, methods, budget, grpc_config)


def _names(names: object, path: str, seen: set[str]) -> list[str]:
    """The keys the entry's names stand for: ``/svc/Method``, ``/svc/*``, or "" for the default."""
    if names is None:
        return []
    if not isinstance(names, list):
        raise _Invalid(path, f"must be a list, got {names!r}")
    keys = []
    for index, name in enumerate(names):
        where = f"{path}[{index}]"
        if not isinstance(name, Mapping):
            raise _Invalid(where, f"must be an object, got {name!r}")
        service, method = name.get("service", ""), name.get("method", "")
        if not isinstance(service, str):
            raise _Invalid(f"{where}.service", f"must be a string, got {service!r}")
        if not isinstance(method, str):
            raise _Invalid(f"{where}.method", f"must be a string, got {method!r}")
        if method and not service:
            raise _Invalid(where, "a method needs its service")
        key = f"/{service}/{method or '*'}" if service else ""
        if key in seen:
            raise _Invalid(where, f"duplicate name {dict(name)!r}")
        seen.add(key)
        keys.append(key)
    return keys


def _chain(entry: Mapping[str, Any], path: str, budget: RetryBudget | None) -> tuple[Policy, ...]:
    retry, hedging = entry.get("retryPolicy"), entry.get("hedgingPolicy")
    if retry is not None and hedging is not None:
        raise _Invalid(path, "retryPolicy and hedgingPolicy cannot both be set")
    extension = entry.get("resilience", {})
    if not isinstance(extension, Mapping):
        raise _Invalid(f"{path}.resilience", f"must be an object, got {extension!r}")
    unknown = sorted(set(extension) - _EXTENSION_KEYS)
    if unknown:
        raise _Invalid(f"{path}.resilience", f"unknown keys {unknown}; known: {sorted(_EXTENSION_KEYS)}")
    chain: list[Policy] = []
    if "fallback" in extension:
        chain.append(_policy(Fallback, None, extension["fallback"], f"{path}.resilience.fallback"))
    if "timeout" in entry:
        chain.append(Timeout(_duration(entry["timeout"], f"{path}.timeout", positive=True)))
    attempt_timeout = None
    if retry is not None:
        policy, attempt_timeout = _retry(retry, f"{path}.retryPolicy", budget)
        chain.append(policy)
    if hedging is not None:
        chain.append(_hedging(hedging, f"{path}.hedgingPolicy", budget))
    for key, policy_type, positional in _LOAD_POLICIES:
        if key in extension:
            chain.append(_policy(policy_type, positional, extension[key], f"{path}.resilience.{key}"))
    if "attemptTimeout" in extension:
        if attempt_timeout is not None:
            raise _Invalid(f"{path}.resilience.attemptTimeout", "retryPolicy.perAttemptRecvTimeout already sets it")
        attempt_timeout = _duration(extension["attemptTimeout"], f"{path}.resilience.attemptTimeout", positive=True)
    if attempt_timeout is not None:
        chain.append(Timeout(attempt_timeout))
    return tuple(chain)


def _retry(config: object, path: str, budget: RetryBudget | None) -> tuple[RetryPolicy, float | None]:
    if not isinstance(config, Mapping):
        raise _Invalid(path, f"must be an object, got {config!r}")
    attempts = _attempts(config, path)
    initial = _duration(_required(config, "initialBackoff", path), f"{path}.initialBackoff", positive=True)
    maximum = _duration(_required(config, "maxBackoff", path), f"{path}.maxBackoff", positive=True)
    multiplier = _required(config, "backoffMultiplier", path)
    if not _is_number(multiplier) or not 0 < multiplier <= sys.float_info.max:  # exact: no huge int, NaN or inf
        raise _Invalid(f"{path}.backoffMultiplier", f"must be a number > 0, got {shown(multiplier)}")
    codes = _codes(_required(config, "retryableStatusCodes", path), f"{path}.retryableStatusCodes", required=True)
    per_attempt = config.get("perAttemptRecvTimeout")
    if per_attempt is not None:
        per_attempt = _duration(per_attempt, f"{path}.perAttemptRecvTimeout", positive=True)
    delay = Backoff(min(initial, maximum), maximum, multiplier=multiplier, full_jitter=True)
    policy = RetryPolicy(
        max_attempts=attempts, delay=delay, jitter_factor=0, handle=on_codes(*codes), budget=budget, reraise=True
    )
    return policy, per_attempt


def _hedging(config: object, path: str, budget: RetryBudget | None) -> HedgePolicy:
    if not isinstance(config, Mapping):
        raise _Invalid(path, f"must be an object, got {config!r}")
    attempts = _attempts(config, path)
    delay = _duration(config.get("hedgingDelay", "0s"), f"{path}.hedgingDelay")
    codes = _codes(config.get("nonFatalStatusCodes", []), f"{path}.nonFatalStatusCodes", required=False)
    non_fatal = on_codes(*codes) if codes else _never
    return HedgePolicy(delay=delay, max_attempts=attempts, non_fatal=non_fatal, budget=budget)


def _never(failure: BaseException) -> bool:
    return False


def _throttling(config: object) -> RetryBudget | None:
    if config is None:
        return None
    path = "retryThrottling"
    if not isinstance(config, Mapping):
        raise _Invalid(path, f"must be an object, got {config!r}")
    tokens, ratio = _required(config, "maxTokens", path), _required(config, "tokenRatio", path)
    if not _is_number(tokens) or not 0 < tokens <= 1000:
        raise _Invalid(f"{path}.maxTokens", f"must be a number in (0, 1000], got {shown(tokens)}")
    if not _is_number(ratio) or not 0 < ratio <= 1:
        raise _Invalid(f"{path}.tokenRatio", f"must be a number in (0, 1], got {shown(ratio)}")
    if round(ratio, 3) == 0:  # 3 decimals, as in gRPC
        raise _Invalid(f"{path}.tokenRatio", f"must be at least 0.001 (gRPC keeps 3 decimals), got {ratio!r}")
    return RetryBudget.token_bucket(max_tokens=tokens, token_ratio=round(ratio, 3))


def _attempts(config: Mapping[str, Any], path: str) -> int:
    attempts = _required(config, "maxAttempts", path)
    if not _is_number(attempts) or (isinstance(attempts, float) and not attempts.is_integer()):  # NaN, inf too
        raise _Invalid(f"{path}.maxAttempts", f"must be an integer, got {shown(attempts)}")
    if attempts < 2:
        raise _Invalid(f"{path}.maxAttempts", f"must be at least 2, got {attempts!r}")
    return min(int(attempts), MAX_ATTEMPTS)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _required(config: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in config:
        raise _Invalid(f"{path}.{key}", "is required")
    return config[key]


def _duration(value: object, path: str, *, positive: bool = False) -> float:
    """A proto3 JSON duration (``"1.5s"``), in seconds."""
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise _Invalid(path, f'must be a duration such as "1.5s" (seconds, up to 9 decimals), got {value!r}')
    seconds = float(value[:-1])  # type: ignore[index]
    if positive and seconds <= 0:
        raise _Invalid(path, f"must be longer than 0s, got {value!r}")
    if seconds > MAX_SECONDS:
        raise _Invalid(path, f"must be at most a year, got {value!r}")
    return seconds


def _codes(value: object, path: str, *, required: bool) -> list[grpc.StatusCode]:
    if not isinstance(value, list) or (required and not value):
        raise _Invalid(path, f"must be a {'non-empty ' if required else ''}list of status codes, got {value!r}")
    codes: list[grpc.StatusCode] = []
    for index, item in enumerate(value):
        code = _CODES.get(item) if isinstance(item, str) else None
        if code is None and isinstance(item, int) and not isinstance(item, bool):
            code = _CODE_NUMBERS.get(item)
        if code is None or code is grpc.StatusCode.OK:
            raise _Invalid(f"{path}[{index}]", f'must name a failing status code, such as "UNAVAILABLE", got {item!r}')
        codes.append(code)
    return codes


def _policy(policy_type: Callable[..., Policy], positional: str | None, config: object, path: str) -> Policy:
    """An extension's policy: its options in camelCase, durations as JSON durations or seconds."""
    if not isinstance(config, Mapping):
        raise _Invalid(path, f"must be an object of the policy's options, got {config!r}")
    options = {}
    for key, value in config.items():
        name = re.sub(r"(?<!^)([A-Z])", r"_\1", str(key)).lower()
        if isinstance(value, str) and _DURATION.match(value):
            value = _duration(value, f"{path}.{key}")
        options[name] = value
    arguments = [options.pop(positional)] if positional is not None and positional in options else []
    try:
        return policy_type(*arguments, **options)
    except TypeError as error:
        raise _Invalid(path, str(error)) from None
    except ValueError as error:
        raise _Invalid(path, str(error)) from None


def _for_grpc(config: Mapping[str, Any]) -> str | None:
    """The config without what the policies now do (retries, hedging, throttling, the extension), for grpc."""
    rest = {key: value for key, value in config.items() if key != "retryThrottling"}
    entries = [
        {key: value for key, value in entry.items() if key not in ("retryPolicy", "hedgingPolicy", "resilience")}
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
