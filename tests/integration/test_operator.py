"""The operator end to end: the real kube-apiserver, the emulator, and `tgi-operator run` as its own process
under the RBAC from manifests/."""

from __future__ import annotations

import json
import time

import pytest
import requests
from google.api_core import exceptions as gexc
from google.cloud import run_v2
from operator_fixtures import *  # noqa: F403
from operator_fixtures import PROJECT, RESYNC_SECONDS, SAMPLES, Stack, condition, wait_for, writes

from tgi_operator.naming import service_id

pytestmark = pytest.mark.integration
SEED = SAMPLES / "llama-3-1-8b-awq.yaml"
SEED_NAME = "llama-3-1-8b-awq"


def ready(stack: Stack, namespace: str, name: str = SEED_NAME, generation: int | None = None) -> dict:
    def check() -> dict | None:
        obj = stack.tgis(namespace, name)
        c = condition(obj, "Ready")
        if c.get("status") == "True" and (generation is None or obj["status"].get("observedGeneration") == generation):
            return obj
        return None

    return wait_for(check, timeout=40, what=f"{namespace}/{name} Ready")


def stalled(stack: Stack, namespace: str, name: str, reason: str | None = None) -> dict:
    def check() -> dict | None:
        obj = stack.tgis(namespace, name)
        c = condition(obj, "Stalled")
        return obj if c.get("status") == "True" and (reason is None or c.get("reason") == reason) else None

    return wait_for(check, timeout=40, what=f"{namespace}/{name} Stalled {reason or ''}")


def manifest(name: str, spec: str) -> str:
    return f"apiVersion: tgi-operator.dev/v1alpha1\nkind: TGIService\nmetadata:\n  name: {name}\nspec:\n{spec}"


def test_seed_sample_becomes_ready_with_exactly_the_seed_settings(operator_stack: Stack, namespace: str) -> None:
    stack = operator_stack
    stack.apply(namespace, SEED)
    # kubectl wait is what GitOps pipelines and people use; kstatus conditions make it work.
    stack.kube.kubectl("wait", "-n", namespace, "--for=condition=Ready", f"tgis/{SEED_NAME}", "--timeout=60s")
    obj = stack.tgis(namespace, SEED_NAME)
    status = obj["status"]
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert status["url"].startswith("http://127.0.0.1:")
    assert status["serviceName"] == f"projects/{PROJECT}/locations/us-central1/services/{service_id(namespace, SEED_NAME)}"
    assert status["model"] == {"id": "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4", "maxConcurrentRequests": 64,
                               "maxInputTokens": status["model"]["maxInputTokens"], "maxTotalTokens": status["model"]["maxTotalTokens"],
                               "version": status["model"]["version"], "revision": status["latestReadyRevision"]}
    assert {c["type"]: c["status"] for c in status["conditions"]} == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}
    assert all(c["observedGeneration"] == 1 for c in status["conditions"])

    # The Cloud Run service, read back with the real client, carries the seed's gcloud settings.
    service = stack.run.get_service(name=status["serviceName"])
    container = service.template.containers[0]
    assert list(container.args) == ["--model-id=hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4", "--quantize=awq",
                                    "--max-concurrent-requests=64"]
    assert [p.container_port for p in container.ports] == [8080]
    assert dict(container.resources.limits) == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}
    assert container.resources.cpu_idle is False  # --no-cpu-throttling
    assert service.template.node_selector.accelerator == "nvidia-l4"
    assert service.template.scaling.max_instance_count == 3
    assert service.template.scaling.min_instance_count == 0
    assert service.template.max_instance_request_concurrency == 64
    assert service.invoker_iam_disabled is False
    policy = stack.run.get_iam_policy(request={"resource": status["serviceName"]})
    members = {m for b in policy.bindings if b.role == "roles/run.invoker" for m in b.members}
    assert members == {f"serviceAccount:{status['invokerServiceAccount']}"}  # --no-allow-unauthenticated: no allUsers

    # The URL answers the invoker (the service account the operator created for it), and only the invoker.
    url = status["url"]
    invoker = stack.admin.token(status["invokerServiceAccount"], url)
    stranger = stack.admin.token(f"stranger@{PROJECT}.iam.gserviceaccount.com", url)
    assert requests.get(f"{url}/health", headers={"Authorization": f"Bearer {invoker}"}, timeout=10).status_code == 200
    assert requests.get(f"{url}/health", headers={"Authorization": f"Bearer {stranger}"}, timeout=10).status_code == 403
    chat = requests.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {invoker}"}, timeout=10,
                         json={"model": "tgi", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16})
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"]

    events = stack.kube.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    reasons = {e["reason"] for e in json.loads(events)["items"]}
    assert {"Creating", "Ready"} <= reasons
    assert "eyJ" not in events and "eyJ" not in json.dumps(obj)  # no token in events or status


