"""``python -m interceptors check CONFIG.json``: what an operator runs before a deploy.

Reads a gRPC service config (with the ``resilience`` extension block), checks it as
:func:`interceptors.from_service_config` does, and prints the chain of policies each method gets (outermost first,
each with the settings that differ from its defaults) and what is left for grpc itself. Exit status 0 when the
config is good, 2 when it is not (the message names the JSON path of the first thing that is wrong) or cannot be
read. ``globalRateLimiter`` blocks are checked against a store that is never contacted.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import Backoff, RandomDelay, from_service_config
from .engine import Policy

_UNSET = object()


def describe(policy: Policy | Backoff | RandomDelay) -> str:
    """``Type(setting=value, ...)``: the settings of a policy (or of a delay it holds) that differ from their
    defaults, listeners, clocks and the default name left out; a setting whose default is None shows the value it
    was given or derived (a breaker's ``failure_window`` from its ``failure_threshold``)."""
    settings = []
    for parameter in inspect.signature(type(policy)).parameters.values():
        name = parameter.name
        value = getattr(policy, name, _UNSET)
        if value is _UNSET:
            value = getattr(getattr(policy, "config", None), name, _UNSET)
        if (
            value is _UNSET
            or name in ("clock", "store")
            or name.startswith("on_")
            or (name == "name" and value == type(policy).__name__)
        ):
            continue
        if parameter.default is inspect.Parameter.empty or value != parameter.default:
            settings.append(f"{name}={_shown(value)}")
    return f"{type(policy).__name__}({', '.join(settings)})"


def _shown(value: Any) -> str:
    """A setting's value: a delay of ours (``Backoff``, ``RandomDelay``) described as a policy is, else its repr."""
    if isinstance(value, (Backoff, RandomDelay)):
        return describe(value)
    return repr(value)


def _chain(policies: Sequence[Policy]) -> str:
    return " > ".join(describe(policy) for policy in policies) if policies else "no policies: calls pass untouched"


def _store() -> Any:
    """A fleet store, closed: its policies are built and never exchange anything (None without the ``fleet``
    extra)."""
    try:
        import redis
    except ImportError:
        return None
    from .fleet import FleetStore

    store = FleetStore(redis.Redis(socket_timeout=0.5), prefix="check")
    store.close()
    return store


def check(path: str) -> int:
    try:
        text = Path(path).read_bytes()
    except OSError as error:
        print(f"{path}: cannot be read: {error.strerror or error}", file=sys.stderr)
        return 2
    store = _store()
    try:
        config = from_service_config(text, fleet_store=store)
    except ValueError as error:
        print(f"{path}: not a good service config: {error}", file=sys.stderr)
        if store is None and "globalRateLimiter" in str(error):
            print(
                "  (to check globalRateLimiter blocks: pip install 'grpc-resilience-interceptors[fleet]')",
                file=sys.stderr,
            )
        return 2
    print(f"{path}: a good service config")
    print(f"  every other method: {_chain(config.policies)}")
    for method, policies in config.methods.items():
        print(f"  {method}: {_chain(policies)}")
    print(f"  left for grpc: {config.grpc_config or 'nothing'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m interceptors", description="Tools for operators.")
    commands = parser.add_subparsers(dest="command", required=True)
    checking = commands.add_parser("check", help="check a service config and print the chain each method gets")
    checking.add_argument("config", help="the service config, a JSON file")
    args = parser.parse_args(argv)
    return check(args.config)


if __name__ == "__main__":
    sys.exit(main())
