"""The TGIService API on a real kube-apiserver: samples, admission rules, kubectl get/explain."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import kubernetes.client as k8s
import pytest
import yaml
from kubernetes.client.rest import ApiException

from specs import with_changes

from tgi_operator import API_GROUP, API_VERSION, KIND, PLURAL
from tgi_operator.devenv.testing import KubeCluster
from tgi_operator.models import TGIServiceSpec

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"
SEED_SPEC = {
    "region": "us-central1",
    "model": {"id": "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4", "quantize": "awq"},
}


def manifest(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "metadata": {"name": name}, "spec": spec}


def custom_objects(cluster: KubeCluster) -> k8s.CustomObjectsApi:
    return k8s.CustomObjectsApi(cluster.api_client())


# ------------------------------------------------------------------------------------------ samples


@pytest.mark.parametrize("sample", sorted(SAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_sample_is_accepted_and_reads_back_with_defaults(
    cluster: KubeCluster, crd_installed: str, namespace: str, sample: Path
) -> None:
    written = yaml.safe_load(sample.read_text())
    cluster.kubectl("apply", "-n", namespace, "-f", str(sample))

    stored = custom_objects(cluster).get_namespaced_custom_object(
        API_GROUP, API_VERSION, namespace, PLURAL, written["metadata"]["name"]
    )
    # The API server filled in exactly the defaults the pydantic models declare.
    expected = TGIServiceSpec.model_validate(written["spec"]).model_dump(mode="json", by_alias=True, exclude_none=True)
    assert stored["spec"] == expected
    for field in ("image", "resources", "scaling", "access", "env", "suspend", "deletionPolicy"):
        assert field in stored["spec"]


def test_seed_sample_gets_the_seed_deployment_settings(cluster: KubeCluster, crd_installed: str, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(SAMPLES / "llama-3-1-8b-awq.yaml"))
    spec = json.loads(cluster.kubectl("get", "tgis", "llama-3-1-8b-awq", "-n", namespace, "-o", "json").stdout)["spec"]
    assert spec["resources"] == {"cpu": "8", "memory": "32Gi", "gpu": {"type": "nvidia-l4", "count": 1,
                                                                      "zonalRedundancy": False}}
    assert spec["scaling"] == {"minInstances": 0, "maxInstances": 3, "concurrency": 64}
    assert spec["access"]["public"] is False
    assert spec["deletionPolicy"] == "Delete"


# ------------------------------------------------------------------------------------------ admission rules

# (case, change to the seed spec, field the error must name, words saying what is allowed)
INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    ("model id without org", {"model": {"id": "llama"}}, "spec.model.id", "org/name"),
    ("model id with a space", {"model": {"id": "org/na me"}}, "spec.model.id", "org/name"),
    ("model id with --", {"model": {"id": "org--x/name"}}, "spec.model.id", "'--'"),
    ("model id too long", {"model": {"id": "org/" + "n" * 93}}, "spec.model.id", "96"),
    ("unknown quantize", {"model": {"quantize": "int4"}}, "spec.model.quantize", '"awq"'),
    ("quantize and dtype", {"model": {"dtype": "float16"}}, "spec.model.dtype", "not be set together with quantize"),
    ("unknown dtype", {"model": {"quantize": None, "dtype": "float32"}}, "spec.model.dtype", '"bfloat16"'),
    ("input = total tokens", {"model": {"maxInputTokens": 4096, "maxTotalTokens": 4096}},
     "spec.model.maxInputTokens", "less than maxTotalTokens"),
    ("prefill < input tokens", {"model": {"maxInputTokens": 4096, "maxBatchPrefillTokens": 4095}},
     "spec.model.maxBatchPrefillTokens", "at least maxInputTokens"),
    ("zero total tokens", {"model": {"maxTotalTokens": 0}}, "spec.model.maxTotalTokens", "greater than or equal to 1"),
    ("region without L4", {"region": "us-west1"}, "spec.region", "us-central1, us-east4"),
    ("region without RTX Pro 6000", {"region": "us-east4", "resources": {"cpu": 20, "memory": "80Gi",
                                                                         "gpu": {"type": "nvidia-rtx-pro-6000"}}},
     "spec.region", "us-central1, europe-west4"),
    ("unknown GPU type", {"resources": {"gpu": {"type": "nvidia-a100"}}}, "spec.resources.gpu.type", '"nvidia-l4"'),
    ("two GPUs", {"resources": {"gpu": {"count": 2}}}, "spec.resources.gpu.count", "less than or equal to 1"),
    ("zero GPUs", {"resources": {"gpu": {"count": 0}}}, "spec.resources.gpu.count", "greater than or equal to 1"),
    ("cpu below the L4 minimum", {"resources": {"cpu": 2}}, "spec.resources.cpu", "one of 4, 6, 8"),
    ("cpu above the L4 maximum", {"resources": {"cpu": "10"}}, "spec.resources.cpu", "one of 4, 6, 8"),
    ("cpu Cloud Run does not offer", {"resources": {"cpu": 5}}, "spec.resources.cpu", "one of 4, 6, 8"),
    ("cpu below the RTX minimum", {"region": "europe-west4", "resources": {"memory": "80Gi",
                                                                           "gpu": {"type": "nvidia-rtx-pro-6000"}}},
     "spec.resources.cpu", "one of 20 with an nvidia-rtx-pro-6000"),
    ("fractional cpu", {"resources": {"cpu": "4500m"}}, "spec.resources.cpu", "one of 4, 6, 8"),
    ("4 vCPU with the default 32Gi", {"resources": {"cpu": 4}}, "spec.resources.memory", "must be 16Gi with 4 vCPU"),
    ("more than 4Gi per vCPU", {"resources": {"cpu": 6, "memory": "25Gi"}}, "spec.resources.memory",
     "between 16Gi and 24Gi with 6 vCPU"),
    ("cpu not a quantity", {"resources": {"cpu": "eight"}}, "spec.resources.cpu", "Kubernetes quantity"),
    ("memory below the L4 minimum", {"resources": {"memory": "8Gi"}}, "spec.resources.memory", "between 16Gi and 32Gi with 8 vCPU"),
    ("memory above the L4 maximum", {"resources": {"memory": "33Gi"}}, "spec.resources.memory", "between 16Gi and 32Gi with 8 vCPU"),
    ("memory in GB", {"resources": {"memory": "32GB"}}, "spec.resources.memory", "Kubernetes quantity"),
    ("concurrency 0", {"scaling": {"concurrency": 0}}, "spec.scaling.concurrency", "greater than or equal to 1"),
    ("concurrency 1001", {"scaling": {"concurrency": 1001}}, "spec.scaling.concurrency", "less than or equal to 1000"),
    ("negative min instances", {"scaling": {"minInstances": -1}}, "spec.scaling.minInstances",
     "greater than or equal to 0"),
    ("min above max instances", {"scaling": {"minInstances": 4, "maxInstances": 3}}, "spec.scaling.minInstances",
     "must not exceed maxInstances"),
    ("zero max instances", {"scaling": {"maxInstances": 0}}, "spec.scaling.maxInstances", "greater than or equal to 1"),
    ("allUsers invoker", {"access": {"invokers": ["allUsers"]}}, "spec.access.invokers[0]", "access.public: true"),
    ("allAuthenticatedUsers invoker", {"access": {"invokers": ["user:a@example.com", "allAuthenticatedUsers"]}},
     "spec.access.invokers[1]", "access.public: true"),
    ("invoker without kind", {"access": {"invokers": ["alice@example.com"]}}, "spec.access.invokers[0]",
     "user:EMAIL, group:EMAIL, serviceAccount:EMAIL or domain:DOMAIN"),
    ("invoker with a bad email", {"access": {"invokers": ["user:alice"]}}, "spec.access.invokers[0]", "user:EMAIL"),
    ("invoker with a bad domain", {"access": {"invokers": ["domain:example"]}}, "spec.access.invokers[0]",
     "domain:DOMAIN"),
    ("duplicate invokers", {"access": {"invokers": ["group:ml@example.com", "group:ml@example.com"]}},
     "spec.access.invokers[1]", "Duplicate value"),
    ("env PORT", {"env": [{"name": "PORT", "value": "80"}]}, "spec.env[0].name", "use the matching spec field"),
    ("env set by the operator", {"env": [{"name": "MAX_TOTAL_TOKENS", "value": "10"}]}, "spec.env[0].name",
     "MAX_TOTAL_TOKENS"),
    ("env name starting with a digit", {"env": [{"name": "1LOG", "value": "x"}]}, "spec.env[0].name",
     "^[A-Za-z_][A-Za-z0-9_]*$"),
    ("duplicate env names", {"env": [{"name": "LOG_LEVEL", "value": "a"}, {"name": "LOG_LEVEL", "value": "b"}]},
     "spec.env[1]", "Duplicate value"),
    ("env without value or valueFrom", {"env": [{"name": "LOG_LEVEL", "value": "a"}, {"name": "API_KEY"}]}, "spec.env[1]",
     "set exactly one of value (a literal) or valueFrom (a Secret Manager secret)"),
    ("env with value and valueFrom", {"env": [{"name": "API_KEY", "value": "k", "valueFrom": {"secret": "api-key"}}]},
     "spec.env[0]", "set exactly one of value (a literal) or valueFrom"),
    ("env secret name with a dot", {"env": [{"name": "API_KEY", "valueFrom": {"secret": "api.key"}}]},
     "spec.env[0].valueFrom.secret", "secrets/"),
    ("env secret version", {"env": [{"name": "API_KEY", "valueFrom": {"secret": "api-key", "version": "0"}}]},
     "spec.env[0].valueFrom.version", "latest|"),
    ("env secret without its id", {"env": [{"name": "API_KEY", "valueFrom": {"version": "3"}}]},
     "spec.env[0].valueFrom.secret", "Required value"),
    ("personal account as runtime identity", {"serviceAccount": "alice@gmail.com"}, "spec.serviceAccount",
     "service-account email"),
    ("project with capitals", {"project": "My-Project"}, "spec.project", "6 to 30 lowercase letters"),
    ("project too short", {"project": "abc"}, "spec.project", "6 to 30 lowercase letters"),
    ("project ending with a hyphen", {"project": "my-project-"}, "spec.project", "not ending with a hyphen"),
    ("project with a restricted string", {"project": "my-google-app"}, "spec.project", "restricted strings"),
    ("unknown deletion policy", {"deletionPolicy": "Orphan"}, "spec.deletionPolicy", '"Retain"'),
    ("image with capitals in the path", {"image": "docker.io/Library/ubuntu:22.04"}, "spec.image",
     "container image reference"),
    ("image with an empty tag", {"image": "ghcr.io/huggingface/text-generation-inference:"}, "spec.image",
     "container image reference"),
    ("secret version", {"model": {"hfTokenSecret": {"secret": "hf-token", "version": "v1"}}},
     "spec.model.hfTokenSecret.version", "latest|"),
    ("secret name with a dot", {"model": {"hfTokenSecret": {"secret": "hf.token"}}},
     "spec.model.hfTokenSecret.secret", "secrets/"),
    ("no region", {"region": None}, "spec.region", "Required value"),
    ("no model id", {"model": {"id": None}}, "spec.model.id", "Required value"),
    ("suspend as a string", {"suspend": "yes"}, "spec.suspend", "boolean"),
]


@pytest.mark.parametrize(("case", "changes", "field", "allowed"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_manifest_is_refused_naming_the_field(
    cluster: KubeCluster, crd_installed: str, namespace: str, case: str, changes: dict[str, Any], field: str,
    allowed: str,
) -> None:
    spec = with_changes(SEED_SPEC, changes)
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest("bad", spec)),
                             check=False)
    assert result.returncode != 0, f"{case}: accepted"
    # The schema: one error line per problem, "* spec.x.y: Invalid value: ...: <what is allowed>"; the admission
    # policy's rules: "... denied request: spec.x.y: <what is allowed>".
    problems = [line for line in result.stderr.splitlines() if re.match(rf"^(\* )?{re.escape(field)}: ", line)
                or f"is invalid: {field}: " in line or f"denied request: {field}: " in line]
    assert any(allowed in line for line in problems), result.stderr
    # The pydantic model refuses it too (the operator reports the same for objects stored earlier).
    with pytest.raises(ValueError):
        TGIServiceSpec.model_validate(spec)


def test_env_from_a_secret_is_accepted_with_the_version_defaulted(
    cluster: KubeCluster, crd_installed: str, namespace: str
) -> None:
    env = [{"name": "LOG_LEVEL", "value": ""}, {"name": "API_KEY", "valueFrom": {"secret": "projects/p-1/secrets/k"}}]
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=yaml.safe_dump(manifest("env-secret", with_changes(SEED_SPEC, {"env": env}))))
    stored = custom_objects(cluster).get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, "env-secret")
    # No value is defaulted into a valueFrom entry (that would break the one-of rule), and the version is.
    assert stored["spec"]["env"] == [env[0], {"name": "API_KEY", "valueFrom": {"secret": "projects/p-1/secrets/k",
                                                                              "version": "latest"}}]
    assert TGIServiceSpec.model_validate(stored["spec"]).env[1].value_from.version == "latest"


@pytest.mark.parametrize(("cpu", "memory", "vcpus"), [("8000m", "32Gi", 8), ("6.0", "24Gi", 6), ("8.", "32768Mi", 8),
                                                      (6, "16Gi", 6), ("4.000", "16Gi", 4)])
def test_cpu_written_the_way_kubernetes_users_write_it_is_accepted(
    cluster: KubeCluster, crd_installed: str, namespace: str, cpu: Any, memory: str, vcpus: int
) -> None:
    """The API server and the operator's model agree on every spelling of a whole vCPU count."""
    name = f"cpu-{abs(hash((cpu, memory))) % 10**8}"
    spec = with_changes(SEED_SPEC, {"resources": {"cpu": cpu, "memory": memory}})
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest(name, spec)))
    stored = custom_objects(cluster).get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)
    assert TGIServiceSpec.model_validate(stored["spec"]).resources.cpu_count() == vcpus


