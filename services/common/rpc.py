"""The decorator every RPC handler wears: errors mapped to status codes, timing, logs."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
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


def rpc(service: str) -> Callable[[Handler[Req, Resp]], Handler[Req, Resp]]:
    def decorate(func: Handler[Req, Resp]) -> Handler[Req, Resp]:
        method = func.__name__

        @functools.wraps(func)
        async def handle(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            message = ""
            details = ErrorDetails(reason="INTERNAL")
            try:
                return await func(self, request, context)
            except ServiceError as exc:
                code, message = exc.code, str(exc)
                violations = [(exc.field, redact(message))] if exc.field else []
                details = ErrorDetails(exc.reason, violations, exc.retry_after)
            except TimeoutError as exc:
                code = grpc.StatusCode.DEADLINE_EXCEEDED
                message = str(exc) or "the call's deadline passed before the work finished"
                details = ErrorDetails(reason="DEADLINE_EXCEEDED")
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception:
                # A bug: the caller gets a plain message; the traceback stays in our logs.
                log.exception("unhandled error", extra={"method": method})
                code = grpc.StatusCode.INTERNAL
                message = f"internal error in {service}.{method}; see the service logs"
            finally:
                seconds = time.perf_counter() - started
                RPC_HANDLED.labels(service, method, code.name).inc()
                RPC_SECONDS.labels(service, method).observe(seconds)
                level = logging.INFO if code in _QUIET else logging.WARNING
                log.log(
                    level,
                    "rpc",
                    extra={
                        "method": f"{service}.{method}",
                        "code": code.name,
                        "ms": round(seconds * 1000, 1),
                        **({"error": redact(message)} if message else {}),
                    },
                )
            status = to_status(code, redact(message), details, {"service": service, "method": method})
            await context.abort_with_status(status)
            raise AssertionError("unreachable: abort raises")

        return handle

    return decorate


_QUIET = {grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND}
