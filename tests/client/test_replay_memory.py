"""A request stream far larger than its replay buffer keeps the client's memory bounded: 100 MiB of requests
against a 1 MiB bound, in a process of its own so that its peak resident memory is its own."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = r"""
import asyncio, resource, sys
from concurrent import futures

import grpc
from scripted.v1 import scripted_pb2 as pb, scripted_pb2_grpc as pb_grpc

import interceptors, interceptors.aio

MIB = 1 << 20
COUNT, SIZE = 1600, 64 * 1024  # 100 MiB of requests


class Service(pb_grpc.ScriptedServicer):
    def ClientStream(self, request_iterator, context):
        received = sum(len(r.text) for r in request_iterator)
        return pb.Reply(index=received // SIZE)


def requests():
    for _ in range(COUNT):
        yield pb.Request(text="x" * SIZE)


def resident():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def peak_resident():  # VmHWM: this process's own high-water mark (ru_maxrss may carry a parent's over exec)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))


server = grpc.server(futures.ThreadPoolExecutor(4), options=[("grpc.max_receive_message_length", 4 * MIB)])
pb_grpc.add_ScriptedServicer_to_server(Service(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
target = f"127.0.0.1:{port}"
chain = (interceptors.RetryPolicy(), interceptors.CircuitBreaker())


async def aio_call():
    async with interceptors.aio.resilient_channel(target, *chain, replay_buffer=MIB) as channel:
        stub = pb_grpc.ScriptedStub(channel)
        await stub.ClientStream(iter([pb.Request(text="warm")]))
        before = resident()
        return before, await stub.ClientStream(requests())


if sys.argv[1] == "aio":
    before, reply = asyncio.run(aio_call())
else:
    with interceptors.resilient_channel(target, *chain, replay_buffer=MIB) as channel:
        stub = pb_grpc.ScriptedStub(channel)
        stub.ClientStream(iter([pb.Request(text="warm")]))
        before = resident()
        reply = stub.ClientStream(requests())
peak = peak_resident()
server.stop(None)
print(reply.index, round((peak - before) / MIB, 1))
"""


@pytest.mark.parametrize("client", ["sync", "aio"])
def test_a_100_mib_request_stream_stays_within_a_1_mib_replay_buffer(client: str) -> None:
    ran = subprocess.run([sys.executable, "-c", SCRIPT, client], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    received, growth_mib = ran.stdout.split()
    assert int(received) == 1600  # every request reached the server, once
    assert float(growth_mib) < 40, f"peak resident memory grew by {growth_mib} MiB for a 1 MiB buffer"
