"""The admin API (quotas, failing revisions, faults, call counts), persistence, and the CLI process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from emulator_fixtures import *  # noqa: F403
from emulator_fixtures import OPERATOR, PARENT, PROJECT, REGION, AdminApi, seed_service, service_name, sync_clients, wait_for_account
from google.api_core import exceptions as gexc
from google.cloud import iam_admin_v1, run_v2
from google.rpc import error_details_pb2

from tgi_operator.emulator.server import EmulatorConfig
from tgi_operator.emulator.testing import EmulatorProcess, EmulatorThread

pytestmark = pytest.mark.timeout(90)

State = run_v2.Condition.State
QUOTA_MESSAGE = "Quota exceeded for total allowable count of GPUs per project per region"


def test_gpu_quota_is_checked_at_the_request_and_when_instances_start(run_client: run_v2.ServicesClient, admin: AdminApi) -> None:
    admin.set_quota(4, zonal_redundancy=False)
    # Each service's own ceiling (max instances x GPUs) must fit; other services' ceilings do not add up.
    for service_id in ("first", "second"):
        created = run_client.create_service(parent=PARENT, service=seed_service(max_instances=3), service_id=service_id)
        assert created.result(timeout=30).terminal_condition.state == State.CONDITION_SUCCEEDED
    with pytest.raises(gexc.InvalidArgument) as refused:
        run_client.create_service(parent=PARENT, service=seed_service(max_instances=5), service_id="big")
    assert "Max instances must be set to 4 or fewer in order to set GPU requirements." in refused.value.message
    assert "NvidiaL4GpuAllocNoZonalRedundancyPerProjectRegion requested: 5 allowed: 4" in refused.value.message
    violations = [d for d in refused.value.details if isinstance(d, error_details_pb2.BadRequest)][0].field_violations
    assert [v.field for v in violations] == ["service.template.scaling.max_instance_count"]
    # Zonal redundancy on is a separate pool (default 10).
    zonal = run_client.create_service(parent=PARENT, service=seed_service(5, zonal_redundancy=True), service_id="zonal")
    assert zonal.result(timeout=30).terminal_condition.state == State.CONDITION_SUCCEEDED

    # What must run (min instances) counts across the pool when a revision starts: 2 + 3 > 4 fails asynchronously.
    second = run_client.get_service(name=service_name("second"))
    second.template.scaling.min_instance_count = 2
    assert run_client.update_service(service=second).result(timeout=30).terminal_condition.state == State.CONDITION_SUCCEEDED
    first = run_client.get_service(name=service_name("first"))
    first.template.scaling.min_instance_count = 3
    with pytest.raises(gexc.ResourceExhausted) as caught:
        run_client.update_service(service=first).result(timeout=30)
    assert QUOTA_MESSAGE in caught.value.message
    failed = run_client.get_service(name=first.name)
    assert failed.terminal_condition.state == State.CONDITION_FAILED
    assert "NvidiaL4GpuAllocNoZonalRedundancyPerProjectRegion requested: 5 allowed: 4" in failed.terminal_condition.message
    assert failed.latest_ready_revision == first.latest_ready_revision and failed.uri == first.uri  # the old one serves
    assert failed.latest_created_revision.rsplit("/", 1)[-1].startswith("first-00002-")
    assert not failed.reconciling and failed.observed_generation == failed.generation

    admin.set_quota(6, zonal_redundancy=False)
    failed.description = "retry with more quota"
    retried = run_client.update_service(service=failed).result(timeout=30)
    assert retried.terminal_condition.state == State.CONDITION_SUCCEEDED
    # A write after a failed revision makes a new one; the failed one is never resurrected.
    assert retried.latest_ready_revision.rsplit("/", 1)[-1].startswith("first-00003-")


def test_failed_revision_keeps_the_previous_one_serving(run_client: run_v2.ServicesClient, admin: AdminApi) -> None:
    ready = run_client.create_service(parent=PARENT, service=seed_service(), service_id="steady").result(timeout=30)
    admin.fail_next_revision("steady")
    ready.template.containers[0].args.append("--trust-remote-code")
    with pytest.raises(gexc.FailedPrecondition) as caught:
        run_client.update_service(service=ready).result(timeout=30)
    assert "failed to start and listen on the port defined provided by the PORT=8080" in caught.value.message
    now = run_client.get_service(name=ready.name)
    assert now.terminal_condition.state == State.CONDITION_FAILED
    assert now.latest_ready_revision == ready.latest_ready_revision
    assert now.latest_created_revision.rsplit("/", 1)[-1].startswith("steady-00002-")
    assert now.uri == ready.uri
    # The failure is one-shot: the next revision starts.
    now.description = "again"
    again = run_client.update_service(service=now).result(timeout=30)
    assert again.terminal_condition.state == State.CONDITION_SUCCEEDED
    assert again.latest_ready_revision.rsplit("/", 1)[-1].startswith("steady-00003-")


def test_fault_injection_and_call_counts(run_client: run_v2.ServicesClient, admin: AdminApi) -> None:
    admin.reset_calls()
    admin.fault("GetService", "UNAVAILABLE", count=2)
    name = service_name("absent")
    for _ in range(2):
        with pytest.raises(gexc.ServiceUnavailable):
            run_client.get_service(name=name, retry=None)
    with pytest.raises(gexc.NotFound):
        run_client.get_service(name=name, retry=None)
    run_client.create_service(parent=PARENT, service=seed_service(), service_id="counted").result(timeout=30)
    calls = admin.calls()
    assert calls["google.cloud.run.v2.Services/GetService"] == {"UNAVAILABLE": 2, "NOT_FOUND": 1}
    assert calls["google.cloud.run.v2.Services/CreateService"] == {"OK": 1}
    assert calls["google.longrunning.Operations/GetOperation"]["OK"] >= 1

    admin.fault("google.cloud.run.v2.Services/CreateService", "RESOURCE_EXHAUSTED", rate=1.0)
    with pytest.raises(gexc.ResourceExhausted):
        run_client.create_service(parent=PARENT, service=seed_service(), service_id="never", retry=None)
    admin.clear_faults()
    admin.reset_calls()
    assert admin.calls() == {}


def test_reconcile_delay_is_adjustable(run_client: run_v2.ServicesClient, admin: AdminApi) -> None:
    admin.set_reconcile_seconds(30)
    run_client.create_service(parent=PARENT, service=seed_service(), service_id="slow")
    assert run_client.get_service(name=service_name("slow")).reconciling
    admin.set_reconcile_seconds(0)
    # A newer write supersedes the slow reconcile and settles at the new delay.
    pending = run_client.get_service(name=service_name("slow"))
    pending.description = "now"
    settled = run_client.update_service(service=pending).result(timeout=30)
    assert not settled.reconciling and settled.observed_generation == 2


def test_admin_api_rejects_bad_bodies(admin: AdminApi) -> None:
    for path, body in [
        ("/faults", {"method": "GetService", "code": "NOPE", "count": 1}),
        ("/faults", {"method": "GetService", "code": "UNAVAILABLE"}),
    ]:
        response = requests.post(admin.base + path, json=body, timeout=10)
        assert response.status_code == 400 and "error" in response.json()
    response = requests.post(admin.base + "/services/p/r/missing:fail-next-revision", json={}, timeout=10)
    assert response.status_code == 404


def test_url_is_served_with_the_services_iam(
    run_client: run_v2.ServicesClient, iam_client: iam_admin_v1.IAMClient, admin: AdminApi
) -> None:
    """The control plane publishes ready services on the data plane and answers its IAM question."""
    created = run_client.create_service(parent=PARENT, service=seed_service(), service_id="served").result(timeout=30)
    assert requests.get(created.uri + "/health", timeout=10).status_code == 403
    app = iam_client.create_service_account(request={"name": f"projects/{PROJECT}", "account_id": "app-caller"}).email
    wait_for_account(iam_client, app)
    as_app = {"Authorization": f"Bearer {admin.token(app, created.uri)}"}
    assert requests.get(created.uri + "/health", headers=as_app, timeout=10).status_code == 403
    as_operator = {"Authorization": f"Bearer {admin.token(OPERATOR, created.uri)}"}
    assert requests.get(created.uri + "/health", headers=as_operator, timeout=10).status_code == 200
    policy = run_client.get_iam_policy(request={"resource": created.name})
    policy.bindings.add(role="roles/run.invoker", members=[f"serviceAccount:{app}"])
    run_client.set_iam_policy(request={"resource": created.name, "policy": policy})
    assert requests.get(created.uri + "/health", headers=as_app, timeout=10).status_code == 200
    run_client.delete_service(name=created.name).result(timeout=30)
    with pytest.raises(requests.ConnectionError):
        requests.get(created.uri + "/health", headers=as_app, timeout=10)


def test_state_file_survives_a_restart(tmp_path: Path) -> None:
    state_file = tmp_path / "emulator.json"
    config = EmulatorConfig(reconcile_seconds=0.1, state_file=state_file, identity=OPERATOR)

    with EmulatorThread(config) as emu, sync_clients(emu.grpc_endpoint) as clients:
        run = clients.run
        created = run.create_service(parent=PARENT, service=seed_service(), service_id="kept").result(timeout=30)
        policy = run.get_iam_policy(request={"resource": created.name})
        policy.bindings.add(role="roles/run.invoker", members=["allUsers"])
        policy = run.set_iam_policy(request={"resource": created.name, "policy": policy})
        AdminApi(emu.http_url).set_quota(7)
        token = AdminApi(emu.http_url).token(OPERATOR, created.uri)

    with EmulatorThread(config) as emu, sync_clients(emu.grpc_endpoint) as clients:
        run = clients.run
        kept = run.get_service(name=created.name)
        assert kept == created  # same revision, URL, etag, times
        assert run.get_iam_policy(request={"resource": created.name}) == policy
        assert json.loads(requests.get(emu.http_url + "/emulator/v1/quotas", timeout=10).text)["limits"][0]["limit"] == 7
        assert requests.get(kept.uri + "/health", timeout=10).status_code == 200  # served again on the same port
        # The signing key persists too: a token minted before the restart is still accepted.
        assert requests.get(kept.uri + "/health", headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code == 200
        kept.description = "after restart"
        updated = run.update_service(service=kept).result(timeout=30)
        assert updated.generation == 2 and updated.uri == created.uri


def test_cli_process_serves_and_stops_on_sigterm(emulator_process: EmulatorProcess) -> None:
    with sync_clients(emulator_process.grpc_endpoint) as clients:
        created = clients.run.create_service(parent=PARENT, service=seed_service(), service_id="proc").result(timeout=30)
    assert created.terminal_condition.state == State.CONDITION_SUCCEEDED
    assert emulator_process.env["TGI_OPERATOR_CLOUD_RUN_ENDPOINT"] == emulator_process.grpc_endpoint
    printed = subprocess.run(
        [sys.executable, "-m", "tgi_operator.cli", "emulator", "token", "--email", OPERATOR,
         "--audience", created.uri, "--emulator", emulator_process.http_url],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    token = printed.stdout.strip()
    assert requests.get(created.uri + "/health", headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code == 200
    assert emulator_process.stop() == 0
    assert REGION in created.name
