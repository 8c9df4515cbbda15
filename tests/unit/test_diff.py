"""diff.py: owned fields only; what Cloud Run fills in never counts as a difference."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from google.api import launch_stage_pb2
from google.cloud import run_v2
from google.protobuf import duration_pb2, timestamp_pb2

from tgi_operator.diff import copy, diff, merge_for_update, with_annotation, without_owner
from tgi_operator.models import parse_spec
from tgi_operator.naming import is_owned_by
from tgi_operator.render import INVOKERS_ANNOTATION, render_service, target

NAMESPACE, NAME, PROJECT = "team-a", "llama-8b", "my-project"
SERVICE_NAME = f"projects/{PROJECT}/locations/us-central1/services/team-a-llama-8b"
RUNTIME_SA = "runtime@my-project.iam.gserviceaccount.com"
DEFAULT_SA = "123456789012-compute@developer.gserviceaccount.com"
State = run_v2.Condition.State


def desired_service(**overrides: Any) -> run_v2.Service:
    raw: dict[str, Any] = {
        "region": "us-central1",
        "model": {"id": "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4", "quantize": "awq"},
        "env": [{"name": "LOG_LEVEL", "value": "info"}],
        "access": {"invokers": ["group:ml@example.com"], "createInvokerServiceAccount": True},
    }
    raw.update(overrides)
    spec = parse_spec(raw)
    return render_service(NAMESPACE, NAME, spec, target(NAMESPACE, NAME, spec, PROJECT))


def as_read_back(desired: run_v2.Service) -> run_v2.Service:
    """The service as GetService returns it after Cloud Run deployed `desired`: the same user fields, plus
    everything the server fills in or defaults."""
    observed = copy(desired)
    observed.name = SERVICE_NAME
    observed.uid = "6f1f3a52-4b8e-4b1a-9a43-0d8a2b7f2c11"
    observed.etag = "BwYk9c2xQeA="
    observed.generation = 4
    observed.observed_generation = 4
    observed.create_time = timestamp_pb2.Timestamp(seconds=1_700_000_000)
    observed.update_time = timestamp_pb2.Timestamp(seconds=1_700_000_600)
    observed.creator = "operator@my-project.iam.gserviceaccount.com"
    observed.last_modifier = "operator@my-project.iam.gserviceaccount.com"
    observed.uri = "https://team-a-llama-8b-abcdefghij-uc.a.run.app"
    observed.urls = [observed.uri, "https://team-a-llama-8b-123456789012.us-central1.run.app"]
    observed.launch_stage = "GA"
    observed.reconciling = False
    observed.terminal_condition = run_v2.Condition(type_="Ready", state=State.CONDITION_SUCCEEDED)
    observed.conditions = [
        run_v2.Condition(type_="RoutesReady", state=State.CONDITION_SUCCEEDED),
        run_v2.Condition(type_="ConfigurationsReady", state=State.CONDITION_SUCCEEDED),
    ]
    observed.latest_ready_revision = f"{SERVICE_NAME}/revisions/team-a-llama-8b-00004-xyz"
    observed.latest_created_revision = observed.latest_ready_revision
    observed.traffic = [
        run_v2.TrafficTarget(type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST, percent=100)
    ]
    observed.traffic_statuses = [
        run_v2.TrafficTargetStatus(
            type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST, percent=100
        )
    ]
    observed.client = "cloud-console"
    observed.client_version = "1.2.3"
    observed.labels["cloud.googleapis.com/location"] = "us-central1"
    observed.labels["cost-center"] = "ml-research"  # somebody else's label
    observed.annotations["run.googleapis.com/operation-id"] = "9c1f0e1a"
    observed.annotations["team.example.com/owner"] = "alice"
    observed.template.timeout = duration_pb2.Duration(seconds=300)
    if not observed.template.service_account:
        observed.template.service_account = DEFAULT_SA
    observed.template.execution_environment = run_v2.ExecutionEnvironment.EXECUTION_ENVIRONMENT_GEN2
    observed.template.labels["run.googleapis.com/startupProbeType"] = "Custom"
    observed.template.annotations["team.example.com/note"] = "x"
    observed.template.containers[0].ports[0].name = "http1"
    return observed


# ----------------------------------------------------------------------------------------- no difference


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"serviceAccount": RUNTIME_SA},
        {"suspend": True},
        {"model": {"id": "meta-llama/Llama-3.1-8B-Instruct", "hfTokenSecret": {"secret": "hf-token"}}},
        {"access": {}},  # no invokers at all: an empty annotation value
        {"resources": {"gpu": {"zonalRedundancy": True}}},
        {"env": [{"name": "API_KEY", "valueFrom": {"secret": "api-key", "version": "3"}}]},
    ],
)
def test_a_service_as_cloud_run_returns_it_has_no_difference(overrides: dict[str, Any]) -> None:
    desired = desired_service(**overrides)
    assert diff(desired, copy(desired)) == []
    assert diff(desired, as_read_back(desired)) == []


def test_an_unset_runtime_identity_accepts_the_default_the_server_fills_in() -> None:
    desired = desired_service()
    assert desired.template.service_account == ""
    observed = as_read_back(desired)
    assert observed.template.service_account == DEFAULT_SA
    assert diff(desired, observed) == []


def test_a_reconciling_or_failed_service_with_the_same_settings_has_no_difference() -> None:
    """Conditions are Cloud Run's state, not settings: conditions.py reads them, diff does not."""
    desired = desired_service()
    observed = as_read_back(desired)
    observed.reconciling = True
    observed.generation = 5
    observed.terminal_condition = run_v2.Condition(type_="Ready", state=State.CONDITION_FAILED, message="quota")
    observed.uri = ""
    observed.urls = []
    assert diff(desired, observed) == []


