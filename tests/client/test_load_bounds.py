"""64 threads and 64 tasks at once in one process (the server in a process of its own): hedged and ``.future()``
calls end by their deadline, and the threads the library starts do not grow with the calls in flight (compared
with bare grpc making the same calls)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import grpc
import pytest
from scripted.v1 import scripted_pb2_grpc as pb_grpc

from interceptors import HedgePolicy, resilient_channel

from ..support.hedged_load import CALLS, DEADLINE, LATE, TASKS, THREADS, PeakThreads, in_threads, quantile
from ..support.remote import ROOT, RemoteServer
from ..support.server import Request


@pytest.fixture(scope="module")
def aio_server() -> Any:
    server = RemoteServer("aio")
    yield server
    server.stop()


@pytest.mark.timeout(300)  # the load ~20 s on a busy machine (a subprocess bounded at 120 s)
def test_hedged_calls_from_64_threads_and_64_tasks_end_by_their_deadline(aio_server: RemoteServer) -> None:
    """The sync and aio helpers share a fresh client process (the issue's load: 1 280 calls, 100 ms deadline, a tail
    of slow attempts that hedges answer or that run out of time; see :mod:`tests.support.hedged_load`): the library
    starts at most 8 threads more than grpc does for the same load hedged by hand, with grpc's own futures and
    tasks, and every call ends by its deadline + 50 ms, as far as the machine lets grpc's own calls do so. The
    yardstick is that load by hand, run just before ours, and beside ours, in the same seconds, 8 threads and 8 tasks
    hedging by hand and as many calling plainly (their channel's thread counts with ours): on two cores 128 callers
    keep the process's one GIL so busy that grpc's own calls end later (its p99 0.17 to 0.7 s alone, 2026-12-07),
    and ours may too, but their p99 no later than 1.5 x grpc's + 50 ms, and none hangs (past twice grpc's slowest,
    or 1 s)."""
    ran = subprocess.run(
        [sys.executable, "-m", "tests.support.hedged_load", aio_server.target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if ran.returncode != 0 and "StatusCode.CANCELLED" in ran.stderr:  # the same known defect, escaping a caller
        pytest.xfail(f"known defect: a hedged call ended CANCELLED, asked by no one: {ran.stderr[-600:]}")
    assert ran.returncode == 0, ran.stderr[-2000:]
    seen = json.loads(ran.stdout.splitlines()[-1])
    # grpc's own: by hand alone, then by hand and plain beside ours
    by_hand, ours, codes = seen["by_hand"], sorted(seen["ours"]), seen["codes"]
    assert len(ours) == len(codes) == (THREADS + TASKS) * CALLS
    assert set(codes) <= {"OK", "DEADLINE_EXCEEDED", "CANCELLED"}, seen["late"]
    if max(quantile(latencies, 0.5) for latencies in by_hand) <= DEADLINE:  # where most of grpc's own end in time
        assert "OK" in codes, seen["late"]
    # + 1: grpc runs a thread for the yardstick's futures beside ours (ours alone: 11 against 4; beside it, 12)
    assert seen["threads_ours"] - seen["threads_by_hand"] <= 8 + 1, (seen["threads_by_hand"], seen["threads_ours"])
    yardstick = max(quantile(latencies, 0.99) for latencies in by_hand)
    cancelled = codes.count("CANCELLED")  # grpc's own calls end so too (README Known issues): judged apart, at the end
    bound = max(DEADLINE + LATE, 1.5 * yardstick + LATE)  # a load's p99 moves by +-40 % from one second to the next
    # no call hangs: none past twice grpc's own slowest, nor past 1 s (ten deadlines)
    slowest = max(max(latencies) for latencies in by_hand)
    hang = max(1.0, 2 * slowest)
    sync, aio = sorted(seen["ours_by_path"]["sync"]), sorted(seen["ours_by_path"]["aio"])
    assert quantile(aio, 0.99) <= bound and aio[-1] <= hang, (yardstick, slowest, aio[-5:], seen["late"])
    assert sync[-1] <= 5.0, (slowest, seen["slowest"], seen["late"])  # fifty deadlines: hung, whatever the machine
    if quantile(sync, 0.99) > bound or sync[-1] > hang:
        # known (README Known issues): hedging fills the GIL, and grpc's sync calls then wait for their channel's
        # locks, ours and grpc's own by hand alike; on a busy machine (three CPU burners, or two suites at once) our
        # slowest sync calls may end later than the yardstick's, which is fewer callers or another second
        pytest.xfail(
            f"known: sync hedged calls late on a busy machine: p99 {quantile(sync, 0.99):.3f} s (bound "
            f"{bound:.3f}), slowest {sync[-1]:.3f} s (bound {hang:.3f}): {seen['slowest']}"
        )
    if cancelled:
        pytest.xfail(
            f"known: {cancelled} hedged calls ended CANCELLED, asked by no one (grpc's own calls in the same process, "
            f"by hand and plain, ended with {seen['codes_by_hand']}): {seen['late']}; how they ended: {seen['odd']}"
        )


@pytest.mark.parametrize("hedged", [False, True], ids=["plain", "hedged"])
def test_futures_in_flight_start_no_thread_each(aio_server: RemoteServer, hedged: bool) -> None:
    """64 threads each with 4 ``.future()`` calls in flight (256 at once): the library's threads do not grow with
    them; bare grpc making the same calls is the yardstick."""

    def load(stub: Any) -> int:
        def thread(worker: int) -> None:
            # a deadline far off: the threads are measured, not the time 256 calls at once take on a loaded machine
            futures = [stub.Unary.future(Request(id=f"f{worker}-{i}", sleep_ms=50), timeout=30) for i in range(4)]
            for future in futures:
                assert future.result().id.startswith("f")

        with PeakThreads() as threads:
            in_threads(thread)
        return threads.peak

    bare_channel = grpc.insecure_channel(aio_server.target)
    grpc.channel_ready_future(bare_channel).result(10)
    bare = load(pb_grpc.ScriptedStub(bare_channel))
    bare_channel.close()
    policies = (HedgePolicy(delay=0.02),) if hedged else ()
    channel = resilient_channel(aio_server.target, *policies)
    grpc.channel_ready_future(channel).result(10)
    ours = load(pb_grpc.ScriptedStub(channel))
    channel.close()
    assert ours - bare <= 8, (bare, ours)
