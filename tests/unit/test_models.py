"""The pydantic models: defaults from the seed deployment, the validation rules, and parsing API objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from specs import with_changes

from tgi_operator.gpus import DEFAULT_GPU_TYPE, GPU_TYPES
from tgi_operator.models import (
    DEFAULT_IMAGE,
    RESERVED_ENV_NAMES,
    Condition,
    ConditionStatus,
    DeletionPolicy,
    ModelStatus,
    Quantize,
    TGIService,
    TGIServiceSpec,
    TGIServiceStatus,
    describe_errors,
)

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"
SEED = {"region": "us-central1", "model": {"id": "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4", "quantize": "awq"}}


def test_defaults_are_the_seed_deployment() -> None:
    spec = TGIServiceSpec.model_validate(SEED)
    assert spec.resources.cpu_count() == 8
    assert spec.resources.memory_bytes() == 32 * 1024**3
    assert spec.resources.gpu.type == DEFAULT_GPU_TYPE == "nvidia-l4"
    assert spec.resources.gpu.count == 1
    assert spec.resources.gpu.zonal_redundancy is False
    assert (spec.scaling.min_instances, spec.scaling.max_instances, spec.scaling.concurrency) == (0, 3, 64)
    assert spec.access.public is False and spec.access.invokers == []
    assert spec.deletion_policy is DeletionPolicy.DELETE
    assert spec.suspend is False
    assert spec.image == DEFAULT_IMAGE
    assert spec.model.quantize is Quantize.AWQ
    assert spec.project is None and spec.service_account is None


def test_dump_is_camel_case_without_unset_fields() -> None:
    dumped = TGIServiceSpec.model_validate(SEED).model_dump(mode="json", by_alias=True, exclude_none=True)
    assert dumped["model"] == SEED["model"]
    assert dumped["scaling"] == {"minInstances": 0, "maxInstances": 3, "concurrency": 64}
    assert dumped["resources"]["gpu"] == {"type": "nvidia-l4", "count": 1, "zonalRedundancy": False}
    assert dumped["deletionPolicy"] == "Delete"
    assert "project" not in dumped and "serviceAccount" not in dumped


def test_python_names_are_accepted_too() -> None:
    spec = TGIServiceSpec(region="us-central1", model={"id": "a/b", "max_total_tokens": 10})
    assert spec.model.max_total_tokens == 10


@pytest.mark.parametrize("sample", sorted(SAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_samples_are_valid(sample: Path) -> None:
    TGIService.from_k8s(yaml.safe_load(sample.read_text()))


def test_reserved_env_names() -> None:
    assert {"PORT", "MODEL_ID", "QUANTIZE", "MAX_CONCURRENT_REQUESTS", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"} <= (
        RESERVED_ENV_NAMES
    )
    assert "LOG_LEVEL" not in RESERVED_ENV_NAMES


VALID = [
    ("quantities as ints", {"resources": {"cpu": 4, "memory": 17179869184}}),
    ("milli cpu that is whole", {"resources": {"cpu": "8000m"}}),
    ("memory in Mi", {"resources": {"memory": "20480Mi"}}),
    ("rtx pro 6000", {"region": "europe-west4", "resources": {"cpu": 20, "memory": "80Gi", "gpu": {"type": "nvidia-rtx-pro-6000"}}}),
    ("dtype without quantize", {"model": {"quantize": None, "dtype": "bfloat16"}}),
    ("token limits in order", {"model": {"maxInputTokens": 4095, "maxTotalTokens": 4096, "maxBatchPrefillTokens": 4095}}),
    ("only max input tokens", {"model": {"maxInputTokens": 4096}}),
    ("min equals max instances", {"scaling": {"minInstances": 3, "maxInstances": 3}}),
    ("concurrency bounds", {"scaling": {"concurrency": 1000}}),
    ("all invoker kinds", {"access": {"invokers": ["user:a@example.com", "group:ml@example.com",
                                                  "serviceAccount:app@my-project.iam.gserviceaccount.com",
                                                  "domain:example.com"]}}),
    ("env", {"env": [{"name": "LOG_LEVEL", "value": "debug"}, {"name": "_X", "value": ""}]}),
    ("env from a secret", {"env": [{"name": "API_KEY", "valueFrom": {"secret": "projects/p-1/secrets/k", "version": "3"}},
                                   {"name": "OTHER_KEY", "valueFrom": {"secret": "k"}}]}),
    ("default compute service account", {"serviceAccount": "123456789-compute@developer.gserviceaccount.com"}),
    ("project", {"project": "my-project-123"}),
    ("image by digest", {"image": "us-docker.pkg.dev/p/r/tgi@sha256:" + "a" * 64}),
    ("image with port", {"image": "localhost:5000/tgi:3.0.1"}),
    ("docker hub image", {"image": "ghcr.io/huggingface/text-generation-inference:3.3.5"}),
    ("secret by resource name", {"model": {"hfTokenSecret": {"secret": "projects/p-1/secrets/hf-token", "version": "3"}}}),
    ("revision sha", {"model": {"revision": "5f8a4c2d9e"}}),
    ("retain", {"deletionPolicy": "Retain", "suspend": True}),
]


@pytest.mark.parametrize(("name", "changes"), VALID, ids=[v[0] for v in VALID])
def test_accepts(name: str, changes: dict[str, Any]) -> None:
    TGIServiceSpec.model_validate(with_changes(SEED, changes))


INVALID = [
    ("model id without org", {"model": {"id": "llama"}}, "spec.model.id", "org/name"),
    ("model id with a space", {"model": {"id": "org/na me"}}, "spec.model.id", "org/name"),
    ("model id with --", {"model": {"id": "org--x/name"}}, "spec.model", "'--'"),
    ("quantize and dtype", {"model": {"dtype": "float16"}}, "spec.model", "dtype must not be set together with quantize"),
    ("unknown quantize", {"model": {"quantize": "int4"}}, "spec.model.quantize", "awq"),
    ("input = total tokens", {"model": {"maxInputTokens": 8, "maxTotalTokens": 8}}, "spec.model", "less than maxTotalTokens"),
    ("prefill < input", {"model": {"maxInputTokens": 8, "maxBatchPrefillTokens": 7}}, "spec.model", "at least maxInputTokens"),
    ("region without the GPU", {"region": "us-west1"}, "spec", "us-central1, us-east4"),
    ("gpu count 2", {"resources": {"gpu": {"count": 2}}}, "spec.resources.gpu.count", "less than or equal to 1"),
    ("cpu below the L4 minimum", {"resources": {"cpu": 2}}, "spec.resources", "one of 4, 6, 8"),
    ("fractional cpu", {"resources": {"cpu": "4500m"}}, "spec.resources", "one of 4, 6, 8"),
    ("cpu Cloud Run does not offer", {"resources": {"cpu": 5}}, "spec.resources", "one of 4, 6, 8"),
    ("4 vCPU with the default 32Gi", {"resources": {"cpu": 4}}, "spec.resources", "memory must be 16Gi with 4 vCPU"),
    ("more than 4Gi per vCPU", {"resources": {"cpu": 6, "memory": "32Gi"}}, "spec.resources",
     "between 16Gi and 24Gi with 6 vCPU"),
    ("cpu not a quantity", {"resources": {"cpu": "eight"}}, "spec.resources", "quantity"),
    ("cpu as a float", {"resources": {"cpu": 8.0}}, "spec.resources.cpu", "integer or a string"),
    ("memory above the L4 maximum", {"resources": {"memory": "64Gi"}}, "spec.resources", "16Gi and 32Gi"),
    ("memory in GB", {"resources": {"memory": "32GB"}}, "spec.resources", "quantity"),
    ("concurrency 0", {"scaling": {"concurrency": 0}}, "spec.scaling.concurrency", "greater than or equal to 1"),
    ("min > max instances", {"scaling": {"minInstances": 4}}, "spec.scaling", "minInstances must not exceed maxInstances"),
    ("allUsers invoker", {"access": {"invokers": ["allUsers"]}}, "spec.access.invokers[0]", "access.public"),
    ("invoker without kind", {"access": {"invokers": ["a@example.com"]}}, "spec.access.invokers[0]", "user:EMAIL"),
    ("duplicate invokers", {"access": {"invokers": ["user:a@example.com"] * 2}}, "spec.access", "duplicates"),
    ("env PORT", {"env": [{"name": "PORT", "value": "80"}]}, "spec.env[0].name", "PORT"),
    ("env MODEL_ID", {"env": [{"name": "MODEL_ID", "value": "x/y"}]}, "spec.env[0].name", "MODEL_ID"),
    ("env name with a dash", {"env": [{"name": "A-B", "value": ""}]}, "spec.env[0].name", "pattern"),
    ("duplicate env names", {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "spec", "unique"),
    ("env without a value", {"env": [{"name": "A", "value": "1"}, {"name": "B"}]}, "spec.env[1]", "exactly one of value"),
    ("env with value and valueFrom", {"env": [{"name": "A", "value": "x", "valueFrom": {"secret": "k"}}]}, "spec.env[0]",
     "exactly one of value"),
    ("env secret with a dot", {"env": [{"name": "A", "valueFrom": {"secret": "k.v"}}]}, "spec.env[0].valueFrom.secret",
     "pattern"),
    ("env secret version", {"env": [{"name": "A", "valueFrom": {"secret": "k", "version": "0"}}]},
     "spec.env[0].valueFrom.version", "pattern"),
    ("personal service account", {"serviceAccount": "me@gmail.com"}, "spec.serviceAccount", "service-account email"),
    ("project with capitals", {"project": "My-Project"}, "spec.project", "lowercase"),
    ("project with google", {"project": "my-google-app"}, "spec", "restricted"),
    ("unknown deletion policy", {"deletionPolicy": "Orphan"}, "spec.deletionPolicy", "Delete"),
    ("image with capitals in the path", {"image": "docker.io/Library/ubuntu"}, "spec.image", "image reference"),
    ("secret version", {"model": {"hfTokenSecret": {"secret": "hf", "version": "v1"}}}, "spec.model.hfTokenSecret.version", "pattern"),
    ("no region", {"region": None}, "spec.region", "required"),
    ("unknown field", {"replicas": 2}, "spec.replicas", "not permitted"),
    ("suspend as a string", {"suspend": "yes"}, "spec.suspend", "boolean"),
]


@pytest.mark.parametrize(
    ("name", "changes", "field", "allowed"), INVALID, ids=[v[0] for v in INVALID]
)
def test_refuses_with_a_message_naming_the_field(name: str, changes: dict[str, Any], field: str, allowed: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TGIServiceSpec.model_validate(with_changes(SEED, changes))
    lines = describe_errors(caught.value)
    assert any(line.startswith(f"{field}: ") and allowed.lower() in line.lower() for line in lines), lines


def test_region_rule_follows_the_gpu_table() -> None:
    for gpu in GPU_TYPES.values():
        shape = {"cpu": gpu.min_cpu, "memory": f"{gpu.min_memory_gib}Gi", "gpu": {"type": gpu.name}}
        for region in gpu.regions:
            TGIServiceSpec.model_validate(with_changes(SEED, {"region": region, "resources": shape}))
        with pytest.raises(ValidationError):
            TGIServiceSpec.model_validate(with_changes(SEED, {"region": "us-west1", "resources": shape}))


def test_from_k8s_reads_what_the_api_server_returns() -> None:
    body = {
        "apiVersion": "tgi-operator.dev/v1alpha1",
        "kind": "TGIService",
        "metadata": {"name": "llama", "namespace": "team-a", "uid": "u-1", "generation": 2, "resourceVersion": "7",
                     "creationTimestamp": "2026-01-01T00:00:00Z", "managedFields": []},
        "spec": TGIServiceSpec.model_validate(SEED).model_dump(mode="json", by_alias=True, exclude_none=True),
        "status": {
            "observedGeneration": 1,
            "url": "https://llama.run.app",
            "kopf": {"progress": {}},
            "model": {"id": SEED["model"]["id"], "maxConcurrentRequests": 64},
            "conditions": [{"type": "Ready", "status": "True", "reason": "Ready",
                            "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}],
        },
    }
    obj = TGIService.from_k8s(body)
    assert (obj.metadata.name, obj.metadata.namespace, obj.metadata.generation) == ("llama", "team-a", 2)
    assert obj.spec.model.id == SEED["model"]["id"]
    assert obj.status.conditions[0].status is ConditionStatus.TRUE
    # What the reconciler writes back is what it read, minus other writers' fields (kopf's).
    written = obj.status.to_k8s()
    assert written == {k: v for k, v in body["status"].items() if k != "kopf"}


def test_status_to_k8s() -> None:
    status = TGIServiceStatus(
        observed_generation=3,
        service_name="projects/p/locations/us-central1/services/team-a-llama",
        model=ModelStatus(id="a/b", max_total_tokens=8192),
        conditions=[Condition(type="Ready", status=ConditionStatus.FALSE, reason="Deploying", observed_generation=3)],
    )
    assert status.to_k8s() == {
        "observedGeneration": 3,
        "serviceName": "projects/p/locations/us-central1/services/team-a-llama",
        "model": {"id": "a/b", "maxTotalTokens": 8192},
        "conditions": [{"type": "Ready", "status": "False", "reason": "Deploying", "observedGeneration": 3}],
    }


def test_a_missing_status_is_empty() -> None:
    body = {"metadata": {"name": "x"}, "spec": SEED}
    assert TGIService.from_k8s(body).status.to_k8s() == {"conditions": []}