# ----------------------------------------------------------------------------------------- each owned field


def _container(s: run_v2.Service) -> run_v2.Container:
    return s.template.containers[0]


def _set(obj_of: Callable[[run_v2.Service], Any], field: str, value: Any) -> Callable[[run_v2.Service], None]:
    def change(service: run_v2.Service) -> None:
        setattr(obj_of(service), field, value)

    return change


def _drop_label(key: str, *, on_template: bool = False) -> Callable[[run_v2.Service], None]:
    def change(service: run_v2.Service) -> None:
        (service.template.labels if on_template else service.labels).pop(key)

    return change


def _limit(key: str, value: str) -> Callable[[run_v2.Service], None]:
    def change(service: run_v2.Service) -> None:
        _container(service).resources.limits[key] = value

    return change


def _env(env: list[run_v2.EnvVar]) -> Callable[[run_v2.Service], None]:
    def change(service: run_v2.Service) -> None:
        _container(service).env = env

    return change


def _suspend(service: run_v2.Service) -> None:
    service.scaling = run_v2.ServiceScaling(scaling_mode=run_v2.ServiceScaling.ScalingMode.MANUAL, manual_instance_count=0)


def _extra_container(service: run_v2.Service) -> None:
    service.template.containers.append(run_v2.Container(name="sidecar", image="registry.example/proxy:1"))


def _tcp_probe(service: run_v2.Service) -> None:
    _container(service).startup_probe = run_v2.Probe(
        timeout_seconds=240, period_seconds=240, failure_threshold=1, tcp_socket=run_v2.TCPSocketAction(port=8080)
    )


def _no_node_selector(service: run_v2.Service) -> None:
    del service.template.node_selector


def _invokers_annotation(value: str | None) -> Callable[[run_v2.Service], None]:
    def change(service: run_v2.Service) -> None:
        if value is None:
            service.annotations.pop(INVOKERS_ANNOTATION)
        else:
            service.annotations[INVOKERS_ANNOTATION] = value

    return change


