"""make bench-compare BEFORE=<revision>: the healthy path of an earlier version of the library beside this one.

A change must not slow a healthy call, but loopback calls on a small machine move by a few percent between runs
(and between channels), more than a change usually does. So the two versions are measured in one session, in
turns: round 1 times the version at ``BEFORE`` (a git worktree of that revision), then the working tree
(uncommitted changes included); round 2 the other way round; and so on. Each version runs in a process of its
own that imports its own ``interceptors`` and calls the one backend, with the healthy suite's paired batches
(:func:`bench.stats.paired`: each batch beside a bare channel's). The measuring code (this module, bench.stats,
the demo's stubs) is the working tree's for both. Per path and version: the median over the rounds of each
round's median ratio to the bare channel, the range of those, and the median CPU per call beyond the bare
channel's. grpc's hooks alone (an interceptor that only calls on) are the same code in both versions: how far
apart they come out is the drift that remains.

The paths are defined here, not taken from bench.approaches, which imports the working tree's ``interceptors``
and names that earlier versions lack: a version needs ``resilient_channel``, ``ResilienceInterceptor``,
``interceptors.aio.resilient_channel`` and ``resilience_interceptors``, and the policies' present options.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from bench.backend import ROOT, Backend
from bench.passthrough import AioPassThrough, PassThrough
from bench.stats import BARE, Batch, measure, paired

PATHS = (
    "ours: retry",
    "ours: fallback > retry > breaker > timeout",
    "ours: composed, intercepted",
    "grpc: a pass-through interceptor",
)
"""As bench.approaches names them: helpers' channels, then grpc's hooks with ours and with one that only calls on."""
SIDES = ("before", "after")


def compare(before: str, rounds: int = 4, batches: int = 30, calls: int = 100) -> dict[str, Any]:
    """``{"before": {"sync" | "aio": {path: {"ratio", "range", "cpu"}}, "version": file}, "after": ...}`` for the
    git revision ``before`` and the working tree (see the module's docstring); ``version`` is where each side's
    ``interceptors`` was imported from. Raises ValueError for a revision git does not know."""
    commit = _git("rev-parse", "--verify", "--quiet", f"{before}^{{commit}}", error=f"no such revision: {before}")
    with tempfile.TemporaryDirectory() as scratch, Backend() as backend:
        worktree = Path(scratch, "before")
        _git("worktree", "add", "--detach", "--quiet", str(worktree), commit)
        roots = {"before": worktree, "after": ROOT}
        rounds_of: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
        try:
            for round_ in range(rounds):
                for side in SIDES if round_ % 2 == 0 else SIDES[::-1]:
                    rounds_of[side].append(_measured(roots[side], backend.target, batches, calls))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, capture_output=True)
            subprocess.run(["git", "worktree", "prune"], cwd=ROOT, capture_output=True)
    return {side: _summary(measured) for side, measured in rounds_of.items()}


def _git(*arguments: str, error: str = "git failed") -> str:
    done = subprocess.run(["git", *arguments], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise ValueError(f"{error} ({done.stderr.strip() or 'git ' + ' '.join(arguments)})")
    return done.stdout.strip()


def _measured(root: Path, target: str, batches: int, calls: int) -> dict[str, Any]:
    """One version's paired batches, from a process of its own; its errors pass through to the console."""
    command = [sys.executable, "-m", "bench.compare", "--measure", str(root), target, str(batches), str(calls)]
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if done.returncode:
        raise RuntimeError(f"measuring the version in {root} failed (exit status {done.returncode}; see above)")
    measured: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return measured


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {
        flavour: {
            path: {
                "ratio": statistics.median(r[flavour][path]["ratio"]["median"] for r in rounds),
                "range": [f(r[flavour][path]["ratio"]["median"] for r in rounds) for f in (min, max)],
                "cpu": statistics.median(r[flavour][path]["cpu_over_bare"]["median"] for r in rounds),
            }
            for path in PATHS
        }
        for flavour in ("sync", "aio")
    }
    return summary | {"version": rounds[0]["version"]}


def table(compared: dict[str, Any], before: str) -> str:
    """The comparison as text, a line per path: each version's ratio to a bare channel [range over the rounds] and
    CPU per call beyond it, then after / before."""
    lines = [
        f"healthy path: {before} (before) beside the working tree (after), in turns; median ratio to a bare "
        "channel [range over rounds], CPU per call beyond the bare channel's; grpc's pass-through interceptor is the "
        "same code in both: its difference is the drift that remains"
    ]
    for flavour in ("sync", "aio"):
        for path in PATHS:
            sides = [compared[side][flavour][path] for side in SIDES]
            cells = [f"{c['ratio']:.3f}x [{c['range'][0]:.3f}-{c['range'][1]:.3f}] {c['cpu']:+5.1f} us" for c in sides]
            change = sides[1]["ratio"] / sides[0]["ratio"]
            lines.append(f"  {flavour:4s} {path:42s} before {cells[0]}  after {cells[1]}  after/before {change:.3f}")
    return "\n".join(lines)


# -- one version, in a process of its own --------------------------------------------------------------------------


def _one_version(root: str, target: str, batches: int, calls: int) -> dict[str, Any]:
    """The paired batches of each path of the ``interceptors`` found in ``root``."""
    sys.path.insert(0, root)
    import interceptors
    import interceptors.aio

    sys.path.remove(root)
    if not Path(interceptors.__file__).resolve().is_relative_to(Path(root).resolve()):
        raise RuntimeError(f"imported {interceptors.__file__}, not the version in {root}")
    from demo.v1 import service_b_pb2

    request, no_retries = service_b_pb2.HelloRequest(name="bench"), [("grpc.enable_retries", 0)]

    def retry() -> Any:
        return interceptors.RetryPolicy(max_attempts=3, delay=interceptors.Backoff(0.1, 1.0))

    def composed() -> tuple[Any, ...]:
        breaker = interceptors.CircuitBreaker(failure_threshold=5, delay=1.0)
        return interceptors.Fallback(), retry(), breaker, interceptors.Timeout(1.0)

    sync_channels: dict[str, Callable[[], Any]] = {
        BARE: lambda: grpc.insecure_channel(target, options=no_retries),
        PATHS[0]: lambda: interceptors.resilient_channel(target, retry()),
        PATHS[1]: lambda: interceptors.resilient_channel(target, *composed()),
        PATHS[2]: lambda: grpc.intercept_channel(
            grpc.insecure_channel(target, options=no_retries), interceptors.ResilienceInterceptor(*composed())
        ),
        PATHS[3]: lambda: grpc.intercept_channel(grpc.insecure_channel(target, options=no_retries), PassThrough()),
    }
    aio_channels: dict[str, Callable[[], Any]] = {
        BARE: lambda: grpc.aio.insecure_channel(target, options=no_retries),
        PATHS[0]: lambda: interceptors.aio.resilient_channel(target, retry()),
        PATHS[1]: lambda: interceptors.aio.resilient_channel(target, *composed()),
        PATHS[2]: lambda: grpc.aio.insecure_channel(
            target, options=no_retries, interceptors=interceptors.aio.resilience_interceptors(*composed())
        ),
        PATHS[3]: lambda: grpc.aio.insecure_channel(target, options=no_retries, interceptors=[AioPassThrough()]),
    }

    def sync_batch(hello: Any) -> Callable[[], Batch]:
        def run() -> None:
            for _ in range(calls):
                hello(request, timeout=5.0)

        return measure(run, calls)

    loop = asyncio.new_event_loop()

    def aio_batch(hello: Any) -> Callable[[], Batch]:
        async def run() -> None:
            for _ in range(calls):
                await hello(request, timeout=5.0)

        return measure(lambda: loop.run_until_complete(run()), calls)

    sync_made = {path: make() for path, make in sync_channels.items()}
    aio_made = loop.run_until_complete(_made(aio_channels))
    results: dict[str, Any] = {
        "sync": _paired(sync_made, sync_batch, batches),
        "aio": _paired(aio_made, aio_batch, batches),
    }
    for channel in sync_made.values():
        channel.close()
    for channel in aio_made.values():
        loop.run_until_complete(channel.close())
    loop.close()
    return results | {"version": interceptors.__file__}


async def _made(channels: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    return {path: make() for path, make in channels.items()}  # grpc.aio channels are made in a running loop


def _paired(channels: dict[str, Any], batch: Callable[[Any], Callable[[], Batch]], batches: int) -> dict[str, Any]:
    from demo.v1 import service_b_pb2_grpc

    runs = {path: batch(service_b_pb2_grpc.ServiceBStub(channel).Hello) for path, channel in channels.items()}
    for run in runs.values():
        run()  # connect and warm up
    bare = runs.pop(BARE)
    return paired(batches, bare, runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", nargs="?", default="HEAD", help="the git revision to compare (default: HEAD)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds, every other one taking the versions in turn")
    parser.add_argument("--batches", type=int, default=30, help="paired batches per path and round")
    parser.add_argument("--calls", type=int, default=100, help="calls per batch")
    parser.add_argument("--measure", nargs=4, metavar=("ROOT", "TARGET", "BATCHES", "CALLS"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.measure:
        root, target, batches, calls = arguments.measure
        print(json.dumps(_one_version(root, target, int(batches), int(calls))))
        return
    try:
        compared = compare(arguments.before, arguments.rounds, arguments.batches, arguments.calls)
    except (ValueError, RuntimeError) as error:
        raise SystemExit(f"bench.compare: {error}") from None
    print(table(compared, arguments.before))


if __name__ == "__main__":
    main()
