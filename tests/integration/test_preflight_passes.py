"""Model preflight and cost, in reconcile passes against the emulator with the real clients: google-cloud-run for
Cloud Run, huggingface_hub for the emulator's Hugging Face Hub stand-in (its catalogue: hub_catalogue.yaml).

A model that cannot run is stopped before any Cloud Run call, with a status that says what to change; a Hub that
cannot be reached does not stop a deployment (unless preflight is required); the cost estimate is in the status."""

from __future__ import annotations

import asyncio
import socket

import pytest
import requests
from emulator_fixtures import *  # noqa: F403
from emulator_fixtures import PROJECT, AdminApi
from reconcile_fixtures import NOW, SETTINGS, adapters, conditions, ref, run, settle  # noqa: F401

from tgi_operator.emulator.rules import project_number
from tgi_operator.emulator.server import Emulator
from tgi_operator.hub import ModelHub
from tgi_operator.reconcile import Adapters, ObjectRef, reconcile
from tgi_operator.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

SEED_MODEL = "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4"
SEED_COMMIT = "679e824e119a54cbea346192bbabc68b34101ef2"  # the catalogue's `main`
SEED = {"region": "us-central1", "model": {"id": SEED_MODEL, "quantize": "awq"},
        "access": {"invokers": ["group:ml@example.com"]}}
GATED = {**SEED, "model": {"id": "meta-llama/Llama-3.1-8B-Instruct", "dtype": "bfloat16"}}


@pytest.fixture
def hub_settings(emulator: Emulator) -> Settings:
    """The operator's settings with the model preflight (best effort) asking the emulator's Hub."""
    return SETTINGS.model_copy(update={"preflight": "best-effort", "hf_endpoint": emulator.http_url})


def hub_requests(emulator: Emulator) -> list[dict]:
    """What the Hub stand-in was asked, through the emulator's admin API."""
    return requests.get(f"{emulator.http_url}/emulator/v1/hub/requests", timeout=10).json()["requests"]


def cloud_calls(admin: AdminApi) -> int:
    """Every Cloud Run, Operations and IAM call the emulator answered (any outcome)."""
    return sum(sum(codes.values()) for codes in admin.calls().values())


def nothing_listens() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


# -- the seed passes, and its cost is in the status -----------------------------------------------------------------


async def test_the_seed_passes_preflight_and_shows_its_estimated_cost(
    adapters: Adapters, hub_settings: Settings, emulator: Emulator
) -> None:
    status = await settle(adapters, {}, 1, SEED, hub_settings)
    assert conditions(status)["Ready"]["status"] == "True", status
    assert "preflight" not in conditions(status)["Ready"]["message"]  # fully checked: nothing to add
    preflight = status["preflight"]
    assert preflight["result"] == "Passed" and preflight["revision"] == SEED_COMMIT and preflight["generation"] == 1
    assert preflight["gpuMemory"] == "22.4Gi" and preflight["requiredGpuMemory"] == "7.4Gi"
    assert preflight["fullLengthRequests"] == 28  # of 4096 tokens, TGI's default for this model
    assert "fits an nvidia-l4 (24 GB): weights 5.3 GiB" in preflight["message"]
    assert "scaling.concurrency 64: the others wait" in preflight["message"]
    # 8 vCPU x $0.000018 + 32 GiB x $0.000002 + one L4 x $0.0001867, per second: $1.42092 an hour; 0 to 3 instances.
    cost = status["cost"]
    assert (cost["currency"], cost["instanceHourly"], cost["minimumHourly"], cost["maximumHourly"]) == \
        ("USD", "1.42", "0.00", "4.26")
    assert "Tier 1 (us-central1)" in cost["basis"] and "https://cloud.google.com/run/pricing" in cost["basis"]
    asked = [r["path"] for r in hub_requests(emulator)]
    assert asked == [f"/api/models/{SEED_MODEL}", f"/{SEED_MODEL}/resolve/{SEED_COMMIT}/config.json"]
    assert not any(r["authorization"] for r in hub_requests(emulator))  # the operator sends no token


# -- models that cannot run stop before any Cloud Run call ---------------------------------------------------------


