"""The Cloud Run Admin API v2, as the reconciler needs it: a thin async adapter.

Only this module and iam.py import google.cloud. Every call has a deadline and no client-side retry: the
reconciler owns backoff, so a failing call surfaces at once as a classified CloudError (errors.py).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import grpc
from google.api_core import exceptions as gexc
from google.api_core.gapic_v1.client_info import ClientInfo
from google.auth.credentials import AnonymousCredentials
from google.cloud import run_v2
from google.cloud.run_v2.services.services.transports import ServicesGrpcAsyncIOTransport
from google.iam.v1 import iam_policy_pb2, options_pb2, policy_pb2

from tgi_operator import metrics
from tgi_operator.errors import classify

P = ParamSpec("P")
T = TypeVar("T")


def cloud_call(api: str, method: str) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """One Cloud Run or IAM call: its errors classified (errors.py), and counted by method and gRPC code with its
    latency (metrics.py). A NOT_FOUND the method answers as "absent" (it raises `Absent(value)`) counts as
    NOT_FOUND and returns the value."""

    def decorate(call: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(call)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            started, code = time.monotonic(), "OK"
            try:
                return await call(*args, **kwargs)
            except gexc.GoogleAPICallError as exc:
                code = grpc_code(exc)
                raise classify(exc) from exc
            except Absent as absent:
                code = "NOT_FOUND"
                return absent.value  # type: ignore[no-any-return]
            finally:
                metrics.observe_cloud_call(api, method, code, started)

        return wrapper

    return decorate


class Absent(Exception):
    """Raised by an adapter method for a NOT_FOUND it answers with `value` (None, False)."""

    def __init__(self, value: object) -> None:
        super().__init__()
        self.value = value


def grpc_code(exc: gexc.GoogleAPICallError) -> str:
    return exc.grpc_status_code.name if exc.grpc_status_code is not None else type(exc).__name__


def services_client(endpoint: str | None, user_agent: str = "") -> run_v2.ServicesAsyncClient:
    """A client for Google's endpoint (ADC / Workload Identity), or for an insecure local one (the emulator).
    `user_agent` names the caller in Cloud Audit Logs (callerSuppliedUserAgent): which replica wrote."""
    client_info = ClientInfo(user_agent=user_agent or None)
    if not endpoint:
        return run_v2.ServicesAsyncClient(client_info=client_info)
    transport = ServicesGrpcAsyncIOTransport(channel=insecure_channel(endpoint, user_agent),
                                             credentials=AnonymousCredentials())
    return run_v2.ServicesAsyncClient(transport=transport, client_info=client_info)


def insecure_channel(endpoint: str, user_agent: str) -> grpc.aio.Channel:
    """A channel to a local endpoint that sends `user_agent` as gRPC's user-agent, as Google's transport does."""
    return grpc.aio.insecure_channel(endpoint, options=[("grpc.primary_user_agent", user_agent)] if user_agent else None)


class CloudRunServices:
    def __init__(self, client: run_v2.ServicesAsyncClient, timeout: float = 30.0) -> None:
        self._client = client
        self._timeout = timeout

    @cloud_call("run", "GetService")
    async def get(self, name: str) -> run_v2.Service | None:
        try:
            return await self._client.get_service(name=name, retry=None, timeout=self._timeout)
        except gexc.NotFound:
            raise Absent(None) from None

    @cloud_call("run", "CreateService")
    async def create(self, parent: str, service_id: str, service: run_v2.Service) -> None:
        """Start the create; the long-running operation is not awaited (readiness is polled with get)."""
        await self._client.create_service(
            parent=parent, service_id=service_id, service=service, retry=None, timeout=self._timeout
        )

    @cloud_call("run", "UpdateService")
    async def update(self, service: run_v2.Service) -> None:
        """Start an update of the whole service (its etag guards against overwriting a concurrent change)."""
        await self._client.update_service(
            request=run_v2.UpdateServiceRequest(service=service), retry=None, timeout=self._timeout
        )

    @cloud_call("run", "CreateService.validateOnly")
    async def validate(self, parent: str, service_id: str, service: run_v2.Service) -> None:
        """Cloud Run's server-side check of a service, changing nothing (validate_only); raises CloudError if refused.

        A service that already exists is checked as the update that would replace it (CreateService would only
        answer ALREADY_EXISTS).
        """
        try:
            operation = await self._client.create_service(
                request=run_v2.CreateServiceRequest(parent=parent, service_id=service_id, service=service, validate_only=True),
                retry=None, timeout=self._timeout,
            )
        except gexc.AlreadyExists:
            named = run_v2.Service(service)
            named.name = f"{parent}/services/{service_id}"
            operation = await self._client.update_service(
                request=run_v2.UpdateServiceRequest(service=named, validate_only=True), retry=None, timeout=self._timeout
            )
        await operation.result(timeout=self._timeout)  # done at once; an error in it is a refusal too

    @cloud_call("run", "DeleteService")
    async def delete(self, name: str) -> bool:
        """Start the delete; False when there was nothing to delete."""
        try:
            await self._client.delete_service(name=name, retry=None, timeout=self._timeout)
        except gexc.NotFound:
            raise Absent(False) from None
        return True

    @cloud_call("run", "GetIamPolicy")
    async def get_iam_policy(self, name: str) -> policy_pb2.Policy:
        # Version 3: conditional bindings (someone else's) come back whole, so a write can keep them.
        request = iam_policy_pb2.GetIamPolicyRequest(
            resource=name, options=options_pb2.GetPolicyOptions(requested_policy_version=3))
        return await self._client.get_iam_policy(request=request, retry=None, timeout=self._timeout)

    @cloud_call("run", "SetIamPolicy")
    async def set_iam_policy(self, name: str, policy: policy_pb2.Policy) -> policy_pb2.Policy:
        request = iam_policy_pb2.SetIamPolicyRequest(resource=name, policy=policy)
        return await self._client.set_iam_policy(request=request, retry=None, timeout=self._timeout)

    async def close(self) -> None:
        await self._client.transport.close()
