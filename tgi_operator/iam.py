"""IAM Admin service accounts (the invoker service account a TGIService may ask for): a thin async adapter."""

from __future__ import annotations

from google.api_core import exceptions as gexc
from google.api_core.gapic_v1.client_info import ClientInfo
from google.auth.credentials import AnonymousCredentials
from google.cloud import iam_admin_v1
from google.cloud.iam_admin_v1.services.iam.transports import IAMGrpcAsyncIOTransport

from tgi_operator.cloudrun import Absent, cloud_call, insecure_channel


def iam_client(endpoint: str | None, user_agent: str = "") -> iam_admin_v1.IAMAsyncClient:
    client_info = ClientInfo(user_agent=user_agent or None)
    if not endpoint:
        return iam_admin_v1.IAMAsyncClient(client_info=client_info)
    transport = IAMGrpcAsyncIOTransport(channel=insecure_channel(endpoint, user_agent), credentials=AnonymousCredentials())
    return iam_admin_v1.IAMAsyncClient(transport=transport, client_info=client_info)


class ServiceAccounts:
    def __init__(self, client: iam_admin_v1.IAMAsyncClient, timeout: float = 30.0) -> None:
        self._client = client
        self._timeout = timeout

    @cloud_call("iam", "GetServiceAccount")
    async def get(self, project: str, email: str) -> iam_admin_v1.ServiceAccount | None:
        try:
            return await self._client.get_service_account(
                name=f"projects/{project}/serviceAccounts/{email}", retry=None, timeout=self._timeout
            )
        except gexc.NotFound:
            raise Absent(None) from None

    @cloud_call("iam", "CreateServiceAccount")
    async def create(self, project: str, account_id: str, display_name: str, description: str) -> str:
        """Create the account; returns its email. ALREADY_EXISTS surfaces as a PermanentCloudError."""
        request = iam_admin_v1.CreateServiceAccountRequest(
            name=f"projects/{project}",
            account_id=account_id,
            service_account=iam_admin_v1.ServiceAccount(display_name=display_name, description=description),
        )
        created = await self._client.create_service_account(request=request, retry=None, timeout=self._timeout)
        return created.email

    @cloud_call("iam", "ListServiceAccounts")
    async def list_emails(self, project: str) -> set[str]:
        """Every account email of the project (all pages): the evidence when a single account cannot be read."""
        pager = await self._client.list_service_accounts(name=f"projects/{project}", retry=None, timeout=self._timeout)
        return {account.email.lower() async for account in pager}

    @cloud_call("iam", "DeleteServiceAccount")
    async def delete(self, project: str, email: str) -> bool:
        try:
            await self._client.delete_service_account(
                name=f"projects/{project}/serviceAccounts/{email}", retry=None, timeout=self._timeout
            )
        except gexc.NotFound:
            raise Absent(False) from None
        return True

    async def close(self) -> None:
        await self._client.transport.close()