CHANGES: list[tuple[str, Callable[[run_v2.Service], None], str]] = [
    ("image", _set(_container, "image", "registry.example/tgi:3.0.1"), "template.containers[0].image"),
    ("args", _set(_container, "args", ["--model-id=other/model", "--max-concurrent-requests=64"]), "template.containers[0].args"),
    ("args reordered", lambda s: _container(s).args.reverse(), "template.containers[0].args"),
    ("env value", _env([run_v2.EnvVar(name="LOG_LEVEL", value="debug")]), "template.containers[0].env"),
    ("env removed", _env([]), "template.containers[0].env"),
    (
        "env added by someone",
        _env([run_v2.EnvVar(name="LOG_LEVEL", value="info"), run_v2.EnvVar(name="X", value="1")]),
        "template.containers[0].env",
    ),
    ("port", lambda s: setattr(_container(s).ports[0], "container_port", 8000), "template.containers[0].ports"),
    ("owner label removed", _drop_label("tgi-operator-name"), "labels"),
    ("managed-by label removed", _drop_label("managed-by"), "labels"),
    ("template owner label removed", _drop_label("tgi-operator-namespace", on_template=True), "template.labels"),
    ("concurrency", _set(lambda s: s.template, "max_instance_request_concurrency", 80), "template.maxInstanceRequestConcurrency"),
    ("min instances", _set(lambda s: s.template.scaling, "min_instance_count", 1), "template.scaling.minInstanceCount"),
    ("max instances", _set(lambda s: s.template.scaling, "max_instance_count", 10), "template.scaling.maxInstanceCount"),
    ("cpu", _limit("cpu", "4"), "template.containers[0].resources.limits"),
    ("memory", _limit("memory", "16Gi"), "template.containers[0].resources.limits"),
    ("gpu count", _limit("nvidia.com/gpu", "0"), "template.containers[0].resources.limits"),
    ("cpu throttled", _set(lambda s: _container(s).resources, "cpu_idle", True), "template.containers[0].resources.cpuIdle"),
    (
        "no startup boost",
        _set(lambda s: _container(s).resources, "startup_cpu_boost", False),
        "template.containers[0].resources.startupCpuBoost",
    ),
    ("accelerator", _set(lambda s: s.template.node_selector, "accelerator", "nvidia-rtx-pro-6000"), "template.nodeSelector.accelerator"),
    ("accelerator gone", _no_node_selector, "template.nodeSelector.accelerator"),
    (
        "zonal redundancy",
        _set(lambda s: s.template, "gpu_zonal_redundancy_disabled", False),
        "template.gpuZonalRedundancyDisabled",
    ),
    ("startup probe", _tcp_probe, "template.containers[0].startupProbe"),
    (
        "startup probe threshold",
        _set(lambda s: _container(s).startup_probe, "failure_threshold", 3),
        "template.containers[0].startupProbe",
    ),
    ("suspended by someone", _suspend, "scaling"),
    ("manual scaling with instances", lambda s: setattr(s, "scaling", run_v2.ServiceScaling(
        scaling_mode=run_v2.ServiceScaling.ScalingMode.MANUAL, manual_instance_count=2)), "scaling"),
    ("request timeout", lambda s: setattr(s.template, "timeout", duration_pb2.Duration(seconds=60)), "template.timeout"),
    ("request timeout unset", lambda s: s.template._pb.ClearField("timeout"), "template.timeout"),
    ("invokers annotation changed", _invokers_annotation("group:ml@example.com"), "annotations"),
    ("invokers annotation removed", _invokers_annotation(None), "annotations"),
    ("extra container", _extra_container, "template.containers"),
    ("ingress", _set(lambda s: s, "ingress", run_v2.IngressTraffic.INGRESS_TRAFFIC_INTERNAL_ONLY), "ingress"),
    ("invoker IAM disabled", _set(lambda s: s, "invoker_iam_disabled", True), "invokerIamDisabled"),
    ("description", _set(lambda s: s, "description", "edited in the console"), "description"),
]


@pytest.mark.parametrize(("change", "field"), [(c, f) for _, c, f in CHANGES], ids=[i for i, _, _ in CHANGES])
def test_each_owned_field_that_changed_is_named(change: Callable[[run_v2.Service], None], field: str) -> None:
    desired = desired_service()
    observed = as_read_back(desired)
    change(observed)
    assert diff(desired, observed) == [field]


def test_an_unspecified_scaling_mode_or_another_launch_stage_is_not_a_difference() -> None:
    """Reads may leave the mode unset, and report the launch stage the features need (not what was sent): comparing
    them literally would update the service at every pass."""
    desired = desired_service()
    observed = as_read_back(desired)
    observed.scaling = run_v2.ServiceScaling()
    observed.launch_stage = launch_stage_pb2.LaunchStage.LAUNCH_STAGE_UNSPECIFIED
    assert diff(desired, observed) == []
    observed.launch_stage = launch_stage_pb2.LaunchStage.BETA
    assert diff(desired, observed) == []
    assert merge_for_update(desired, observed).launch_stage == desired.launch_stage  # sent with any update


