"""Cloud Run's instance shapes without a GPU, launch stages, service-level scaling, and the defaults it fills in."""

from __future__ import annotations

import pytest
from google.cloud import run_v2

from tgi_operator.emulator import rules
from tgi_operator.emulator.service_spec import apply_defaults, keep_scaling

ScalingMode = run_v2.ServiceScaling.ScalingMode
GEN2 = run_v2.ExecutionEnvironment.EXECUTION_ENVIRONMENT_GEN2


def _shape(limits: dict[str, str] | None, concurrency: int = 80, cpu_idle: bool = False, gen2: bool = False) -> list[str]:
    resources = run_v2.ResourceRequirements(limits=limits, cpu_idle=cpu_idle) if limits is not None else None
    c = run_v2.Container(image="x", resources=resources)
    t = run_v2.RevisionTemplate(containers=[c], max_instance_request_concurrency=concurrency,
                                execution_environment=GEN2 if gen2 else None)  # fmt: skip
    return [v.field for v in rules.check_shape(c, t, "c", "t")]


@pytest.mark.parametrize(
    ("limits", "concurrency", "cpu_idle", "gen2", "fields"),
    [
        (None, 80, False, False, []),  # Cloud Run's default 1 vCPU, 512Mi
        ({"cpu": "1", "memory": "4Gi"}, 80, False, False, []),
        ({"cpu": "1", "memory": "5Gi"}, 80, False, False, ["c.resources.limits.memory"]),  # 4 GiB per vCPU
        ({"cpu": "2", "memory": "8Gi"}, 80, False, False, []),
        ({"cpu": "4", "memory": "1Gi"}, 80, False, False, ["c.resources.limits.memory"]),  # 4 vCPU need 2 GiB
        ({"cpu": "8", "memory": "32Gi"}, 80, False, False, []),
        ({"cpu": "8", "memory": "33Gi"}, 80, False, False, ["c.resources.limits.memory"]),
        ({"cpu": "1", "memory": "64Mi"}, 80, False, False, ["c.resources.limits.memory"]),  # at least 128Mi
        ({"cpu": "1", "memory": "256Mi"}, 80, False, True, ["c.resources.limits.memory"]),  # gen2: at least 512Mi
        ({"cpu": "3", "memory": "4Gi"}, 80, False, False, ["c.resources.limits.cpu"]),  # not offered
        ({"cpu": "16", "memory": "32Gi"}, 80, False, False, ["c.resources.limits.cpu"]),  # 8 at most without a GPU
        ({"cpu": "1.5", "memory": "1Gi"}, 80, False, False, ["c.resources.limits.cpu"]),  # above 1: whole vCPU only
        ({"cpu": "0.05", "memory": "256Mi"}, 1, True, False, ["c.resources.limits.cpu"]),  # below 0.08
        ({"cpu": "0.0805", "memory": "256Mi"}, 1, True, False, ["c.resources.limits.cpu"]),  # steps of 0.001
        ({"cpu": "500m", "memory": "1Gi"}, 1, True, False, []),
        ({"cpu": "0.08", "memory": "512Mi"}, 1, True, False, []),
        ({"cpu": "0.25", "memory": "1Gi"}, 1, True, False, ["c.resources.limits.memory"]),  # > 512Mi needs 0.5 vCPU
        ({"cpu": "0.5", "memory": "2Gi"}, 1, True, False, ["c.resources.limits.memory"]),  # > 1Gi needs 1 vCPU
        ({"cpu": "0.5", "memory": "512Mi"}, 80, True, False, ["t.max_instance_request_concurrency"]),
        ({"cpu": "0.5", "memory": "512Mi"}, 1, False, False, ["c.resources.cpu_idle"]),  # request-based billing
        ({"cpu": "0.5", "memory": "512Mi"}, 1, True, True, ["t.execution_environment"]),  # first generation only
    ],
)  # fmt: skip
def test_shape_without_gpu(limits: dict[str, str] | None, concurrency: int, cpu_idle: bool, gen2: bool, fields: list[str]) -> None:
    assert _shape(limits, concurrency, cpu_idle, gen2) == fields


def test_memory_message_has_cloud_runs_wording() -> None:
    c = run_v2.Container(image="x", resources=run_v2.ResourceRequirements(limits={"cpu": "1", "memory": "8Gi"}))
    [violation] = rules.check_shape(c, run_v2.RevisionTemplate(containers=[c]), "c", "t")
    assert violation.description == (
        "Invalid value specified for container memory. For 1.0 CPU, memory must be between 128Mi and 4Gi inclusive."
    )


