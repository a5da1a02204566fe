"""google.rpc rich error details (grpcio-status), written by every service and read by the
gateway: ErrorInfo (a stable reason), BadRequest (the fields at fault), RetryInfo (when to
try again)."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "storyshort"
DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class ErrorDetails:
    reason: str = ""
    violations: list[tuple[str, str]] = field(default_factory=list)  # (field, description)
    retry_after: float | None = None


def to_status(
    code: grpc.StatusCode, message: str, details: ErrorDetails, metadata: dict[str, str] | None = None
) -> grpc.Status:
    packed = []
    if details.reason:
        info = error_details_pb2.ErrorInfo(reason=details.reason, domain=DOMAIN, metadata=metadata or {})
        packed.append(_pack(info))
    if details.violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in details.violations
            ]
        )
        packed.append(_pack(bad))
    if details.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(details.retry_after * 1000))
        packed.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=message, details=packed))


def _pack(message: object) -> any_pb2.Any:
    holder = any_pb2.Any()
    holder.Pack(message)  # type: ignore[arg-type]
    return holder


def from_trailers(trailers: object) -> ErrorDetails:
    """What a failed call's trailing metadata says (nothing when it carries no details)."""
    raw = next((v for k, v in (trailers or ()) if k == DETAILS_KEY), None)  # type: ignore[attr-defined]
    if not isinstance(raw, bytes):
        return ErrorDetails()
    status = status_pb2.Status.FromString(raw)
    reason, violations, retry_after = "", [], None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = [(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.ToMilliseconds() / 1000
    return ErrorDetails(reason, violations, retry_after)