def test_metadata_only_updates_never_resend_a_revision_name() -> None:
    """Cloud Run refuses a revision name it has with another configuration (409); an unset name keeps the template."""
    observed = as_read_back(desired_service())
    observed.template.revision = "team-a-llama-8b-custom"
    assert with_annotation(observed, INVOKERS_ANNOTATION, "user:a@example.com").template.revision == ""
    assert without_owner(observed).template.revision == ""
    assert merge_for_update(desired_service(), observed).template.revision == ""
    assert observed.template.revision == "team-a-llama-8b-custom"  # input untouched


def test_unsuspending_is_a_difference() -> None:
    desired = desired_service(suspend=False)
    observed = as_read_back(desired_service(suspend=True))
    assert diff(desired, observed) == ["scaling"]


def test_suspending_is_a_difference() -> None:
    desired = desired_service(suspend=True)
    observed = as_read_back(desired_service(suspend=False))
    assert diff(desired, observed) == ["scaling"]


def test_automatic_scaling_filled_in_by_the_server_is_not_suspended() -> None:
    desired = desired_service()
    observed = as_read_back(desired)
    observed.scaling = run_v2.ServiceScaling(scaling_mode=run_v2.ServiceScaling.ScalingMode.AUTOMATIC)
    assert diff(desired, observed) == []


def test_a_changed_runtime_identity_is_a_difference_when_the_spec_names_one() -> None:
    desired = desired_service(serviceAccount=RUNTIME_SA)
    observed = as_read_back(desired)
    observed.template.service_account = DEFAULT_SA
    assert diff(desired, observed) == ["template.serviceAccount"]


def test_a_literal_token_instead_of_the_secret_reference_is_a_difference() -> None:
    desired = desired_service(model={"id": "meta-llama/Llama-3.1-8B-Instruct", "hfTokenSecret": {"secret": "hf-token"}})
    observed = as_read_back(desired)
    observed.template.containers[0].env = [
        run_v2.EnvVar(name="LOG_LEVEL", value="info"),
        run_v2.EnvVar(name="HF_TOKEN", value="hf_literal"),
    ]
    assert diff(desired, observed) == ["template.containers[0].env"]


@pytest.mark.parametrize(
    "observed_env",
    [
        run_v2.EnvVar(name="API_KEY", value="the-key-itself"),  # someone pasted the literal in the console
        run_v2.EnvVar(name="API_KEY", value_source=run_v2.EnvVarSource(
            secret_key_ref=run_v2.SecretKeySelector(secret="api-key", version="latest"))),  # another version
        run_v2.EnvVar(name="API_KEY", value_source=run_v2.EnvVarSource(
            secret_key_ref=run_v2.SecretKeySelector(secret="other-key", version="3"))),  # another secret
    ],
)
def test_an_env_secret_reference_that_drifted_is_a_difference(observed_env: run_v2.EnvVar) -> None:
    desired = desired_service(env=[{"name": "API_KEY", "valueFrom": {"secret": "api-key", "version": "3"}}])
    observed = as_read_back(desired)
    observed.template.containers[0].env = [observed_env]
    assert diff(desired, observed) == ["template.containers[0].env"]


def test_a_newer_spec_names_every_field_it_changes() -> None:
    desired = desired_service(scaling={"maxInstances": 5, "concurrency": 32})
    observed = as_read_back(desired_service())
    assert sorted(diff(desired, observed)) == [
        "template.containers[0].args",
        "template.maxInstanceRequestConcurrency",
        "template.scaling.maxInstanceCount",
    ]


# ----------------------------------------------------------------------------------------- merge_for_update


