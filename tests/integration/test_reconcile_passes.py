"""reconcile() and finalize() on their own (no kopf), with the real async clients against the emulator:
the error paths a platform team meets when Cloud Run says no."""

from __future__ import annotations

import pytest
from emulator_fixtures import *  # noqa: F403
from emulator_fixtures import PROJECT, AdminApi
from reconcile_fixtures import NOW, SETTINGS, SPEC, adapters, conditions, finalize_until_gone, ref, run, settle  # noqa: F401

from tgi_operator.errors import PermanentCloudError, TransientCloudError
from tgi_operator.finalize import finalize
from tgi_operator.reconcile import INTENT_NOT_RECORDED, Adapters, ObjectRef, reconcile

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_a_permission_denied_create_stalls_with_the_clouds_words(adapters: Adapters, admin: AdminApi) -> None:
    admin.fault("CreateService", "PERMISSION_DENIED", count=1)
    outcome = await run(adapters, {})
    assert outcome.assessment.stalled and outcome.assessment.reason == "PermissionDenied"
    assert outcome.assessment.message.startswith("Cloud Run: ")
    assert [(e.type, e.reason) for e in outcome.events] == [("Warning", "PermissionDenied")]
    assert outcome.status.observed_generation == 1
    # Once the cloud allows it, the next pass goes on by itself.
    status = await settle(adapters, outcome.status.to_k8s())
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"


@pytest.mark.parametrize("method", ["CreateService", "GetService"])  # a new object's first call, a later pass's
async def test_an_unreachable_cloud_is_transient(adapters: Adapters, admin: AdminApi, method: str) -> None:
    recorded = {} if method == "CreateService" else (await run(adapters, {})).status.to_k8s()
    admin.fault(method, "UNAVAILABLE", count=1)
    transient = (await run(adapters, recorded)).transient
    assert isinstance(transient, TransientCloudError)
    assert transient.code == "UNAVAILABLE"


async def test_an_iam_etag_race_is_transient_and_then_converges(adapters: Adapters, admin: AdminApi) -> None:
    status = await settle(adapters, {})
    admin.fault("SetIamPolicy", "ABORTED", count=1)
    changed = {**SPEC, "access": {"invokers": ["group:ml@example.com", "user:ann@example.com"]}}
    transient = (await reconcile(ref(status, 2, changed), adapters, SETTINGS, now=NOW)).transient
    assert isinstance(transient, TransientCloudError)
    await settle(adapters, status, 2, changed)
    policy = await adapters.services.get_iam_policy(status["serviceName"])
    assert {m for b in policy.bindings for m in b.members} == {"group:ml@example.com", "user:ann@example.com"}


async def test_a_failed_revision_is_redeployed_only_when_asked(adapters: Adapters, admin: AdminApi) -> None:
    status = await settle(adapters, {})
    service_id = status["serviceName"].rsplit("/", 1)[1]
    admin.fail_next_revision(service_id, "The user-provided container failed to start and listen on the port")
    changed = {**SPEC, "scaling": {"concurrency": 8}}
    stalled = await settle(adapters, status, 2, changed)
    # The operator will deploy it again by itself: still on its way (kstatus InProgress), not Stalled (Failed).
    by_type = {c["type"]: c for c in stalled["conditions"]}
    reconciling = by_type["Reconciling"]
    assert reconciling["status"] == "True" and reconciling["reason"] == "RevisionFailed"
    assert by_type["Stalled"]["status"] == "False" and by_type["Ready"]["status"] == "False"
    assert "failed to start" in reconciling["message"] and "deploying it again with backoff (0 of 5" in reconciling["message"]
    admin.reset_calls()
    await reconcile(ref(stalled, 2, changed), adapters, SETTINGS, now=NOW)  # a resync: no redeploy
    assert not admin.calls().get("google.cloud.run.v2.Services/UpdateService")
    outcome = await reconcile(ref(stalled, 2, changed), adapters, SETTINGS, now=NOW, redeploy_failed=True)
    assert [e.reason for e in outcome.events] == ["Redeploying"]
    recovered = await settle(adapters, outcome.status.to_k8s(), 2, changed)
    assert {c["type"]: c["status"] for c in recovered["conditions"]}["Ready"] == "True"
    assert recovered["latestReadyRevision"] != stalled["latestReadyRevision"]  # the redeployed revision serves


