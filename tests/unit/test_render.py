"""render.py: a TGIService spec to the desired Cloud Run service, field by field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from google.api import launch_stage_pb2
from google.cloud import run_v2

from tgi_operator.models import DEFAULT_IMAGE, parse_spec
from tgi_operator.naming import invoker_account_id, service_id
from tgi_operator.render import (
    INVOKERS_ANNOTATION,
    Target,
    invoker_members,
    invoker_service_account,
    launcher_args,
    render_service,
    target,
)

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"
NAMESPACE, NAME, PROJECT = "team-a", "llama-8b", "my-project"
MODEL_ID = "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4"
OWNER = {"managed-by": "tgi-operator", "tgi-operator-namespace": NAMESPACE, "tgi-operator-name": NAME,
         "tgi-operator-cluster": "default"}
APP = "serviceAccount:app@my-project.iam.gserviceaccount.com"
GROUP = "group:ml@example.com"
INVOKER_SA = f"serviceAccount:{invoker_account_id(NAMESPACE, NAME)}@{PROJECT}.iam.gserviceaccount.com"


def spec_of(**overrides: Any) -> dict[str, Any]:
    """A minimal valid spec (as YAML would give it), with top-level keys replaced by `overrides`."""
    base: dict[str, Any] = {"region": "us-central1", "model": {"id": MODEL_ID, "quantize": "awq"}}
    base.update(overrides)
    return base


def rendered(raw: dict[str, Any], *, namespace: str = NAMESPACE, name: str = NAME) -> run_v2.Service:
    spec = parse_spec(raw)
    return render_service(namespace, name, spec, target(namespace, name, spec, PROJECT))


def only_container(service: run_v2.Service) -> run_v2.Container:
    containers = list(service.template.containers)
    assert len(containers) == 1
    return containers[0]


# ------------------------------------------------------------------------------------------- the seed


def seed_spec() -> dict[str, Any]:
    document = yaml.safe_load((SAMPLES / "llama-3-1-8b-awq.yaml").read_text())
    assert document["kind"] == "TGIService"
    return document["spec"]


def test_the_seed_sample_renders_exactly_the_seed_gcloud_settings() -> None:
    """gcloud beta run deploy --image=<TGI DLC>
    --args="--model-id=hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4,--quantize=awq,--max-concurrent-requests=64"
    --port=8080 --cpu=8 --memory=32Gi --no-cpu-throttling --gpu=1 --gpu-type=nvidia-l4
    --max-instances=3 --concurrency=64 --region=us-central1 --no-allow-unauthenticated"""
    spec = parse_spec(seed_spec())
    where = target(NAMESPACE, "llama-3-1-8b-awq", spec, PROJECT)
    service = render_service(NAMESPACE, "llama-3-1-8b-awq", spec, where)
    container = only_container(service)
    template = service.template

    assert where.region == "us-central1"  # --region
    assert container.image == DEFAULT_IMAGE  # --image (the pinned TGI DLC)
    assert "huggingface-text-generation-inference" in container.image
    assert list(container.args) == [  # --args, exactly and in this order
        "--model-id=hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4",
        "--quantize=awq",
        "--max-concurrent-requests=64",
    ]
    assert [p.container_port for p in container.ports] == [8080]  # --port
    assert dict(container.resources.limits) == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}  # --cpu --memory --gpu
    assert container.resources.cpu_idle is False  # --no-cpu-throttling
    assert container.resources.startup_cpu_boost is True
    assert template.node_selector.accelerator == "nvidia-l4"  # --gpu-type
    assert template.scaling.max_instance_count == 3  # --max-instances
    assert template.scaling.min_instance_count == 0
    assert template.max_instance_request_concurrency == 64  # --concurrency
    # Not suspended: automatic scaling, said explicitly (an update without a mode keeps a suspended service at zero).
    assert service.scaling == run_v2.ServiceScaling(scaling_mode=run_v2.ServiceScaling.ScalingMode.AUTOMATIC)
    assert template.timeout.total_seconds() == 300  # Cloud Run's default request timeout, owned
    assert service.launch_stage == launch_stage_pb2.LaunchStage.GA  # the L4 is GA: no beta features needed
    assert service.ingress == run_v2.IngressTraffic.INGRESS_TRAFFIC_ALL
    assert service.invoker_iam_disabled is False  # --no-allow-unauthenticated: run.invoker is checked
    members = invoker_members(NAMESPACE, "llama-3-1-8b-awq", spec, where.project)
    assert "allUsers" not in members and "allAuthenticatedUsers" not in members
    assert members == [f"serviceAccount:{invoker_service_account(NAMESPACE, 'llama-3-1-8b-awq', PROJECT)}"]
    assert list(container.env) == []  # nothing the gcloud command did not set
    assert template.service_account == ""  # Cloud Run's default runtime identity, as gcloud leaves it


def test_the_seed_waits_for_the_model_before_serving() -> None:
    probe = only_container(rendered(seed_spec())).startup_probe
    assert probe.http_get.path == "/health"
    assert probe.http_get.port == 8080
    assert probe.period_seconds * probe.failure_threshold >= 20 * 60  # weights take minutes to load


# ------------------------------------------------------------------------------------------- variations


def env_of(service: run_v2.Service) -> dict[str, run_v2.EnvVar]:
    return {e.name: e for e in only_container(service).env}


@pytest.mark.parametrize(
    ("model", "expected_args"),
    [
        ({"id": MODEL_ID}, [f"--model-id={MODEL_ID}", "--max-concurrent-requests=64"]),
        (
            {"id": MODEL_ID, "revision": "v1.0", "quantize": "awq"},
            [f"--model-id={MODEL_ID}", "--revision=v1.0", "--quantize=awq", "--max-concurrent-requests=64"],
        ),
        (
            {"id": "meta-llama/Llama-3.1-8B-Instruct", "dtype": "bfloat16"},
            ["--model-id=meta-llama/Llama-3.1-8B-Instruct", "--dtype=bfloat16", "--max-concurrent-requests=64"],
        ),
        (
            # YAML key order does not matter: the flags always come out in one stable order
            {"maxBatchPrefillTokens": 8192, "maxTotalTokens": 8192, "maxInputTokens": 4096, "id": MODEL_ID},
            [
                f"--model-id={MODEL_ID}",
                "--max-concurrent-requests=64",
                "--max-input-tokens=4096",
                "--max-total-tokens=8192",
                "--max-batch-prefill-tokens=8192",
            ],
        ),
        (
            {"id": MODEL_ID, "maxTotalTokens": 2048},
            [f"--model-id={MODEL_ID}", "--max-concurrent-requests=64", "--max-total-tokens=2048"],
        ),
    ],
)
def test_model_settings_become_launcher_args(model: dict[str, Any], expected_args: list[str]) -> None:
    raw = spec_of(model=model)
    assert list(only_container(rendered(raw)).args) == expected_args
    assert launcher_args(parse_spec(raw)) == expected_args


def test_concurrency_is_both_cloud_run_concurrency_and_tgi_max_concurrent_requests() -> None:
    service = rendered(spec_of(scaling={"concurrency": 16, "minInstances": 1, "maxInstances": 5}))
    assert service.template.max_instance_request_concurrency == 16
    assert "--max-concurrent-requests=16" in only_container(service).args
    assert (service.template.scaling.min_instance_count, service.template.scaling.max_instance_count) == (1, 5)


def test_env_value_from_is_a_secret_manager_reference_in_place_never_a_literal() -> None:
    raw = spec_of(env=[{"name": "LOG_LEVEL", "value": "info"},
                       {"name": "API_KEY", "valueFrom": {"secret": "projects/my-project/secrets/api-key", "version": "3"}},
                       {"name": "OTHER_KEY", "valueFrom": {"secret": "other"}}])
    env = list(only_container(rendered(raw)).env)
    assert [e.name for e in env] == ["LOG_LEVEL", "API_KEY", "OTHER_KEY"]  # the spec's order
    api_key, other = env[1], env[2]
    assert api_key.value == "" and other.value == ""  # Cloud Run refuses value together with value_source
    assert (api_key.value_source.secret_key_ref.secret, api_key.value_source.secret_key_ref.version) == (
        "projects/my-project/secrets/api-key", "3")
    assert (other.value_source.secret_key_ref.secret, other.value_source.secret_key_ref.version) == ("other", "latest")
    assert "value_source" not in env[0]


def test_hf_token_secret_is_a_secret_manager_reference_never_a_literal() -> None:
    secret = {"secret": "projects/other-project/secrets/hf-token", "version": "3"}
    env = env_of(rendered(spec_of(model={"id": MODEL_ID, "hfTokenSecret": secret})))
    token = env["HF_TOKEN"]
    assert token.value == ""
    assert token.value_source.secret_key_ref.secret == "projects/other-project/secrets/hf-token"
    assert token.value_source.secret_key_ref.version == "3"


def test_hf_token_secret_version_defaults_to_latest() -> None:
    env = env_of(rendered(spec_of(model={"id": MODEL_ID, "hfTokenSecret": {"secret": "hf-token"}})))
    assert env["HF_TOKEN"].value_source.secret_key_ref.version == "latest"
    assert env["HF_TOKEN"].value_source.secret_key_ref.secret == "hf-token"


def test_extra_env_is_passed_in_order_with_the_token_reference() -> None:
    raw = spec_of(
        model={"id": MODEL_ID, "hfTokenSecret": {"secret": "hf-token"}},
        env=[{"name": "LOG_LEVEL", "value": "info"}, {"name": "CUDA_GRAPHS", "value": "0"}, {"name": "EMPTY", "value": ""}],
    )
    env = list(only_container(rendered(raw)).env)
    assert [(e.name, e.value) for e in env[:3]] == [("LOG_LEVEL", "info"), ("CUDA_GRAPHS", "0"), ("EMPTY", "")]
    assert all("value_source" not in e for e in env[:3])
    assert [e.name for e in env] == ["LOG_LEVEL", "CUDA_GRAPHS", "EMPTY", "HF_TOKEN"]


@pytest.mark.parametrize(
    ("overrides", "check"),
    [
        (
            {"serviceAccount": "runtime@my-project.iam.gserviceaccount.com"},
            lambda s: s.template.service_account == "runtime@my-project.iam.gserviceaccount.com",
        ),
        ({}, lambda s: s.template.service_account == ""),
        (
            {"resources": {"gpu": {"zonalRedundancy": True}}},
            lambda s: s.template.gpu_zonal_redundancy_disabled is False,
        ),
        (
            {"resources": {"gpu": {"zonalRedundancy": False}}},
            lambda s: s.template.gpu_zonal_redundancy_disabled is True,
        ),
        ({}, lambda s: s.template.gpu_zonal_redundancy_disabled is True),  # the API's default: best effort
        (
            {"suspend": True},
            lambda s: s.scaling.scaling_mode == run_v2.ServiceScaling.ScalingMode.MANUAL
            and "manual_instance_count" in s.scaling
            and s.scaling.manual_instance_count == 0
            and s.template.scaling.max_instance_count == 3,  # the rest of the configuration is kept
        ),
        ({"suspend": False}, lambda s: s.scaling.scaling_mode == run_v2.ServiceScaling.ScalingMode.AUTOMATIC
         and "manual_instance_count" not in s.scaling),
        ({"requestTimeout": "1h"}, lambda s: s.template.timeout.total_seconds() == 3600),
        ({"requestTimeout": "15m30s"}, lambda s: s.template.timeout.total_seconds() == 930),
        (
            {"resources": {"cpu": 20, "memory": "80Gi", "gpu": {"type": "nvidia-rtx-pro-6000"}}},
            lambda s: s.launch_stage == launch_stage_pb2.LaunchStage.BETA  # a preview GPU needs BETA
            and s.template.node_selector.accelerator == "nvidia-rtx-pro-6000",
        ),
        ({"image": "registry.example/tgi:3.0.1"}, lambda s: s.template.containers[0].image == "registry.example/tgi:3.0.1"),
        (
            {"region": "europe-west4", "resources": {"cpu": 4, "memory": "16Gi"}},
            lambda s: dict(s.template.containers[0].resources.limits)
            == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
        ),
    ],
)
def test_spec_fields_render_to_service_fields(overrides: dict[str, Any], check: Any) -> None:
    assert check(rendered(spec_of(**overrides)))


@pytest.mark.parametrize(
    ("cpu", "memory", "expected_cpu", "expected_memory"),
    [
        ("8", "32Gi", "8", "32Gi"),
        (8, "32768Mi", "8", "32Gi"),
        ("8000m", 34359738368, "8", "32Gi"),
        ("6", "25165824Ki", "6", "24Gi"),
        ("6", "20000Mi", "6", "20000Mi"),  # not a whole number of Gi: the largest exact unit
        ("6000m", "0.0234375Ti", "6", "24Gi"),
        ("4", "17179869184", "4", "16Gi"),
    ],
)
def test_cpu_and_memory_are_normalised_for_cloud_run(cpu: Any, memory: Any, expected_cpu: str, expected_memory: str) -> None:
    limits = only_container(rendered(spec_of(resources={"cpu": cpu, "memory": memory}))).resources.limits
    assert (limits["cpu"], limits["memory"]) == (expected_cpu, expected_memory)


@pytest.mark.parametrize(
    ("access", "allow_expected"),
    [
        ({}, []),
        ({"invokers": [GROUP, APP]}, sorted([GROUP, APP])),
        ({"invokers": [GROUP], "createInvokerServiceAccount": True}, sorted([GROUP, INVOKER_SA])),
        ({"public": True}, ["allUsers"]),
        (
            {"public": True, "invokers": ["user:zed@example.com", "domain:example.com"], "createInvokerServiceAccount": True},
            sorted(["allUsers", "user:zed@example.com", "domain:example.com", INVOKER_SA]),
        ),
    ],
)
def test_invoker_members_and_their_annotation(access: dict[str, Any], allow_expected: list[str]) -> None:
    raw = spec_of(access=access)
    spec = parse_spec(raw)
    members = invoker_members(NAMESPACE, NAME, spec, PROJECT)
    assert members == allow_expected
    assert members == sorted(members)
    assert rendered(raw).annotations[INVOKERS_ANNOTATION] == ",".join(allow_expected)


def test_private_services_never_get_a_public_member() -> None:
    spec = parse_spec(spec_of(access={"invokers": [GROUP], "createInvokerServiceAccount": True}))
    members = invoker_members(NAMESPACE, NAME, spec, PROJECT)
    assert not {"allUsers", "allAuthenticatedUsers"} & set(members)


def test_invoker_service_account_lives_in_the_target_project() -> None:
    spec = parse_spec(spec_of(project="other-project", access={"createInvokerServiceAccount": True}))
    where = target(NAMESPACE, NAME, spec, PROJECT)
    assert where.project == "other-project"
    members = invoker_members(NAMESPACE, NAME, spec, where.project)
    assert members == [f"serviceAccount:{invoker_account_id(NAMESPACE, NAME)}@other-project.iam.gserviceaccount.com"]


def test_owner_labels_on_service_and_revision_template() -> None:
    service = rendered(spec_of())
    assert dict(service.labels) == OWNER
    assert dict(service.template.labels) == OWNER


def test_owner_labels_are_valid_gcp_label_values() -> None:
    service = rendered(spec_of(), namespace="Team.A", name="Llama.8B")
    assert dict(service.labels) == {
        "managed-by": "tgi-operator",
        "tgi-operator-namespace": "team_a",
        "tgi-operator-name": "llama_8b",
        "tgi-operator-cluster": "default",
    }


@pytest.mark.parametrize(
    ("spec_project", "default_project", "expected_project"),
    [
        ("spec-project", "default-project", "spec-project"),  # the spec wins
        (None, "default-project", "default-project"),
        ("spec-project", None, "spec-project"),
    ],
)
def test_target_names_the_service(spec_project: str | None, default_project: str | None, expected_project: str) -> None:
    raw = spec_of(region="europe-west1") | ({"project": spec_project} if spec_project else {})
    where = target(NAMESPACE, NAME, parse_spec(raw), default_project)
    assert where == Target(expected_project, "europe-west1", service_id(NAMESPACE, NAME))
    assert where.service_id.startswith("team-a-llama-8b-")
    assert where.parent == f"projects/{expected_project}/locations/europe-west1"
    assert where.name == f"projects/{expected_project}/locations/europe-west1/services/{where.service_id}"


@pytest.mark.parametrize("default_project", [None, ""])
def test_target_without_any_project_is_refused(default_project: str | None) -> None:
    with pytest.raises(ValueError, match="spec.project"):
        target(NAMESPACE, NAME, parse_spec(spec_of()), default_project)


@pytest.mark.parametrize(
    "raw",
    [
        seed_spec(),
        spec_of(
            model={"id": MODEL_ID, "hfTokenSecret": {"secret": "hf-token"}, "maxInputTokens": 10, "maxTotalTokens": 20},
            env=[{"name": "B", "value": "2"}, {"name": "A", "value": "1"}],
            access={"public": True, "invokers": [GROUP, APP], "createInvokerServiceAccount": True},
            serviceAccount="runtime@my-project.iam.gserviceaccount.com",
            suspend=True,
        ),
    ],
)
def test_rendering_is_deterministic(raw: dict[str, Any]) -> None:
    first, second = rendered(raw), rendered(dict(raw))
    assert first == second
    assert run_v2.Service.serialize(first) == run_v2.Service.serialize(second)


@pytest.mark.parametrize("sample", sorted(SAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_sample_renders(sample: Path) -> None:
    document = yaml.safe_load(sample.read_text())
    spec = parse_spec(document["spec"])
    name = document["metadata"]["name"]
    service = render_service(NAMESPACE, name, spec, target(NAMESPACE, name, spec, PROJECT))
    container = only_container(service)
    assert container.args[0] == f"--model-id={spec.model.id}"
    assert service.template.node_selector.accelerator == spec.resources.gpu.type.value
    for env in container.env:  # a token is only ever a Secret Manager reference
        assert env.name != "HF_TOKEN" or (env.value == "" and env.value_source.secret_key_ref.secret)


def test_no_invokers_means_no_annotation() -> None:
    assert INVOKERS_ANNOTATION not in rendered(spec_of()).annotations


@pytest.mark.parametrize(("memory", "expected"), [("20G", "20G"), ("18500M", "18500M"), ("20000M", "20G"), ("16Gi", "16Gi")])
def test_decimal_memory_keeps_a_unit(memory: str, expected: str) -> None:
    service = rendered(spec_of(resources={"cpu": 8, "memory": memory}))
    assert only_container(service).resources.limits["memory"] == expected


# ------------------------------------------------------------------------------------------- the recorded target


def test_a_service_recorded_under_the_first_versions_id_keeps_it_and_nothing_else_is_followed() -> None:
    """An upgrade must not rename (and so orphan) a serving service; a tampered record must not redirect the object."""
    from tgi_operator.naming import legacy_service_id
    from tgi_operator.render import recorded_target

    spec = parse_spec(seed_spec())
    legacy = f"projects/{PROJECT}/locations/us-central1/services/{legacy_service_id(NAMESPACE, NAME)}"
    assert target(NAMESPACE, NAME, spec, PROJECT, recorded=legacy).name == legacy
    fresh = target(NAMESPACE, NAME, spec, PROJECT)
    assert fresh.service_id == service_id(NAMESPACE, NAME) != legacy_service_id(NAMESPACE, NAME)
    for tampered in (
        f"projects/{PROJECT}/locations/us-central1/services/other-team-service",  # someone else's service
        f"projects/{PROJECT}/locations/europe-west4/services/{legacy_service_id(NAMESPACE, NAME)}",  # another region
        "projects/x/locations/y",  # broken
        42,
        None,
    ):
        assert target(NAMESPACE, NAME, spec, PROJECT, recorded=tampered) == fresh
    assert recorded_target(NAMESPACE, NAME, "projects/p/services/../../x") is None
    assert recorded_target("team-b", NAME, legacy) is None  # another object's id
