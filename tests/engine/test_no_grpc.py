"""The policy engine is transport-agnostic: no module in interceptors/engine/ imports grpc or protobuf."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import interceptors.engine

ENGINE = Path(interceptors.engine.__file__).parent


def test_every_engine_module_imports_without_grpc() -> None:
    modules = sorted(f"interceptors.engine.{path.stem}" for path in ENGINE.glob("*.py") if path.stem != "__init__")
    assert "interceptors.engine.retry" in modules and "interceptors.engine.circuit_breaker" in modules
    code = (
        "import sys, importlib, importlib.util, types\n"
        "sys.modules['grpc'] = sys.modules['google.protobuf'] = None  # any import of them now fails\n"
        "package = types.ModuleType('interceptors')\n"  # skip the package __init__, which adds the gRPC adapters
        "package.__path__ = [importlib.util.find_spec('interceptors').submodule_search_locations[0]]\n"
        "sys.modules['interceptors'] = package\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "from interceptors.engine import Executor\n"
        "from interceptors.engine.retry import RetryPolicy\n"
        "assert Executor(RetryPolicy()).call(lambda: 1) == 1\n"
        "loaded = [m for m, module in sys.modules.items() if module is not None]\n"
        "assert not [m for m in loaded if m == 'grpc' or m.startswith(('grpc.', 'google.protobuf'))], loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_engine_source_never_names_grpc() -> None:
    for path in ENGINE.glob("*.py"):
        imports = [line for line in path.read_text().splitlines() if line.startswith(("import ", "from "))]
        assert not [line for line in imports if "grpc" in line or "protobuf" in line], path