async def test_finalize_is_idempotent(adapters: Adapters) -> None:
    status = await settle(adapters, {})
    first = await finalize_until_gone(ref(status), adapters)
    assert [e.reason for e in first] == ["Deleted"]
    assert await adapters.services.get(status["serviceName"]) is None
    again = await finalize(ref(status), adapters, SETTINGS)  # a retried delete after a crash: nothing left, no error
    assert [e.reason for e in again] == ["Deleted"]


async def test_a_revocation_survives_an_iam_etag_race(adapters: Adapters, admin: AdminApi) -> None:
    two = {**SPEC, "access": {"invokers": ["group:ml@example.com", "user:ann@example.com"]}}
    status = await settle(adapters, {}, 1, two)
    admin.fault("SetIamPolicy", "ABORTED", count=1)
    transient = (await reconcile(ref(status, 2, SPEC), adapters, SETTINGS, now=NOW)).transient
    assert isinstance(transient, TransientCloudError)
    await settle(adapters, status, 2, SPEC)
    policy = await adapters.services.get_iam_policy(status["serviceName"])
    assert {m for b in policy.bindings for m in b.members} == {"group:ml@example.com"}  # ann lost access


async def test_the_invoker_account_is_made_after_a_failed_create_and_removed_after_a_failed_delete(
    adapters: Adapters, admin: AdminApi
) -> None:
    with_sa = {**SPEC, "access": {"createInvokerServiceAccount": True}}
    admin.fault("CreateServiceAccount", "UNAVAILABLE", count=1)
    transient = (await run(adapters, {}, 1, with_sa)).transient
    assert isinstance(transient, TransientCloudError)
    status = await settle(adapters, {}, 1, with_sa)
    email = status["invokerServiceAccount"]
    assert email in await adapters.accounts.list_emails(PROJECT)

    admin.fault("DeleteServiceAccount", "UNAVAILABLE", count=1)
    transient = (await reconcile(ref(status, 2, SPEC), adapters, SETTINGS, now=NOW)).transient
    assert isinstance(transient, TransientCloudError)
    after = await settle(adapters, status, 2, SPEC)
    assert "invokerServiceAccount" not in after
    assert email not in await adapters.accounts.list_emails(PROJECT)


async def test_someone_elses_account_with_the_same_id_is_neither_used_nor_deleted(adapters: Adapters) -> None:
    from tgi_operator.naming import invoker_account_id

    await adapters.accounts.create(PROJECT, invoker_account_id("team-a", "llama"), "squatter", "not yours")
    with_sa = {**SPEC, "access": {"createInvokerServiceAccount": True}}
    status = await settle(adapters, {}, 1, with_sa)  # once IAM shows the account, its description tells
    assert conditions(status)["Stalled"]["reason"] == "InvokerAccountTaken"
    await finalize_until_gone(ref(status, 1, with_sa), adapters)
    email = f"{invoker_account_id('team-a', 'llama')}@{PROJECT}.iam.gserviceaccount.com"
    assert (await adapters.accounts.get(PROJECT, email)).description == "not yours"


async def test_deleting_an_object_whose_spec_no_longer_validates_still_removes_its_service(adapters: Adapters) -> None:
    status = await settle(adapters, {})
    broken = {"region": "us-central1", "model": {"id": "not a model id"}}  # e.g. admitted under an older, looser CRD
    events = await finalize_until_gone(ref(status, 1, broken), adapters)
    assert [e.reason for e in events] == ["Deleted"]
    assert await adapters.services.get(status["serviceName"]) is None


async def test_a_refused_public_service_is_deployed_private_and_loses_all_users(adapters: Adapters) -> None:
    public = {**SPEC, "access": {"public": True}}
    allowed = SETTINGS.model_copy(update={"allow_public_services": True})
    status = (await run(adapters, {}, 1, public, allowed)).status.to_k8s()
    policy = await adapters.services.get_iam_policy(status["serviceName"])
    assert "allUsers" in {m for b in policy.bindings for m in b.members}
    # The platform team turns public services off: the service stays up, private, and the object says why.
    settled = await settle(adapters, status, 1, public)
    stall = {c["type"]: c for c in settled["conditions"]}["Stalled"]
    assert stall["status"] == "True" and stall["reason"] == "PublicNotAllowed"
    assert settled["url"]  # serving, privately
    policy = await adapters.services.get_iam_policy(status["serviceName"])
    assert "allUsers" not in {m for b in policy.bindings for m in b.members}


