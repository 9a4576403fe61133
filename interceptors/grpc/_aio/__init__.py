"""grpc.aio client interceptors: the policy engine on every asyncio call path.

grpc.aio files an interceptor under one kind only (grpc/grpc#31442), so :func:`resilience_interceptors` returns
four single-kind adapters sharing one router; they use the very policy objects a sync channel may use too.
:func:`resilient_channel` runs unary calls without grpc's interceptor machinery (a task per call): the policies
run in the task that awaits the call. Either way, cancelling the task that awaits a call (``task.cancel()``,
``asyncio.wait_for``, ``gather``, a ``TaskGroup``) cancels the attempt in flight and every later one, as it
cancels a bare grpc.aio call.

The flavour's modules, each calling on the ones before it, named as the sync flavour's twins: :mod:`.ended`,
:mod:`.attempts`, :mod:`.calls` (unary and client-streaming calls), :mod:`.streams` (streamed responses) and
:mod:`.client` (the interceptors and the channel).
"""