def test_python_client_gets_a_field_error(cluster: KubeCluster, crd_installed: str, namespace: str) -> None:
    spec = with_changes(SEED_SPEC, {"scaling": {"minInstances": 5}})
    with pytest.raises(ApiException) as caught:
        custom_objects(cluster).create_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, PLURAL, manifest("bad", spec)
        )
    assert caught.value.status == 422
    status = json.loads(caught.value.body)
    assert status["reason"] == "Invalid"
    assert status["message"].endswith("denied request: spec.scaling.minInstances: minInstances must not exceed "
                                      "maxInstances"), status["message"]
    # A schema error names the field in the structured causes too.
    spec = with_changes(SEED_SPEC, {"scaling": {"concurrency": 0}})
    with pytest.raises(ApiException) as caught:
        custom_objects(cluster).create_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, PLURAL, manifest("bad", spec)
        )
    assert caught.value.status == 422
    causes = json.loads(caught.value.body)["details"]["causes"]
    assert [cause["field"] for cause in causes] == ["spec.scaling.concurrency"], causes


def test_nothing_was_stored_by_refused_requests(cluster: KubeCluster, crd_installed: str, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", check=False,
                    input=yaml.safe_dump(manifest("bad", with_changes(SEED_SPEC, {"region": "us-west1"}))))
    assert cluster.kubectl("get", "tgis", "-n", namespace, "-o", "name").stdout.strip() == ""