def _rtx(launch_stage: str | None) -> run_v2.Service:
    return run_v2.Service(
        launch_stage=launch_stage,
        template=run_v2.RevisionTemplate(node_selector=run_v2.NodeSelector(accelerator="nvidia-rtx-pro-6000")),
    )


@pytest.mark.parametrize(
    ("service", "fields"),
    [
        (_rtx(None), ["s.launch_stage"]),  # unset means GA
        (_rtx("GA"), ["s.launch_stage"]),
        (_rtx("BETA"), []),
        (_rtx("ALPHA"), []),
        (_rtx("DEPRECATED"), ["s.launch_stage"]),  # Cloud Run supports ALPHA, BETA and GA
        (run_v2.Service(launch_stage="GA", template=run_v2.RevisionTemplate(
            node_selector=run_v2.NodeSelector(accelerator="nvidia-l4"))), []),
        (run_v2.Service(), []),
    ],
)  # fmt: skip
def test_launch_stage(service: run_v2.Service, fields: list[str]) -> None:
    found = rules.check_launch_stage(service, "s")
    assert [v.field for v in found] == fields
    if fields and service.launch_stage in (0, 4):
        assert found[0].description == (
            "The nvidia-rtx-pro-6000 GPU is in BETA: set launch_stage to BETA (gcloud beta run deploy) to use it."
        )


def _scaling(mode: ScalingMode, manual: int | None) -> run_v2.Service:
    scaling = run_v2.ServiceScaling(scaling_mode=mode)
    if manual is not None:
        scaling.manual_instance_count = manual
    return run_v2.Service(scaling=scaling)


@pytest.mark.parametrize(
    ("service", "fields"),
    [
        (_scaling(ScalingMode.MANUAL, 0), []),
        (_scaling(ScalingMode.MANUAL, 2), []),
        (_scaling(ScalingMode.MANUAL, None), ["service.scaling.manual_instance_count"]),
        (_scaling(ScalingMode.MANUAL, -1), ["service.scaling.manual_instance_count"]),
        (_scaling(ScalingMode.AUTOMATIC, None), []),
        (_scaling(ScalingMode.AUTOMATIC, 1), ["service.scaling.manual_instance_count"]),
        (_scaling(ScalingMode.SCALING_MODE_UNSPECIFIED, 0), ["service.scaling.manual_instance_count"]),
    ],
)
def test_service_scaling(service: run_v2.Service, fields: list[str]) -> None:
    service.template.containers = [run_v2.Container(image="x")]
    assert [v.field for v in rules.check_service(service, "us-central1")] == fields


@pytest.mark.parametrize(
    ("stored", "sent", "mode", "manual"),
    [
        (_scaling(ScalingMode.MANUAL, 0), _scaling(ScalingMode.SCALING_MODE_UNSPECIFIED, None), ScalingMode.MANUAL, 0),
        (_scaling(ScalingMode.MANUAL, 0), _scaling(ScalingMode.AUTOMATIC, None), ScalingMode.AUTOMATIC, None),
        (_scaling(ScalingMode.AUTOMATIC, None), _scaling(ScalingMode.MANUAL, 0), ScalingMode.MANUAL, 0),
        (_scaling(ScalingMode.AUTOMATIC, None), _scaling(ScalingMode.SCALING_MODE_UNSPECIFIED, None), ScalingMode.AUTOMATIC, None),
    ],
)  # fmt: skip
def test_unspecified_scaling_mode_keeps_the_stored_one(
    stored: run_v2.Service, sent: run_v2.Service, mode: ScalingMode, manual: int | None
) -> None:
    keep_scaling(sent, stored)
    assert sent.scaling.scaling_mode == mode
    assert (sent.scaling.manual_instance_count if "manual_instance_count" in sent.scaling else None) == manual


def test_defaults_cloud_run_fills_in() -> None:
    service = run_v2.Service(template=run_v2.RevisionTemplate(containers=[
        run_v2.Container(image="x"),
        run_v2.Container(image="y", resources=run_v2.ResourceRequirements(limits={"cpu": "2", "memory": "1Gi"})),
    ]))  # fmt: skip
    apply_defaults(service, "p")
    bare, sized = service.template.containers
    assert bare.resources.cpu_idle and dict(bare.resources.limits) == {"cpu": "1000m", "memory": "512Mi"}
    assert not sized.resources.cpu_idle  # "if ResourceRequirements is set, the caller must explicitly set" it
    assert service.scaling.scaling_mode == ScalingMode.AUTOMATIC
    assert service.launch_stage == 4  # GA
