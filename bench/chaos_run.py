"""``make chaos``: the chaos scenarios at full size (bench/chaos.py), sync and aio, through the recommended and the
composed chains, against the benchmark backend (a process of its own) behind a FaultProxy; a latency spike with
hedging and per-attempt timeouts; a soak. Writes bench/results/CHAOS.md (each figure beside its target), chaos.json
and the timelines of the blackhole and restart scenarios.

Usage: python -m bench.chaos_run [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from demo.v1 import service_b_pb2, service_b_pb2_grpc

from bench import soak
from bench.backend import Backend
from bench.chaos import (
    CHAINS,
    SLACK,
    SPIKE,
    SPIKE_CHAINS,
    Channel,
    Chaos,
    Run,
    Step,
    blackhole_steps,
    during,
    engagement,
    figures,
    freeze_steps,
    graceful_steps,
    kill_steps,
    reset_steps,
)
from bench.stats import percentile
from interceptors.engine import Policy
from interceptors.testing import FaultProxy

RESULTS = Path(__file__).resolve().parent / "results"
HELLO = service_b_pb2.HelloRequest(name="chaos")
SPIKE_RATE = 0.2


class Loop:
    """An event loop in a thread of its own, for the aio clients."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="chaos-aio", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def _scenario(
    kind: str,
    policies: tuple[Policy, ...],
    chaos: Chaos,
    loop: Loop,
    steps: Callable[[Backend, FaultProxy], list[Step]],
    **faults: float,
) -> tuple[Run, list[float]]:
    """One run: a backend (``faults``) behind a proxy, a channel through ``policies``, the load, the steps; the run
    and the arrival times of the calls the backend saw (its last process's)."""
    with Backend(grace=1.0, **faults) as backend, FaultProxy(backend.target) as proxy:
        channel = Channel(kind, proxy.address, policies, loop.loop if kind == "aio" else None)
        channel.ready()
        load = channel.load(service_b_pb2_grpc.ServiceBStub, "Hello", HELLO, chaos)
        run = during(load, Run(), steps(backend, proxy))
        channel.close()
    return run, backend.calls


def network_and_process(chaos: Chaos, scale: float, loop: Loop) -> list[dict[str, Any]]:
    """The five fault scenarios for each client kind and chain."""
    scenarios: dict[str, tuple[Callable[[Backend, FaultProxy], list[Step]], str, str | None, dict[str, float]]] = {
        "blackhole": (lambda b, p: blackhole_steps(p, scale), "blackhole", "lifted", {}),
        "reset": (lambda b, p: reset_steps(p, scale), "reset 0", None, {"delay": 0.05}),
        "kill and restart": (lambda b, p: kill_steps(b, scale), "killed", "restarted", {}),
        "freeze and thaw": (lambda b, p: freeze_steps(b, scale), "stopped", "continued", {}),
        "graceful stop": (lambda b, p: graceful_steps(b, scale), "stopping", "restarted", {"delay": 0.02}),
    }
    rows = []
    for name, (steps, fault, lifted, faults) in scenarios.items():
        for kind in ("sync", "aio"):
            for chain, make in CHAINS.items():
                run, arrivals = _scenario(kind, make(chaos), chaos, loop, steps, **faults)
                found = figures(run, chaos, lifted=lifted)
                if name in ("blackhole", "freeze and thaw"):
                    found.update(engagement(run, chaos, fault, lifted or "end"))
                if lifted is not None and name != "blackhole":  # a new process: when the first call reached it
                    at = run.at(lifted)
                    first = min((t for t in arrivals if t >= at), default=None)
                    found["first_arrival_ms"] = None if first is None else (first - at) * 1000
                whole = name in ("blackhole", "reset", "freeze and thaw")  # one backend process saw every attempt
                found["attempts_per_call"] = len(arrivals) / max(1, found["calls"]) if whole else None
                rows.append({"scenario": name, "kind": kind, "chain": chain, **found, "timeline": _timeline(run)})
    return rows


def spike(chaos: Chaos, seconds: float, loop: Loop) -> list[dict[str, Any]]:
    """20 % of attempts held 300 ms, at random: hedging and per-attempt timeouts against the p99 budget."""
    rows = []
    for kind in ("sync", "aio"):
        for chain, (make, budget) in SPIKE_CHAINS.items():
            run, arrivals = _scenario(
                kind,
                make(chaos),
                chaos,
                loop,
                lambda b, p: [(seconds, "end", lambda: None)],
                slow_rate=SPIKE_RATE,
                slow_delay=SPIKE,
                seed=11,
            )
            latencies = [o.latency for o in run.outcomes]
            p99 = percentile(latencies, 99)
            rows.append(
                {
                    "scenario": "latency spike",
                    "kind": kind,
                    "chain": chain,
                    "calls": len(latencies),
                    "outcomes": dict(run.counts()),
                    "p50_ms": percentile(latencies, 50) * 1000,
                    "p99_ms": p99 * 1000,
                    "max_ms": max(latencies) * 1000,
                    "p99_budget_ms": budget * 1000,
                    "within_budget": p99 <= budget,
                    "attempts_per_call": len(arrivals) / max(1, len(latencies)),
                    "exceptions": run.exceptions(),
                }
            )
    return rows


