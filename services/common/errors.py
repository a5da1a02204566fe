"""The errors a service's logic raises, each with the gRPC status it maps to.

Logic below a servicer raises these and knows nothing of gRPC; :func:`services.common.rpc.rpc`
turns them into status codes with the message unchanged (it is written for a person), and
into `google.rpc` details for programs: an ErrorInfo whose `reason` is stable (the class's,
or the one given), a BadRequest naming the field at fault, a RetryInfo where waiting helps.
"""

from __future__ import annotations

import grpc


class ServiceError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"
    # Seconds after which the same call may succeed (a RetryInfo); None: waiting does not help.
    retry_after: float | None = None

    def __init__(self, message: str, *, field: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.field = field  # the request field at fault, for a BadRequest detail
        if reason:
            self.reason = reason


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"


class TooLarge(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "TOO_LARGE"


class LimitReached(ServiceError):
    """A per-user limit: waiting ``retry_after`` seconds helps."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "USER_LIMIT"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1.0, retry_after)


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class PermissionDenied(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"
    retry_after = 1.0


class DeadlineExceeded(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"
