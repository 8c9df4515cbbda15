"""Generic gRPC handlers binding the emulator's methods to the wire names the real clients call.

google-cloud-run and google-cloud-iam ship no servicer stubs, so each method is registered with
the (de)serializers of its proto-plus or protobuf request/response types.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.cloud import iam_admin_v1, run_v2
from google.iam.v1 import iam_policy_pb2, policy_pb2
from google.longrunning import operations_pb2
from google.protobuf import empty_pb2

from tgi_operator.emulator.calls import CallLog, Gate, Handler, accounted
from tgi_operator.emulator.iam_admin import ServiceAccounts
from tgi_operator.emulator.operations import OperationBook
from tgi_operator.emulator.services import CloudRunServices

RUN = "google.cloud.run.v2.Services"
OPERATIONS = "google.longrunning.Operations"
IAM_ADMIN = "google.iam.admin.v1.IAM"


def _codec(message_type: Any) -> tuple[Callable[[bytes], Any], Callable[[Any], bytes]]:
    """(deserialize, serialize) for a proto-plus class or a protobuf class."""
    if hasattr(message_type, "deserialize"):  # proto-plus
        return message_type.deserialize, message_type.serialize
    return message_type.FromString, message_type.SerializeToString


def _unary(
    calls: CallLog, service: str, method: str, fn: Handler, request_type: Any, response_type: Any, gate: Gate | None
) -> grpc.RpcMethodHandler:
    deserialize, _ = _codec(request_type)
    _, serialize = _codec(response_type)
    return grpc.unary_unary_rpc_method_handler(
        accounted(calls, f"{service}/{method}", fn, gate), request_deserializer=deserialize, response_serializer=serialize
    )


def generic_handlers(
    calls: CallLog, services: CloudRunServices, operations: OperationBook, accounts: ServiceAccounts, gate: Gate | None = None
) -> list[grpc.GenericRpcHandler]:
    op = operations_pb2.Operation
    run_methods = {
        "CreateService": (services.create_service, run_v2.CreateServiceRequest, op),
        "GetService": (services.get_service, run_v2.GetServiceRequest, run_v2.Service),
        "ListServices": (services.list_services, run_v2.ListServicesRequest, run_v2.ListServicesResponse),
        "UpdateService": (services.update_service, run_v2.UpdateServiceRequest, op),
        "DeleteService": (services.delete_service, run_v2.DeleteServiceRequest, op),
        "GetIamPolicy": (services.get_iam_policy, iam_policy_pb2.GetIamPolicyRequest, policy_pb2.Policy),
        "SetIamPolicy": (services.set_iam_policy, iam_policy_pb2.SetIamPolicyRequest, policy_pb2.Policy),
        "TestIamPermissions": (
            services.test_iam_permissions,
            iam_policy_pb2.TestIamPermissionsRequest,
            iam_policy_pb2.TestIamPermissionsResponse,
        ),
    }
    operation_methods = {
        "GetOperation": (operations.get_operation, operations_pb2.GetOperationRequest, op),
        "ListOperations": (
            operations.list_operations,
            operations_pb2.ListOperationsRequest,
            operations_pb2.ListOperationsResponse,
        ),
        "WaitOperation": (operations.wait_operation, operations_pb2.WaitOperationRequest, op),
        "DeleteOperation": (operations.delete_operation, operations_pb2.DeleteOperationRequest, empty_pb2.Empty),
    }
    sa = iam_admin_v1.ServiceAccount
    iam_methods = {
        "CreateServiceAccount": (accounts.create_service_account, iam_admin_v1.CreateServiceAccountRequest, sa),
        "GetServiceAccount": (accounts.get_service_account, iam_admin_v1.GetServiceAccountRequest, sa),
        "ListServiceAccounts": (
            accounts.list_service_accounts,
            iam_admin_v1.ListServiceAccountsRequest,
            iam_admin_v1.ListServiceAccountsResponse,
        ),
        "DeleteServiceAccount": (accounts.delete_service_account, iam_admin_v1.DeleteServiceAccountRequest, empty_pb2.Empty),
    }
    return [
        grpc.method_handlers_generic_handler(
            name, {m: _unary(calls, name, m, fn, req, resp, gate) for m, (fn, req, resp) in methods.items()}
        )
        for name, methods in ((RUN, run_methods), (OPERATIONS, operation_methods), (IAM_ADMIN, iam_methods))
    ]
