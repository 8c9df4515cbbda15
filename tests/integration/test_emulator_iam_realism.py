"""IAM as strict as Google Cloud, through the real clients: hidden and propagating service accounts, denied IAM
permissions, disabled APIs, the runtime identity's actAs, the organization's domain restriction, conditional
bindings and policy versions, and who may invoke (run.developer, groups)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from emulator_fixtures import *  # noqa: F403
from emulator_fixtures import OPERATOR, PARENT, PROJECT, AdminApi, seed_service, service_name, sync_clients, wait_for_account
from google.api_core import exceptions as gexc
from google.cloud import iam_admin_v1, run_v2
from google.iam.v1 import iam_policy_pb2, options_pb2, policy_pb2
from google.rpc import error_details_pb2
from google.type import expr_pb2

from tgi_operator.emulator.server import Emulator, EmulatorConfig
from tgi_operator.emulator.testing import EmulatorProcess, EmulatorThread

pytestmark = pytest.mark.timeout(60)

APP_ID = "app-caller"
APP = f"{APP_ID}@{PROJECT}.iam.gserviceaccount.com"
COND = expr_pb2.Expr(title="until 2030", expression='request.time < timestamp("2030-01-01T00:00:00Z")')


def _info(error: gexc.GoogleAPICallError) -> error_details_pb2.ErrorInfo:
    [info] = [d for d in error.details if isinstance(d, error_details_pb2.ErrorInfo)]
    return info


def _create_account(iam: iam_admin_v1.IAMClient, account_id: str = APP_ID, project: str = PROJECT) -> iam_admin_v1.ServiceAccount:
    return iam.create_service_account(request={"name": f"projects/{project}", "account_id": account_id})


def _get_policy(run: run_v2.ServicesClient, name: str, version: int = 0) -> policy_pb2.Policy:
    options = options_pb2.GetPolicyOptions(requested_policy_version=version)
    return run.get_iam_policy(request=iam_policy_pb2.GetIamPolicyRequest(resource=name, options=options))


def _set_policy(run: run_v2.ServicesClient, name: str, policy: policy_pb2.Policy) -> policy_pb2.Policy:
    return run.set_iam_policy(request={"resource": name, "policy": policy})


@pytest.fixture
def service(run_client: run_v2.ServicesClient) -> run_v2.Service:
    return run_client.create_service(parent=PARENT, service=seed_service(), service_id="guarded").result(timeout=30)


# ---------------------------------------------------------------- A. service accounts


def test_missing_account_is_permission_denied_with_error_info(iam_client: iam_admin_v1.IAMClient) -> None:
    for name in (f"projects/{PROJECT}/serviceAccounts/{APP}", f"projects/-/serviceAccounts/{APP}", f"projects/{PROJECT}/serviceAccounts/123456789012345678901"):
        with pytest.raises(gexc.PermissionDenied) as caught:
            iam_client.get_service_account(name=name, retry=None)
        assert caught.value.message == "Permission 'iam.serviceAccounts.get' denied on resource (or it may not exist)."
        info = _info(caught.value)
        assert (info.reason, info.domain, dict(info.metadata)) == (
            "IAM_PERMISSION_DENIED", "iam.googleapis.com", {"permission": "iam.serviceAccounts.get"}
        )


def test_new_account_propagates_before_reads_and_bindings_see_it(
    iam_client: iam_admin_v1.IAMClient, run_client: run_v2.ServicesClient, service: run_v2.Service, admin: AdminApi  # noqa: F405
) -> None:
    admin.set_iam_propagation_seconds(3)
    created = _create_account(iam_client)
    with pytest.raises(gexc.PermissionDenied):
        iam_client.get_service_account(name=created.name, retry=None)
    assert [a.email for a in iam_client.list_service_accounts(name=f"projects/{PROJECT}")] == []
    policy = run_client.get_iam_policy(request={"resource": service.name})
    policy.bindings.add(role="roles/run.invoker", members=[f"serviceAccount:{APP}"])
    with pytest.raises(gexc.InvalidArgument) as caught:
        _set_policy(run_client, service.name, policy)
    assert caught.value.message == f"Service account {APP} does not exist."
    with pytest.raises(gexc.AlreadyExists):  # writes are consistent: the id is taken
        _create_account(iam_client)

    assert wait_for_account(iam_client, APP) == created
    assert [a.email for a in iam_client.list_service_accounts(name=f"projects/{PROJECT}")] == [APP]
    assert list(_set_policy(run_client, service.name, policy).bindings[0].members) == [f"serviceAccount:{APP}"]


def test_an_account_can_be_deleted_while_it_propagates(iam_client: iam_admin_v1.IAMClient, admin: AdminApi) -> None:  # noqa: F405
    admin.set_iam_propagation_seconds(30)
    created = _create_account(iam_client)
    iam_client.delete_service_account(name=created.name)
    admin.set_iam_propagation_seconds(0)
    with pytest.raises(gexc.PermissionDenied):
        iam_client.get_service_account(name=created.name, retry=None)
    assert _create_account(iam_client).email == APP  # the id is free again


def test_deleting_a_missing_account_is_not_found(iam_client: iam_admin_v1.IAMClient) -> None:
    name = f"projects/{PROJECT}/serviceAccounts/{APP}"
    with pytest.raises(gexc.NotFound) as caught:
        iam_client.delete_service_account(name=name, retry=None)
    assert caught.value.message == f"Service account {name} does not exist."


@pytest.mark.parametrize(
    ("permission", "call"),
    [
        ("iam.serviceAccounts.create", lambda iam: _create_account(iam, "second-account")),
        ("iam.serviceAccounts.get", lambda iam: iam.get_service_account(name=f"projects/{PROJECT}/serviceAccounts/{APP}", retry=None)),
        ("iam.serviceAccounts.list", lambda iam: list(iam.list_service_accounts(name=f"projects/{PROJECT}", retry=None))),
        ("iam.serviceAccounts.delete", lambda iam: iam.delete_service_account(name=f"projects/{PROJECT}/serviceAccounts/{APP}", retry=None)),
    ],
)
def test_denied_iam_permissions(iam_client: iam_admin_v1.IAMClient, admin: AdminApi, permission: str, call: object) -> None:  # noqa: F405
    admin.set_iam_propagation_seconds(0)
    _create_account(iam_client)
    admin.deny_iam([permission])
    with pytest.raises(gexc.PermissionDenied) as caught:
        call(iam_client)  # type: ignore[operator]
    assert caught.value.message == f"Permission '{permission}' denied on resource (or it may not exist)."
    assert dict(_info(caught.value).metadata) == {"permission": permission}
    admin.deny_iam([])
    call(iam_client)  # type: ignore[operator]


# ---------------------------------------------------------------- C1. disabled APIs


def test_disabled_run_api_refuses_every_cloud_run_call(
    run_client: run_v2.ServicesClient, iam_client: iam_admin_v1.IAMClient, service: run_v2.Service, admin: AdminApi  # noqa: F405
) -> None:
    admin.set_api("run.googleapis.com", enabled=False)
    calls = [
        lambda: run_client.get_service(name=service.name, retry=None),
        lambda: list(run_client.list_services(parent=PARENT, retry=None)),
        lambda: run_client.create_service(parent=PARENT, service=seed_service(), service_id="another", retry=None),
        lambda: run_client.delete_service(name=service.name, retry=None),
        lambda: run_client.get_iam_policy(request={"resource": service.name}, retry=None),
        lambda: run_client.list_operations(request={"name": PARENT}, retry=None),
    ]
    for call in calls:
        with pytest.raises(gexc.PermissionDenied) as caught:
            call()
        assert caught.value.message.startswith(f"Cloud Run Admin API has not been used in project {PROJECT} before or it is disabled.")
        info = _info(caught.value)
        assert (info.reason, info.domain, info.metadata["service"], info.metadata["consumer"]) == (
            "SERVICE_DISABLED", "googleapis.com", "run.googleapis.com", f"projects/{PROJECT}"
        )
    # Other projects and the IAM API are not affected; nothing was deleted or created.
    assert list(run_client.list_services(parent="projects/other-project/locations/us-central1")) == []
    _create_account(iam_client)
    admin.set_api("run.googleapis.com", enabled=True)
    assert run_client.get_service(name=service.name) == service
    with pytest.raises(gexc.NotFound):
        run_client.get_service(name=service_name("another"))


def test_disabled_iam_api_refuses_service_account_calls(
    iam_client: iam_admin_v1.IAMClient, run_client: run_v2.ServicesClient, admin: AdminApi  # noqa: F405
) -> None:
    admin.set_api("iam.googleapis.com", enabled=False)
    with pytest.raises(gexc.PermissionDenied) as caught:
        _create_account(iam_client)
    assert caught.value.message.startswith("Identity and Access Management (IAM) API has not been used in project")
    assert _info(caught.value).reason == "SERVICE_DISABLED"
    assert list(run_client.list_services(parent=PARENT)) == []  # Cloud Run still answers
    assert admin.calls()["google.iam.admin.v1.IAM/CreateServiceAccount"] == {"PERMISSION_DENIED": 1}
    admin.set_api("iam.googleapis.com", enabled=True)
    _create_account(iam_client)


# ---------------------------------------------------------------- C2. runtime identity (actAs)


def _runs_as(email: str) -> run_v2.Service:
    service = seed_service()
    service.template.service_account = email
    return service


def test_runtime_identity_needs_an_existing_visible_account_and_act_as(
    run_client: run_v2.ServicesClient, iam_client: iam_admin_v1.IAMClient, admin: AdminApi  # noqa: F405
) -> None:
    denied = f"Permission 'iam.serviceaccounts.actAs' denied on service account {APP} (or it may not exist)."
    with pytest.raises(gexc.PermissionDenied) as caught:  # missing: IAM does not say so
        run_client.create_service(parent=PARENT, service=_runs_as(APP), service_id="runner", retry=None)
    assert caught.value.message == denied
    info = _info(caught.value)
    assert (info.reason, dict(info.metadata)) == ("IAM_PERMISSION_DENIED", {"permission": "iam.serviceaccounts.actAs"})
    with pytest.raises(gexc.NotFound):  # nothing was created
        run_client.get_service(name=service_name("runner"))

    admin.set_iam_propagation_seconds(30)
    _create_account(iam_client)
    with pytest.raises(gexc.PermissionDenied):  # still propagating
        run_client.create_service(parent=PARENT, service=_runs_as(APP), service_id="runner", retry=None)
    admin.set_iam_propagation_seconds(0)
    created = run_client.create_service(parent=PARENT, service=_runs_as(APP), service_id="runner").result(timeout=30)
    assert created.template.service_account == APP

    admin.set_act_as(APP, allowed=False)
    created.description = "no longer allowed"
    with pytest.raises(gexc.PermissionDenied) as caught:
        run_client.update_service(service=created, retry=None)
    assert caught.value.message == denied
    admin.set_act_as(APP, allowed=True)
    assert run_client.update_service(service=created).result(timeout=30).description == "no longer allowed"


def test_the_default_compute_account_needs_act_as_too(run_client: run_v2.ServicesClient, admin: AdminApi) -> None:  # noqa: F405
    admin.deny_iam(["iam.serviceAccounts.actAs"])
    with pytest.raises(gexc.PermissionDenied) as caught:
        run_client.create_service(parent=PARENT, service=seed_service(), service_id="plain", retry=None)
    assert "-compute@developer.gserviceaccount.com (or it may not exist)." in caught.value.message
    admin.deny_iam([])
    created = run_client.create_service(parent=PARENT, service=seed_service(), service_id="plain").result(timeout=30)
    admin.set_act_as(created.template.service_account, allowed=False)
    with pytest.raises(gexc.PermissionDenied):
        run_client.update_service(service=created, retry=None)


# ---------------------------------------------------------------- C3. organization policy


def test_domain_restricted_sharing(
    run_client: run_v2.ServicesClient, iam_client: iam_admin_v1.IAMClient, service: run_v2.Service, admin: AdminApi  # noqa: F405
) -> None:
    policy = run_client.get_iam_policy(request={"resource": service.name})
    policy.bindings.add(role="roles/run.invoker", members=["allUsers"])
    policy = _set_policy(run_client, service.name, policy)  # before the policy: allowed
    admin.set_allowed_domains(["example.com"])
    for member in ("user:a@other.com", "group:ml@other.com", "domain:other.com", "allAuthenticatedUsers"):
        attempt = policy_pb2.Policy()
        attempt.CopyFrom(policy)
        attempt.bindings.add(role="roles/run.invoker", members=["user:ok@example.com", member])
        with pytest.raises(gexc.FailedPrecondition) as caught:
            _set_policy(run_client, service.name, attempt)
        assert caught.value.message == (
            "One or more users named in the policy do not belong to a permitted customer,  perhaps due to an organization policy."
        )
        [failure] = [d for d in caught.value.details if isinstance(d, error_details_pb2.PreconditionFailure)]
        assert [v.type for v in failure.violations] == ["constraints/iam.allowedPolicyMemberDomains"]
    assert run_client.get_iam_policy(request={"resource": service.name}) == policy  # nothing stored

    # Members already held (allUsers) stay; members inside the domains and service accounts are added.
    admin.set_iam_propagation_seconds(0)
    _create_account(iam_client)
    policy.bindings.add(role="roles/run.invoker", members=["user:ok@example.com", "domain:example.com", f"serviceAccount:{APP}"])
    updated = _set_policy(run_client, service.name, policy)
    assert list(updated.bindings[0].members) == ["allUsers", "domain:example.com", f"serviceAccount:{APP}", "user:ok@example.com"]
    admin.set_allowed_domains(None)
    updated.bindings[0].members.append("user:a@other.com")
    _set_policy(run_client, service.name, updated)


# ---------------------------------------------------------------- C4. conditional bindings and versions


def test_conditional_bindings_need_version_3(run_client: run_v2.ServicesClient, service: run_v2.Service, emulator: Emulator) -> None:
    policy = run_client.get_iam_policy(request={"resource": service.name})
    policy.bindings.add(role="roles/run.invoker", members=["user:a@example.com"], condition=COND)
    with pytest.raises(gexc.InvalidArgument) as caught:  # version 1 (as read) cannot hold a condition
        _set_policy(run_client, service.name, policy)
    assert "policy version 3" in caught.value.message
    policy.version = 3
    policy.bindings.add(role="roles/run.invoker", members=["user:b@example.com"])
    stored = _set_policy(run_client, service.name, policy)
    assert stored.version == 3
    assert [(b.role, list(b.members), b.HasField("condition")) for b in stored.bindings] == [
        ("roles/run.invoker", ["user:b@example.com"], False),
        ("roles/run.invoker", ["user:a@example.com"], True),
    ]
    assert _get_policy(run_client, service.name, 3) == stored

    # Read at version 1 (or unset): the conditional binding shows as roles/..._withcond_<hash>, without its condition.
    v1 = run_client.get_iam_policy(request={"resource": service.name})
    assert v1.version == 1 and v1.etag == stored.etag
    assert [b.role.split("_withcond_")[0] for b in v1.bindings] == ["roles/run.invoker", "roles/run.invoker"]
    assert "_withcond_" in v1.bindings[1].role and not v1.bindings[1].HasField("condition")
    # Writing it back at version 1 would drop the condition: refused.
    v1.bindings[0].members.append("user:c@example.com")
    with pytest.raises(gexc.InvalidArgument) as caught:
        _set_policy(run_client, service.name, v1)
    assert "Specified policy version (1) cannot be less than the existing policy version (3)" in caught.value.message
    with pytest.raises(gexc.InvalidArgument):
        _get_policy(run_client, service.name, 2)

    # Only unconditional bindings let a caller in (the emulator does not evaluate conditions).
    assert emulator.services.may_invoke(service.name, "b@example.com")
    assert not emulator.services.may_invoke(service.name, "a@example.com")

    # Dropping the conditions at version 3 brings the policy back to version 1.
    del stored.bindings[1]
    assert _set_policy(run_client, service.name, stored).version == 1


# ---------------------------------------------------------------- C5. who may invoke


def test_run_developer_and_groups_may_invoke(
    run_client: run_v2.ServicesClient, service: run_v2.Service, emulator: Emulator, admin: AdminApi  # noqa: F405
) -> None:
    policy = run_client.get_iam_policy(request={"resource": service.name})
    policy.bindings.add(role="roles/run.developer", members=["user:dev@example.com"])
    policy.bindings.add(role="roles/run.invoker", members=["group:ml@example.com"])
    _set_policy(run_client, service.name, policy)
    assert emulator.services.may_invoke(service.name, "dev@example.com")
    assert not emulator.services.may_invoke(service.name, "a@example.com")
    admin.set_group("ml@example.com", ["user:a@example.com"])
    assert emulator.services.may_invoke(service.name, "a@example.com")
    token = admin.token("a@example.com", service.uri)
    assert requests.get(service.uri + "/health", headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code == 200
    admin.set_group("ml@example.com", [])
    assert not emulator.services.may_invoke(service.name, "a@example.com")
    assert requests.get(service.uri + "/health", headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code == 403


# ---------------------------------------------------------------- admin API and persistence


def test_admin_api_rejects_bad_access_bodies(admin: AdminApi) -> None:  # noqa: F405
    for path, body in [
        ("/iam-denied", {"permissions": ["iam.roles.create"]}),
        ("/apis", {"project": PROJECT, "service": "compute.googleapis.com", "enabled": False}),
        ("/groups", {"group": "ml@example.com", "members": ["a@example.com"]}),
        ("/act-as", {"email": APP}),
        ("/iam-propagation-seconds", {"seconds": -1}),
    ]:
        response = requests.put(admin.base + path, json=body, timeout=10)
        assert response.status_code == 400 and "error" in response.json(), path


def test_access_settings_survive_a_restart(tmp_path: Path) -> None:
    config = EmulatorConfig(reconcile_seconds=0.1, state_file=tmp_path / "emulator.json", identity=OPERATOR)
    with EmulatorThread(config) as emu:
        admin = AdminApi(emu.http_url)
        admin.set_iam_propagation_seconds(0.7)
        admin.set_api("run.googleapis.com", enabled=False, project="off-project")
        admin.deny_iam(["iam.serviceAccounts.delete"])
        admin.set_act_as(APP, allowed=False)
        admin.set_allowed_domains(["example.com"])
        admin.set_group("ml@example.com", ["user:a@example.com"])
        before = {p: admin._call("GET", p) for p in ("/iam-propagation-seconds", "/apis", "/iam-denied", "/act-as", "/org-policy", "/groups")}
    with EmulatorThread(EmulatorConfig(reconcile_seconds=0.1, state_file=tmp_path / "emulator.json", identity=OPERATOR)) as emu:
        admin = AdminApi(emu.http_url)
        assert {p: admin._call("GET", p) for p in before} == before
        assert before["/iam-propagation-seconds"] == {"seconds": 0.7}
        with sync_clients(emu.grpc_endpoint) as clients, pytest.raises(gexc.PermissionDenied):
            list(clients.run.list_services(parent="projects/off-project/locations/us-central1", retry=None))


def test_cli_default_propagation_is_two_seconds(emulator_process: EmulatorProcess) -> None:
    response = requests.get(emulator_process.http_url + "/emulator/v1/iam-propagation-seconds", timeout=10)
    assert response.json() == {"seconds": 2.0}