def test_a_spec_change_is_one_update_and_an_unrelated_label_is_none(operator_stack: Stack, namespace: str) -> None:
    stack = operator_stack
    stack.apply(namespace, SEED)
    first = ready(stack, namespace)
    revision = first["status"]["latestReadyRevision"]
    stack.admin.reset_calls()

    stack.kube.kubectl("patch", "tgis", SEED_NAME, "-n", namespace, "--type=merge", "-p", '{"spec":{"scaling":{"concurrency":32}}}')
    second = ready(stack, namespace, generation=2)
    assert second["status"]["latestReadyRevision"] != revision
    assert second["status"]["model"]["maxConcurrentRequests"] == 32
    service = stack.service(namespace, SEED_NAME)
    assert service.generation == 2 and service.template.max_instance_request_concurrency == 32
    assert "--max-concurrent-requests=32" in service.template.containers[0].args
    assert writes(stack.admin.calls()) == {"UpdateService": 1}
    scraped = requests.get(stack.operator.metrics_url, timeout=10).text
    assert 'tgi_operator_cloud_writes_total{kind="Updating"}' in scraped
    assert 'tgi_operator_reconciles_total{outcome="ready"}' in scraped
    # controller-runtime's names, for the dashboards written for Go operators
    for line in ('controller_runtime_reconcile_total{controller="tgiservice",result="success"}',
                 'controller_runtime_reconcile_total{controller="tgiservice",result="requeue_after"}',
                 'controller_runtime_reconcile_time_seconds_count{controller="tgiservice"}',
                 'controller_runtime_active_workers{controller="tgiservice"}',
                 'controller_runtime_max_concurrent_reconciles{controller="tgiservice"} 8.0',
                 'workqueue_depth{name="tgiservice"}',
                 'tgi_operator_cloud_requests_total{api="run",code="OK",method="UpdateService"}',
                 'tgi_operator_cloud_requests_total{api="run",code="OK",method="GetService"}',
                 'tgi_operator_cloud_request_duration_seconds_count{api="run",method="GetIamPolicy"}',
                 'tgi_operator_objects{condition="Ready",reason="Ready",status="True"}',
                 # status.cost per object, read at scrape time (8 vCPU, 32 GiB and an L4 in Tier 1, 3 at most)
                 f'tgi_operator_estimated_hourly_cost_usd{{bound="max",name="{SEED_NAME}",namespace="{namespace}"}} '
                 f'{float(second["status"]["cost"]["maximumHourly"])}'):
        assert line in scraped, line

    stack.admin.reset_calls()
    stack.kube.kubectl("label", "tgis", SEED_NAME, "-n", namespace, "team=search")
    wait_for(lambda: stack.tgis(namespace, SEED_NAME)["metadata"]["labels"].get("team") == "search")
    time.sleep(RESYNC_SECONDS + 1)  # past a resync, so a spurious write would have happened
    assert writes(stack.admin.calls()) == {}
    assert stack.service(namespace, SEED_NAME).generation == 2


def test_drift_is_corrected_and_the_steady_state_writes_nothing(operator_stack: Stack, namespace: str) -> None:
    stack = operator_stack
    stack.apply(namespace, SEED)
    obj = ready(stack, namespace)
    name = obj["status"]["serviceName"]

    # Someone edits the service behind the operator's back (as `gcloud run services update --concurrency` would).
    drifted = stack.run.get_service(name=name)
    drifted.template.max_instance_request_concurrency = 10
    drifted.template.scaling.max_instance_count = 7
    stack.run.update_service(service=drifted).result(timeout=30)
    assert stack.run.get_service(name=name).template.max_instance_request_concurrency == 10

    corrected = wait_for(lambda: (s := stack.run.get_service(name=name)).template.max_instance_request_concurrency == 64
                         and s.template.scaling.max_instance_count == 3 and not s.reconciling and s,
                         timeout=RESYNC_SECONDS * 4, what="drift corrected")
    assert corrected.generation == 3
    ready(stack, namespace)

    # Steady state: three resyncs, not one write to Cloud Run, not one patch of the object.
    time.sleep(1)
    resource_version = stack.tgis(namespace, SEED_NAME)["metadata"]["resourceVersion"]
    stack.admin.reset_calls()
    time.sleep(RESYNC_SECONDS * 3 + 1)
    calls = stack.admin.calls()
    assert writes(calls) == {}
    assert sum(calls.get("google.cloud.run.v2.Services/GetService", {}).values()) >= 3  # it did look, three times
    assert stack.tgis(namespace, SEED_NAME)["metadata"]["resourceVersion"] == resource_version


