"""The service-account part of `google.iam.admin.v1.IAM` (Create, Get, List, Delete).

Names are `projects/{project}/serviceAccounts/{email or unique id}`; `projects/-/...` finds an
account in any project, as on Google Cloud. Emails are `{account_id}@{project}.iam.gserviceaccount.com`.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

import grpc
from google.cloud import iam_admin_v1
from google.protobuf import empty_pb2

from tgi_operator.emulator.errors import ApiError, invalid
from tgi_operator.emulator.rules import Violation, check_account_id, check_account_text
from tgi_operator.emulator.state import State

_PROJECT = re.compile(r"^projects/(?P<project>[^/]+)$")
_ACCOUNT = re.compile(r"^projects/(?P<project>[^/]+)/serviceAccounts/(?P<key>[^/]+)$")


def _unique_id(email: str) -> str:
    """21 digits, stable per email (Google's unique ids are 21-digit numbers)."""
    return "1" + str(int.from_bytes(hashlib.sha256(email.encode()).digest()[:10], "big")).zfill(20)[-20:]


class ServiceAccounts:
    def __init__(self, state: State) -> None:
        self._state = state

    def _find(self, name: str) -> iam_admin_v1.ServiceAccount:
        m = _ACCOUNT.match(name)
        if m is None:
            raise invalid("GetServiceAccountRequest", [Violation("name", "must be projects/{project}/serviceAccounts/{account}.")])
        key = m["key"]
        for account in self._state.service_accounts.values():
            if key in (account.email, account.unique_id) and m["project"] in ("-", account.project_id):
                return account
        raise ApiError(grpc.StatusCode.NOT_FOUND, f"Unknown service account: {name}")

    async def create_service_account(
        self, request: iam_admin_v1.CreateServiceAccountRequest, context: object
    ) -> iam_admin_v1.ServiceAccount:
        m = _PROJECT.match(request.name)
        if m is None:
            raise invalid("CreateServiceAccountRequest", [Violation("name", "must be projects/{project}.")])
        given = request.service_account
        violations = check_account_id(request.account_id) + check_account_text(given.display_name, given.description)
        if violations:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(v.description for v in violations), violations)
        project = m["project"]
        email = f"{request.account_id}@{project}.iam.gserviceaccount.com"
        if email in self._state.service_accounts:
            raise ApiError(grpc.StatusCode.ALREADY_EXISTS, f"Service account {request.account_id} already exists within project projects/{project}.")
        unique_id = _unique_id(email)
        account = iam_admin_v1.ServiceAccount(
            name=f"projects/{project}/serviceAccounts/{email}",
            project_id=project,
            unique_id=unique_id,
            email=email,
            display_name=request.service_account.display_name,
            description=request.service_account.description,
            oauth2_client_id=unique_id,
            etag=base64.b64encode(secrets.token_bytes(8)),
        )
        self._state.service_accounts[email] = account
        self._state.save()
        return account

    async def get_service_account(
        self, request: iam_admin_v1.GetServiceAccountRequest, context: object
    ) -> iam_admin_v1.ServiceAccount:
        return self._find(request.name)

    async def list_service_accounts(
        self, request: iam_admin_v1.ListServiceAccountsRequest, context: object
    ) -> iam_admin_v1.ListServiceAccountsResponse:
        m = _PROJECT.match(request.name)
        if m is None:
            raise invalid("ListServiceAccountsRequest", [Violation("name", "must be projects/{project}.")])
        emails = sorted(e for e, a in self._state.service_accounts.items() if a.project_id == m["project"])
        start = int(request.page_token or 0)
        size = request.page_size or 100
        page = emails[start : start + size]
        token = str(start + size) if start + size < len(emails) else ""
        return iam_admin_v1.ListServiceAccountsResponse(
            accounts=[self._state.service_accounts[e] for e in page], next_page_token=token
        )

    async def delete_service_account(
        self, request: iam_admin_v1.DeleteServiceAccountRequest, context: object
    ) -> empty_pb2.Empty:
        account = self._find(request.name)
        del self._state.service_accounts[account.email]
        # Like Google Cloud: bindings keep the account, renamed to the deleted: form.
        old = f"serviceAccount:{account.email}"
        new = f"deleted:serviceAccount:{account.email}?uid={account.unique_id}"
        for policy in self._state.policies.values():
            for binding in policy.bindings:
                if old in binding.members:
                    members = [new if m == old else m for m in binding.members]
                    del binding.members[:]
                    binding.members.extend(members)
        self._state.save()
        return empty_pb2.Empty()
