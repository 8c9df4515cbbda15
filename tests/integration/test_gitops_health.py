"""GitOps health, proven with the tools' own code against live objects: every phase a TGIService goes through
(driven through the real operator, control plane and emulator) is read by sigs.k8s.io/cli-utils' kstatus (what
Flux and kpt use) and by the shipped Argo CD health.lua (run in Lua 5.1, as Argo CD runs it), and both must say
what a GitOps pipeline needs: wait while it is on its way, pass when it serves, fail when only a change helps."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from gitops_tools import argo_health, kstatus, kstatus_binary, kstatus_of
from operator_fixtures import *  # noqa: F403
from operator_fixtures import PROJECT, SAMPLES, Stack, condition, wait_for

pytestmark = pytest.mark.integration
SEED = SAMPLES / "llama-3-1-8b-awq.yaml"
SEED_NAME = "llama-3-1-8b-awq"


@pytest.fixture(scope="module", autouse=True)
def _kstatus_built() -> None:
    kstatus_binary()  # build (or find) it before any stack starts: a failed build fails here, clearly


def manifest(name: str, spec: str) -> str:
    return f"apiVersion: tgi-operator.dev/v1alpha1\nkind: TGIService\nmetadata:\n  name: {name}\nspec:\n{spec}"


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """(kstatus status, Argo CD health status) of one object."""
    return kstatus_of(obj), argo_health(obj)["status"]


def expect(obj: dict[str, Any], kstatus_status: str, argo_status: str, message: str | None = None) -> dict[str, Any]:
    """Both tools say what they must of `obj`; `message` must be in Argo's message, and in kstatus' too unless it is
    Current (kstatus then says "Resource is Ready", whatever the condition's message)."""
    (k,) = kstatus(obj)
    a = argo_health(obj)
    where = f"{obj['metadata']['name']}: kstatus {k}, Argo {a}, status {json.dumps(obj.get('status'))}"
    assert (k["status"], a["status"]) == (kstatus_status, argo_status), where
    if message is not None:
        assert message in a.get("message", ""), where
        assert message in k["message"] or k["status"] == "Current", where
    return obj


def until(stack: Stack, namespace: str, name: str, kind: str, reason: str | None = None,
          generation: int | None = None, timeout: float = 60) -> dict[str, Any]:
    """The object once condition `kind` is True (with `reason`, at `generation`)."""
    def check() -> dict[str, Any] | None:
        obj = stack.tgis(namespace, name)
        c = condition(obj, kind)
        return obj if (c.get("status") == "True" and reason in (None, c.get("reason"))
                       and generation in (None, obj.get("status", {}).get("observedGeneration"))) else None

    return wait_for(check, timeout=timeout, what=f"{namespace}/{name} {kind} {reason or ''}")


def test_a_new_object_is_in_progress_until_it_serves_then_current(operator_stack: Stack, namespace: str) -> None:
    stack = operator_stack
    stack.admin.set_reconcile_seconds(2)  # a deploy long enough to be seen
    try:
        stack.apply(namespace, SEED)
        samples: list[tuple[dict[str, Any], str, str]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # sample as fast as we can, from right after the create
            obj = stack.tgis(namespace, SEED_NAME)
            samples.append((obj, *health(obj)))
            if condition(obj, "Ready").get("status") == "True":
                break
    finally:
        stack.admin.set_reconcile_seconds(0.3)

    obj, k, a = samples[-1]
    assert condition(obj, "Ready")["reason"] == "Ready" and (k, a) == ("Current", "Healthy")
    expect(obj, "Current", "Healthy", message="serving revision")
    on_the_way = [(o, k, a) for o, k, a in samples[:-1] if o.get("status", {}).get("conditions")]
    assert on_the_way, "no status seen before Ready"
    first = on_the_way[0][0]
    # The operator's first status write already says "on its way", at the object's generation.
    assert {c["type"]: (c["status"], c["reason"]) for c in first["status"]["conditions"]} == {
        "Ready": ("False", "Deploying"), "Reconciling": ("True", "Deploying"), "Stalled": ("False", "NotStalled")}
    assert first["status"]["observedGeneration"] == 1
    # From the first condition to Ready, both tools wait: never Current/Healthy, never Failed/Degraded.
    assert {(k, a) for _, k, a in on_the_way} == {("InProgress", "Progressing")}
    reasons = [condition(o, "Reconciling")["reason"] for o, _, _ in on_the_way]
    assert reasons.count("Deploying") >= 2, reasons  # the deploy was seen, more than once
    # Before the operator's first write Argo CD already waits (no conditions = Progressing); kstatus cannot
    # (see test_kstatus_is_in_progress_before_the_first_status_write).
    for o, _, a in samples[:-1]:
        if not o.get("status", {}).get("conditions"):
            assert a == "Progressing"


def test_kstatus_is_in_progress_before_the_first_status_write(operator_stack: Stack, namespace: str) -> None:
    """The CRD starts status at observedGeneration 0, so an object the operator has not seen yet (created while it
    is down, or in the moment before its first write) is in progress, never Current."""
    stack = operator_stack
    stack.operator.stop()
    try:
        stack.apply(namespace, manifest("unseen", "  region: us-central1\n  model:\n    id: org/model\n"))
        obj = stack.tgis(namespace, "unseen")
        assert obj["status"] == {"observedGeneration": 0}  # the CRD's default, no condition yet
        assert argo_health(obj)["status"] == "Progressing"  # Argo CD's script waits
        assert kstatus_of(obj) == "InProgress", kstatus(obj)
    finally:
        stack.restart_operator()


def test_ready_is_current_and_suspended_is_current_and_argo_suspended(operator_stack: Stack, namespace: str) -> None:
    stack = operator_stack
    stack.apply(namespace, SEED)
    expect(until(stack, namespace, SEED_NAME, "Ready", "Ready"), "Current", "Healthy")
    stack.kube.kubectl("patch", "tgis", SEED_NAME, "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    suspended = until(stack, namespace, SEED_NAME, "Ready", "Suspended", generation=2)
    expect(suspended, "Current", "Suspended", message="suspended")


def test_spec_change_not_yet_observed_is_in_progress(operator_stack: Stack, namespace: str) -> None:
    stack = operator_stack
    stack.apply(namespace, SEED)
    expect(until(stack, namespace, SEED_NAME, "Ready", "Ready"), "Current", "Healthy")
    stack.operator.stop()  # nobody observes the change
    try:
        stack.kube.kubectl("patch", "tgis", SEED_NAME, "-n", namespace, "--type=merge", "-p",
                           '{"spec":{"scaling":{"concurrency":32}}}')
        obj = stack.tgis(namespace, SEED_NAME)
        assert obj["metadata"]["generation"] == 2 and obj["status"]["observedGeneration"] == 1
        assert condition(obj, "Ready")["status"] == "True"  # still the old generation's Ready
        (k,) = kstatus(obj)
        assert k["status"] == "InProgress" and "generation" in k["message"].lower(), k
        assert argo_health(obj) == {"status": "Progressing", "message": "Waiting for the operator to observe generation 2"}
    finally:
        stack.restart_operator()
    expect(until(stack, namespace, SEED_NAME, "Ready", "Ready", generation=2), "Current", "Healthy")


def test_gpu_quota_below_max_instances_is_failed(operator_stack: Stack, namespace: str) -> None:
    stack = operator_stack
    stack.admin.set_quota(2, project=PROJECT, region="europe-west1")  # below maxInstances (3) x 1 GPU
    try:
        stack.apply(namespace, manifest("quota", "  region: europe-west1\n  model:\n    id: org/model\n"))
        obj = until(stack, namespace, "quota", "Stalled", "GpuQuotaExceeded")
        expect(obj, "Failed", "Degraded", message="g.co/cloudrun/gpu-quota")
        assert argo_health(obj)["message"] == condition(obj, "Stalled")["message"]
    finally:
        stack.admin.set_quota(10, project=PROJECT, region="europe-west1")
    expect(until(stack, namespace, "quota", "Ready", "Ready"), "Current", "Healthy")  # recovers without a touch


def test_public_not_allowed_is_failed(operator_stack: Stack, namespace: str) -> None:
    stack = operator_stack
    stack.apply(namespace, SAMPLES / "public-demo.yaml")
    obj = until(stack, namespace, "smollm2-demo", "Stalled", "PublicNotAllowed")
    expect(obj, "Failed", "Degraded", message="spec.access.public")


def test_failed_revision_is_in_progress_while_redeployed_and_failed_once_given_up(
    operator_stack: Stack, namespace: str
) -> None:
    """A revision that cannot start (the GPUs it must keep running are beyond quota, as long as another service
    holds them) fails at every redeploy: InProgress through every retry, Failed only when the operator gives up."""
    stack = operator_stack
    region = "asia-southeast1"
    stack.admin.set_quota(2, project=PROJECT, region=region)
    try:
        stack.apply(namespace, manifest("holder", f"  region: {region}\n  model:\n    id: org/model\n"
                                                  "  scaling:\n    minInstances: 1\n    maxInstances: 1\n"))
        until(stack, namespace, "holder", "Ready", "Ready")
        # Fits the quota at the request (2 <= 2) but cannot start: 1 held + 2 to run > 2.
        stack.apply(namespace, manifest("starved", f"  region: {region}\n  model:\n    id: org/model\n"
                                                   "  scaling:\n    minInstances: 2\n    maxInstances: 2\n"))
        samples: list[tuple[dict[str, Any], str, str]] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            obj = stack.tgis(namespace, "starved")
            samples.append((obj, *health(obj)))
            if condition(obj, "Stalled").get("status") == "True":
                break
            time.sleep(0.1)
        given_up, k, a = samples[-1]
        stalled = condition(given_up, "Stalled")
        assert (stalled.get("status"), stalled.get("reason")) == ("True", "RevisionFailed"), samples[-1]
        expect(given_up, "Failed", "Degraded", message="gave up after 5 redeploys")
        assert "Quota exceeded" in argo_health(given_up)["message"]

        retrying = [(o, k, a) for o, k, a in samples[:-1] if condition(o, "Reconciling").get("reason") == "RevisionFailed"]
        attempts = {condition(o, "Reconciling")["message"].rsplit("(", 1)[-1] for o, _, _ in retrying}
        assert len(attempts) >= 3, attempts  # several retries seen, e.g. "2 of 5 attempts made)"
        # From the first condition until the operator gave up, both tools wait: never Failed/Degraded while it
        # retries (nor Current/Healthy: the revision never served).
        seen = [(k, a) for o, k, a in samples[:-1] if o.get("status", {}).get("conditions")]
        assert seen and set(seen) == {("InProgress", "Progressing")}, set(seen)
    finally:
        stack.admin.set_quota(10, project=PROJECT, region=region)


def test_deleting_is_terminating(operator_stack: Stack, namespace: str) -> None:
    stack = operator_stack
    stack.apply(namespace, manifest("going", "  region: us-central1\n  model:\n    id: org/model\n"))
    until(stack, namespace, "going", "Ready", "Ready")
    stack.admin.fault("DeleteService", "UNAVAILABLE", count=3)  # the finalizer waits for Cloud Run
    stack.kube.kubectl("delete", "tgis", "going", "-n", namespace, "--wait=false")
    obj = wait_for(lambda: (o := stack.tgis(namespace, "going"))["metadata"].get("deletionTimestamp") and o,
                   what="deletionTimestamp set")
    assert "tgi-operator.dev/finalizer" in obj["metadata"]["finalizers"]
    (k,) = kstatus(obj)
    assert k["status"] == "Terminating", k
    assert argo_health(obj) == {"status": "Progressing",
                                "message": "Deleting: the operator is removing the Cloud Run service"}
    wait_for(lambda: stack.kube.kubectl("get", "tgis", "going", "-n", namespace, check=False).returncode != 0,
             timeout=60, what="the object gone")


def test_the_committed_samples_live(operator_stack: Stack, namespace: str) -> None:
    """Every sample in manifests/samples, applied and settled, read as one `kind: List` by kstatus."""
    stack = operator_stack
    for sample in sorted(SAMPLES.glob("*.yaml")):
        stack.apply(namespace, sample)

    def settled() -> dict[str, Any] | None:
        listed = json.loads(stack.kube.kubectl("get", "tgis", "-n", namespace, "-o", "json").stdout)
        done = all("True" in (condition(o, "Ready").get("status"), condition(o, "Stalled").get("status"))
                   for o in listed["items"])
        return listed if done and len(listed["items"]) == len(list(SAMPLES.glob("*.yaml"))) else None

    listed = wait_for(settled, timeout=90, what="every sample Ready or Stalled")
    by_kstatus = {r["name"]: r["status"] for r in kstatus(listed)}
    by_argo = {o["metadata"]["name"]: argo_health(o)["status"] for o in listed["items"]}
    reasons = {o["metadata"]["name"]: (condition(o, "Ready")["reason"], condition(o, "Stalled")["reason"])
               for o in listed["items"]}
    expected = {
        "llama-3-1-8b-awq": ("Current", "Healthy"),
        "qwen-2-5-7b-awq": ("Current", "Suspended"),
        "smollm2-demo": ("Failed", "Degraded"),  # public, and the operator does not allow public by default
        # The sample's runtime service account does not exist in the emulator's project: Stalled.
        "llama-3-1-8b-instruct": ("Failed", "Degraded"),
    }
    assert {n: (by_kstatus[n], by_argo[n]) for n in by_kstatus} == expected, reasons
    assert reasons == {"llama-3-1-8b-awq": ("Ready", "NotStalled"), "qwen-2-5-7b-awq": ("Suspended", "NotStalled"),
                       "smollm2-demo": ("PublicNotAllowed", "PublicNotAllowed"),
                       "llama-3-1-8b-instruct": ("RuntimeServiceAccountNotUsable", "RuntimeServiceAccountNotUsable")}
