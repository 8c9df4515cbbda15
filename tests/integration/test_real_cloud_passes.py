"""What the first real project answers, played by the emulator, and how one TGIService's passes cope (no kopf):
IAM's 403 for accounts it does not show, GPU quota at the request, disabled APIs, runtime identities, organization
policies, conditional bindings, service-level scaling, revision names and long-running deletes."""

from __future__ import annotations

import asyncio

import pytest
from emulator_fixtures import *  # noqa: F403
from emulator_fixtures import PROJECT, AdminApi
from google.cloud import run_v2
from google.iam.v1 import policy_pb2
from google.type import expr_pb2
from reconcile_fixtures import SETTINGS, SPEC, adapters, conditions, finalize_until_gone, ref, run, settle  # noqa: F401

from tgi_operator.diff import with_annotation
from tgi_operator.emulator.rules import project_number
from tgi_operator.naming import invoker_account_id
from tgi_operator.reconcile import Adapters, reconcile

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
WITH_SA = {**SPEC, "access": {"createInvokerServiceAccount": True}}
SA_EMAIL = f"{invoker_account_id('team-a', 'llama')}@{PROJECT}.iam.gserviceaccount.com"
NOW = "2026-01-01T00:00:00Z"


def members(policy: policy_pb2.Policy) -> set[str]:
    return {m for b in policy.bindings if not b.HasField("condition") for m in b.members}


# -- 1. IAM answers 403 for an account it does not show ----------------------------------------------------------


async def test_the_seed_with_an_invoker_account_becomes_ready_although_iam_hides_new_accounts(
    adapters: Adapters, admin: AdminApi
) -> None:
    admin.set_iam_propagation_seconds(1.0)  # a new account is invisible (403) to reads and bindings for a second
    status = await settle(adapters, {}, 1, WITH_SA)
    assert conditions(status)["Ready"]["status"] == "True", status
    assert status["invokerServiceAccount"] == SA_EMAIL
    policy = await adapters.services.get_iam_policy(status["serviceName"])
    assert f"serviceAccount:{SA_EMAIL}" in members(policy)
    calls = admin.calls()["google.iam.admin.v1.IAM/CreateServiceAccount"]
    assert calls.get("OK") == 1  # made once: a 403 read after the create is a wait, never a second account


async def test_the_pass_that_creates_the_account_binds_nothing_yet_but_records_it_for_deletion(
    adapters: Adapters, admin: AdminApi
) -> None:
    admin.set_iam_propagation_seconds(30.0)  # a binding now would be refused: the account is not visible yet
    admin.reset_calls()
    outcome = await run(adapters, {}, 1, WITH_SA)
    assert outcome.transient is not None and outcome.transient.code == "ACCOUNT_PROPAGATING"
    assert outcome.status.invoker_service_account == SA_EMAIL
    calls = admin.calls()
    assert calls["google.iam.admin.v1.IAM/CreateServiceAccount"] == {"OK": 1}
    assert not any(m.endswith(("/GetIamPolicy", "/SetIamPolicy")) for m in calls)  # no read, no refused write
    # Deleted right now: the status is the evidence that this object made the account, so it goes too.
    await finalize_until_gone(ref(outcome.status.to_k8s(), 1, WITH_SA), adapters)
    admin.set_iam_propagation_seconds(0.0)
    assert SA_EMAIL not in await adapters.accounts.list_emails(PROJECT)


async def test_an_account_that_propagates_between_the_read_and_the_list_is_used_not_refused(
    adapters: Adapters, admin: AdminApi
) -> None:
    # A crash after the create: the account is there. The create says ALREADY_EXISTS, the read after it still says
    # 403 (propagating), and by the time of the list it is visible. The read asked again finds it: no Stall.
    admin.set_iam_propagation_seconds(0.0)
    await adapters.accounts.create(PROJECT, invoker_account_id("team-a", "llama"), "Invoker of team-a/llama",
                                   "Created by tgi-operator to call TGIService team-a/llama")
    admin.fault("GetServiceAccount", "PERMISSION_DENIED", count=1)
    status = await settle(adapters, {}, 1, WITH_SA)
    assert conditions(status)["Ready"]["status"] == "True", status
    assert admin.calls()["google.iam.admin.v1.IAM/CreateServiceAccount"] == {"OK": 1, "ALREADY_EXISTS": 1}


