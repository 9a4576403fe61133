"""The policy engine is transport-agnostic: every module in interceptors/engine/ imports and runs with grpc and
protobuf blocked (the import-linter contracts of pyproject.toml check its imports as ``make lint`` runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import interceptors.engine

ENGINE = Path(interceptors.engine.__file__).parent


def test_every_engine_module_imports_without_grpc() -> None:
    modules = sorted(f"interceptors.engine.{path.stem}" for path in ENGINE.glob("*.py") if path.stem != "__init__")
    assert "interceptors.engine._retry" in modules and "interceptors.engine._circuit_breaker" in modules
    code = (
        "import sys, importlib, importlib.util, types\n"
        "sys.modules['grpc'] = sys.modules['google.protobuf'] = None  # any import of them now fails\n"
        "package = types.ModuleType('interceptors')\n"  # skip the package __init__, which adds the gRPC adapters
        "package.__path__ = [importlib.util.find_spec('interceptors').submodule_search_locations[0]]\n"
        "sys.modules['interceptors'] = package\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "from interceptors.engine import Executor\n"
        "from interceptors.engine._retry import RetryPolicy\n"
        "assert Executor(RetryPolicy()).call(lambda: 1) == 1\n"
        "loaded = [m for m, module in sys.modules.items() if module is not None]\n"
        "assert not [m for m in loaded if m == 'grpc' or m.startswith(('grpc.', 'google.protobuf'))], loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
