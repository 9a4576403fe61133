"""The policy engine is transport-agnostic: none of its modules imports grpc."""

from __future__ import annotations

import subprocess
import sys

ENGINE = [
    "clock",
    "testing",
    "errors",
    "events",
    "execution",
    "policy",
    "timeout",
    "retry",
    "delays",
    "circuit_breaker",
    "fallback",
]


def test_engine_modules_import_without_grpc() -> None:
    code = (
        "import sys, importlib.util, types\n"
        "sys.modules['grpc'] = None  # any import of grpc now fails\n"
        "package = types.ModuleType('interceptors')\n"  # skip the package __init__, which adds the gRPC adapters
        "package.__path__ = [importlib.util.find_spec('interceptors').submodule_search_locations[0]]\n"
        "sys.modules['interceptors'] = package\n"
        f"for name in {ENGINE!r}: importlib.import_module('interceptors.' + name)\n"
        "from interceptors.policy import Executor\n"
        "from interceptors.retry import RetryPolicy\n"
        "assert Executor(RetryPolicy()).call(lambda: 1) == 1\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
