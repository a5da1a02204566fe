"""Who may call the services: with GRPC_SERVICE_TOKEN set, only callers that send it (the
gateways and workers, as `authorization: Bearer <token>`); anyone else is answered
UNAUTHENTICATED before any handler runs. The standard health service (Kubernetes probes,
grpc-health-probe) and reflection (grpcurl's listing) stay open: they tell nothing and
change nothing. The token is compared in constant time and never logged."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

log = logging.getLogger("callers")
# Methods anyone may call: health and reflection.
OPEN = ("/grpc.health.v1.Health/", "/grpc.reflection.")
REFUSED = (
    "this service takes calls from the gateways and workers only: send the service token "
    "(GRPC_SERVICE_TOKEN) as 'authorization: Bearer <token>'"
)


def call_metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    """What a caller sends with every call (None: no token configured)."""
    return (("authorization", f"Bearer {token}"),) if token else None


class CallerCheck(grpc.aio.ServerInterceptor):
    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN):
            return handler
        given = next((v for k, v in details.invocation_metadata or () if k == "authorization"), "")
        if hmac.compare_digest(str(given).encode(), self._expected):
            return handler
        log.warning("call refused: no valid service token", extra={"method": details.method})
        return _refusing(handler)


def _refusing(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that answers UNAUTHENTICATED."""

    async def refuse(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSED)

    shape = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    made: grpc.RpcMethodHandler = shape(
        refuse, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )
    return made
