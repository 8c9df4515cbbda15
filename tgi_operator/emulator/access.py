"""What the caller may do beyond the roles it holds, set through the admin API and kept in the state:

- which APIs are enabled per project (a disabled API refuses every call about that project);
- IAM permissions the caller lacks (`iam.serviceAccounts.create`, ..., `iam.serviceAccounts.actAs`);
- accounts the caller may not act as (deploying a service that runs as them);
- the organization policy `iam.allowedPolicyMemberDomains` per project;
- group membership (for `group:` members of Cloud Run policies);
- IAM's eventual consistency: a new service account is invisible for `iam_propagation_seconds`.

Every refusal is shaped like Google's, with its `google.rpc` details; each rule names its public source.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from google.rpc import error_details_pb2

from tgi_operator.emulator import rules
from tgi_operator.emulator.errors import ApiError, error_info, iam_permission_denied
from tgi_operator.emulator.state import State

RUN_API = "run.googleapis.com"
IAM_API = "iam.googleapis.com"
API_TITLES = {RUN_API: "Cloud Run Admin API", IAM_API: "Identity and Access Management (IAM) API"}
# Which API each gRPC service belongs to (long-running operations are Cloud Run's own).
API_OF_SERVICE = {"google.cloud.run.v2.Services": RUN_API, "google.longrunning.Operations": RUN_API, "google.iam.admin.v1.IAM": IAM_API}
IAM_PERMISSIONS = frozenset(
    f"iam.serviceAccounts.{verb}" for verb in ("get", "create", "delete", "list", "actAs")
)
ACT_AS = "iam.serviceAccounts.actAs"
ORG_POLICY_DENIED = (
    # Cloud Run's wording (two spaces after the comma, as recorded):
    # https://github.com/GoogleCloudPlatform/genai-for-marketing/issues/153, googlemaps/js-route-optimization-app#198
    "One or more users named in the policy do not belong to a permitted customer,  perhaps due to an organization policy."
)
_PROJECT = re.compile(r"^projects/(?P<project>[^/]+)")


def _resource(request: Any) -> str:
    """The resource name a request is about: parent, name or resource, or the service's name (UpdateService)."""
    for attr in ("parent", "name", "resource"):
        value = getattr(request, attr, "")
        if isinstance(value, str) and value:
            return value
    service = getattr(request, "service", None)
    return getattr(service, "name", "") if service is not None else ""


def service_disabled(service: str, project: str) -> ApiError:
    """An API that is not enabled in the project: PERMISSION_DENIED, ErrorInfo SERVICE_DISABLED and a Help link.
    Source: https://cloud.google.com/service-usage/docs/enable-disable and recorded responses (research ledger §9:
    google-gemini/gemini-cli#1343 for the metadata keys)."""
    title = API_TITLES[service]
    url = f"https://console.developers.google.com/apis/api/{service}/overview?project={project}"
    message = (
        f"{title} has not been used in project {project} before or it is disabled. Enable it by visiting {url} then "
        "retry. If you enabled this API recently, wait a few minutes for the action to propagate to our systems and retry."
    )
    info = error_info(
        "SERVICE_DISABLED", "googleapis.com",
        service=service, consumer=f"projects/{project}", activationUrl=url, serviceTitle=title, containerInfo=project,
    )  # fmt: skip
    help_ = error_details_pb2.Help(links=[error_details_pb2.Help.Link(description="Google developers console API activation", url=url)])
    return ApiError(grpc.StatusCode.PERMISSION_DENIED, message, details=[info, help_])


