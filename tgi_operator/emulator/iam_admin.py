"""The service-account part of `google.iam.admin.v1.IAM` (Create, Get, List, Delete).

Names are `projects/{project}/serviceAccounts/{email or unique id}`; `projects/-/...` finds an
account in any project, as on Google Cloud. Emails are `{account_id}@{project}.iam.gserviceaccount.com`.

As on IAM, each call needs its permission (`iam.serviceAccounts.get/create/list/delete`, which the admin API can
take away), reads hide whether an account exists (PERMISSION_DENIED "(or it may not exist)"), and a new account
stays invisible to reads for `iam_propagation_seconds` (eventual consistency, see access.py).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

import grpc
from google.cloud import iam_admin_v1
from google.protobuf import empty_pb2

from tgi_operator.emulator.access import Access
from tgi_operator.emulator.errors import ApiError, iam_permission_denied, invalid
from tgi_operator.emulator.rules import Violation, check_account_id, check_account_text
from tgi_operator.emulator.state import State
from tgi_operator.emulator.tables import offset_page

_PROJECT = re.compile(r"^projects/(?P<project>[^/]+)$")
_ACCOUNT = re.compile(r"^projects/(?P<project>[^/]+)/serviceAccounts/(?P<key>[^/]+)$")


def _unique_id(email: str) -> str:
    """21 digits, stable per email (Google's unique ids are 21-digit numbers)."""
    return "1" + str(int.from_bytes(hashlib.sha256(email.encode()).digest()[:10], "big")).zfill(20)[-20:]


class ServiceAccounts:
    def __init__(self, state: State, access: Access | None = None) -> None:
        self._state = state
        self._access = access or Access(state, lambda: "")

    def _lookup(self, name: str, request_type: str) -> iam_admin_v1.ServiceAccount | None:
        """The account `name` designates, visible or still propagating, or None."""
        m = _ACCOUNT.match(name)
        if m is None:
            raise invalid(request_type, [Violation("name", "must be projects/{project}/serviceAccounts/{account}.")])
        key = m["key"].lower()
        accounts = self._state.service_accounts
        email = key if key in accounts else self._state.account_by_unique_id.get(key)  # emails hold "@", ids never
        account = accounts.get(email) if email is not None else None
        if account is None or m["project"] not in ("-", account.project_id):
            return None
        return account

    async def create_service_account(
        self, request: iam_admin_v1.CreateServiceAccountRequest, context: object
    ) -> iam_admin_v1.ServiceAccount:
        self._access.require("iam.serviceAccounts.create")
        m = _PROJECT.match(request.name)
        if m is None:
            raise invalid("CreateServiceAccountRequest", [Violation("name", "must be projects/{project}.")])
        given = request.service_account
        violations = check_account_id(request.account_id) + check_account_text(given.display_name, given.description)
        if violations:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(v.description for v in violations), violations)
        project = m["project"]
        email = f"{request.account_id}@{project}.iam.gserviceaccount.com"
        if email in self._state.service_accounts:  # also while the first one is still propagating (writes are consistent)
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
        self._access.created(email)
        self._state.save()
        return account

    async def get_service_account(
        self, request: iam_admin_v1.GetServiceAccountRequest, context: object
    ) -> iam_admin_v1.ServiceAccount:
        """A missing account, like one still propagating, is PERMISSION_DENIED with ErrorInfo IAM_PERMISSION_DENIED:
        IAM does not reveal whether it exists. Sources: terraform-provider-google#3349, #11208, #10227, #15042,
        crossplane-contrib/provider-upjet-gcp#411."""
        self._access.require("iam.serviceAccounts.get")
        account = self._lookup(request.name, "GetServiceAccountRequest")
        if account is None or not self._access.visible(account.email):
            raise iam_permission_denied("iam.serviceAccounts.get")
        return account

    async def list_service_accounts(
        self, request: iam_admin_v1.ListServiceAccountsRequest, context: object
    ) -> iam_admin_v1.ListServiceAccountsResponse:
        self._access.require("iam.serviceAccounts.list")
        m = _PROJECT.match(request.name)
        if m is None:
            raise invalid("ListServiceAccountsRequest", [Violation("name", "must be projects/{project}.")])
        # Reads are eventually consistent: a new account is missing from the list while it propagates.
        visible = (e for e in self._state.accounts_by_project.keys_in(m["project"]) if self._access.visible(e))
        start = int(request.page_token or 0)
        size = request.page_size or 100
        page, more = offset_page(visible, start, size)
        token = str(start + size) if more else ""
        return iam_admin_v1.ListServiceAccountsResponse(
            accounts=[self._state.service_accounts[e] for e in page], next_page_token=token
        )

    async def delete_service_account(
        self, request: iam_admin_v1.DeleteServiceAccountRequest, context: object
    ) -> empty_pb2.Empty:
        self._access.require("iam.serviceAccounts.delete")
        account = self._lookup(request.name, "DeleteServiceAccountRequest")
        if account is None:  # assumption (no public record): NOT_FOUND for a caller that holds the permission
            raise ApiError(grpc.StatusCode.NOT_FOUND, f"Service account {request.name} does not exist.")
        # A write: it finds the account even while it is still propagating to reads.
        del self._state.service_accounts[account.email]
        self._access.forget(account.email)
        # Like Google Cloud: bindings keep the account, renamed to the deleted: form.
        old = f"serviceAccount:{account.email}"
        new = f"deleted:serviceAccount:{account.email}?uid={account.unique_id}"
        for name in self._state.policies_naming.keys_naming(old):  # only the policies that bind it
            policy = self._state.policies[name]
            for binding in policy.bindings:
                if old in binding.members:
                    members = [new if m == old else m for m in binding.members]
                    del binding.members[:]
                    binding.members.extend(members)
            self._state.policies[name] = policy  # stored again: the index learns the new member names
        self._state.save()
        return empty_pb2.Empty()