# ------------------------------------------------------------------------------------------ kubectl get/explain


def test_kubectl_get_shows_the_printer_columns(cluster: KubeCluster, crd_installed: str, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(SAMPLES / "llama-3-1-8b-awq.yaml"))
    url = "https://llama-3-1-8b-awq-abc123-uc.a.run.app"
    custom_objects(cluster).patch_namespaced_custom_object_status(
        API_GROUP, API_VERSION, namespace, PLURAL, "llama-3-1-8b-awq",
        {"status": {"url": url, "observedGeneration": 1, "conditions": [
            {"type": "Ready", "status": "True", "reason": "ServiceReady", "message": "serving",
             "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1},
            {"type": "Stalled", "status": "False", "reason": "ServiceReady"}],
            "cost": {"currency": "USD", "instanceHourly": "1.42", "minimumHourly": "0.00", "maximumHourly": "4.26"}}},
    )
    lines = cluster.kubectl("get", "tgis", "-n", namespace).stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "REASON", "URL", "MODEL", "GPU", "MAX-$/H", "AGE"]
    assert lines[1].split()[:7] == ["llama-3-1-8b-awq", "True", "ServiceReady", url,
                                    "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4", "nvidia-l4", "4.26"]
    # The category finds it too.
    assert "llama-3-1-8b-awq" in cluster.kubectl("get", "tgi", "-n", namespace).stdout


