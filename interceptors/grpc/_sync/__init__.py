"""Sync gRPC client interceptor: the policy engine on every sync call path.

Blocking calls (``stub.M(req)``, ``stub.M.with_call(req)``) run the policies in the caller's thread; a hedged method's
hedges are grpc futures, started by the library's timer (see :mod:`interceptors.engine._hedge`), and the caller's thread
waits for its own attempt (see :func:`.attempts._hedged_attempt`), so that a winner can cancel the others.
``.future()`` calls return at once: their policies run as a task of the library's one background event loop (see
:mod:`interceptors.engine._loop`), each attempt a grpc future whose end wakes the loop, so that calls in flight cost no
thread; cancelling the future cancels the attempt in flight and every later one. Streams run their policies until they
commit in a worker thread (their first message can only be waited for by a blocking read).

In a handler with context propagation, an incoming call's cancellation cancels the calls made for it as
``cancel()`` would: their blocking calls then send each attempt as a grpc future, so that the attempt in flight
can be cancelled.

The flavour's modules, each calling on the ones before it: :mod:`.ended` (calls that have ended), :mod:`.attempts`
(sending and waiting for attempts), :mod:`.calls` (``.future()``), :mod:`.streams` (streamed responses) and
:mod:`.client` (the interceptor and the channel).
"""
