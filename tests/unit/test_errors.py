"""errors.classify: which cloud failures are retried and which stall the object, and what they say."""

from __future__ import annotations

import pytest
from google.api_core import exceptions as gexc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from tgi_operator.errors import PermanentCloudError, TransientCloudError, classify

BAD_CPU = error_details_pb2.BadRequest(
    field_violations=[error_details_pb2.BadRequest.FieldViolation(
        field="service.template.containers[0].resources.limits.cpu", description="must be at least 4 with nvidia-l4")]
)
RETRY_5S = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=5))


@pytest.mark.parametrize(
    ("exc", "kind", "code", "reason", "retry_after"),
    [
        (gexc.ServiceUnavailable("down"), TransientCloudError, "UNAVAILABLE", None, None),
        (gexc.DeadlineExceeded("slow"), TransientCloudError, "DEADLINE_EXCEEDED", None, None),
        (gexc.Aborted("etag mismatch"), TransientCloudError, "ABORTED", None, None),
        (gexc.InternalServerError("oops"), TransientCloudError, "INTERNAL", None, None),
        (gexc.ResourceExhausted("rate", details=[RETRY_5S]), TransientCloudError, "RESOURCE_EXHAUSTED", None, 5.0),
        (gexc.ServiceUnavailable("busy", details=[RETRY_5S]), TransientCloudError, "UNAVAILABLE", None, 5.0),
        # A rate limit without RetryInfo (Cloud Run's read quota answers so) is not a stall: back off.
        (gexc.ResourceExhausted("Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute "
                                "per region' of service 'run.googleapis.com'"), TransientCloudError, "RESOURCE_EXHAUSTED", None, None),
        (gexc.InvalidArgument("bad", details=[BAD_CPU]), PermanentCloudError, "INVALID_ARGUMENT", "InvalidSpec", None),
        (gexc.PermissionDenied("no run.services.create"), PermanentCloudError, "PERMISSION_DENIED", "PermissionDenied", None),
        (gexc.Unauthenticated("who?"), PermanentCloudError, "UNAUTHENTICATED", "PermissionDenied", None),
        (gexc.FailedPrecondition("api disabled"), PermanentCloudError, "FAILED_PRECONDITION", "FailedPrecondition", None),
        (gexc.AlreadyExists("taken"), PermanentCloudError, "ALREADY_EXISTS", "AlreadyExists", None),
    ],
)
def test_classify(exc, kind, code, reason, retry_after) -> None:
    result = classify(exc)
    assert type(result) is kind
    assert result.code == code
    if reason:
        assert result.reason == reason
    if kind is TransientCloudError:
        assert result.retry_after == retry_after


def test_field_violations_name_the_field() -> None:
    result = classify(gexc.InvalidArgument("Invalid service", details=[BAD_CPU]))
    assert result.message == "Invalid service; service.template.containers[0].resources.limits.cpu: must be at least 4 with nvidia-l4"
    assert str(result).startswith("INVALID_ARGUMENT: Invalid service")


def test_a_violation_already_in_the_message_is_not_repeated() -> None:
    text = "service.template.containers[0].resources.limits.cpu: must be at least 4 with nvidia-l4"
    assert classify(gexc.InvalidArgument(text, details=[BAD_CPU])).message == text


# -- refusals a real project meets first (quota, disabled APIs, IAM permissions) ---------------------------------

GPU_QUOTA_TEXT = (
    "Max instances must be set to 3 or fewer in order to set GPU requirements. Quota exceeded for total allowable "
    "count of GPUs per project per region. To request quota: g.co/cloudrun/gpu-quota\n\nQuota violated:\n"
    "NvidiaL4GpuAllocNoZonalRedundancyPerProjectRegion requested: 4 allowed: 3"
)


def test_a_gpu_quota_refusal_has_its_own_reason_with_the_numbers_and_where_to_ask() -> None:
    result = classify(gexc.InvalidArgument(GPU_QUOTA_TEXT))
    assert isinstance(result, PermanentCloudError)
    assert result.reason == "GpuQuotaExceeded"  # not InvalidSpec: the spec is fine, the project lacks quota
    for needed in ("NvidiaL4GpuAllocNoZonalRedundancyPerProjectRegion", "needs 4", "use 3",
                   "spec.scaling.maxInstances to 3 or fewer", "https://g.co/cloudrun/gpu-quota", "resync"):
        assert needed in result.message


def test_no_gpu_quota_at_all_says_which_pool() -> None:
    text = ("You do not have quota for using GPUs without zonal redundancy. Learn more about GPU zonal redundancy: "
            "g.co/cloudrun/gpu-redundancy-help")
    result = classify(gexc.InvalidArgument(text))
    assert result.reason == "GpuQuotaExceeded"
    assert "without zonal redundancy" in result.message and "zonalRedundancy to true" in result.message


def test_other_invalid_arguments_stay_invalid_spec() -> None:
    assert classify(gexc.InvalidArgument("Quota violated: CpuAllocPerProjectRegion requested: 1 allowed: 0")).reason == "InvalidSpec"


def _disabled(service: str, project: str) -> gexc.PermissionDenied:
    info = error_details_pb2.ErrorInfo(reason="SERVICE_DISABLED", domain="googleapis.com",
                                       metadata={"service": service, "consumer": f"projects/{project}"})
    return gexc.PermissionDenied(f"Cloud Run Admin API has not been used in project {project} before or it is "
                                 "disabled.", details=[info])


def test_a_disabled_api_names_the_api_and_the_command_that_enables_it() -> None:
    result = classify(_disabled("run.googleapis.com", "my-project"))
    assert isinstance(result, PermanentCloudError)
    assert result.reason == "ApiNotEnabled"
    assert "gcloud services enable run.googleapis.com --project my-project" in result.message


def test_an_iam_permission_denial_carries_the_permission() -> None:
    info = error_details_pb2.ErrorInfo(reason="IAM_PERMISSION_DENIED", domain="iam.googleapis.com",
                                       metadata={"permission": "iam.serviceaccounts.actAs"})
    result = classify(gexc.PermissionDenied("Permission 'iam.serviceaccounts.actAs' denied on service account x "
                                            "(or it may not exist).", details=[info]))
    assert (result.reason, result.permission) == ("PermissionDenied", "iam.serviceaccounts.actAs")


def test_a_resource_quota_refusal_is_permanent_and_a_rate_limit_is_not() -> None:
    quota = error_details_pb2.ErrorInfo(reason="RESOURCE_QUOTA_EXCEEDED", domain="googleapis.com")
    rate = error_details_pb2.ErrorInfo(reason="RATE_LIMIT_EXCEEDED", domain="googleapis.com")
    assert classify(gexc.ResourceExhausted("Quota exceeded: services per region", details=[quota])).reason == "QuotaExceeded"
    assert isinstance(classify(gexc.ResourceExhausted("Read requests per minute", details=[rate])), TransientCloudError)
    # A GPU quota refusal says what to do whatever its code.
    assert classify(gexc.ResourceExhausted(GPU_QUOTA_TEXT)).reason == "GpuQuotaExceeded"


def test_a_delete_in_progress_is_a_wait() -> None:
    result = classify(gexc.FailedPrecondition("Service is being deleted."))
    assert isinstance(result, TransientCloudError) and result.code == "DELETING"