STOPPED = {
    "gated model without a token": (GATED, "ModelGated", ["spec.model.hfTokenSecret", "is a gated model (gated: manual)",
                                                          "roles/secretmanager.secretAccessor"]),
    "unknown model": ({**SEED, "model": {"id": "org/no-such-model"}}, "ModelNotFound",
                      ["spec.model.id: org/no-such-model does not exist on the Hugging Face Hub", "check the id"]),
    "too large for an L4": ({**SEED, "model": {"id": "hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4"}},
                            "ModelDoesNotFit",
                            ["does not fit an nvidia-l4 (24 GB): weights 37.0 GiB", "of 22.4 GiB",
                             "What would fit: spec.resources.gpu.type: nvidia-rtx-pro-6000 (96 GB)"]),
    "maxTotalTokens beyond the context": ({**SEED, "model": {**SEED["model"], "maxInputTokens": 4096,
                                                             "maxTotalTokens": 200000}},
                                          "TokensBeyondContext",
                                          ["spec.model.maxTotalTokens: 200000 is beyond the context", "131072 tokens",
                                           "set it to 131072 or fewer"]),
    "unknown revision": ({**SEED, "model": {**SEED["model"], "revision": "v9"}}, "ModelRevisionNotFound",
                         ["spec.model.revision: v9 is not a branch, tag or commit"]),
}


@pytest.mark.parametrize("spec, reason, says", STOPPED.values(), ids=STOPPED.keys())
async def test_a_model_that_cannot_run_stalls_before_any_cloud_run_call(
    adapters: Adapters, hub_settings: Settings, admin: AdminApi, spec: dict, reason: str, says: list[str]
) -> None:
    outcome = await run(adapters, {}, 1, spec, hub_settings)
    assert outcome.assessment.stalled and outcome.assessment.reason == reason, outcome.assessment
    for words in says:
        assert words in outcome.assessment.message, outcome.assessment.message
    status = outcome.status.to_k8s()
    assert conditions(status)["Stalled"]["reason"] == reason and status["preflight"]["result"] == "Failed"
    assert "serviceName" not in status  # not even the target was written down
    assert status["cost"]["maximumHourly"] == "4.26"  # what it would have cost is known all the same
    assert [(e.type, e.reason) for e in outcome.events] == [("Warning", reason)]
    assert cloud_calls(admin) == 0, admin.calls()
    # Resyncs ask again (the Hub may change: a model published, access granted) and still touch nothing.
    again = await reconcile(ref(status, 1, spec), adapters, hub_settings, now=NOW)
    assert again.assessment.reason == reason and again.events == [] and cloud_calls(admin) == 0


async def test_a_gated_model_with_a_token_deploys_and_says_what_could_not_be_checked(
    adapters: Adapters, hub_settings: Settings, emulator: Emulator
) -> None:
    spec = {**GATED, "model": {**GATED["model"], "hfTokenSecret": {"secret": "hf-token"}}}
    AdminApi(emulator.http_url).grant_secret(f"projects/{PROJECT}/secrets/hf-token", [
        f"{project_number(PROJECT)}-compute@developer.gserviceaccount.com"])  # the runtime identity reads the token
    status = await settle(adapters, {}, 1, spec, hub_settings)
    ready = conditions(status)["Ready"]
    assert ready["status"] == "True", status
    assert "model preflight incomplete: meta-llama/Llama-3.1-8B-Instruct is gated" in ready["message"]
    assert status["preflight"]["result"] == "Partial"
    assert "weights 15.0 GiB + overhead 1.0 GiB = 16.0 GiB of 22.4 GiB" in status["preflight"]["message"]
    gated = [r for r in hub_requests(emulator) if r["path"].endswith("/config.json")]
    assert [r["status"] for r in gated] == [401]  # the operator holds no token: config.json stays closed


# -- the Hub that cannot be reached ---------------------------------------------------------------------------


async def test_an_unreachable_hub_does_not_stop_a_deployment_and_the_conditions_say_so(
    adapters: Adapters, hub_settings: Settings
) -> None:
    settings = hub_settings.model_copy(update={"hf_endpoint": nothing_listens()})
    status = await settle(adapters, {}, 1, SEED, settings)
    ready = conditions(status)["Ready"]
    assert ready["status"] == "True", status
    assert "model preflight skipped: the Hugging Face Hub could not be asked (ConnectError" in ready["message"]
    assert "deployed without checking the model" in ready["message"]
    assert status["preflight"]["result"] == "Skipped" and status["cost"]["maximumHourly"] == "4.26"


