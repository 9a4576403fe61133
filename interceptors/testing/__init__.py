"""Test helpers: a clock whose sleeps take no real time (:class:`FakeClock`), and a TCP proxy whose network faults
a test switches while calls flow through it (:class:`FaultProxy`) — to try a chain of policies against a network
that drops, delays, resets and refuses, on loopback, with no root and nothing but the standard library."""

from ._clock import FakeClock
from ._fault_proxy import FaultProxy

__all__ = ["FakeClock", "FaultProxy"]
