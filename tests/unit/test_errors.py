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
        (gexc.ResourceExhausted("Quota exceeded"), PermanentCloudError, "RESOURCE_EXHAUSTED", "QuotaExceeded", None),
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