def test_merge_for_update_sends_the_desired_settings_and_keeps_what_others_own() -> None:
    desired = desired_service(scaling={"maxInstances": 5})
    observed = as_read_back(desired_service())
    observed.annotations[INVOKERS_ANNOTATION] = "group:old@example.com"
    observed.labels["run.googleapis.com/satisfiesPzs"] = "true"
    desired_bytes, observed_bytes = run_v2.Service.serialize(desired), run_v2.Service.serialize(observed)

    update = merge_for_update(desired, observed)

    assert update.name == SERVICE_NAME
    assert update.etag == observed.etag  # a concurrent change is refused, not overwritten
    assert update.template == desired.template
    assert update.template.scaling.max_instance_count == 5
    assert dict(update.labels) == {**dict(desired.labels), "cost-center": "ml-research"}
    assert dict(update.annotations) == {
        INVOKERS_ANNOTATION: desired.annotations[INVOKERS_ANNOTATION],  # ours: the desired value wins
        "tgi-operator.dev/runtime-identity": "default",
        "team.example.com/owner": "alice",
    }
    assert not [k for k in [*update.labels, *update.annotations] if k.startswith(("run.googleapis.com/", "cloud.googleapis.com/"))]
    assert diff(desired, update) == []
    # inputs untouched
    assert run_v2.Service.serialize(desired) == desired_bytes
    assert run_v2.Service.serialize(observed) == observed_bytes
    assert "cost-center" not in desired.labels


# ----------------------------------------------------------------------------------------- without_owner


def test_without_owner_releases_the_service_and_keeps_everything_else() -> None:
    observed = as_read_back(desired_service())
    observed.annotations["tgi-operator.dev/something-else"] = "x"
    before = run_v2.Service.serialize(observed)

    released = without_owner(observed)

    assert not is_owned_by(dict(released.labels), NAMESPACE, NAME)
    assert dict(released.labels) == {"cost-center": "ml-research"}  # reserved keys dropped: v2 refuses them
    assert dict(released.annotations) == {"team.example.com/owner": "alice"}
    # the rest of the service is what it was: it keeps running and serving as before
    assert released.template.containers == observed.template.containers
    assert released.template.scaling == observed.template.scaling
    assert released.template.node_selector == observed.template.node_selector
    assert released.template.annotations == observed.template.annotations
    assert released.name == observed.name and released.etag == observed.etag
    assert (released.ingress, released.invoker_iam_disabled) == (observed.ingress, observed.invoker_iam_disabled)
    assert run_v2.Service.serialize(observed) == before  # input untouched
    assert is_owned_by(dict(observed.labels), NAMESPACE, NAME)


def test_copy_is_deep() -> None:
    original = desired_service()
    duplicate = copy(original)
    assert duplicate == original
    duplicate.template.containers[0].args.append("--x")
    duplicate.labels["new"] = "1"
    assert "--x" not in original.template.containers[0].args
    assert "new" not in original.labels


def test_a_stale_invokers_annotation_is_a_difference_and_the_update_drops_it() -> None:
    desired = desired_service(access={})  # no invokers at all: no annotation rendered
    assert INVOKERS_ANNOTATION not in desired.annotations
    observed = as_read_back(desired)
    observed.annotations[INVOKERS_ANNOTATION] = "user:gone@example.com"
    assert diff(desired, observed) == ["annotations"]
    assert INVOKERS_ANNOTATION not in merge_for_update(desired, observed).annotations


def test_retain_leaves_the_revision_template_alone() -> None:
    """A changed template would roll out a new revision: Retain must not cause a GPU cold start."""
    observed = as_read_back(desired_service())
    observed.template.annotations["tgi-operator.dev/retry"] = "2"
    released = without_owner(observed)
    assert released.template == observed.template
    assert not any(k.startswith("tgi-operator") for k in released.labels)
@pytest.mark.parametrize(("cpu", "memory"), [("8000m", "32768Mi"), ("8", "34359738368"), ("8.0", "32Gi")])
def test_limits_compare_by_value_not_spelling(cpu: str, memory: str) -> None:
    desired = desired_service()
    observed = as_read_back(desired)
    observed.template.containers[0].resources.limits["cpu"] = cpu
    observed.template.containers[0].resources.limits["memory"] = memory
    assert diff(desired, observed) == []
    observed.template.containers[0].resources.limits["cpu"] = "4000m"
    assert diff(desired, observed) == ["template.containers[0].resources.limits"]


def test_removing_the_runtime_identity_is_a_difference() -> None:
    """Cloud Run fills in the default identity, so without the annotation an unset spec field could not be told
    from a deliberate one, and dropping spec.serviceAccount would keep the old identity."""
    named = as_read_back(desired_service(serviceAccount="tgi-runtime@my-project.iam.gserviceaccount.com"))
    assert diff(desired_service(), named) == ["annotations"]