def test_gpu_quota_exhausted_stalls_then_recovers_without_a_touch(operator_stack: Stack, namespace: str) -> None:
    stack = operator_stack
    stack.admin.set_quota(0, project=PROJECT, region="europe-west4")
    try:
        stack.apply(namespace, manifest("quota", "  region: europe-west4\n  model:\n    id: org/model\n"))
        # Cloud Run refuses the request itself (max instances x GPUs against the quota): nothing is deployed.
        obj = stalled(stack, namespace, "quota", reason="GpuQuotaExceeded")
        message = condition(obj, "Stalled")["message"]
        assert "NvidiaL4GpuAllocNoZonalRedundancyPerProjectRegion" in message and "g.co/cloudrun/gpu-quota" in message
        assert condition(obj, "Ready")["status"] == "False"
        events = stack.kube.kubectl("get", "events", "-n", namespace, "--field-selector=type=Warning", "-o", "json").stdout
        assert "GpuQuotaExceeded" in events
    finally:
        stack.admin.set_quota(10, project=PROJECT, region="europe-west4")
    ready(stack, namespace, "quota")


def test_a_service_that_is_not_ours_is_left_untouched(operator_stack: Stack, namespace: str) -> None:
    stack = operator_stack
    parent = f"projects/{PROJECT}/locations/us-central1"
    foreign = run_v2.Service(template=run_v2.RevisionTemplate(containers=[run_v2.Container(image="us-docker.pkg.dev/cloudrun/container/hello")]))
    taken = f"{parent}/services/{service_id(namespace, 'mine')}"
    stack.run.create_service(parent=parent, service_id=service_id(namespace, "mine"), service=foreign).result(timeout=30)
    before = stack.run.get_service(name=taken)

    stack.apply(namespace, manifest("mine", "  region: us-central1\n  model:\n    id: org/model\n"))
    obj = stalled(stack, namespace, "mine", reason="NotOwned")
    assert "was not created by this TGIService" in condition(obj, "Stalled")["message"]
    after = stack.run.get_service(name=taken)
    assert (after.etag, after.generation) == (before.etag, before.generation)

    stack.kube.kubectl("delete", "tgis", "mine", "-n", namespace, "--timeout=30s")
    assert stack.run.get_service(name=taken).etag == before.etag  # still there


def account_emails(stack: Stack) -> set[str]:
    return {a.email for a in stack.iam.list_service_accounts(name=f"projects/{PROJECT}")}


def test_delete_policy_delete_removes_service_and_invoker_account(operator_stack: Stack, namespace: str) -> None:
    stack = operator_stack
    stack.apply(namespace, SEED)
    status = ready(stack, namespace)["status"]
    sa = status["invokerServiceAccount"]
    assert stack.iam.get_service_account(name=f"projects/{PROJECT}/serviceAccounts/{sa}").email == sa

    stack.kube.kubectl("delete", "tgis", SEED_NAME, "-n", namespace, "--timeout=30s")
    with pytest.raises(gexc.NotFound):
        stack.run.get_service(name=status["serviceName"])
    assert sa not in account_emails(stack)  # a Get would answer 403 "(or it may not exist)": the list says
    reasons = wait_for(lambda: (r := {e["reason"] for e in json.loads(stack.kube.kubectl(
        "get", "events", "-n", namespace, "-o", "json").stdout)["items"]}) >= {"Deleting", "Deleted"} and r,
        what="Deleting and Deleted events")
    assert {"Creating", "Ready"} <= reasons


def test_delete_policy_retain_releases_the_service(operator_stack: Stack, namespace: str) -> None:
    stack = operator_stack
    stack.apply(namespace, manifest("kept", "  region: us-central1\n  deletionPolicy: Retain\n  model:\n    id: org/model\n"))
    status = ready(stack, namespace, "kept")["status"]
    stack.kube.kubectl("delete", "tgis", "kept", "-n", namespace, "--timeout=30s")
    service = wait_for(lambda: (s := stack.run.get_service(name=status["serviceName"])) and "managed-by" not in s.labels and s,
                       what="owner labels removed")
    assert not any(k.startswith("tgi-operator") for k in service.labels)
    assert service.uri == status["url"]


