"""Cloud Run service IAM policies and IAM Admin service accounts through the real clients."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from emulator_fixtures import *  # noqa: F403
from emulator_fixtures import OPERATOR, PARENT, PROJECT, seed_service, sync_clients, wait_for_account
from google.api_core import exceptions as gexc
from google.cloud import iam_admin_v1, run_v2
from google.iam.v1 import iam_policy_pb2, policy_pb2
from google.rpc import error_details_pb2

from tgi_operator.emulator.server import Emulator, EmulatorConfig
from tgi_operator.emulator.testing import EmulatorThread

pytestmark = pytest.mark.timeout(60)

APP_ID = "app-caller"
APP = f"{APP_ID}@{PROJECT}.iam.gserviceaccount.com"


@pytest.fixture
def service(run_client: run_v2.ServicesClient) -> run_v2.Service:
    return run_client.create_service(parent=PARENT, service=seed_service(), service_id="guarded").result(timeout=30)


def _grant(policy: policy_pb2.Policy, role: str, member: str) -> policy_pb2.Policy:
    policy.bindings.add(role=role, members=[member])
    return policy


def _bad_request(error: gexc.GoogleAPICallError) -> list[tuple[str, str]]:
    bad = [d for d in error.details if isinstance(d, error_details_pb2.BadRequest)][0]
    return [(v.field, v.description) for v in bad.field_violations]


def test_policy_read_modify_write(
    run_client: run_v2.ServicesClient, iam_client: iam_admin_v1.IAMClient, service: run_v2.Service, emulator: Emulator
) -> None:
    iam_client.create_service_account(request={"name": f"projects/{PROJECT}", "account_id": APP_ID})
    wait_for_account(iam_client, APP)
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


def test_binding_a_service_account_that_does_not_exist_is_invalid(
    run_client: run_v2.ServicesClient, iam_client: iam_admin_v1.IAMClient, service: run_v2.Service
) -> None:
    policy = run_client.get_iam_policy(request={"resource": service.name})
    policy.bindings.add(role="roles/run.viewer", members=["user:a@example.com"])
    policy.bindings.add(role="roles/run.invoker", members=["group:ml@example.com", f"serviceAccount:{APP}"])
    with pytest.raises(gexc.InvalidArgument) as caught:
        run_client.set_iam_policy(request={"resource": service.name, "policy": policy})
    assert caught.value.message == f"Service account {APP} does not exist."
    assert _bad_request(caught.value) == [("policy.bindings[1].members[1]", f"Service account {APP} does not exist.")]
    assert list(run_client.get_iam_policy(request={"resource": service.name}).bindings) == []  # nothing stored

    # An account of the same name in another project is another account.
    iam_client.create_service_account(request={"name": "projects/other-project", "account_id": APP_ID})
    wait_for_account(iam_client, f"{APP_ID}@other-project.iam.gserviceaccount.com")
    with pytest.raises(gexc.InvalidArgument):
        run_client.set_iam_policy(request={"resource": service.name, "policy": policy})
    iam_client.create_service_account(request={"name": f"projects/{PROJECT}", "account_id": APP_ID})
    wait_for_account(iam_client, APP)
    updated = run_client.set_iam_policy(request={"resource": service.name, "policy": policy})
    assert [(b.role, list(b.members)) for b in updated.bindings] == [
        ("roles/run.invoker", ["group:ml@example.com", f"serviceAccount:{APP}"]),
        ("roles/run.viewer", ["user:a@example.com"]),
    ]


@pytest.mark.parametrize(
    "email",
    [
        "123456789012-compute@developer.gserviceaccount.com",  # the default compute account
        f"{PROJECT}@appspot.gserviceaccount.com",  # App Engine's default account
        "service-123456789012@gcp-sa-aiplatform.iam.gserviceaccount.com",  # a service agent
        "firebase-agent@gcp-sa-firebase.iam.gserviceaccount.com",
        "service-123456789012@compute-system.iam.gserviceaccount.com",
    ],
)
def test_google_managed_service_accounts_need_no_account(
    run_client: run_v2.ServicesClient, service: run_v2.Service, email: str
) -> None:
    policy = _grant(run_client.get_iam_policy(request={"resource": service.name}), "roles/run.invoker", f"serviceAccount:{email}")
    updated = run_client.set_iam_policy(request={"resource": service.name, "policy": policy})
    assert list(updated.bindings[0].members) == [f"serviceAccount:{email}"]


def test_members_the_policy_already_holds_are_not_checked_again(tmp_path: Path) -> None:
    """A policy that binds an account the emulator no longer holds (here: a state file edited between runs, as
    an older emulator or a hand-made file may leave) keeps working; only members a write adds are checked."""
    state_file = tmp_path / "emulator.json"
    config = EmulatorConfig(reconcile_seconds=0.1, state_file=state_file, identity=OPERATOR)

    with EmulatorThread(config) as emu, sync_clients(emu.grpc_endpoint) as clients:
        run, iam = clients.run, clients.iam
        created = run.create_service(parent=PARENT, service=seed_service(), service_id="kept").result(timeout=30)
        iam.create_service_account(request={"name": f"projects/{PROJECT}", "account_id": APP_ID})
        wait_for_account(iam, APP)
        policy = _grant(run.get_iam_policy(request={"resource": created.name}), "roles/run.invoker", f"serviceAccount:{APP}")
        run.set_iam_policy(request={"resource": created.name, "policy": policy})
    document = json.loads(state_file.read_text())
    del document["serviceAccounts"][APP]
    state_file.write_text(json.dumps(document))

    with EmulatorThread(config) as emu, sync_clients(emu.grpc_endpoint) as clients:
        run = clients.run
        policy = _grant(run.get_iam_policy(request={"resource": created.name}), "roles/run.viewer", "user:a@example.com")
        updated = run.set_iam_policy(request={"resource": created.name, "policy": policy})
        assert [(b.role, list(b.members)) for b in updated.bindings] == [
            ("roles/run.invoker", [f"serviceAccount:{APP}"]), ("roles/run.viewer", ["user:a@example.com"])
        ]
        # Bound afresh (after the binding was dropped), it is checked like any new member.
        del updated.bindings[0]
        cleared = run.set_iam_policy(request={"resource": created.name, "policy": updated})
        with pytest.raises(gexc.InvalidArgument):
            run.set_iam_policy(request={"resource": created.name, "policy": _grant(cleared, "roles/run.invoker", f"serviceAccount:{APP}")})


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

    assert wait_for_account(iam_client, email) == created
    assert iam_client.get_service_account(name=f"projects/-/serviceAccounts/{email}") == created
    assert iam_client.get_service_account(name=f"projects/{PROJECT}/serviceAccounts/{created.unique_id}") == created
    for i in range(3):
        iam_client.create_service_account(request={"name": f"projects/{PROJECT}", "account_id": f"extra-{i}x"})
    wait_for_account(iam_client, f"extra-2x@{PROJECT}.iam.gserviceaccount.com")
    pager = iam_client.list_service_accounts(request={"name": f"projects/{PROJECT}", "page_size": 2})
    assert len(list(pager.pages)) == 2 and len(list(iam_client.list_service_accounts(name=f"projects/{PROJECT}"))) == 4

    policy = run_client.get_iam_policy(request={"resource": service.name})
    run_client.set_iam_policy(request={"resource": service.name, "policy": _grant(policy, "roles/run.invoker", f"serviceAccount:{email}")})
    iam_client.delete_service_account(name=created.name)
    with pytest.raises(gexc.PermissionDenied):  # IAM does not say whether it exists
        iam_client.get_service_account(name=created.name)
    policy = run_client.get_iam_policy(request={"resource": service.name})
    deleted = f"deleted:serviceAccount:{email}?uid={created.unique_id}"
    assert list(policy.bindings[0].members) == [deleted]
    # The deleted member stays through later writes; binding the deleted account again is refused, as on IAM.
    policy = run_client.set_iam_policy(request={"resource": service.name, "policy": _grant(policy, "roles/run.invoker", "user:a@example.com")})
    assert list(policy.bindings[0].members) == [deleted, "user:a@example.com"]
    with pytest.raises(gexc.InvalidArgument) as caught:
        run_client.set_iam_policy(request={"resource": service.name, "policy": _grant(policy, "roles/run.invoker", f"serviceAccount:{email}")})
    assert caught.value.message == f"Service account {email} does not exist."


@pytest.mark.parametrize(
    ("service_account", "field"),
    [
        ({"display_name": "d" * 101}, "service_account.display_name"),
        ({"display_name": "é" * 51}, "service_account.display_name"),  # 102 UTF-8 bytes
        ({"description": "d" * 257}, "service_account.description"),
    ],
)
def test_service_account_text_limits(iam_client: iam_admin_v1.IAMClient, service_account: dict[str, str], field: str) -> None:
    request = {"name": f"projects/{PROJECT}", "account_id": "wordy-account", "service_account": service_account}
    with pytest.raises(gexc.InvalidArgument) as caught:
        iam_client.create_service_account(request=request)
    assert [f for f, _ in _bad_request(caught.value)] == [field]
    assert field.rsplit(".", 1)[1] in caught.value.message
    with pytest.raises(gexc.PermissionDenied):  # nothing was created (IAM does not say so: "or it may not exist")
        iam_client.get_service_account(name=f"projects/{PROJECT}/serviceAccounts/wordy-account@{PROJECT}.iam.gserviceaccount.com")


def test_service_account_text_at_the_limits_is_accepted(iam_client: iam_admin_v1.IAMClient) -> None:
    created = iam_client.create_service_account(
        request={"name": f"projects/{PROJECT}", "account_id": "wordy-account",
                 "service_account": {"display_name": "d" * 100, "description": "d" * 256}}
    )  # fmt: skip
    assert (len(created.display_name), len(created.description)) == (100, 256)
