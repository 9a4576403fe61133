"""Interceptors that only call on, sync and aio: the floor of any interceptor on grpc's hooks. This module imports
no ``interceptors``, so that bench.compare can time them beside any version of the library."""

from __future__ import annotations

from typing import Any

import grpc


class PassThrough(grpc.UnaryUnaryClientInterceptor):
    """Calls on, and nothing else."""

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(client_call_details, request)


class AioPassThrough(grpc.aio.UnaryUnaryClientInterceptor):
    """:class:`PassThrough` for grpc.aio."""

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(client_call_details, request)
