"""What a failed cloud call means for the reconciler: retry later (transient) or stop and say why (permanent).

Pure: it reads google.api_core exceptions and their google.rpc details; handlers.py turns the result into
kopf's TemporaryError or a Stalled condition.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.api_core import exceptions as gexc
from google.rpc import error_details_pb2


@dataclass
class CloudError(Exception):
    code: str  # gRPC status name, e.g. "INVALID_ARGUMENT"
    message: str  # the cloud's own words, with any field violations appended

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass
class TransientCloudError(CloudError):
    """Worth retrying: the cloud is busy, unreachable, or an etag raced."""

    retry_after: float | None = None  # the server's RetryInfo, when it gave one


@dataclass
class PermanentCloudError(CloudError):
    """Retrying the same request cannot help: the spec, the permissions or the quota must change."""

    reason: str = "CloudError"  # CamelCase reason for the Stalled condition


TRANSIENT = (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.Aborted, gexc.InternalServerError, gexc.Cancelled)
PERMANENT_REASONS: dict[type[gexc.GoogleAPICallError], str] = {
    gexc.InvalidArgument: "InvalidSpec",
    gexc.PermissionDenied: "PermissionDenied",
    gexc.Unauthenticated: "PermissionDenied",
    gexc.FailedPrecondition: "FailedPrecondition",
    gexc.ResourceExhausted: "QuotaExceeded",
    gexc.AlreadyExists: "AlreadyExists",
    gexc.NotFound: "NotFound",
}


def _details(exc: gexc.GoogleAPICallError) -> list[object]:
    try:
        return list(exc.details or [])
    except Exception:  # noqa: BLE001 - details are best effort; the status code decides
        return []


def retry_delay(exc: gexc.GoogleAPICallError) -> float | None:
    for detail in _details(exc):
        if isinstance(detail, error_details_pb2.RetryInfo):
            return detail.retry_delay.seconds + detail.retry_delay.nanos / 1e9
    return None


def describe(exc: gexc.GoogleAPICallError) -> str:
    """The cloud's message plus any field violations (`field: description`), which name what to fix."""
    message = exc.message or str(exc)
    violations = [
        f"{v.field}: {v.description}"
        for detail in _details(exc)
        if isinstance(detail, error_details_pb2.BadRequest)
        for v in detail.field_violations
    ]
    extra = [v for v in violations if v not in message]
    return "; ".join([message, *extra]) if extra else message


def classify(exc: gexc.GoogleAPICallError) -> CloudError:
    code = exc.grpc_status_code.name if exc.grpc_status_code is not None else type(exc).__name__
    message = describe(exc)
    delay = retry_delay(exc)
    if isinstance(exc, TRANSIENT) or (isinstance(exc, gexc.ResourceExhausted) and delay is not None):
        return TransientCloudError(code, message, retry_after=delay)
    for kind, reason in PERMANENT_REASONS.items():
        if isinstance(exc, kind):
            return PermanentCloudError(code, message, reason=reason)
    return PermanentCloudError(code, message)
