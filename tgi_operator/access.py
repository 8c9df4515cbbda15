"""Who may call the service: the run.invoker members one TGIService owns, and its invoker service account.

IAM as it really answers (sources in the emulator's ledger):
- A service account that does not exist reads as PERMISSION_DENIED "... denied on resource (or it may not exist)",
  even for an owner (documented for `gcloud iam service-accounts describe`); sometimes as NOT_FOUND. Neither proves
  it is missing, and neither proves a missing permission: creating it decides (ALREADY_EXISTS: it exists).
- Reads are eventually consistent: a new account stays invisible to reads and to policy bindings ("Service account
  X does not exist.") for up to a minute or more after its creation. That is a wait, never a stall.
- An organization policy (constraints/iam.allowedPolicyMemberDomains) refuses a whole SetIamPolicy with
  FAILED_PRECONDITION and does not say which member: members are then granted one at a time, and the refused ones
  are reported by name while the others (and the service) carry on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from google.cloud import iam_admin_v1

from tgi_operator.cloudrun import CloudRunServices
from tgi_operator.errors import PermanentCloudError, Stall, TransientCloudError
from tgi_operator.iam import ServiceAccounts
from tgi_operator.invokers import granted, invoker_members_of, parse_members, revoked
from tgi_operator.models import TGIServiceSpec
from tgi_operator.naming import invoker_account_id
from tgi_operator.render import (
    Target,
    invoker_account_description,
    invoker_account_display_name,
    invoker_members,
    invoker_service_account,
)

# The wait before binding a new account: IAM documents "might take a minute" for eventual consistency; the pass
# after this looks again (a 400 then is still a wait, see apply_invokers).
NEW_ACCOUNT_BIND_DELAY = 3.0
ORG_POLICY_REFUSAL = "do not belong to a permitted customer"  # FAILED_PRECONDITION of domain restricted sharing


@dataclass
class InvokerAccountCreated(TransientCloudError):
    """This pass made the invoker account. IAM refuses bindings to a new account for a while ("Service account X
    does not exist."), so the pass binds nothing now (no policy read, no refused write) and the next one binds
    every member; the status records the account at once: it is the evidence deletion needs to remove it."""

    email: str = ""
    routine: ClassVar[bool] = True


@dataclass
class Access:
    """What the IAM side of a pass achieved."""

    invoker_service_account: str | None = None  # the invoker account's email, while the spec asks for one
    refused: list[str] = field(default_factory=list)  # members an organization policy does not allow


async def apply_invokers(
    namespace: str, name: str, spec: TGIServiceSpec, where: Target, recorded_annotation: str | None,
    had_invoker_account: bool, services: CloudRunServices, accounts: ServiceAccounts, *, new_service: bool = False,
) -> Access:
    """Revoke the members this object dropped, then grant the ones it wants; create or delete its invoker account.
    `recorded_annotation`: the members this object granted (kept on the service); `had_invoker_account`: the
    status says this object made its invoker account; `new_service`: the pass found no service and created it, so
    its invoker account is most likely missing too and is created without a read first."""
    recorded = parse_members(recorded_annotation)
    desired = set(invoker_members(namespace, name, spec, where.project))
    sa_email = invoker_service_account(namespace, name, where.project)
    sa_member = f"serviceAccount:{sa_email}"
    if sa_member in desired and await ensure_invoker_account(namespace, name, where.project, sa_email, accounts,
                                                             create_first=new_service):
        raise InvokerAccountCreated("ACCOUNT_PROPAGATING", f"created the invoker service account {sa_email}; IAM "
                                    "lets it be bound only after it has propagated: binding it in the next pass",
                                    retry_after=NEW_ACCOUNT_BIND_DELAY, email=sa_email)
    policy = await services.get_iam_policy(where.name)
    without_dropped = revoked(policy, recorded, desired)
    if without_dropped is not None:
        policy = await services.set_iam_policy(where.name, without_dropped)
    refused: list[str] = []
    with_wanted = granted(policy, desired)
    if with_wanted is not None:
        try:
            await services.set_iam_policy(where.name, with_wanted)
        except PermanentCloudError as exc:
            if sa_member in desired and sa_member not in invoker_members_of(policy) and sa_email in exc.message:
                raise TransientCloudError(exc.code, f"the invoker account is not visible to IAM yet (IAM reads are "
                                          f"eventually consistent): {exc.message}", retry_after=NEW_ACCOUNT_BIND_DELAY) from exc
            if ORG_POLICY_REFUSAL not in exc.message:
                raise
            refused = await _grant_one_by_one(services, where.name, policy, desired - invoker_members_of(policy))
    if sa_member not in desired:
        await delete_invoker_account_if_made(namespace, name, where.project, recorded, had_invoker_account, accounts)
    return Access(sa_email if sa_member in desired else None, refused)


async def _grant_one_by_one(services: CloudRunServices, resource: str, policy, members: set[str]) -> list[str]:
    """Grant each member on its own, so the ones an organization policy allows are granted; returns the refused."""
    refused = []
    for member in sorted(members):
        try:
            policy = await services.set_iam_policy(resource, granted(policy, {member}) or policy)
        except PermanentCloudError as exc:
            if ORG_POLICY_REFUSAL not in exc.message:
                raise
            refused.append(member)
    return refused


def refused_problem(refused: list[str]) -> tuple[str, str]:
    return ("InvokerRefused", f"access: {', '.join(refused)} refused by an organization policy "
            "(constraints/iam.allowedPolicyMemberDomains allows only members of permitted customers); the service "
            "serves the other invokers. Remove the member from the spec, or ask for the policy to allow it")


async def find_account(accounts: ServiceAccounts, project: str, email: str) -> iam_admin_v1.ServiceAccount | None:
    """The account, or None when IAM does not show it: NOT_FOUND, or PERMISSION_DENIED "(or it may not exist)"
    (a missing account, one still propagating, or a permission the operator lacks: the next write tells)."""
    try:
        return await accounts.get(project, email)
    except PermanentCloudError as exc:
        if exc.code == "PERMISSION_DENIED" and exc.reason != "ApiNotEnabled":
            return None
        raise


async def ensure_invoker_account(namespace: str, name: str, project: str, email: str, accounts: ServiceAccounts,
                                 *, create_first: bool = False) -> bool:
    """Get-or-create (a read per pass, a write only when IAM does not show it); True when this call created it. An
    account with this id that lacks our description was made by someone else: never used, never deleted.
    `create_first`: the account is most likely missing (its service was just created), so no read: a read of a
    missing account only answers 403, and ALREADY_EXISTS leads to the same judgement as a read."""
    description = invoker_account_description(namespace, name)
    found = None if create_first else await find_account(accounts, project, email)
    if found is None:
        try:
            await accounts.create(project, invoker_account_id(namespace, name),
                                  invoker_account_display_name(namespace, name), description)
            return True
        except PermanentCloudError as exc:
            if exc.code == "ALREADY_EXISTS":  # read as a pass that reads first would have (a 403 then is no proof)
                found = (create_first and await find_account(accounts, project, email)) \
                    or await _existing_account(accounts, project, email, exc)
            elif exc.code == "PERMISSION_DENIED" and exc.reason != "ApiNotEnabled":
                raise Stall("PermissionDenied", f"the operator may not create the invoker service account {email} "
                            f"(access.createInvokerServiceAccount): grant it roles/iam.serviceAccountAdmin on project "
                            f"{project}, or set createInvokerServiceAccount: false. IAM: {exc.message}") from exc
            else:
                raise
    if found.description != description:
        raise Stall("InvokerAccountTaken", f"service account {email} exists but was not created for this "
                    "TGIService; it is neither used nor deleted")
    return False


async def _existing_account(accounts: ServiceAccounts, project: str, email: str,
                            exc: PermanentCloudError) -> iam_admin_v1.ServiceAccount:
    """The account a create called ALREADY_EXISTS although a read did not show it. IAM reads lag behind a create by
    a minute or more: while the project's list does not name it either, look again later. Once it is listed, read
    it once more (it may have propagated between the first read and the list, a race CI met): a 403 then is real."""
    if email.lower() not in await accounts.list_emails(project):
        raise TransientCloudError(exc.code, f"{email} exists but IAM does not show it yet (reads are eventually "
                                  "consistent after a create); looking again", retry_after=5.0) from exc
    found = await find_account(accounts, project, email)
    if found is None:
        raise Stall("PermissionDenied", f"the invoker service account {email} exists but the operator may not read "
                    f"it (iam.serviceAccounts.get): grant it roles/iam.serviceAccountAdmin on project {project}, or it "
                    "belongs to someone else") from exc
    return found


async def delete_invoker_account_if_made(
    namespace: str, name: str, project: str, recorded: set[str], had_invoker_account: bool, accounts: ServiceAccounts
) -> None:
    """Delete the invoker account when there is evidence this object made it: its member in the record of granted
    members (`recorded`), or the account in the object's status (`had_invoker_account`)."""
    email = invoker_service_account(namespace, name, project)
    if f"serviceAccount:{email}" in recorded or had_invoker_account:
        await delete_invoker_account(namespace, name, project, email, accounts)


async def delete_invoker_account(namespace: str, name: str, project: str, email: str, accounts: ServiceAccounts) -> None:
    """Delete the invoker account this object made (the caller has the evidence: its record or its status)."""
    found = await find_account(accounts, project, email)
    if found is not None:
        if found.description == invoker_account_description(namespace, name):
            await accounts.delete(project, email)
        return
    # IAM does not show it: gone already, or made moments ago and not visible yet. Delete by name either way.
    try:
        await accounts.delete(project, email)  # False (NOT_FOUND): gone
    except PermanentCloudError as exc:
        if exc.code != "PERMISSION_DENIED" or exc.reason == "ApiNotEnabled":
            raise
        # A 403 hides whether it exists: the project's list of accounts says (and needs no more than the operator's role).
        if email.lower() in await accounts.list_emails(project):
            raise
