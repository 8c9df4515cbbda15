"""Cloud Run's request rules as the real client sees them: INVALID_ARGUMENT with a BadRequest naming the field."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from emulator_fixtures import *  # noqa: F403
from emulator_fixtures import PARENT, PROJECT, seed_service
from google.api_core import exceptions as gexc
from google.cloud import run_v2
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

pytestmark = pytest.mark.timeout(60)


def _gpu_container(s: run_v2.Service) -> run_v2.Container:
    return s.template.containers[0]


def _set(path: str, value: str) -> Callable[[run_v2.Service], None]:
    def change(s: run_v2.Service) -> None:
        _gpu_container(s).resources.limits[path] = value

    return change


def _sidecar_with_gpu(s: run_v2.Service) -> None:
    s.template.containers.append(
        run_v2.Container(name="sidecar", image="busybox", resources=run_v2.ResourceRequirements(limits={"nvidia.com/gpu": "1"}))
    )


def _env(name: str) -> Callable[[run_v2.Service], None]:
    def change(s: run_v2.Service) -> None:
        _gpu_container(s).env.append(run_v2.EnvVar(name=name, value="8080"))

    return change


def _accelerator(value: str) -> Callable[[run_v2.Service], None]:
    def change(s: run_v2.Service) -> None:
        s.template.node_selector.accelerator = value

    return change


CASES: list[tuple[str, Callable[[run_v2.Service], None], str, str]] = [
    # (case, change to the seed service, field named in the violation, words in the message)
    ("unknown accelerator", _accelerator("nvidia-h100"), "service.template.node_selector.accelerator", "not supported"),
    ("two gpus", _set("nvidia.com/gpu", "2"), "service.template.containers[0].resources.limits.nvidia.com/gpu", "Exactly 1 GPU"),
    ("l4 cpu below 4", _set("cpu", "2"), "service.template.containers[0].resources.limits.cpu", "one of 4, 6, 8"),
    ("l4 cpu above max", _set("cpu", "16"), "service.template.containers[0].resources.limits.cpu", "one of 4, 6, 8"),
    ("l4 cpu 5 is not offered", _set("cpu", "5"), "service.template.containers[0].resources.limits.cpu", "one of 4, 6, 8"),
    ("l4 memory above 4 GiB per vCPU", lambda s: _gpu_container(s).resources.limits.update({"cpu": "4", "memory": "24Gi"}),
     "service.template.containers[0].resources.limits.memory", "16Gi with 4 vCPU"),
    ("l4 memory below 16Gi", _set("memory", "8Gi"), "service.template.containers[0].resources.limits.memory", "16Gi"),
    ("l4 memory above max", _set("memory", "64Gi"), "service.template.containers[0].resources.limits.memory", "32Gi"),
    ("cpu idle with gpu", lambda s: setattr(_gpu_container(s).resources, "cpu_idle", True),
     "service.template.containers[0].resources.cpu_idle", "always allocated"),
    ("concurrency above 1000", lambda s: setattr(s.template, "max_instance_request_concurrency", 1001),
     "service.template.max_instance_request_concurrency", "between 1 and 1000"),
    ("reserved PORT env", _env("PORT"), "service.template.containers[0].env[1].name", "reserved env names"),
    ("timeout above an hour", lambda s: setattr(s.template, "timeout", duration_pb2.Duration(seconds=3601)),
     "service.template.timeout", "3600"),
    ("startup probe period above 240", lambda s: setattr(_gpu_container(s).startup_probe, "period_seconds", 241),
     "service.template.containers[0].startup_probe.period_seconds", "between 1 and 240"),
    ("startup window above 1800 s with a GPU", lambda s: setattr(_gpu_container(s).startup_probe, "failure_threshold", 181),
     "service.template.containers[0].startup_probe.failure_threshold", "must not exceed 1800 seconds"),
    ("startup probe timeout above period", lambda s: setattr(_gpu_container(s).startup_probe, "timeout_seconds", 20),
     "service.template.containers[0].startup_probe.timeout_seconds", "greater than period_seconds"),
    ("second gpu container", _sidecar_with_gpu, "service.template.containers[1].resources.limits", "one container"),
    ("gpu without accelerator", lambda s: s.template.__delattr__("node_selector"),
     "service.template.node_selector.accelerator", "requires node_selector.accelerator"),
    ("reserved label prefix", lambda s: s.labels.__setitem__("run.googleapis.com/x", "y"), "service.labels", "run.googleapis.com"),
    ("reserved annotation prefix", lambda s: s.template.annotations.__setitem__("autoscaling.knative.dev/maxScale", "3"),
     "service.template.annotations", "autoscaling.knative.dev"),
]  # fmt: skip


def _violations(error: gexc.GoogleAPICallError) -> list[error_details_pb2.BadRequest.FieldViolation]:
    bad_requests = [d for d in error.details if isinstance(d, error_details_pb2.BadRequest)]
    assert bad_requests, f"no BadRequest in {error.details!r}"
    return list(bad_requests[0].field_violations)


@pytest.mark.parametrize(("case", "change", "field", "words"), CASES, ids=[c[0] for c in CASES])
def test_rule_is_invalid_argument_naming_the_field(
    run_client: run_v2.ServicesClient, case: str, change: Callable[[run_v2.Service], None], field: str, words: str
) -> None:
    service = seed_service()
    change(service)
    with pytest.raises(gexc.InvalidArgument) as caught:
        run_client.create_service(parent=PARENT, service=service, service_id="rule")
    violations = _violations(caught.value)
    assert field in [v.field for v in violations]
    assert words in caught.value.message
    assert f"Violation in CreateServiceRequest.{field}" in caught.value.message


def test_accelerator_not_offered_in_region(run_client: run_v2.ServicesClient) -> None:
    with pytest.raises(gexc.InvalidArgument) as caught:
        run_client.create_service(parent=f"projects/{PROJECT}/locations/us-west1", service=seed_service(), service_id="west")
    assert [v.field for v in _violations(caught.value)] == ["service.template.node_selector.accelerator"]
    assert "us-west1" in caught.value.message


def test_rtx_pro_6000_bounds(run_client: run_v2.ServicesClient) -> None:
    service = seed_service()
    service.template.node_selector.accelerator = "nvidia-rtx-pro-6000"
    service.launch_stage = "BETA"  # a preview GPU (gpus.py); test_emulator_realism covers GA being refused
    with pytest.raises(gexc.InvalidArgument) as caught:
        run_client.create_service(parent=PARENT, service=service, service_id="blackwell")
    fields = {v.field for v in _violations(caught.value)}
    assert fields == {"service.template.containers[0].resources.limits.cpu"}  # 8 vCPU: the shape is wrong first
    _gpu_container(service).resources.limits.update({"cpu": "20", "memory": "80Gi"})
    created = run_client.create_service(parent=PARENT, service=service, service_id="blackwell").result(timeout=30)
    assert created.terminal_condition.state == run_v2.Condition.State.CONDITION_SUCCEEDED


@pytest.mark.parametrize("service_id", ["1starts-with-digit", "Upper", "trailing-", "has_underscore", "x" * 50])
def test_service_id_rules(run_client: run_v2.ServicesClient, service_id: str) -> None:
    with pytest.raises(gexc.InvalidArgument) as caught:
        run_client.create_service(parent=PARENT, service=seed_service(), service_id=service_id)
    assert [v.field for v in _violations(caught.value)] == ["service_id"]
    assert "must be less than 50 characters" in caught.value.message


def test_service_id_of_49_characters_is_accepted(run_client: run_v2.ServicesClient) -> None:
    created = run_client.create_service(parent=PARENT, service=seed_service(), service_id="a" * 49).result(timeout=30)
    assert created.name.endswith("/" + "a" * 49)


def test_update_is_checked_too(run_client: run_v2.ServicesClient) -> None:
    created = run_client.create_service(parent=PARENT, service=seed_service(), service_id="later").result(timeout=30)
    created.template.containers[0].resources.limits["memory"] = "4Gi"
    with pytest.raises(gexc.InvalidArgument) as caught:
        run_client.update_service(service=created)
    assert "Violation in UpdateServiceRequest.service.template.containers[0].resources.limits.memory" in caught.value.message