def _timeline(run: Run, step: float = 0.1) -> dict[str, Any]:
    """Calls by outcome and the slowest, per ``step`` seconds from the first call; the switches."""
    if not run.outcomes:
        return {"bins": [], "switches": []}
    origin = run.outcomes[0].start
    bins: dict[int, dict[str, float]] = {}
    for o in run.outcomes:
        b = bins.setdefault(int((o.start - origin) / step), {"ok": 0, "fallback": 0, "error": 0, "slowest_ms": 0.0})
        key = "ok" if o.result == "OK" else "fallback" if o.result == "fallback" else "error"
        b[key] += 1
        b["slowest_ms"] = max(b["slowest_ms"], o.latency * 1000)
    return {
        "step": step,
        "bins": [
            {"t": i * step, **bins.get(i, {"ok": 0, "fallback": 0, "error": 0, "slowest_ms": 0.0})}
            for i in range(max(bins) + 1)
        ],
        "switches": [(t - origin, name) for t, name in run.switches],
    }


def _plot(rows: list[dict[str, Any]], scenario: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["scenario"] == scenario]
    fig, axes = plt.subplots(len(shown), 1, figsize=(10, 2.2 * len(shown)), sharex=True, squeeze=False)
    for ax, row in zip(axes[:, 0], shown, strict=True):
        bins = row["timeline"]["bins"]
        t = [b["t"] for b in bins]
        ax.stackplot(
            t,
            [b["ok"] for b in bins],
            [b["fallback"] for b in bins],
            [b["error"] for b in bins],
            labels=["OK", "fallback", "error"],
            colors=["#4c9a2a", "#e0a526", "#c0392b"],
            step="post",
        )
        slow = ax.twinx()
        slow.plot(t, [b["slowest_ms"] for b in bins], color="black", linewidth=0.8)
        slow.set_ylabel("slowest ms", fontsize=7)
        for at, name in row["timeline"]["switches"]:
            ax.axvline(at, color="grey", linestyle="--", linewidth=0.8)
            ax.text(at, ax.get_ylim()[1] * 0.9, name, fontsize=7)
        ax.set_title(f"{row['kind']}, {row['chain']}", fontsize=8)
        ax.set_ylabel("calls / 100 ms", fontsize=7)
    axes[0, 0].legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def report(results: dict[str, Any]) -> str:
    chaos = results["chaos"]
    out = [
        "# Chaos: the library under real faults",
        "",
        f"Generated by `make chaos` on {results['date']} ({results['machine']}). Each scenario: "
        f"{chaos['workers']} callers (threads for sync, tasks for aio) at {chaos['rate']:g} calls/s in all, "
        f"deadline {chaos['deadline'] * 1000:g} ms, breaker delay {chaos['breaker_delay'] * 1000:g} ms, "
        "the benchmark backend in a process of its own behind a `FaultProxy`.",
        "",
        "Chains: *recommended* (RetryPolicy(3, budget) > AdaptiveThrottle(3) > CircuitBreaker(80 % of 20)) and "
        "*composed* (Fallback > RetryPolicy(3) > CircuitBreaker(5) > Timeout(deadline)).",
        "",
        f"Targets: every call ends by its deadline + {SLACK * 1000:g} ms (+ the longest the machine held a caller "
        "past the time it was paced to start a call, measured in the same run); nothing but a `grpc.RpcError` "
        "reaches a caller; once the breaker engages only its probes are slow; the first real answer after the fault "
        "lifts within two breaker delays + 1 s (a restarted process's start-up and grpc's reconnect backoff; when the "
        "first call reached the new process is reported apart).",
        "",
        "| scenario | client | chain | calls | outcomes | p50 / p99 / max ms | within deadline | exceptions | "
        "engaged after ms (slow / probes allowed) | recovery ms (bound) | first call reaches the backend after ms | "
        "attempts reaching the backend per call |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["faults"]:
        engaged = (
            f"{r['engaged_ms']:.0f} ({r['slow_after']} / {r['probes_allowed']:.1f}): {_met(r['fails_fast'])}"
            if r.get("engaged_ms") is not None
            else ("never: **missed**" if "engaged_ms" in r else "")
        )
        recovery = (
            f"{r['recovery_ms']:.0f} ({r['recovery_bound_ms']:.0f}): {_met(r['recovered'])}"
            if r.get("recovery_ms") is not None
            else ("none: **missed**" if "recovery_ms" in r else "")
        )
        arrival = f"{r['first_arrival_ms']:.0f}" if r.get("first_arrival_ms") is not None else ""
        attempts = f"{r['attempts_per_call']:.2f}" if r.get("attempts_per_call") is not None else ""
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items()))
        out.append(
            f"| {r['scenario']} | {r['kind']} | {r['chain']} | {r['calls']} | {outcomes} | "
            f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f} / {r['max_ms']:.0f} | {_met(r['within_deadline'])} | "
            f"{len(r['exceptions'])}: {_met(not r['exceptions'])} | {engaged} | {recovery} | {arrival} | {attempts} |"
        )
    out += [
        "",
        "After a restart, the first call reaches the new process after grpc's reconnect backoff (1 s ± 20 % once a "
        "connection attempt has failed), which is most of the recovery time; a channel option "
        "(`grpc.initial_reconnect_backoff_ms`) shortens it at the price of more connection attempts against a "
        "backend that is down, so the helpers leave grpc's default. Attempts per call are given where one backend "
        "process saw every attempt.",
        "",
        "![blackhole](chaos_blackhole.png)",
        "",
        "![kill and restart](chaos_restart.png)",
        "",
        f"## Latency spike: {SPIKE_RATE:.0%} of attempts held {SPIKE * 1000:g} ms, at random",
        "",
        "| client | chain | calls | p50 / p99 / max ms | p99 budget | attempts per call | exceptions |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["spike"]:
        out.append(
            f"| {r['kind']} | {r['chain']} | {r['calls']} | {r['p50_ms']:.0f} / {r['p99_ms']:.0f} / "
            f"{r['max_ms']:.0f} | {r['p99_budget_ms']:.0f} ms: {_met(r['within_budget'])} | "
            f"{r['attempts_per_call']:.3f} | {len(r['exceptions'])} |"
        )
    s = results["soak"]
    growth = ", ".join(f"{k} {v:+.1f} (bound {s['bounds'][k]:g})" for k, v in s["growth"].items())
    out += [
        "",
        f"## Soak: {s['calls']} mixed calls in {s['seconds']:.0f} s (sync and aio at once)",
        "",
        "Outcomes: "
        + ", ".join(f"{k} {v}" for k, v in sorted(s["outcomes"].items()))
        + "; inside: "
        + ", ".join(f"{k} {v}" for k, v in sorted(s["events"].items()))
        + ".",
        "",
        f"Growth over the second half of the calls (pools fill up in the first): {growth}: "
        f"{_met(s['within_bounds'])}. Peak: "
        + ", ".join(f"{k} {v:.1f}" for k, v in s["peak"].items())
        + ". `make soak` runs a million calls.",
        "",
    ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller: for a look, not for the record")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    chaos = Chaos(deadline=0.3, breaker_delay=0.5, workers=8 if args.quick else 16, rate=80 if args.quick else 160)
    scale = 1.0 if args.quick else 2.0
    loop = Loop()
    started = time.monotonic()
    try:
        faults = network_and_process(chaos, scale, loop)
        spiked = spike(Chaos(deadline=1.0, workers=chaos.workers, rate=chaos.rate), 3.0 * scale, loop)
    finally:
        loop.close()
    soaked = soak.run(calls=20_000 if args.quick else 200_000)
    import platform

    results = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "seconds": time.monotonic() - started,
        "chaos": chaos.__dict__,
        "faults": faults,
        "spike": spiked,
        "soak": soaked,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    _plot(faults, "blackhole", args.out / "chaos_blackhole.png")
    _plot(faults, "kill and restart", args.out / "chaos_restart.png")
    (args.out / "chaos.json").write_text(json.dumps(results, indent=1, default=str))
    (args.out / "CHAOS.md").write_text(report(results))
    missed = [
        f"{r['scenario']} {r['kind']} {r['chain']}"
        for r in faults
        if r["exceptions"]
        or not r["within_deadline"]
        or not r.get("recovered", True)
        or not r.get("fails_fast", True)
        or not r.get("answers_after_recovery", True)
    ]
    missed += [f"spike {r['kind']} {r['chain']}" for r in spiked if r["exceptions"] or not r["within_budget"]]
    if not soaked["within_bounds"] or any(k.startswith("exception:") for k in soaked["outcomes"]):
        missed.append("soak")
    print(f"wrote {args.out / 'CHAOS.md'} in {results['seconds']:.0f} s")
    if missed:
        raise SystemExit("chaos: targets missed: " + "; ".join(missed))


if __name__ == "__main__":
    main()