async def test_an_operator_that_may_not_create_accounts_stalls_saying_so(adapters: Adapters, admin: AdminApi) -> None:
    admin.deny_iam(["iam.serviceAccounts.create"])
    outcome = await run(adapters, {}, 1, WITH_SA)
    assert outcome.assessment.stalled and outcome.assessment.reason == "PermissionDenied"
    assert "roles/iam.serviceAccountAdmin" in outcome.assessment.message
    assert "iam.serviceAccounts.create" in outcome.assessment.message
    admin.deny_iam([])  # fixed by the platform team: the next pass goes on by itself
    assert conditions(await settle(adapters, outcome.status.to_k8s(), 1, WITH_SA))["Ready"]["status"] == "True"


async def test_deletion_removes_an_account_iam_does_not_show_yet_and_passes_when_it_is_gone(
    adapters: Adapters, admin: AdminApi
) -> None:
    status = await settle(adapters, {}, 1, WITH_SA)
    admin.set_iam_propagation_seconds(30.0)
    # Dropped from the spec moments after a (re)creation: IAM reads say 403, the delete by name still removes it.
    await adapters.accounts.delete(PROJECT, SA_EMAIL)
    await adapters.accounts.create(PROJECT, invoker_account_id("team-a", "llama"), "Invoker of team-a/llama",
                                   "Created by tgi-operator to call TGIService team-a/llama")
    await finalize_until_gone(ref(status, 1, WITH_SA), adapters)
    admin.set_iam_propagation_seconds(0.0)
    assert SA_EMAIL not in await adapters.accounts.list_emails(PROJECT)
    # A repeated finalize (after a crash) finds nothing: 403 on the read, 404 on the delete, and lets go.
    assert [e.reason for e in await finalize_until_gone(ref(status, 1, WITH_SA), adapters)] == ["Deleted"]


# -- 2. GPU quota is checked at the request ----------------------------------------------------------------------


async def test_too_little_gpu_quota_stalls_at_once_and_is_picked_up_at_the_next_resync(
    adapters: Adapters, admin: AdminApi
) -> None:
    admin.set_quota(2)  # the spec asks for at most 3 instances of one L4
    outcome = await run(adapters, {})
    assert outcome.assessment.stalled and outcome.assessment.reason == "GpuQuotaExceeded"
    message = outcome.assessment.message
    assert "needs 3 GPUs" in message and "may use 2" in message and "maxInstances to 2 or fewer" in message
    assert "g.co/cloudrun/gpu-quota" in message
    assert await adapters.services.get(outcome.status.service_name) is None  # refused: nothing was created
    admin.set_quota(3)  # the quota request was granted: the next resync deploys without any change to the object
    assert conditions(await settle(adapters, outcome.status.to_k8s()))["Ready"]["status"] == "True"


async def test_raising_max_instances_beyond_quota_stalls_and_keeps_the_old_revision_serving(
    adapters: Adapters, admin: AdminApi
) -> None:
    status = await settle(adapters, {})
    admin.set_quota(3)
    more = {**SPEC, "scaling": {"maxInstances": 5}}
    stalled = await settle(adapters, status, 2, more)
    assert conditions(stalled)["Stalled"]["reason"] == "GpuQuotaExceeded"
    service = await adapters.services.get(status["serviceName"])
    assert service.template.scaling.max_instance_count == 3 and service.uri  # the old configuration still serves


# -- 8. project prerequisites --------------------------------------------------------------------------------------


async def test_a_disabled_cloud_run_api_says_how_to_enable_it(adapters: Adapters, admin: AdminApi) -> None:
    admin.set_api("run.googleapis.com", enabled=False)
    outcome = await run(adapters, {})
    assert outcome.assessment.stalled and outcome.assessment.reason == "ApiNotEnabled"
    assert f"gcloud services enable run.googleapis.com --project {PROJECT}" in outcome.assessment.message


async def test_a_disabled_iam_api_stalls_the_invoker_account_instead_of_hiding_behind_a_403(
    adapters: Adapters, admin: AdminApi
) -> None:
    admin.set_api("iam.googleapis.com", enabled=False)
    outcome = await run(adapters, {}, 1, WITH_SA)
    assert outcome.assessment.stalled and outcome.assessment.reason == "ApiNotEnabled"
    assert "gcloud services enable iam.googleapis.com" in outcome.assessment.message


