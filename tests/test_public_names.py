"""Every module under interceptors/ imports, and every name its ``__all__`` lists resolves: ``from module import *``
works, and each name is an attribute of the module."""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from types import ModuleType

import pytest

import interceptors

MODULES = sorted(
    ["interceptors", *(m.name for m in pkgutil.walk_packages(interceptors.__path__, prefix="interceptors."))]
)


def test_every_module_is_found() -> None:
    assert {"interceptors.engine", "interceptors.engine._options", "interceptors.grpc._pushback"} <= set(MODULES)
    assert {"interceptors.testing._fault_proxy", "interceptors.aio", "interceptors.otel"} <= set(MODULES)


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


FACES = [
    "interceptors",
    "interceptors.aio",
    "interceptors.engine",
    "interceptors.events",
    "interceptors.fleet",
    "interceptors.grpc",
    "interceptors.otel",
    "interceptors.server",
    "interceptors.testing",
    "interceptors.typing",
]
"""The public modules: the rest are private rooms (a leading underscore) whose names one of these hands on."""


def test_only_the_faces_are_public_modules() -> None:
    public = [name for name in MODULES if not any(part.startswith("_") for part in name.split(".")[1:])]
    assert public == FACES


def test_every_public_name_has_one_home() -> None:
    """No class, function or constant is listed by two faces (the sync and aio ``resilient_channel`` are two
    functions of one name, each at home in its own face)."""
    homes: dict[object, list[str]] = {}
    for face in FACES:
        module = importlib.import_module(face)
        for name in module.__all__:
            value = getattr(module, name)
            key = id(value) if callable(value) else (name, repr(value))
            homes.setdefault(key, []).append(f"{face}.{name}")
    assert [places for places in homes.values() if len(places) > 1] == []


def test_the_version_has_one_source() -> None:
    """``interceptors.__version__`` is what the build reads (pyproject: ``dynamic = ["version"]``)."""
    assert interceptors.__version__ == importlib.metadata.version("grpc-resilience-interceptors")