async def test_a_required_preflight_deploys_nothing_until_the_hub_answers(
    adapters: Adapters, hub_settings: Settings, admin: AdminApi, emulator: Emulator
) -> None:
    down = hub_settings.model_copy(update={"preflight": "required", "hf_endpoint": nothing_listens()})
    outcome = await run(adapters, {}, 1, SEED, down)
    a = outcome.assessment
    assert a.reconciling and not a.stalled and not a.ready and a.reason == "WaitingForHub", a  # a wait, not a stall
    assert "nothing is deployed until it answers" in a.message and "TGI_OPERATOR_PREFLIGHT=required" in a.message
    assert cloud_calls(admin) == 0, admin.calls()
    # The Hub answers again: the next passes deploy.
    up = down.model_copy(update={"hf_endpoint": emulator.http_url})
    status = await settle(adapters, outcome.status.to_k8s(), 1, SEED, up)
    assert conditions(status)["Ready"]["status"] == "True" and status["preflight"]["result"] == "Passed"


async def test_preflight_off_asks_the_hub_nothing(adapters: Adapters, hub_settings: Settings, emulator: Emulator) -> None:
    status = await settle(adapters, {}, 1, {**SEED, "model": {"id": "org/no-such-model"}},
                          hub_settings.model_copy(update={"preflight": "off"}))
    assert conditions(status)["Ready"]["status"] == "True", status
    assert "preflight" not in status and status["cost"]["maximumHourly"] == "4.26"
    assert hub_requests(emulator) == []


# -- what the Hub is asked, and how often --------------------------------------------------------------------------


async def test_a_resync_asks_the_hub_nothing_and_a_commit_is_fetched_once(
    adapters: Adapters, hub_settings: Settings, emulator: Emulator
) -> None:
    status = await settle(adapters, {}, 1, SEED, hub_settings)
    asked = len(hub_requests(emulator))
    assert asked == 2  # model info, config.json
    resync = await reconcile(ref(status, 1, SEED), adapters, hub_settings, now=NOW)
    assert resync.status.to_k8s() == status and resync.events == []  # nothing to write, and nothing asked
    assert len(hub_requests(emulator)) == asked
    # A new generation is checked again; the revision resolved moments ago (within a minute) is not asked again.
    changed = {**SEED, "scaling": {"concurrency": 8}}
    outcome = await reconcile(ref(status, 2, changed), adapters, hub_settings, now=NOW)
    assert outcome.status.preflight.generation == 2 and "all 8 of scaling.concurrency" in outcome.status.preflight.message
    # Another object with the same model: the same.
    other = ObjectRef("team-b", "llama", 1, SEED, {}, {}, "0d4c3b2a-0000-4000-8000-000000000002")
    second = await reconcile(other, adapters, hub_settings, now=NOW)
    assert second.status.preflight.result == "Passed"
    assert len(hub_requests(emulator)) == asked


async def test_a_branch_is_resolved_again_after_a_minute_but_a_commits_files_are_fetched_once(
    hub_settings: Settings, emulator: Emulator
) -> None:
    hub = ModelHub(resolve_seconds=0.0)  # as if a minute had passed between the lookups
    first = await hub.facts(SEED_MODEL, None, endpoint=hub_settings.hf_endpoint, timeout=5)
    again = await hub.facts(SEED_MODEL, None, endpoint=hub_settings.hf_endpoint, timeout=5)
    assert again == first
    assert [r["path"] for r in hub_requests(emulator)] == [
        f"/api/models/{SEED_MODEL}", f"/{SEED_MODEL}/resolve/{first.revision}/config.json", f"/api/models/{SEED_MODEL}"]


async def test_many_new_objects_of_one_model_ask_the_hub_once(hub_settings: Settings, emulator: Emulator) -> None:
    hub = ModelHub()
    found = await asyncio.gather(*(hub.facts(SEED_MODEL, None, endpoint=hub_settings.hf_endpoint, timeout=5)
                                   for _ in range(20)))
    assert len({f.revision for f in found}) == 1
    assert [r["path"] for r in hub_requests(emulator)] == [
        f"/api/models/{SEED_MODEL}", f"/{SEED_MODEL}/resolve/{found[0].revision}/config.json"]


async def test_a_deployed_service_keeps_serving_when_a_spec_change_fails_preflight(
    adapters: Adapters, hub_settings: Settings, admin: AdminApi
) -> None:
    status = await settle(adapters, {}, 1, SEED, hub_settings)
    admin.reset_calls()
    too_long = {**SEED, "model": {**SEED["model"], "maxInputTokens": 4096, "maxTotalTokens": 200000}}
    outcome = await run(adapters, status, 2, too_long, hub_settings)
    assert outcome.assessment.reason == "TokensBeyondContext"
    assert cloud_calls(admin) == 0  # the old revision keeps serving, untouched
    kept = outcome.status.to_k8s()
    assert kept["url"] == status["url"] and kept["serviceName"] == status["serviceName"]
    assert PROJECT in kept["serviceName"]
