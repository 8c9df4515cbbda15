"""gRPC errors shaped like Google's: a status code, a message and `google.rpc` details.

Handlers raise `ApiError`; the method wrapper (calls.py) counts it and turns it into a
`grpc-status-details-bin` trailer, which google-api-core unpacks into
`google.api_core.exceptions.<Code>` with `.details` holding the `BadRequest`.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from tgi_operator.emulator.rules import Violation


class ApiError(Exception):
    """`violations` become one `BadRequest`; `details` are further `google.rpc` messages (ErrorInfo, Help, ...)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        violations: list[Violation] | None = None,
        details: list[Message] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.violations = violations or []
        self.details = details or []

    def to_status(self) -> status_pb2.Status:
        details = []
        if self.violations:
            bad_request = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in self.violations
                ]
            )
            packed = any_pb2.Any()
            packed.Pack(bad_request)
            details.append(packed)
        for detail in self.details:
            packed = any_pb2.Any()
            packed.Pack(detail)
            details.append(packed)
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=details)


def invalid(request_type: str, violations: list[Violation]) -> ApiError:
    """INVALID_ARGUMENT in Cloud Run v2's wording: `Violation in <Request>.<field>: <why>`."""
    message = "\n".join(f"Violation in {request_type}.{v.field}: {v.description}" for v in violations)
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, message, violations)


def error_info(reason: str, domain: str, **metadata: str) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=metadata)


def iam_permission_denied(permission: str, message: str | None = None) -> ApiError:
    """IAM's refusal, which also hides whether the resource exists: PERMISSION_DENIED with an ErrorInfo
    `IAM_PERMISSION_DENIED` naming the permission. Source: crossplane-contrib/provider-upjet-gcp#411 (the full
    error for a deleted account), terraform-provider-google#3349, #11208."""
    text = message or f"Permission '{permission}' denied on resource (or it may not exist)."
    info = error_info("IAM_PERMISSION_DENIED", "iam.googleapis.com", permission=permission)
    return ApiError(grpc.StatusCode.PERMISSION_DENIED, text, details=[info])


def not_found(what: str) -> ApiError:
    return ApiError(grpc.StatusCode.NOT_FOUND, f"Resource '{what}' does not exist.")


def code_from_name(value: str | int) -> grpc.StatusCode:
    """`"UNAVAILABLE"`, `"unavailable"` or `14` -> grpc.StatusCode.UNAVAILABLE."""
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        number = int(value)
        for code in grpc.StatusCode:
            if code.value[0] == number:
                return code
        raise ValueError(f"unknown status code {value}")
    try:
        return grpc.StatusCode[value.upper()]
    except KeyError:
        raise ValueError(f"unknown status code {value!r}") from None
