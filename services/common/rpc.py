"""The decorator every RPC handler wears: errors mapped to status codes, timing, logs."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from services.common.errors import ServiceError
from services.common.logs import redact
from services.common.metrics import RPC_HANDLED, RPC_SECONDS
from services.common.status_details import ErrorDetails, to_status

log = logging.getLogger("rpc")

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]
StreamHandler = Callable[[Any, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]]


def rpc(service: str) -> Callable[[Handler[Req, Resp]], Handler[Req, Resp]]:
    def decorate(func: Handler[Req, Resp]) -> Handler[Req, Resp]:
        method = func.__name__

        @functools.wraps(func)
        async def handle(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
            call = _Call(service, method)
            try:
                return await func(self, request, context)
            except asyncio.CancelledError:
                call.code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                call.failed(exc)
            finally:
                call.done()
            await call.abort(context)
            raise AssertionError("unreachable: abort raises")

        return handle

    return decorate


def stream_rpc(service: str) -> Callable[[StreamHandler[Req, Resp]], StreamHandler[Req, Resp]]:
    """``rpc`` for a handler that answers a stream (an async generator): the same mapping of
    errors to status codes, timing and logs, for the whole stream."""

    def decorate(func: StreamHandler[Req, Resp]) -> StreamHandler[Req, Resp]:
        method = func.__name__

        @functools.wraps(func)
        async def handle(self: Any, request: Req, context: grpc.aio.ServicerContext) -> AsyncIterator[Resp]:
            call = _Call(service, method)
            try:
                async for item in func(self, request, context):
                    yield item
                return
            except (asyncio.CancelledError, GeneratorExit):
                call.code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                call.failed(exc)
            finally:
                call.done()
            await call.abort(context)

        return handle

    return decorate


class _Call:
    """One call's outcome: its status code, message and details, timed and logged."""

    def __init__(self, service: str, method: str) -> None:
        self.service, self.method = service, method
        self.started = time.perf_counter()
        self.code = grpc.StatusCode.OK
        self.message = ""
        self.details = ErrorDetails(reason="INTERNAL")

    def failed(self, exc: Exception) -> None:
        if isinstance(exc, ServiceError):
            self.code, self.message = exc.code, str(exc)
            violations = [(exc.field, redact(self.message))] if exc.field else []
            self.details = ErrorDetails(exc.reason, violations, exc.retry_after)
        elif isinstance(exc, TimeoutError):
            self.code = grpc.StatusCode.DEADLINE_EXCEEDED
            self.message = str(exc) or "the call's deadline passed before the work finished"
            self.details = ErrorDetails(reason="DEADLINE_EXCEEDED")
        else:
            # A bug: the caller gets a plain message; the traceback stays in our logs.
            log.error("unhandled error", extra={"method": self.method}, exc_info=exc)
            self.code = grpc.StatusCode.INTERNAL
            self.message = f"internal error in {self.service}.{self.method}; see the service logs"

    def done(self) -> None:
        seconds = time.perf_counter() - self.started
        RPC_HANDLED.labels(self.service, self.method, self.code.name).inc()
        RPC_SECONDS.labels(self.service, self.method).observe(seconds)
        level = logging.INFO if self.code in _QUIET else logging.WARNING
        log.log(
            level,
            "rpc",
            extra={
                "method": f"{self.service}.{self.method}",
                "code": self.code.name,
                "ms": round(seconds * 1000, 1),
                **({"error": redact(self.message)} if self.message else {}),
            },
        )

    async def abort(self, context: grpc.aio.ServicerContext) -> None:
        status = to_status(
            self.code, redact(self.message), self.details, {"service": self.service, "method": self.method}
        )
        await context.abort_with_status(status)


_QUIET = {grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND}
