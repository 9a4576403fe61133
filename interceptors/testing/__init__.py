"""Test helpers: a clock whose sleeps take no real time (:class:`FakeClock`, also grpcio-testing's time); the
policies over grpcio-testing's channel (:func:`resilient_testing_channel`), so that a unit test plays the server
with no sockets; and a TCP proxy whose network faults a test switches while calls flow through it
(:class:`FaultProxy`) — to try a chain of policies against a network that drops, delays, resets and refuses, on
loopback, with no root and nothing but the standard library."""

from ._clock import FakeClock
from ._fault_proxy import FaultProxy
from ._grpc_testing import resilient_testing_channel

__all__ = ["FakeClock", "FaultProxy", "resilient_testing_channel"]
