"""Every module under interceptors/ imports, and every name its ``__all__`` lists resolves: ``from module import *``
works, and each name is an attribute of the module."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import pytest

import interceptors

MODULES = sorted(
    ["interceptors", *(m.name for m in pkgutil.walk_packages(interceptors.__path__, prefix="interceptors."))]
)


def test_every_module_is_found() -> None:
    assert {"interceptors.engine", "interceptors.engine.options", "interceptors.grpc._pushback"} <= set(MODULES)
    assert {"interceptors.testing.fault_proxy", "interceptors.aio", "interceptors.otel"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_every_name_in_all_resolves(name: str) -> None:
    module: ModuleType = importlib.import_module(name)
    listed = getattr(module, "__all__", None)
    if listed is None:
        return
    assert all(isinstance(entry, str) for entry in listed), f"{name}.__all__ holds only names: {listed!r}"
    assert len(set(listed)) == len(listed), f"{name}.__all__ names each once: {listed!r}"
    missing = [entry for entry in listed if not hasattr(module, entry)]
    assert not missing, f"{name}.__all__ lists names {name} does not define: {missing}"
    namespace: dict[str, object] = {}
    exec(f"from {name} import *", namespace)  # what users write
    assert set(listed) <= set(namespace)
