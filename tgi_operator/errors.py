"""What a failed cloud call means for the reconciler: retry later (transient) or stop and say why (permanent).

Pure: it reads google.api_core exceptions and their google.rpc details; handlers.py turns the result into
kopf's TemporaryError or a Stalled condition.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from google.api_core import exceptions as gexc
from google.rpc import error_details_pb2

from tgi_operator.conditions import Problem


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
    # A step the pass ends on on purpose (e.g. waiting for a new account to propagate), not a fault: counted as
    # progress and logged at INFO.
    routine: ClassVar[bool] = False


@dataclass
class PermanentCloudError(CloudError):
    """Retrying the same request cannot help: the spec, the permissions or the quota must change."""

    reason: str = "CloudError"  # CamelCase reason for the Stalled condition
    permission: str | None = None  # the IAM permission refused, when the error says (ErrorInfo metadata)


class Stall(Exception):
    """A problem only a change of the spec, the operator's settings or the cloud project can fix."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.problem = Problem(reason, message)


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


def error_info(exc: gexc.GoogleAPICallError) -> error_details_pb2.ErrorInfo | None:
    for detail in _details(exc):
        if isinstance(detail, error_details_pb2.ErrorInfo):
            return detail
    return None


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


# Cloud Run's synchronous GPU quota refusal (INVALID_ARGUMENT): "Max instances must be set to 3 or fewer in order to set
# GPU requirements. ... Quota violated: NvidiaL4GpuAllocNoZonalRedundancyPerProjectRegion requested: 4 allowed: 3", and
# with no quota at all "You do not have quota for using GPUs with[out] zonal redundancy" (public gcloud output; see the
# emulator's ledger).
_GPU_QUOTA = re.compile(r"Quota violated:\s*(?P<metric>\S*Gpu\S*)\s+requested:\s*(?P<requested>\d+)\s+allowed:\s*(?P<allowed>\d+)")
_NO_GPU_QUOTA = re.compile(r"You do not have quota for using GPUs (?P<pool>with|without) zonal redundancy")
GPU_QUOTA_HELP = "https://g.co/cloudrun/gpu-quota"


def gpu_quota_message(message: str) -> str | None:
    """What a GPU quota refusal means and what to do, or None when `message` is not one."""
    if match := _GPU_QUOTA.search(message):
        allowed = int(match["allowed"])
        lower = (f"lower spec.scaling.maxInstances to {allowed} or fewer, or " if allowed else "")
        return (f"GPU quota {match['metric']}: this service needs {match['requested']} GPUs at most but the project may "
                f"use {allowed} in this region; {lower}ask for more quota ({GPU_QUOTA_HELP}); checked again at every "
                "resync, so raised quota is picked up without a change")
    if match := _NO_GPU_QUOTA.search(message):
        other = "true" if match["pool"] == "without" else "false"
        return (f"the project has no GPU quota {match['pool']} zonal redundancy in this region: ask for quota "
                f"({GPU_QUOTA_HELP}) or set spec.resources.gpu.zonalRedundancy to {other} if that pool has some; "
                "checked again at every resync")
    return None


def _service_disabled(info: error_details_pb2.ErrorInfo | None) -> str | None:
    """The API that is not enabled (PERMISSION_DENIED with ErrorInfo SERVICE_DISABLED), e.g. run.googleapis.com."""
    if info is not None and info.reason == "SERVICE_DISABLED":
        return info.metadata.get("service") or "the API"
    return None


def classify(exc: gexc.GoogleAPICallError) -> CloudError:
    code = exc.grpc_status_code.name if exc.grpc_status_code is not None else type(exc).__name__
    message = describe(exc)
    delay = retry_delay(exc)
    info = error_info(exc)
    if quota := gpu_quota_message(message):  # whatever the code: the request itself is over the GPU quota
        return PermanentCloudError(code, f"{quota}. Cloud Run: {message}", reason="GpuQuotaExceeded")
    # RESOURCE_EXHAUSTED on a call is an API rate limit (e.g. "Read requests per minute per region", ErrorInfo
    # RATE_LIMIT_EXCEEDED or none at all), with or without RetryInfo: back off and retry. Only a quota on resources
    # (ErrorInfo RESOURCE_QUOTA_EXCEEDED) needs a change.
    quota_refusal = info is not None and info.reason == "RESOURCE_QUOTA_EXCEEDED"
    if isinstance(exc, TRANSIENT) or (isinstance(exc, gexc.ResourceExhausted) and not quota_refusal):
        return TransientCloudError(code, message, retry_after=delay)
    if isinstance(exc, gexc.FailedPrecondition) and "being deleted" in message:  # a delete in progress: wait
        return TransientCloudError("DELETING", message, retry_after=5.0)
    permission = info.metadata.get("permission") if info is not None else None
    if api := _service_disabled(info):
        consumer = info.metadata.get("consumer", "").removeprefix("projects/")  # type: ignore[union-attr]
        hint = f"gcloud services enable {api}" + (f" --project {consumer}" if consumer else "")
        return PermanentCloudError(code, f"{api} is not enabled in the project: run `{hint}` (it takes a few minutes "
                                   f"to propagate). {message}", reason="ApiNotEnabled")
    for kind, reason in PERMANENT_REASONS.items():
        if isinstance(exc, kind):
            return PermanentCloudError(code, message, reason=reason, permission=permission)
    return PermanentCloudError(code, message, permission=permission)