def test_kubectl_explain_shows_the_descriptions(cluster: KubeCluster, crd_installed: str) -> None:
    deadline = time.monotonic() + 60  # the API server publishes a new CRD's OpenAPI a moment after Established
    while True:
        result = cluster.kubectl("explain", "tgiservice.spec.model", check=False)
        if result.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "DESCRIPTION: The model TGI serves." in text
    for field, words in [
        ("id", "Hugging Face Hub repository of the model, as org/name"),
        ("quantize", "TGI quantization method."),
        ("maxTotalTokens", "Longest prompt plus generated text of one request, in tokens."),
        ("hfTokenSecret", "Secret Manager secret with a Hugging Face token"),
    ]:
        assert field in text and words in text, field
    explained = " ".join(cluster.kubectl("explain", "tgis.spec.resources.cpu").stdout.split())
    assert "one Cloud Run offers with the GPU type (nvidia-l4: 4, 6 or 8" in explained


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"spec": {"region": "us-east4"}}, "spec.region"),
        ({"spec": {"project": "other-project"}}, "spec.project"),
    ],
)
def test_where_the_service_lives_is_immutable(
    cluster: KubeCluster, crd_installed: str, namespace: str, patch: dict[str, Any], field: str
) -> None:
    """Moving a service in place would orphan the old one and its GPUs: the API server refuses it."""
    base = manifest("moving", {"region": "us-central1", "project": "my-project", "model": {"id": "org/model"}})
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(base))
    result = cluster.kubectl("patch", "tgis", "moving", "-n", namespace, "--type=merge", "-p", json.dumps(patch), check=False)
    assert result.returncode != 0
    assert field in result.stderr and "immutable" in result.stderr
    # Everything else stays editable.
    cluster.kubectl("patch", "tgis", "moving", "-n", namespace, "--type=merge", "-p", '{"spec":{"scaling":{"concurrency":8}}}')
