"""One TGIService's passes under hostile input and broken state (no kopf): rate limits, a status of the wrong types,
a tampered service name, a squatted service id, adoption, and services the first version created."""

from __future__ import annotations

import asyncio

import pytest
from emulator_fixtures import *  # noqa: F403
from emulator_fixtures import PROJECT, AdminApi
from reconcile_fixtures import (  # noqa: F401
    SETTINGS, SPEC, UID, adapters, conditions, finalize_until_gone, ref, run, settle,
)

from tgi_operator.naming import invoker_account_id, legacy_service_id, owner_labels, service_id
from tgi_operator.ownership import ADOPT_ANNOTATION, OWNER_UID_ANNOTATION
from tgi_operator.models import parse_spec
from tgi_operator.finalize import finalize
from tgi_operator.reconcile import EARLIER_VERSION_MARK, Adapters, ObjectRef, reconcile
from tgi_operator.render import (
    INVOKERS_ANNOTATION, invoker_account_description, invoker_account_display_name, invoker_members,
    invoker_service_account, render_service, target,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
NOW = "2026-01-01T00:00:00Z"
PARENT = f"projects/{PROJECT}/locations/us-central1"


def invokers(policy) -> set[str]:
    return {m for b in policy.bindings if b.role == "roles/run.invoker" and not b.HasField("condition") for m in b.members}


async def test_a_burst_of_rate_limits_is_waited_out_not_a_stall(adapters: Adapters, admin: AdminApi) -> None:
    """Cloud Run answers RESOURCE_EXHAUSTED without RetryInfo when a per-minute read quota runs out."""
    status = await settle(adapters, {})
    admin.fault("GetService", "RESOURCE_EXHAUSTED", count=3)
    for _ in range(3):
        outcome = await reconcile(ref(status), adapters, SETTINGS, now=NOW)
        assert outcome.transient is not None and outcome.transient.code == "RESOURCE_EXHAUSTED"
        assert outcome.assessment is None and not outcome.events  # no Warning, no Stalled
        assert conditions(outcome.status.to_k8s())["Ready"]["status"] == "True"  # the last observation stands
    assert conditions((await reconcile(ref(status), adapters, SETTINGS, now=NOW)).status.to_k8s())["Ready"]["status"] == "True"


async def test_a_status_of_the_wrong_types_is_observed_afresh(adapters: Adapters) -> None:
    good = await settle(adapters, {})
    broken = {"url": 42, "conditions": "all fine", "observedGeneration": "yesterday", "model": [],
              "serviceName": good["serviceName"], "invokerServiceAccount": {"x": 1}}
    outcome = await reconcile(ref(broken), adapters, SETTINGS, now=NOW)
    assert outcome.assessment is not None and outcome.assessment.ready
    fixed = outcome.status.to_k8s()
    assert fixed["url"] == good["url"] and fixed["serviceName"] == good["serviceName"] and fixed["observedGeneration"] == 1


async def test_a_tampered_service_name_is_not_followed_by_passes_or_by_deletion(adapters: Adapters) -> None:
    other = await settle(adapters, {}, spec=SPEC)  # stands for another team's service, at another object's id
    victim_name = other["serviceName"]
    theirs = await adapters.services.get(victim_name)
    # Our object (another name) claims the other service in its status: it is neither adopted nor deleted.
    mine = ObjectRef("team-a", "mistral", 1, SPEC, {"serviceName": victim_name}, {}, "uid-of-mistral")
    outcome = await reconcile(mine, adapters, SETTINGS, now=NOW)
    assert outcome.status.service_name == f"{PARENT}/services/{service_id('team-a', 'mistral')}"
    await finalize(ObjectRef("team-a", "mistral", 1, SPEC, {"serviceName": victim_name}, {}, "uid-of-mistral"),
                   adapters, SETTINGS)
    after = await adapters.services.get(victim_name)
    assert after is not None and after.etag == theirs.etag


async def test_a_squatted_id_stays_foreign_until_adopted_and_adoption_is_announced_and_revokes(
    adapters: Adapters, admin: AdminApi
) -> None:
    spec = parse_spec(SPEC)
    where = target("team-a", "llama", spec, PROJECT)
    squat = render_service("team-a", "llama", spec, where)  # owner labels, written by someone else: no uid
    squat.annotations.pop("tgi-operator.dev/invokers", None)
    await adapters.services.create(where.parent, where.service_id, squat)
    outcome = await run(adapters, {})
    assert outcome.assessment.stalled and outcome.assessment.reason == "NotOwned"
    squatted = await adapters.services.get(where.name)
    assert f"{ADOPT_ANNOTATION}={squatted.uid}" in outcome.assessment.message  # the uid: only this very service
    # The squatter granted itself access; adopting reports that member and revokes it.
    while (await adapters.services.get(where.name)).reconciling:
        await asyncio.sleep(0.05)
    policy = await adapters.services.get_iam_policy(where.name)
    policy.bindings.add(role="roles/run.invoker", members=["user:squatter@example.com"])
    await adapters.services.set_iam_policy(where.name, policy)

    assert (await run(adapters, outcome.status.to_k8s())).assessment.reason == "NotOwned"  # no silent takeover
    adopt = {ADOPT_ANNOTATION: squatted.uid}
    adopted = await reconcile(ref(outcome.status.to_k8s(), annotations=adopt), adapters, SETTINGS, now=NOW)
    warnings = [e for e in adopted.events if e.reason == "Adopted"]
    assert len(warnings) == 1 and warnings[0].type == "Warning" and "user:squatter@example.com" in warnings[0].message
    assert invokers(await adapters.services.get_iam_policy(where.name)) == set(invoker_members("team-a", "llama", spec, PROJECT))
    service = await adapters.services.get(where.name)
    assert service.annotations[OWNER_UID_ANNOTATION] == UID  # from now on, plainly ours
    again = await reconcile(ref(adopted.status.to_k8s(), annotations=adopt), adapters, SETTINGS, now=NOW)
    assert not again.assessment.stalled and not [e for e in again.events if e.reason == "Adopted"]  # announced once
    gone = await reconcile(ref(again.status.to_k8s()), adapters, SETTINGS, now=NOW)  # annotation removed: still ours
    assert not gone.assessment.stalled


async def test_a_service_the_first_version_created_stays_owned_across_the_upgrade(adapters: Adapters, admin: AdminApi) -> None:
    """No silent rename of a serving service: its status records the old, shorter id, and that id is kept."""
    spec = parse_spec(SPEC)
    legacy_id = legacy_service_id("team-a", "llama")
    old = render_service("team-a", "llama", spec, target("team-a", "llama", spec, PROJECT))  # no uid then
    await adapters.services.create(PARENT, legacy_id, old)
    status = {"serviceName": f"{PARENT}/services/{legacy_id}", "observedGeneration": 1}
    admin.reset_calls()
    settled = await settle(adapters, status)
    assert settled["serviceName"] == f"{PARENT}/services/{legacy_id}"
    assert conditions(settled)["Ready"]["status"] == "True"
    assert not admin.calls().get("google.cloud.run.v2.Services/CreateService")  # no second service
    assert (await adapters.services.get(settled["serviceName"])).annotations[OWNER_UID_ANNOTATION] == UID
    await finalize_until_gone(ref(settled), adapters)
    assert await adapters.services.get(settled["serviceName"]) is None


async def test_a_service_without_our_uid_at_the_new_id_is_not_ours_even_with_our_labels(adapters: Adapters) -> None:
    """Labels can be written by anyone who may write the service; the uid mark is what the creating pass leaves."""
    spec = parse_spec(SPEC)
    where = target("team-a", "llama", spec, PROJECT)
    lookalike = render_service("team-a", "llama", spec, where, owner_uid="some-other-object")
    assert dict(lookalike.labels).items() >= owner_labels("team-a", "llama").items()
    await adapters.services.create(where.parent, where.service_id, lookalike)
    outcome = await run(adapters, {})
    assert outcome.assessment.reason == "NotOwned"
    await finalize_until_gone(ref(outcome.status.to_k8s()), adapters)
    assert await adapters.services.get(where.name) is not None  # left untouched


async def test_a_first_version_service_whose_status_was_lost_is_found_not_duplicated(adapters: Adapters, admin: AdminApi) -> None:
    spec = parse_spec(SPEC)
    legacy_id = legacy_service_id("team-a", "llama")
    await adapters.services.create(PARENT, legacy_id, render_service("team-a", "llama", spec, target("team-a", "llama", spec, PROJECT)))
    admin.reset_calls()
    # No status at all (restored from a backup without it, say); kopf's bookkeeping of the first version is there.
    handled_before = {EARLIER_VERSION_MARK: "{}"}
    settled = await settle(adapters, {}, annotations=handled_before)
    assert settled["serviceName"] == f"{PARENT}/services/{legacy_id}"
    assert not admin.calls().get("google.cloud.run.v2.Services/CreateService")
    await finalize_until_gone(ref({}, annotations=handled_before), adapters)  # a deletion with the status lost finds it
    assert await adapters.services.get(f"{PARENT}/services/{legacy_id}") is None


async def test_a_new_object_reads_no_service_before_it_creates(adapters: Adapters, admin: AdminApi) -> None:
    """Only an object an earlier version handled can own a first-version service: a new one's first pass reads no
    service at all (nothing recorded: its create tells whether the id is taken)."""
    admin.reset_calls()
    recorded: list[dict] = []

    async def record_intent(status) -> bool:  # as the handler does: the status naming the service, then the create
        recorded.append(status.to_k8s())
        return True

    first = await reconcile(ref({}), adapters, SETTINGS, now=NOW, record_intent=record_intent)
    assert [r["serviceName"] for r in recorded] == [first.status.service_name]
    calls = admin.calls()
    assert "google.cloud.run.v2.Services/GetService" not in calls, calls
    assert sum(calls["google.cloud.run.v2.Services/CreateService"].values()) == 1, calls
    await finalize_until_gone(ref(first.status.to_k8s()), adapters)


async def test_a_new_object_at_a_taken_id_claims_neither_the_service_nor_its_invoker_account(
    adapters: Adapters, admin: AdminApi
) -> None:
    """A new object creates without reading first. When its id is taken (here: a service an earlier object of the
    same name left with Retain, and the invoker account that object made), the refused create is judged as a read
    would be, NotOwned, and the status takes back the invoker account its intent named: deleting the object then
    deletes neither the service nor that account."""
    admin.set_iam_propagation_seconds(0.0)
    spec = {**SPEC, "access": {"createInvokerServiceAccount": True}}
    where = target("team-a", "llama", parse_spec(spec), PROJECT)
    retained = render_service("team-a", "llama", parse_spec(spec), where, owner_uid="an-earlier-object")
    retained.annotations.pop(INVOKERS_ANNOTATION)  # Retain releases it: its record of members goes
    await adapters.services.create(where.parent, where.service_id, retained)
    email = invoker_service_account("team-a", "llama", PROJECT)
    await adapters.accounts.create(PROJECT, invoker_account_id("team-a", "llama"),
                                   invoker_account_display_name("team-a", "llama"),
                                   invoker_account_description("team-a", "llama"))
    intents: list[dict] = []

    async def record_intent(status) -> bool:
        intents.append(status.to_k8s())
        return True

    outcome = await reconcile(ref({}, spec=spec), adapters, SETTINGS, now=NOW, record_intent=record_intent)
    assert outcome.assessment.stalled and outcome.assessment.reason == "NotOwned", outcome.assessment
    assert intents[0]["invokerServiceAccount"] == email  # named before the create, as deletion needs it...
    assert outcome.status.invoker_service_account is None  # ...and taken back once the id proved taken
    await finalize_until_gone(ref(outcome.status.to_k8s(), spec=spec), adapters)
    assert await adapters.services.get(where.name) is not None
    assert email in await adapters.accounts.list_emails(PROJECT)


async def test_a_create_refused_for_its_own_reason_says_so_when_the_id_is_free(adapters: Adapters, admin: AdminApi) -> None:
    """Without a service at the id, a new object's refused create keeps its own error (one read to tell)."""
    admin.fault("CreateService", "PERMISSION_DENIED", count=1)
    outcome = await run(adapters, {})
    assert outcome.assessment.stalled and outcome.assessment.reason == "PermissionDenied", outcome.assessment
    assert outcome.status.service_name == f"{PARENT}/services/{service_id('team-a', 'llama')}"  # the intent stays