async def test_a_runtime_identity_the_operator_may_not_use_stalls_naming_the_field(
    adapters: Adapters, admin: AdminApi
) -> None:
    runtime = f"tgi-runtime@{PROJECT}.iam.gserviceaccount.com"
    await adapters.accounts.create(PROJECT, "tgi-runtime", "runtime", "TGI runtime identity")
    admin.set_iam_propagation_seconds(0.0)
    admin.set_act_as(runtime, allowed=False)
    spec = {**SPEC, "serviceAccount": runtime}
    outcome = await run(adapters, {}, 1, spec)
    assert outcome.assessment.stalled and outcome.assessment.reason == "RuntimeServiceAccountNotUsable"
    assert f"spec.serviceAccount: {runtime}" in outcome.assessment.message
    assert "roles/iam.serviceAccountUser" in outcome.assessment.message
    missing = {**SPEC, "serviceAccount": f"nobody@{PROJECT}.iam.gserviceaccount.com"}
    outcome = await run(adapters, {}, 1, missing)
    assert outcome.assessment.reason == "RuntimeServiceAccountNotUsable"


async def test_an_invoker_an_organization_policy_refuses_is_named_and_the_rest_is_deployed(
    adapters: Adapters, admin: AdminApi
) -> None:
    admin.set_allowed_domains(["example.com"])
    spec = {**SPEC, "access": {"invokers": ["group:ml@example.com", "user:eve@elsewhere.org"]}}
    status = await settle(adapters, {}, 1, spec)
    stall = conditions(status)["Stalled"]
    assert stall["status"] == "True" and stall["reason"] == "InvokerRefused"
    assert "user:eve@elsewhere.org" in stall["message"] and "group:ml@example.com" not in stall["message"]
    assert status["url"]  # the service itself was deployed
    policy = await adapters.services.get_iam_policy(status["serviceName"])
    assert members(policy) == {"group:ml@example.com"}


# -- 9. IAM policies as they are -------------------------------------------------------------------------------------


async def test_conditional_bindings_and_others_members_survive_the_operators_writes(adapters: Adapters) -> None:
    status = await settle(adapters, {})
    name = status["serviceName"]
    policy = await adapters.services.get_iam_policy(name)
    policy.version = 3
    policy.bindings.add(role="roles/run.invoker", members=["user:temp@example.com"],
                        condition=expr_pb2.Expr(title="until-2027", expression='request.time < timestamp("2027-01-01T00:00:00Z")'))
    policy.bindings.add(role="roles/run.invoker", members=["user:bob@example.com"])
    await adapters.services.set_iam_policy(name, policy)
    changed = {**SPEC, "access": {"invokers": ["user:ann@example.com"]}}  # ml is dropped, ann added
    await settle(adapters, status, 2, changed)
    after = await adapters.services.get_iam_policy(name)
    conditional = [b for b in after.bindings if b.HasField("condition")]
    assert [(b.role, list(b.members), b.condition.title) for b in conditional] == [
        ("roles/run.invoker", ["user:temp@example.com"], "until-2027")]
    assert members(after) == {"user:ann@example.com", "user:bob@example.com"}
    assert after.version == 3


# -- 5, 6, 7. scaling mode, revision names, long-running deletes ----------------------------------------------------


async def test_resume_after_suspend_scales_automatically_again_and_then_writes_nothing(
    adapters: Adapters, admin: AdminApi
) -> None:
    status = await settle(adapters, {})
    suspended = await settle(adapters, status, 2, {**SPEC, "suspend": True})
    service = await adapters.services.get(status["serviceName"])
    assert service.scaling.scaling_mode == run_v2.ServiceScaling.ScalingMode.MANUAL
    resumed = await settle(adapters, suspended, 3, SPEC)
    service = await adapters.services.get(status["serviceName"])
    assert service.scaling.scaling_mode == run_v2.ServiceScaling.ScalingMode.AUTOMATIC
    admin.reset_calls()
    await reconcile(ref(resumed, 3, SPEC), adapters, SETTINGS, now=NOW)  # a resync
    assert not admin.calls().get("google.cloud.run.v2.Services/UpdateService")


async def test_a_revision_name_set_by_someone_else_does_not_break_metadata_only_updates(adapters: Adapters) -> None:
    status = await settle(adapters, {})
    name = status["serviceName"]
    service = await adapters.services.get(name)
    named = with_annotation(service, "team.example.com/note", "pinned")
    named.template.revision = f"{name.rsplit('/', 1)[1]}-pinned"
    await adapters.services.update(named)  # someone deploys a named revision
    await asyncio.sleep(0.5)
    # The spec grows an invoker: the record annotation is a metadata-only update of the observed service.
    more = {**SPEC, "access": {"invokers": ["group:ml@example.com", "user:ann@example.com"]}}
    after = await settle(adapters, status, 2, more)
    assert conditions(after)["Ready"]["status"] == "True", after
    assert "user:ann@example.com" in members(await adapters.services.get_iam_policy(name))