def test_delete_waits_for_cloud_run_to_come_back(operator_stack: Stack, namespace: str) -> None:
    stack = operator_stack
    stack.apply(namespace, manifest("flaky", "  region: us-central1\n  model:\n    id: org/model\n"))
    status = ready(stack, namespace, "flaky")["status"]
    stack.admin.fault("DeleteService", "UNAVAILABLE", count=3)
    stack.kube.kubectl("delete", "tgis", "flaky", "-n", namespace, "--wait=false")

    wait_for(lambda: stack.admin.calls().get("google.cloud.run.v2.Services/DeleteService", {}).get("UNAVAILABLE", 0) >= 1,
             what="a delete refused as UNAVAILABLE")
    obj = stack.tgis(namespace, "flaky")
    assert obj["metadata"]["deletionTimestamp"] and "tgi-operator.dev/finalizer" in obj["metadata"]["finalizers"]

    wait_for(lambda: stack.kube.kubectl("get", "tgis", "flaky", "-n", namespace, check=False).returncode != 0,
             timeout=60, what="the object gone once Cloud Run answers")
    assert stack.admin.calls()["google.cloud.run.v2.Services/DeleteService"]["UNAVAILABLE"] == 3
    with pytest.raises(gexc.NotFound):
        stack.run.get_service(name=status["serviceName"])


def test_public_is_refused_unless_the_operator_allows_it(operator_stack: Stack, namespace: str) -> None:
    stack = operator_stack
    stack.apply(namespace, SAMPLES / "public-demo.yaml")
    name = stack.kube.kubectl("get", "tgis", "-n", namespace, "-o", "jsonpath={.items[0].metadata.name}").stdout
    obj = stalled(stack, namespace, name, reason="PublicNotAllowed")
    assert "spec.access.public" in condition(obj, "Stalled")["message"]
    # Deployed, but private: no allUsers binding, and an anonymous request is refused.
    service_name = wait_for(lambda: stack.tgis(namespace, name)["status"].get("url") and stack.tgis(namespace, name),
                            what="the private service's URL")["status"]["serviceName"]
    policy = stack.run.get_iam_policy(request={"resource": service_name})
    assert "allUsers" not in {m for b in policy.bindings for m in b.members}
    url = stack.run.get_service(name=service_name).uri
    assert requests.get(f"{url}/health", timeout=10).status_code == 403


def test_invoker_account_follows_the_spec(operator_stack: Stack, namespace: str) -> None:
    stack = operator_stack
    stack.apply(namespace, SEED)
    status = ready(stack, namespace)["status"]
    sa = status["invokerServiceAccount"]
    stack.kube.kubectl("patch", "tgis", SEED_NAME, "-n", namespace, "--type=merge", "-p",
                       '{"spec":{"access":{"createInvokerServiceAccount":false,"invokers":["group:ml@example.com"]}}}')
    after = ready(stack, namespace, generation=2)["status"]
    assert "invokerServiceAccount" not in after
    assert sa not in account_emails(stack)  # a Get would answer 403 "(or it may not exist)": the list says
    policy = stack.run.get_iam_policy(request={"resource": status["serviceName"]})
    assert {m for b in policy.bindings if b.role == "roles/run.invoker" for m in b.members} == {"group:ml@example.com"}


def test_suspend_scales_to_zero_and_resume_serves_again(operator_stack: Stack, namespace: str) -> None:
    stack = operator_stack
    stack.apply(namespace, SEED)
    ready(stack, namespace)
    stack.kube.kubectl("patch", "tgis", SEED_NAME, "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    suspended = ready(stack, namespace, generation=2)
    assert condition(suspended, "Ready")["reason"] == "Suspended"
    service = stack.service(namespace, SEED_NAME)
    assert service.scaling.scaling_mode == run_v2.ServiceScaling.ScalingMode.MANUAL
    assert service.scaling.manual_instance_count == 0
    assert suspended["status"]["url"] == service.uri  # the URL and everything else stay

    stack.kube.kubectl("patch", "tgis", SEED_NAME, "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    resumed = ready(stack, namespace, generation=3)
    assert condition(resumed, "Ready")["reason"] == "Ready"
    assert stack.service(namespace, SEED_NAME).scaling.scaling_mode != run_v2.ServiceScaling.ScalingMode.MANUAL
