"""Cloud Run's stricter behaviours (contract section B), through the real google-cloud-run client.

GPU quota at the request, instance shapes without a GPU, preview GPUs and launch stages, service-level scaling,
revision names, the long-running create/update/delete, and the request timeout on the URL.
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import pytest
import requests
from emulator_fixtures import *  # noqa: F403
from emulator_fixtures import OPERATOR, PARENT, AdminApi, seed_service, service_name, sync_clients
from google.api_core import exceptions as gexc
from google.cloud import run_v2
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from tgi_operator.emulator.server import EmulatorConfig
from tgi_operator.emulator.testing import EmulatorThread

pytestmark = pytest.mark.timeout(90)

Ready = run_v2.Condition.State
ScalingMode = run_v2.ServiceScaling.ScalingMode


def _fields(error: gexc.GoogleAPICallError) -> list[str]:
    return [v.field for d in error.details if isinstance(d, error_details_pb2.BadRequest) for v in d.field_violations]


def _manual(service: run_v2.Service, count: int) -> run_v2.Service:
    service.scaling = run_v2.ServiceScaling(scaling_mode=ScalingMode.MANUAL, manual_instance_count=count)
    return service


# ---------------------------------------------------------------- B1: GPU quota at the request


def test_gpu_quota_refuses_the_request_itself(run_client: run_v2.ServicesClient, admin: AdminApi) -> None:
    admin.set_quota(2, zonal_redundancy=False)
    requests_refused = [
        run_v2.CreateServiceRequest(parent=PARENT, service_id="dry", service=seed_service(3), validate_only=True),
        run_v2.UpdateServiceRequest(service=run_v2.Service(seed_service(3), name=service_name("upsert")), allow_missing=True),
    ]
    for request in requests_refused:
        call = run_client.create_service if isinstance(request, run_v2.CreateServiceRequest) else run_client.update_service
        with pytest.raises(gexc.InvalidArgument) as caught:
            call(request=request)
        assert _fields(caught.value) == ["service.template.scaling.max_instance_count"]
        assert "Max instances must be set to 2 or fewer" in caught.value.message
    assert list(run_client.list_services(parent=PARENT)) == []

    # In MANUAL scaling the manual count is the ceiling; a suspended service (MANUAL, 0) needs no quota at all.
    with pytest.raises(gexc.InvalidArgument) as caught:
        run_client.create_service(parent=PARENT, service=_manual(seed_service(1), 3), service_id="manual")
    assert _fields(caught.value) == ["service.scaling.manual_instance_count"]
    assert caught.value.message.endswith("NvidiaL4GpuAllocNoZonalRedundancyPerProjectRegion requested: 3 allowed: 2")
    suspended = run_client.create_service(parent=PARENT, service=_manual(seed_service(3), 0), service_id="suspended")
    suspended = suspended.result(timeout=30)
    assert suspended.terminal_condition.state == Ready.CONDITION_SUCCEEDED
    # Resuming it is a write like any other: max instances 3 > 2 is refused.
    suspended.scaling = run_v2.ServiceScaling(scaling_mode=ScalingMode.AUTOMATIC)
    with pytest.raises(gexc.InvalidArgument):
        run_client.update_service(service=suspended)


# ---------------------------------------------------------------- B2: instance shapes without a GPU


def _cpu_only(limits: dict[str, str] | None) -> run_v2.Service:
    resources = run_v2.ResourceRequirements(limits=limits) if limits is not None else None
    return run_v2.Service(template=run_v2.RevisionTemplate(containers=[run_v2.Container(image="busybox", resources=resources)]))


def test_cpu_and_memory_without_a_gpu(run_client: run_v2.ServicesClient) -> None:
    with pytest.raises(gexc.InvalidArgument) as caught:
        run_client.create_service(parent=PARENT, service=_cpu_only({"cpu": "1", "memory": "8Gi"}), service_id="fat")
    assert _fields(caught.value) == ["service.template.containers[0].resources.limits.memory"]
    assert "For 1.0 CPU, memory must be between 128Mi and 4Gi inclusive." in caught.value.message
    with pytest.raises(gexc.InvalidArgument) as caught:
        run_client.create_service(parent=PARENT, service=_cpu_only({"cpu": "3", "memory": "4Gi"}), service_id="odd")
    assert _fields(caught.value) == ["service.template.containers[0].resources.limits.cpu"]
    # A container sent without resources gets Cloud Run's: 1 vCPU, 512Mi, CPU only during requests.
    bare = run_client.create_service(parent=PARENT, service=_cpu_only(None), service_id="bare").result(timeout=30)
    resources = bare.template.containers[0].resources
    assert resources.cpu_idle and dict(resources.limits) == {"cpu": "1000m", "memory": "512Mi"}


# ---------------------------------------------------------------- B3: preview GPUs need a preview launch stage


def test_a_preview_gpu_needs_launch_stage_beta(run_client: run_v2.ServicesClient) -> None:
    service = seed_service()
    service.template.node_selector.accelerator = "nvidia-rtx-pro-6000"
    service.template.containers[0].resources.limits.update({"cpu": "20", "memory": "80Gi"})
    with pytest.raises(gexc.InvalidArgument) as caught:
        run_client.create_service(parent=PARENT, service=service, service_id="blackwell")
    assert _fields(caught.value) == ["service.launch_stage"]
    assert "The nvidia-rtx-pro-6000 GPU is in BETA: set launch_stage to BETA (gcloud beta run deploy) to use it." in caught.value.message
    service.launch_stage = "BETA"
    run_client.create_service(parent=PARENT, service=service, service_id="blackwell").result(timeout=30)
    assert run_client.get_service(name=service_name("blackwell")).launch_stage == service.launch_stage


# ---------------------------------------------------------------- B4: service-level scaling


def test_service_scaling_modes(run_client: run_v2.ServicesClient) -> None:
    created = run_client.create_service(parent=PARENT, service=seed_service(), service_id="scaled").result(timeout=30)
    read = run_client.get_service(name=created.name)
    assert read.scaling.scaling_mode == ScalingMode.AUTOMATIC  # filled in for a service created without one
    # Sending back exactly what was read changes nothing.
    same = run_client.update_service(service=read).result(timeout=30)
    assert same.generation == read.generation and same.latest_created_revision == read.latest_created_revision

    suspended = run_client.update_service(service=_manual(run_client.get_service(name=created.name), 0)).result(timeout=30)
    assert suspended.scaling.scaling_mode == ScalingMode.MANUAL and suspended.scaling.manual_instance_count == 0
    assert suspended.latest_created_revision == read.latest_created_revision  # not a template change
    # A write that leaves scaling_mode unspecified keeps MANUAL: resuming must say AUTOMATIC.
    unspecified = run_client.get_service(name=created.name)
    unspecified.scaling = run_v2.ServiceScaling()
    unspecified.description = "still suspended"
    kept = run_client.update_service(service=unspecified).result(timeout=30)
    assert kept.scaling.scaling_mode == ScalingMode.MANUAL and kept.scaling.manual_instance_count == 0
    kept.scaling = run_v2.ServiceScaling(scaling_mode=ScalingMode.AUTOMATIC)
    resumed = run_client.update_service(service=kept).result(timeout=30)
    assert resumed.scaling.scaling_mode == ScalingMode.AUTOMATIC and "manual_instance_count" not in resumed.scaling

    resumed.scaling = run_v2.ServiceScaling(scaling_mode=ScalingMode.MANUAL)
    with pytest.raises(gexc.InvalidArgument) as caught:
        run_client.update_service(service=resumed)
    assert _fields(caught.value) == ["service.scaling.manual_instance_count"]


# ---------------------------------------------------------------- B5: revision names


def test_revision_names_are_bound_to_their_configuration(run_client: run_v2.ServicesClient) -> None:
    service = seed_service()
    service.template.revision = "named-v1"
    created = run_client.create_service(parent=PARENT, service=service, service_id="named").result(timeout=30)
    assert created.latest_ready_revision == f"{created.name}/revisions/named-v1"
    # The same name with the same configuration: nothing new to make.
    created.labels["note"] = "metadata only"
    relabelled = run_client.update_service(service=created).result(timeout=30)
    assert relabelled.generation == 2 and relabelled.latest_created_revision == created.latest_created_revision
    # The same name with another configuration is refused.
    relabelled.template.scaling.max_instance_count = 2
    with pytest.raises(gexc.AlreadyExists) as caught:
        run_client.update_service(service=relabelled)
    assert caught.value.message == "Revision named 'named-v1' with different configuration already exists."
    relabelled.template.revision = "named-v2"
    renamed = run_client.update_service(service=relabelled).result(timeout=30)
    assert renamed.latest_ready_revision == f"{created.name}/revisions/named-v2"


# ---------------------------------------------------------------- B6: long-running operations


def _wait_for_state(run_client: run_v2.ServicesClient, name: str, leaving: Ready) -> run_v2.Service:
    deadline = time.monotonic() + 20
    while (service := run_client.get_service(name=name)).terminal_condition.state == leaving:
        assert time.monotonic() < deadline, f"{name} stayed {leaving.name}"
        time.sleep(0.02)
    return service


def test_create_is_pending_then_reconciling(run_client: run_v2.ServicesClient, admin: AdminApi) -> None:
    admin.set_reconcile_seconds(1.0)
    operation = run_client.create_service(parent=PARENT, service=seed_service(), service_id="phases")
    pending = run_client.get_service(name=service_name("phases"))
    assert pending.reconciling and pending.terminal_condition.type_ == "Ready"
    assert pending.terminal_condition.state == Ready.CONDITION_PENDING
    assert not pending.conditions and not pending.uri
    starting = _wait_for_state(run_client, pending.name, Ready.CONDITION_PENDING)
    assert starting.terminal_condition.state == Ready.CONDITION_RECONCILING and starting.reconciling and not starting.uri
    assert operation.result(timeout=30).terminal_condition.state == Ready.CONDITION_SUCCEEDED


def test_update_keeps_serving_conditions_while_reconciling(run_client: run_v2.ServicesClient, admin: AdminApi) -> None:
    created = run_client.create_service(parent=PARENT, service=seed_service(), service_id="rolling").result(timeout=30)
    admin.set_reconcile_seconds(1.0)
    created.template.scaling.max_instance_count = 2
    operation = run_client.update_service(service=created)
    rolling = run_client.get_service(name=created.name)
    assert rolling.reconciling and rolling.terminal_condition.state == Ready.CONDITION_RECONCILING
    assert {c.type_: c.state for c in rolling.conditions} == {
        "RoutesReady": Ready.CONDITION_SUCCEEDED, "ConfigurationsReady": Ready.CONDITION_SUCCEEDED}  # fmt: skip
    assert rolling.uri == created.uri and rolling.latest_ready_revision == created.latest_ready_revision
    assert operation.result(timeout=30).observed_generation == 2


def test_delete_is_long_running(run_client: run_v2.ServicesClient, admin: AdminApi) -> None:
    created = run_client.create_service(parent=PARENT, service=seed_service(), service_id="leaving").result(timeout=30)
    admin.set_reconcile_seconds(1.0)
    before = datetime.datetime.now(datetime.timezone.utc)
    operation = run_client.delete_service(name=created.name)
    assert not operation.done()
    deleting = run_client.get_service(name=created.name)
    assert deleting.reconciling and deleting.generation == created.generation + 1
    assert deleting.terminal_condition.state == Ready.CONDITION_RECONCILING
    # delete_time is "only populated as a response to a Delete request" (service.proto): not on a read.
    assert "delete_time" not in deleting and "expire_time" not in deleting
    shown = operation.metadata  # the Delete operation's service: there they are
    assert shown.delete_time >= before
    assert abs(shown.expire_time - shown.delete_time - datetime.timedelta(days=30)) < datetime.timedelta(seconds=1)
    assert run_client.delete_service(name=created.name).operation.name == operation.operation.name  # the same operation
    with pytest.raises(gexc.FailedPrecondition) as caught:
        run_client.update_service(service=run_v2.Service(seed_service(), name=created.name))
    assert caught.value.message == "Service is being deleted."
    policy = run_client.get_iam_policy(request={"resource": created.name})  # reads still work
    with pytest.raises(gexc.FailedPrecondition):
        run_client.set_iam_policy(request={"resource": created.name, "policy": policy})

    deleted = operation.result(timeout=30)
    assert deleted.name == created.name and deleted.delete_time
    with pytest.raises(gexc.NotFound):
        run_client.get_service(name=created.name)
    with pytest.raises(requests.ConnectionError):
        requests.get(created.uri + "/health", timeout=5)


def test_a_delete_in_progress_finishes_after_a_restart(tmp_path: Path) -> None:
    config = EmulatorConfig(reconcile_seconds=0.1, state_file=tmp_path / "emulator.json", identity=OPERATOR)
    with EmulatorThread(config) as emu, sync_clients(emu.grpc_endpoint) as clients:
        created = clients.run.create_service(parent=PARENT, service=seed_service(), service_id="restart").result(timeout=30)
        AdminApi(emu.http_url).set_reconcile_seconds(60)
        operation = clients.run.delete_service(name=created.name)
        assert not operation.done()
    with EmulatorThread(config) as emu, sync_clients(emu.grpc_endpoint) as clients:
        assert clients.run.get_service(name=created.name).reconciling  # still being deleted
        resumed = clients.run.get_operation(request={"name": operation.operation.name})
        deadline = time.monotonic() + 20
        while not resumed.done:
            assert time.monotonic() < deadline
            time.sleep(0.05)
            resumed = clients.run.get_operation(request={"name": operation.operation.name})
        assert not resumed.HasField("error")
        with pytest.raises(gexc.NotFound):
            clients.run.get_service(name=created.name)


# ---------------------------------------------------------------- B7: request timeout on the URL


def test_a_request_past_the_timeout_is_504(run_client: run_v2.ServicesClient, admin: AdminApi) -> None:
    service = seed_service()
    service.template.timeout = duration_pb2.Duration(seconds=1)
    service.template.containers[0].env.append(run_v2.EnvVar(name="TGI_EMULATOR_LATENCY_MS", value="3000"))
    created = run_client.create_service(parent=PARENT, service=service, service_id="timeout").result(timeout=30)
    headers = {"Authorization": f"Bearer {admin.token(OPERATOR, created.uri)}"}
    assert requests.get(created.uri + "/health", headers=headers, timeout=10).status_code == 200
    for path in ("/generate", "/generate_stream"):
        started = time.monotonic()
        reply = requests.post(created.uri + path, json={"inputs": "Hi"}, headers=headers, timeout=10)
        assert (reply.status_code, reply.text) == (504, "upstream request timeout")
        assert 0.9 < time.monotonic() - started < 2.5