async def test_deletion_waits_until_cloud_run_has_deleted_the_service(adapters: Adapters, admin: AdminApi) -> None:
    status = await settle(adapters, {})
    admin.reset_calls()
    events = await finalize_until_gone(ref(status), adapters)
    assert [e.reason for e in events] == ["Deleted"]
    assert await adapters.services.get(status["serviceName"]) is None
    # A read cannot tell a deleting service (delete_time is only in the Delete operation): each retry asks again and
    # Cloud Run answers with the pending operation, never with an error.
    assert set(admin.calls()["google.cloud.run.v2.Services/DeleteService"]) == {"OK"}


async def test_an_invoker_account_the_operator_may_not_read_stalls_instead_of_retrying_forever(
    adapters: Adapters, admin: AdminApi
) -> None:
    await adapters.accounts.create(PROJECT, invoker_account_id("team-a", "llama"), "Invoker of team-a/llama",
                                   "Created by tgi-operator to call TGIService team-a/llama")
    admin.set_iam_propagation_seconds(0.0)
    admin.deny_iam(["iam.serviceAccounts.get"])  # a custom role without get: the account is listed, never readable
    status = await settle(adapters, {}, 1, WITH_SA)
    stall = conditions(status)["Stalled"]
    assert stall["reason"] == "PermissionDenied" and "iam.serviceAccounts.get" in stall["message"]


DEFAULT_RUNTIME = f"{project_number(PROJECT)}-compute@developer.gserviceaccount.com"  # Cloud Run's default identity
WRITES = ("CreateService", "UpdateService", "DeleteService", "SetIamPolicy", "CreateServiceAccount", "DeleteServiceAccount")


@pytest.mark.parametrize("spec", [
    {**SPEC, "region": "us-central1", "resources": {"cpu": 20, "memory": "80Gi", "gpu": {"type": "nvidia-rtx-pro-6000"}}},
    {**SPEC, "env": [{"name": "API_KEY", "valueFrom": {"secret": "api-key", "version": "3"}}, {"name": "X", "value": "1"}]},
    {**SPEC, "requestTimeout": "1h", "scaling": {"minInstances": 1, "maxInstances": 2, "concurrency": 8}},
    WITH_SA,
    {**SPEC, "suspend": True},
], ids=["preview GPU (BETA)", "env from Secret Manager", "timeout and scaling", "invoker account", "suspended"])
async def test_a_resync_of_a_settled_object_writes_nothing(adapters: Adapters, admin: AdminApi, spec: dict) -> None:
    """The steady state costs reads only, for every kind of spec the operator renders."""
    admin.grant_secret(f"projects/{PROJECT}/secrets/api-key", [DEFAULT_RUNTIME])
    status = await settle(adapters, {}, 1, spec)
    assert conditions(status)["Ready"]["status"] == "True", status
    admin.reset_calls()
    outcome = await reconcile(ref(status, 1, spec), adapters, SETTINGS, now=NOW)
    assert outcome.assessment.ready and not outcome.events
    assert outcome.status.to_k8s() == status  # nothing to patch either
    written = {m.rsplit("/", 1)[1]: c for m, c in admin.calls().items() if m.rsplit("/", 1)[1] in WRITES}
    assert written == {}, written


# -- 10. A secret the runtime identity may not read fails the revision ---------------------------------------------


async def test_a_secret_the_runtime_account_may_not_read_fails_the_revision_saying_which_role(
    adapters: Adapters, admin: AdminApi
) -> None:
    spec = {**SPEC, "env": [{"name": "API_KEY", "valueFrom": {"secret": "api-key"}}]}
    status = await settle(adapters, {}, 1, spec)  # settles on the failed revision
    ready = conditions(status)["Ready"]
    assert ready["status"] == "False" and ready["reason"] == "RevisionFailed", status
    assert f"Permission denied on secret: projects/{project_number(PROJECT)}/secrets/api-key/versions/latest for " \
           f"Revision service account {DEFAULT_RUNTIME}" in ready["message"]
    assert "roles/secretmanager.secretAccessor" in ready["message"]
    # Granted (on the secret): the next deploy of the unchanged spec starts.
    admin.grant_secret(f"projects/{PROJECT}/secrets/api-key", [DEFAULT_RUNTIME])
    outcome = await reconcile(ref(status, 1, spec), adapters, SETTINGS, now=NOW, redeploy_failed=True)
    assert conditions(await settle(adapters, outcome.status.to_k8s(), 1, spec))["Ready"]["status"] == "True"
