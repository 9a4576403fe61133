"""Server interceptors that admit or refuse each call before its handler runs (load shedding, quotas), for sync and
aio servers and every kind of call: a refusal ends the call at once, Trailers-Only, with its code, details and
trailers (a pushback); an admitted call is told how it ended. Health checks (``grpc.health.v1.Health``) and server
reflection and the ORCA load reports stream are never refused."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, NamedTuple

import grpc

from ._handlers import Behavior, aio_responses, awaited, wrapped
from ._orca import ORCA_METHOD

__all__ = ["NEVER_REFUSED", "Admitting", "AioAdmitting", "End", "Refusal", "nothing_to_end"]

NEVER_REFUSED = ("/grpc.health.v1.Health/", "/grpc.reflection.", ORCA_METHOD)

End = Callable[[BaseException | None], None]
"""Ends an admitted call: how it ended (None: answered), or the error the handler raised."""


class Refusal(NamedTuple):
    code: grpc.StatusCode
    details: str
    trailers: tuple[tuple[str, str | bytes], ...]


def nothing_to_end(failure: BaseException | None) -> None:
    """The end of a call admitted with nothing to give back."""


class _Admission:
    def _admission(self, context: Any, method: str) -> End | Refusal:
        """Admit the call ``context`` answers, of ``method``: how to end it, or why it is refused."""
        raise NotImplementedError

    async def _aadmission(self, context: Any, method: str) -> End | Refusal:
        """:meth:`_admission` for an aio server, which may wait."""
        return self._admission(context, method)

    @staticmethod
    def _applies(handler: Any, method: str) -> bool:
        return handler is not None and not method.startswith(NEVER_REFUSED)


class Admitting(_Admission, grpc.ServerInterceptor):
    """A sync server's interceptor that admits each call by :meth:`_admission`."""

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if not self._applies(handler, method):
            return handler
        return wrapped(self, handler, method, self._wrapper(method), self._streaming_wrapper(method), aio=False)

    def _admitted(self, context: grpc.ServicerContext, method: str) -> End:
        admission = self._admission(context, method)
        if isinstance(admission, Refusal):
            if admission.trailers:  # after those set before (an outer interceptor's)
                context.set_trailing_metadata((*(context.trailing_metadata() or ()), *admission.trailers))
            context.abort(admission.code, admission.details)
        return admission

    def _wrapper(self, method: str) -> Callable[[Behavior], Behavior]:
        def wrap(behavior: Behavior) -> Behavior:
            def admitted(request: Any, context: grpc.ServicerContext) -> Any:
                end = self._admitted(context, method)
                try:
                    response = behavior(request, context)
                except BaseException as error:
                    end(error)
                    raise
                end(None)
                return response

            return admitted

        return wrap

    def _streaming_wrapper(self, method: str) -> Callable[[Behavior], Behavior]:
        def wrap(behavior: Behavior) -> Behavior:
            def admitted(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                end = self._admitted(context, method)
                try:
                    yield from behavior(request, context)
                except BaseException as error:
                    end(error)
                    raise
                end(None)

            return admitted

        return wrap


class AioAdmitting(_Admission, grpc.aio.ServerInterceptor):
    """An aio server's interceptor that admits each call by :meth:`_admission`."""

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if not self._applies(handler, method):
            return handler
        return wrapped(self, handler, method, self._wrapper(method), self._streaming_wrapper(method), aio=True)

    async def _admitted(self, context: Any, method: str) -> End:
        admission = await self._aadmission(context, method)
        if isinstance(admission, Refusal):
            if admission.trailers:  # after those set before (an outer interceptor's)
                context.set_trailing_metadata((*(context.trailing_metadata() or ()), *admission.trailers))
            await context.abort(admission.code, admission.details)
        assert not isinstance(admission, Refusal)
        return admission

    def _wrapper(self, method: str) -> Callable[[Behavior], Behavior]:
        def wrap(behavior: Behavior) -> Behavior:
            async def admitted(request: Any, context: Any) -> Any:
                end = await self._admitted(context, method)
                try:
                    response = await awaited(behavior(request, context))
                except BaseException as error:
                    end(error)
                    raise
                end(None)
                return response

            return admitted

        return wrap

    def _streaming_wrapper(self, method: str) -> Callable[[Behavior], Behavior]:
        def wrap(behavior: Behavior) -> Behavior:
            async def admitted(request: Any, context: Any) -> AsyncIterator[Any]:
                end = await self._admitted(context, method)
                try:
                    async for response in aio_responses(behavior(request, context)):
                        yield response
                except BaseException as error:
                    end(error)
                    raise
                end(None)

            return admitted

        return wrap
