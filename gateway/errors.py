"""The gateway's errors: a failed call to a service (raised by the clients instead of gRPC's
own error: CallFailed, ServiceDown, ServiceRefused, BreakerOpen), the errors it answers
itself (HTTPError), gRPC status codes to HTTP codes the way grpc-gateway maps them, in one
table, and the JSON error body every error answer uses."""

from __future__ import annotations

import time

import grpc
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.status_details import ErrorDetails


class CallFailed(Exception):
    """A call to status, storage or imagegen did not succeed; raised instead of gRPC's own
    error, once, by the clients (the rest of the gateway never inspects status codes)."""

    def __init__(self, service: str, code: grpc.StatusCode, details: str, rich: ErrorDetails | None = None) -> None:
        super().__init__(f"{service}: {code.name}: {details}")
        self.service, self.code, self.details = service, code, details
        # The service's google.rpc details: a stable reason, fields at fault, when to retry.
        self.rich = rich or ErrorDetails()


class ServiceDown(CallFailed):
    """The service did not answer: a timeout, or unreachable."""


class ServiceRefused(CallFailed):
    """The service answered with an error (bad input, not found, too large, ...)."""

    @property
    def not_found(self) -> bool:
        return bool(self.code == grpc.StatusCode.NOT_FOUND)

    @property
    def too_large(self) -> bool:
        """Refused for its size (storage: larger than the bucket allows)."""
        return bool(self.code == grpc.StatusCode.RESOURCE_EXHAUSTED)


def is_down(exc: BaseException) -> bool:
    """Whether a failed call is worth retrying: the service did not answer."""
    return isinstance(exc, ServiceDown)


class BreakerOpen(ServiceDown):
    """The service's breaker is open: the call was not made. Answered as a 503 that says
    so, with a Retry-After of the breaker's probe period (when it may have closed)."""

    CODE = grpc.StatusCode.UNAVAILABLE

    def __init__(self, service: str, since: float, retry_after: float) -> None:
        super().__init__(
            service,
            grpc.StatusCode.UNAVAILABLE,
            f"the {service} service is not answering (for {time.monotonic() - since:.1f} s); try again",
            ErrorDetails(retry_after=retry_after),
        )

    def __str__(self) -> str:
        return self.details


HTTP_FOR_GRPC: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}


def error_body(code: str, message: str, **more: object) -> dict[str, dict[str, object]]:
    """The JSON error; its `reason` is the code itself where no finer one is named, so a
    program can always switch on `reason`."""
    return {"error": {"code": code, "message": message, "reason": code, **more}}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **more: object
) -> JSONResponse:
    return JSONResponse(
        error_body(code, message, **more), status_code=status, headers={"Cache-Control": "no-store", **(headers or {})}
    )


CODE_FOR_HTTP = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    409: "ALREADY_EXISTS",
    413: "RESOURCE_EXHAUSTED",
    429: "RESOURCE_EXHAUSTED",
}


def grpc_error_response(code: grpc.StatusCode, details: str) -> JSONResponse:
    """A gRPC status as the JSON error answer, with grpc-gateway's HTTP code."""
    return error_response(HTTP_FOR_GRPC.get(code, 500), code.name, details or code.name.lower())


class HTTPError(Exception):
    """An error the gateway itself raises, answered with the JSON error body."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None, reason: str = ""
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.reason = reason  # a stable reason for programs (as the services' ErrorInfo)


def video_not_found(video_id: str) -> HTTPError:
    """The one answer for a video that does not exist and for another user's video."""
    return HTTPError(404, "NOT_FOUND", f"video {video_id!r} does not exist", reason="NOT_FOUND")


def scenes_conflict(video_id: str) -> HTTPError:
    """A start of a video that is generating, with other scenes than the running one."""
    return HTTPError(
        409,
        "ALREADY_EXISTS",
        f"video {video_id!r} is already generating with different scenes; wait for it to finish, then post again",
    )


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is answered 413 with the JSON
    error body, whether it declared its length or came chunked. Bodies are small JSON, so
    it reads the body first (at most max_bytes + one chunk) and hands it on."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = bool(message.get("more_body", False))
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413, "RESOURCE_EXHAUSTED", f"request body is larger than {self.max_bytes} bytes (MAX_BODY_BYTES)"
        )
        await response(scope, receive, send)


def service_error_response(exc: CallFailed) -> JSONResponse:
    """A failed service call as the JSON error, its google.rpc details carried over: the
    stable `reason`, `fieldViolations`, and `Retry-After` where waiting helps."""
    more: dict[str, object] = {}
    headers: dict[str, str] = {}
    if exc.rich.reason:
        more["reason"] = exc.rich.reason
    if exc.rich.violations:
        more["fieldViolations"] = [{"field": f, "description": d} for f, d in exc.rich.violations]
    if exc.rich.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.rich.retry_after)))
    return error_response(
        HTTP_FOR_GRPC.get(exc.code, 500), exc.code.name, exc.details or exc.code.name.lower(), headers, **more
    )
