"""A server's load as ORCA reports it (gRFC A51), and the recorder an application writes its part of it to.

What may be recorded (a value breaking the rule is refused, logged once per field, and never sent):

- ``cpu_utilization``, ``application_utilization``: finite, at least 0 (above 1 is allowed: A51 leaves their scale
  to the server), at most :data:`MAX_VALUE`;
- ``memory_utilization`` and each ``utilization[name]``: finite, between 0 and 1;
- ``qps``, ``eps`` (calls and failed calls per second): finite, between 0 and :data:`MAX_VALUE`;
- each ``named_metrics[name]`` and ``request_cost[name]``: finite, of magnitude at most :data:`MAX_VALUE`;
- names: non-empty strings of at most :data:`MAX_NAME` characters that UTF-8 can encode, at most :data:`MAX_NAMES`
  in each map.
"""

from __future__ import annotations

import logging
import math
import numbers
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from . import _options as options

__all__ = ["MAX_NAME", "MAX_NAMES", "MAX_VALUE", "LoadRecorder", "LoadReport", "allowed", "name_allowed"]

MAX_VALUE = 1e9
"""The largest magnitude a recorded value may have: a bigger one is a bug, not a load."""
MAX_NAMES = 64
"""The most names each of a report's maps holds: their memory and every report's size are bounded."""
MAX_NAME = 128
"""The longest name a map's entry may have."""

_NOTHING: Mapping[str, float] = MappingProxyType({})
_log = logging.getLogger("interceptors.server")
_warned: set[str] = set()


@dataclass(frozen=True, slots=True)
class LoadReport:
    """A server's load, as an ORCA report (``xds.data.orca.v3.OrcaLoadReport``) carries it; None or empty: not
    reported. ``qps`` travels as the report's ``rps_fractional``."""

    cpu_utilization: float | None = None
    memory_utilization: float | None = None
    application_utilization: float | None = None
    qps: float | None = None
    eps: float | None = None
    utilization: Mapping[str, float] = field(default_factory=lambda: _NOTHING)
    request_cost: Mapping[str, float] = field(default_factory=lambda: _NOTHING)
    named_metrics: Mapping[str, float] = field(default_factory=lambda: _NOTHING)

    def over(self, other: LoadReport) -> LoadReport:
        """This report's values where it has them, ``other``'s elsewhere (maps merged, this one's names winning)."""
        if other == EMPTY:
            return self
        values: dict[str, Any] = {}
        for item in fields(self):
            mine, theirs = getattr(self, item.name), getattr(other, item.name)
            if isinstance(mine, Mapping):
                values[item.name] = MappingProxyType({**theirs, **mine}) if mine and theirs else mine or theirs
            else:
                values[item.name] = theirs if mine is None else mine
        return LoadReport(**values)


EMPTY = LoadReport()
_FIELDS = tuple(item.name for item in fields(LoadReport))
_SCALARS = ("cpu_utilization", "memory_utilization", "application_utilization", "qps", "eps")
_MAPS = ("utilization", "request_cost", "named_metrics")
_FRACTIONS = ("memory_utilization", "utilization")
_SIGNED = ("request_cost", "named_metrics")
_RANGES = {
    group: f"[{-MAX_VALUE if group in _SIGNED else 0:g}, {1 if group in _FRACTIONS else MAX_VALUE:g}]"
    for group in _SCALARS + _MAPS
}


def _replaced(report: LoadReport, changes: dict[str, Any]) -> LoadReport:
    """``report`` with ``changes`` (dataclasses.replace, without its introspection: this runs in handlers)."""
    return LoadReport(**{name: changes.get(name, getattr(report, name)) for name in _FIELDS})


def _refused(name: str, value: object, rule: str) -> None:
    if name not in _warned and len(_warned) < 1000:
        _warned.add(name)
        _log.warning("load report: %s=%s refused (%s); it is not sent", name, options.shown(value), rule)


