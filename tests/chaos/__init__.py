from bench.chaos import Chaos

CHAOS = Chaos(deadline=0.3, breaker_delay=0.5, workers=4, rate=40, slack=0.3)
"""``make chaos`` holds calls to their deadline + 50 ms; here, where the suite runs in eight workers and may share the
2 cores with another suite, a call is late only past 300 ms and the longest the machine held the load's own callers
late (``Run.lateness``: two suites at once held an aio loop past 300 ms): it is the hang that is tested (a hung call
waits seconds), the latency is measured there."""