class Access:
    def __init__(self, state: State, caller_project: Callable[[], str], clock: Callable[[], float] = time.time) -> None:
        self._state = state
        self._caller_project = caller_project  # the project of `projects/-/...` requests (assumption)
        self._clock = clock

    # ------------------------------------------------------------ APIs

    def api_gate(self, method: str, request: Any) -> None:
        """Refuse a call about a project whose API is disabled (before the handler: nothing is read or written)."""
        service = API_OF_SERVICE.get(method.rsplit("/", 1)[0])
        m = _PROJECT.match(_resource(request))
        if service is None or m is None:
            return
        project = self._caller_project() if m["project"] == "-" else m["project"]
        if service in self._state.disabled_apis.get(project, set()):
            raise service_disabled(service, project)

    # ------------------------------------------------------------ IAM permissions

    def require(self, permission: str) -> None:
        """The caller's IAM permission, as the admin API's /iam-denied leaves it. Source: provider-upjet-gcp#411."""
        if permission in self._state.iam_denied:
            raise iam_permission_denied(permission)

    def check_act_as(self, email: str) -> None:
        """Deploying a service that runs as `email` needs iam.serviceAccounts.actAs on it, and IAM does not say
        whether a missing account exists: both are PERMISSION_DENIED "(or it may not exist)". Source: recorded
        Cloud Run errors, GoogleCloudPlatform/cloud-run-release-manager#81, alphagov/govuk-knowledge-graph-gcp#806,
        https://cloud.google.com/run/docs/securing/service-identity (the deployer needs actAs)."""
        user_managed = rules.user_managed_account(f"serviceAccount:{email}")
        missing = user_managed is not None and not self.account_visible(user_managed)
        if missing or ACT_AS in self._state.iam_denied or email.lower() in self._state.act_as_denied:
            raise iam_permission_denied(
                "iam.serviceaccounts.actAs",  # sic: Cloud Run spells it in lower case
                f"Permission 'iam.serviceaccounts.actAs' denied on service account {email} (or it may not exist).",
            )

    # ------------------------------------------------------------ service accounts (eventual consistency)

    def created(self, email: str) -> None:
        self._state.account_created[email] = self._clock()

    def forget(self, email: str) -> None:
        self._state.account_created.pop(email, None)

    def visible(self, email: str) -> bool:
        """A new account is invisible to reads and policy checks for `iam_propagation_seconds`. Source: "you might
        need to wait for 60 seconds or more ... read operations are eventually consistent",
        https://cloud.google.com/iam/docs/service-accounts-create; terraform-provider-google#10227, #15042."""
        created = self._state.account_created.get(email)
        return created is None or self._clock() - created >= self._state.iam_propagation_seconds

    def visible_accounts(self) -> set[str]:
        return {e for e in self._state.service_accounts if self.visible(e)}

    def account_visible(self, email: str) -> bool:
        """Whether `email` is an account the state holds and that has propagated (one lookup, not a set of all)."""
        return email in self._state.service_accounts and self.visible(email)

    def visible_account_names(self) -> VisibleAccounts:
        """The visible accounts as a container to test members against (`in`), without listing them all."""
        return VisibleAccounts(self)

    # ------------------------------------------------------------ organization policy

    def domain_violations(self, project: str, members: Iterable[str]) -> ApiError | None:
        """iam.allowedPolicyMemberDomains: members a write adds must belong to an allowed domain.
        Source: https://cloud.google.com/resource-manager/docs/organization-policy/restricting-domains and the
        recorded error (PreconditionFailure, terraform-google-modules/terraform-example-foundation#1454)."""
        domains = self._state.allowed_domains.get(project)
        if not domains:
            return None
        outside = [m for m in members if rules.outside_domains(m, domains)]
        if not outside:
            return None
        failure = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type="constraints/iam.allowedPolicyMemberDomains",
                    subject=f"orgpolicy:projects/{project}?configvalue={m.partition(':')[2] or m}",
                    description=f"User {m.partition(':')[2] or m} is not in permitted organization.",
                )
                for m in outside
            ]
        )
        return ApiError(grpc.StatusCode.FAILED_PRECONDITION, ORG_POLICY_DENIED, details=[failure])

    # ------------------------------------------------------------ groups

    def members_for(self, email: str) -> set[str]:
        """The policy members that name this caller, its groups included (admin API /groups)."""
        members = rules.members_for(email)
        if email:
            mine = {f"user:{email}", f"serviceAccount:{email}"}
            members |= {f"group:{g}" for g, listed in self._state.groups.items() if mine & listed}
        return members


class VisibleAccounts:
    """`email in VisibleAccounts(access)`: Access.account_visible, for rules that take a container of emails."""

    def __init__(self, access: Access) -> None:
        self._access = access

    def __contains__(self, email: object) -> bool:
        return isinstance(email, str) and self._access.account_visible(email)