async def test_redeploys_stop_after_the_limit(adapters: Adapters, admin: AdminApi) -> None:
    status = await settle(adapters, {})
    service_id = status["serviceName"].rsplit("/", 1)[1]
    limited = SETTINGS.model_copy(update={"max_redeploys": 1})
    changed = {**SPEC, "scaling": {"concurrency": 8}}
    admin.fail_next_revision(service_id, "container failed to start")
    stalled = await settle(adapters, status, 2, changed)
    admin.fail_next_revision(service_id, "container failed to start")
    first = await reconcile(ref(stalled, 2, changed), adapters, limited, now=NOW, redeploy_failed=True)
    assert [e.reason for e in first.events] == ["Redeploying"]
    stalled = await settle(adapters, first.status.to_k8s(), 2, changed)
    admin.reset_calls()
    second = await reconcile(ref(stalled, 2, changed), adapters, limited, now=NOW, redeploy_failed=True)
    assert second.assessment.reason == "RevisionFailed" and second.assessment.stalled  # given up: only a change helps
    assert "gave up after 1 redeploys: change the spec to try again" in second.assessment.message
    assert [(e.type, e.reason) for e in second.events] == [("Warning", "RevisionFailed")]  # says it gave up
    assert not admin.calls().get("google.cloud.run.v2.Services/UpdateService")


async def test_the_target_is_written_down_before_anything_is_created(adapters: Adapters, admin: AdminApi) -> None:
    """As the handler runs a pass: the status naming the service is written first; when that write is refused,
    nothing is created."""
    admin.reset_calls()
    refused = await reconcile(ref(), adapters, SETTINGS, now=NOW, record_intent=lambda status: _answer(False))
    assert refused.transient is INTENT_NOT_RECORDED and not refused.events
    assert not admin.calls().get("google.cloud.run.v2.Services/CreateService")
    created_when: list[bool] = []

    async def record_intent(status) -> bool:
        created_when.append(await adapters.services.get(status.service_name) is not None)
        return True

    # A transient error right after the create still hands the recorded target back for the status.
    admin.fault("GetIamPolicy", "UNAVAILABLE", count=1)
    first = await reconcile(ref(), adapters, SETTINGS, now=NOW, record_intent=record_intent)
    assert created_when == [False]  # recorded while the service did not exist yet
    assert first.transient and first.status.service_name
    assert await adapters.services.get(first.status.service_name) is not None


async def _answer(value: bool) -> bool:
    return value


async def test_the_grant_record_grows_before_iam_so_a_later_removal_revokes(adapters: Adapters, admin: AdminApi) -> None:
    status = await settle(adapters, {})
    two = {**SPEC, "access": {"invokers": ["group:ml@example.com", "user:ann@example.com"]}}
    admin.fault("SetIamPolicy", "UNAVAILABLE", count=1)
    assert (await reconcile(ref(status, 2, two), adapters, SETTINGS, now=NOW)).transient
    service = await adapters.services.get(status["serviceName"])
    assert "user:ann@example.com" in service.annotations["tgi-operator.dev/invokers"]  # recorded before granting
    granted_to_ann = await settle(adapters, status, 2, two)
    await settle(adapters, granted_to_ann, 3, SPEC)
    policy = await adapters.services.get_iam_policy(status["serviceName"])
    assert {m for b in policy.bindings for m in b.members} == {"group:ml@example.com"}


async def test_a_project_that_cannot_be_read_and_never_served_does_not_hold_the_finalizer(
    adapters: Adapters, admin: AdminApi
) -> None:
    recorded = {"serviceName": "projects/typo-project/locations/us-central1/services/team-a-llama-f34417"}
    admin.fault("GetService", "PERMISSION_DENIED", count=1)
    events = await finalize(ref(recorded), adapters, SETTINGS)
    assert [(e.type, e.reason) for e in events] == [("Warning", "Deleted")]
    # But once it served, a refusal keeps the finalizer: the service may be running and billing.
    admin.fault("GetService", "PERMISSION_DENIED", count=1)
    with pytest.raises(PermanentCloudError):
        await finalize(ref({**recorded, "url": "https://x.a.run.app"}), adapters, SETTINGS)


async def test_abandon_lets_go_without_touching_the_cloud(adapters: Adapters, admin: AdminApi) -> None:
    status = await settle(adapters, {})
    admin.reset_calls()
    abandoned = ref(status, annotations={"tgi-operator.dev/deletion-policy": "Abandon"})
    assert [e.reason for e in await finalize(abandoned, adapters, SETTINGS)] == ["Abandoned"]
    assert admin.calls() == {}
    assert await adapters.services.get(status["serviceName"]) is not None