def allowed(group: str, value: object) -> float | None:
    """``value`` as a float if the module's rule lets it be reported in ``group``, else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        number = float(value)
    except (OverflowError, ValueError, TypeError):
        return None
    lowest = -MAX_VALUE if group in _SIGNED else 0.0
    highest = 1.0 if group in _FRACTIONS else MAX_VALUE
    return number if math.isfinite(number) and lowest <= number <= highest else None


def _accepted(name: str, value: object, group: str) -> float | None:
    """``value`` as a float if it may be reported as ``name`` of ``group``; logs it if not."""
    number = allowed(group, value)
    if number is None:
        _refused(name, value, "not a finite number" if not _finite(value) else f"outside {_RANGES[group]}")
    return number


def _finite(value: object) -> bool:
    try:
        return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(float(value))
    except (OverflowError, ValueError, TypeError):
        return False


def name_allowed(name: object) -> bool:
    """Whether ``name`` may name an entry of a report's map (see the module's rule)."""
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: protobuf could not send it
        return False
    return True


class LoadRecorder:
    """What an application records of its load, for the reports: values it sets stay until set again or cleared.

    Thread-safe. Values breaking the rule of :mod:`this module <interceptors.engine._load>` are refused (logged,
    never sent): recording never raises into a handler.
    """

    __slots__ = ("_lock", "_report", "version")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._report = EMPTY
        self.version: int = 0
        """Changes whenever a value does."""

    @property
    def report(self) -> LoadReport:
        """The values recorded so far."""
        return self._report

    def record(
        self,
        *,
        cpu_utilization: float | None = None,
        memory_utilization: float | None = None,
        application_utilization: float | None = None,
        qps: float | None = None,
        eps: float | None = None,
        utilization: Mapping[str, float] | None = None,
        request_cost: Mapping[str, float] | None = None,
        named_metrics: Mapping[str, float] | None = None,
    ) -> None:
        """Set the values given (None: leave as it is); the maps' entries are added to those recorded."""
        changes: dict[str, Any] = {}
        for name, value in (
            ("cpu_utilization", cpu_utilization),
            ("memory_utilization", memory_utilization),
            ("application_utilization", application_utilization),
            ("qps", qps),
            ("eps", eps),
        ):
            if value is not None:
                number = _accepted(name, value, name)
                if number is not None:
                    changes[name] = number
        maps = (("utilization", utilization), ("request_cost", request_cost), ("named_metrics", named_metrics))
        with self._lock:
            report = self._report
            for group, entries in maps:
                if entries is not None:
                    changes[group] = self._merged(group, getattr(report, group), entries)
            if changes:
                self._report = _replaced(report, changes)
                self.version += 1

    def clear(self, *names: str) -> None:
        """Forget the values of the fields ``names`` (none: all of them)."""
        unknown = [name for name in names if name not in _SCALARS + _MAPS]
        if unknown:
            raise ValueError(f"clear: no such field {unknown[0]!r}; the fields are {', '.join(_SCALARS + _MAPS)}")
        with self._lock:
            cleared: dict[str, Any] = {name: (_NOTHING if name in _MAPS else None) for name in names}
            self._report = _replaced(self._report, cleared) if names else EMPTY
            self.version += 1

    @staticmethod
    def _merged(group: str, kept: Mapping[str, float], entries: Mapping[str, float]) -> Mapping[str, float]:
        if not isinstance(entries, Mapping):
            _refused(group, entries, "not a mapping of names to numbers")
            return kept
        merged = dict(kept)
        for name, value in entries.items():
            if not name_allowed(name):
                _refused(group, name, f"a name must be a string of 1 to {MAX_NAME} characters, in UTF-8")
            elif name not in merged and len(merged) >= MAX_NAMES:
                _refused(f"{group}[{name}]", value, f"{group} holds {MAX_NAMES} names at most")
            else:
                number = _accepted(f"{group}[{name}]", value, group)
                if number is not None:
                    merged[name] = number
        return MappingProxyType(merged)
