"""Cloud Run service IAM policies and IAM Admin service accounts through the real clients."""

from __future__ import annotations

import pytest
from emulator_fixtures import *  # noqa: F403
from emulator_fixtures import OPERATOR, PARENT, PROJECT, seed_service
from google.api_core import exceptions as gexc
from google.cloud import iam_admin_v1, run_v2
from google.iam.v1 import iam_policy_pb2, policy_pb2
from google.rpc import error_details_pb2

from tgi_operator.emulator.server import Emulator

pytestmark = pytest.mark.timeout(60)

APP = f"app@{PROJECT}.iam.gserviceaccount.com"


@pytest.fixture
def service(run_client: run_v2.ServicesClient) -> run_v2.Service:
    return run_client.create_service(parent=PARENT, service=seed_service(), service_id="guarded").result(timeout=30)


def _grant(policy: policy_pb2.Policy, role: str, member: str) -> policy_pb2.Policy:
    policy.bindings.add(role=role, members=[member])
    return policy


def test_policy_read_modify_write(run_client: run_v2.ServicesClient, service: run_v2.Service, emulator: Emulator) -> None:
    policy = run_client.get_iam_policy(request={"resource": service.name})
    assert list(policy.bindings) == [] and policy.etag
    assert not emulator.services.may_invoke(service.name, APP)

    updated = run_client.set_iam_policy(
        request={"resource": service.name, "policy": _grant(policy, "roles/run.invoker", f"serviceAccount:{APP}")}
    )
    assert updated.etag != policy.etag
    assert [(b.role, list(b.members)) for b in updated.bindings] == [("roles/run.invoker", [f"serviceAccount:{APP}"])]
    assert run_client.get_iam_policy(request={"resource": service.name}) == updated
    assert emulator.services.may_invoke(service.name, APP)
    assert not emulator.services.may_invoke(service.name, "someone@example.com")
    assert not emulator.services.may_invoke(service.name, "")  # anonymous


def test_stale_policy_etag_is_aborted(run_client: run_v2.ServicesClient, service: run_v2.Service) -> None:
    first = run_client.get_iam_policy(request={"resource": service.name})
    second = run_client.get_iam_policy(request={"resource": service.name})
    run_client.set_iam_policy(request={"resource": service.name, "policy": _grant(first, "roles/run.invoker", "user:a@example.com")})
    with pytest.raises(gexc.Aborted) as caught:
        run_client.set_iam_policy(
            request={"resource": service.name, "policy": _grant(second, "roles/run.invoker", "user:b@example.com")}
        )
    assert "concurrent policy changes" in caught.value.message


@pytest.mark.parametrize(
    ("role", "member", "field"),
    [
        ("roles/run.invoker", "app@example.com", "policy.bindings[0].members[0]"),
        ("roles/run.invoker", "user:not-an-email", "policy.bindings[0].members[0]"),
        ("roles/run.invoker", "robot:x@example.com", "policy.bindings[0].members[0]"),
        ("roles/storage.admin", "user:a@example.com", "policy.bindings[0].role"),
    ],
)
def test_bad_member_or_role_is_invalid(run_client: run_v2.ServicesClient, service: run_v2.Service, role: str, member: str, field: str) -> None:
    policy = run_client.get_iam_policy(request={"resource": service.name})
    with pytest.raises(gexc.InvalidArgument) as caught:
        run_client.set_iam_policy(request={"resource": service.name, "policy": _grant(policy, role, member)})
    bad = [d for d in caught.value.details if isinstance(d, error_details_pb2.BadRequest)][0]
    assert [v.field for v in bad.field_violations] == [field]


def test_public_and_project_roles_and_disabled_invoker_check(
    run_client: run_v2.ServicesClient, service: run_v2.Service, emulator: Emulator, admin: AdminApi  # noqa: F405
) -> None:
    # The operator's identity holds roles/run.admin in the project: it may invoke every service.
    assert emulator.services.may_invoke(service.name, OPERATOR)
    admin.set_project_roles(APP, ["roles/run.invoker"])
    assert emulator.services.may_invoke(service.name, APP)
    admin.set_project_roles(APP, [])
    assert not emulator.services.may_invoke(service.name, APP)

    policy = run_client.get_iam_policy(request={"resource": service.name})
    run_client.set_iam_policy(request={"resource": service.name, "policy": _grant(policy, "roles/run.invoker", "allUsers")})
    assert emulator.services.may_invoke(service.name, "") and emulator.services.may_invoke(service.name, APP)


def test_invoker_iam_disabled_lets_everyone_in(run_client: run_v2.ServicesClient, emulator: Emulator) -> None:
    service = seed_service()
    service.invoker_iam_disabled = True
    created = run_client.create_service(parent=PARENT, service=service, service_id="open").result(timeout=30)
    assert emulator.services.may_invoke(created.name, "")


def test_test_iam_permissions_for_the_operator(run_client: run_v2.ServicesClient, service: run_v2.Service) -> None:
    wanted = ["run.services.get", "run.services.setIamPolicy", "run.routes.invoke"]
    granted = run_client.test_iam_permissions(request=iam_policy_pb2.TestIamPermissionsRequest(resource=service.name, permissions=wanted))
    assert list(granted.permissions) == wanted


def test_service_accounts(iam_client: iam_admin_v1.IAMClient, run_client: run_v2.ServicesClient, service: run_v2.Service) -> None:
    created = iam_client.create_service_account(
        request={"name": f"projects/{PROJECT}", "account_id": "llama-invoker", "service_account": {"display_name": "Invoker"}}
    )
    email = f"llama-invoker@{PROJECT}.iam.gserviceaccount.com"
    assert created.email == email and created.name == f"projects/{PROJECT}/serviceAccounts/{email}"
    assert created.display_name == "Invoker" and len(created.unique_id) == 21
    with pytest.raises(gexc.AlreadyExists):
        iam_client.create_service_account(request={"name": f"projects/{PROJECT}", "account_id": "llama-invoker"})
    with pytest.raises(gexc.InvalidArgument):
        iam_client.create_service_account(request={"name": f"projects/{PROJECT}", "account_id": "No"})

    assert iam_client.get_service_account(name=f"projects/-/serviceAccounts/{email}") == created
    assert iam_client.get_service_account(name=f"projects/{PROJECT}/serviceAccounts/{created.unique_id}") == created
    for i in range(3):
        iam_client.create_service_account(request={"name": f"projects/{PROJECT}", "account_id": f"extra-{i}x"})
    pager = iam_client.list_service_accounts(request={"name": f"projects/{PROJECT}", "page_size": 2})
    assert len(list(pager.pages)) == 2 and len(list(iam_client.list_service_accounts(name=f"projects/{PROJECT}"))) == 4

    policy = run_client.get_iam_policy(request={"resource": service.name})
    run_client.set_iam_policy(request={"resource": service.name, "policy": _grant(policy, "roles/run.invoker", f"serviceAccount:{email}")})
    iam_client.delete_service_account(name=created.name)
    with pytest.raises(gexc.NotFound):
        iam_client.get_service_account(name=created.name)
    members = list(run_client.get_iam_policy(request={"resource": service.name}).bindings[0].members)
    assert members == [f"deleted:serviceAccount:{email}?uid={created.unique_id}"]
