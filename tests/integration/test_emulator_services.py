"""The emulator's Cloud Run Admin API v2, driven by the real google-cloud-run clients over gRPC."""

from __future__ import annotations

import pytest
from emulator_fixtures import *  # noqa: F403
from emulator_fixtures import PARENT, PROJECT, REGION, seed_service, service_name
from google.api_core import exceptions as gexc
from google.cloud import run_v2
from google.longrunning import operations_pb2
from google.protobuf import field_mask_pb2

pytestmark = pytest.mark.timeout(60)

Ready = run_v2.Condition.State


def test_seed_gpu_service_round_trip(run_client: run_v2.ServicesClient) -> None:
    operation = run_client.create_service(parent=PARENT, service=seed_service(), service_id="llama-8b")
    assert not operation.done()
    pending = operation.metadata  # a new service is pending first (no URL, no conditions), like Cloud Run
    assert pending.reconciling and pending.terminal_condition.state == Ready.CONDITION_PENDING
    assert not pending.uri and not pending.conditions

    created = operation.result(timeout=30)
    name = service_name("llama-8b")
    assert created.name == name
    assert created.generation == 1 and created.observed_generation == 1
    assert not created.reconciling
    assert created.terminal_condition.type_ == "Ready"
    assert created.terminal_condition.state == Ready.CONDITION_SUCCEEDED
    assert {c.type_ for c in created.conditions} == {"RoutesReady", "ConfigurationsReady"}
    revision = created.latest_ready_revision.rsplit("/", 1)[-1]
    assert created.latest_ready_revision.startswith(f"{name}/revisions/")
    assert revision.startswith("llama-8b-00001-") and len(revision) == len("llama-8b-00001-xyz")
    assert created.latest_created_revision == created.latest_ready_revision
    assert created.uri.startswith("http://127.0.0.1:") and list(created.urls) == [created.uri]
    assert created.create_time and created.update_time and created.etag and created.uid

    got = run_client.get_service(name=name)
    container = got.template.containers[0]
    assert dict(container.resources.limits) == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}
    assert got.template.max_instance_request_concurrency == 64
    assert got.template.scaling.max_instance_count == 3
    assert got.template.node_selector.accelerator == "nvidia-l4"
    assert container.ports[0].container_port == 8080
    assert got.etag == created.etag

    got.template.scaling.max_instance_count = 2
    updated = run_client.update_service(service=got).result(timeout=30)
    assert updated.generation == 2 and updated.observed_generation == 2
    assert updated.latest_ready_revision.rsplit("/", 1)[-1].startswith("llama-8b-00002-")
    assert updated.uri == created.uri  # the URL is stable across revisions
    assert updated.etag != created.etag
    assert updated.create_time == created.create_time and updated.update_time > created.update_time

    deleted = run_client.delete_service(name=name).result(timeout=30)
    assert deleted.name == name and deleted.delete_time
    with pytest.raises(gexc.NotFound):
        run_client.get_service(name=name)


async def test_async_client_round_trip(run_async_client: run_v2.ServicesAsyncClient) -> None:
    operation = await run_async_client.create_service(parent=PARENT, service=seed_service(), service_id="llama-async")
    created = await operation.result(timeout=30)
    assert created.terminal_condition.state == Ready.CONDITION_SUCCEEDED
    got = await run_async_client.get_service(name=created.name)
    assert got.latest_ready_revision == created.latest_ready_revision
    await (await run_async_client.delete_service(name=created.name)).result(timeout=30)


def test_duplicate_create_is_already_exists(run_client: run_v2.ServicesClient) -> None:
    run_client.create_service(parent=PARENT, service=seed_service(), service_id="twice").result(timeout=30)
    with pytest.raises(gexc.AlreadyExists):
        run_client.create_service(parent=PARENT, service=seed_service(), service_id="twice")


def test_missing_service_is_not_found(run_client: run_v2.ServicesClient) -> None:
    with pytest.raises(gexc.NotFound):
        run_client.get_service(name=service_name("nope"))
    with pytest.raises(gexc.NotFound):
        run_client.delete_service(name=service_name("nope"))
    service = seed_service()
    service.name = service_name("nope")
    with pytest.raises(gexc.NotFound):
        run_client.update_service(service=service)


def test_update_allow_missing_creates(run_client: run_v2.ServicesClient) -> None:
    service = seed_service()
    service.name = service_name("upserted")
    request = run_v2.UpdateServiceRequest(service=service, allow_missing=True)
    created = run_client.update_service(request=request).result(timeout=30)
    assert created.generation == 1 and created.terminal_condition.state == Ready.CONDITION_SUCCEEDED


def test_validate_only_stores_nothing(run_client: run_v2.ServicesClient) -> None:
    request = run_v2.CreateServiceRequest(parent=PARENT, service=seed_service(), service_id="dry", validate_only=True)
    run_client.create_service(request=request).result(timeout=30)
    with pytest.raises(gexc.NotFound):
        run_client.get_service(name=service_name("dry"))


def test_update_mask_changes_only_named_fields(run_client: run_v2.ServicesClient) -> None:
    created = run_client.create_service(parent=PARENT, service=seed_service(), service_id="masked").result(timeout=30)
    patch = run_v2.Service(name=created.name, description="patched", labels={"ignored": "yes"})
    request = run_v2.UpdateServiceRequest(service=patch, update_mask=field_mask_pb2.FieldMask(paths=["description"]))
    updated = run_client.update_service(request=request).result(timeout=30)
    assert updated.description == "patched"
    assert "ignored" not in updated.labels
    assert updated.template.containers[0].image == created.template.containers[0].image
    # A change outside the template makes no new revision.
    assert updated.latest_ready_revision == created.latest_ready_revision
    assert updated.generation == 2


def test_stale_service_etag_is_aborted(run_client: run_v2.ServicesClient) -> None:
    created = run_client.create_service(parent=PARENT, service=seed_service(), service_id="etagged").result(timeout=30)
    stale = run_client.get_service(name=created.name)
    fresh = run_client.get_service(name=created.name)
    fresh.description = "first"
    run_client.update_service(service=fresh).result(timeout=30)
    stale.description = "second"
    with pytest.raises(gexc.Aborted):
        run_client.update_service(service=stale)


def test_list_services_pages(run_client: run_v2.ServicesClient) -> None:
    ids = [f"svc-{i}" for i in range(5)]
    for service_id in ids:
        run_client.create_service(parent=PARENT, service=seed_service(max_instances=1), service_id=service_id)
    other = f"projects/{PROJECT}/locations/europe-west1"
    run_client.create_service(parent=other, service=seed_service(max_instances=1), service_id="elsewhere")
    pager = run_client.list_services(request=run_v2.ListServicesRequest(parent=PARENT, page_size=2))
    pages = list(pager.pages)
    assert [len(p.services) for p in pages] == [2, 2, 1]
    assert [s.name for p in pages for s in p.services] == [service_name(i) for i in ids]
    everywhere = run_client.list_services(parent=f"projects/{PROJECT}/locations/-")
    assert len(list(everywhere)) == 6
    assert REGION in pages[0].services[0].name


def test_operations_api(run_client: run_v2.ServicesClient) -> None:
    operation = run_client.create_service(parent=PARENT, service=seed_service(), service_id="ops")
    name = operation.operation.name
    assert name.startswith(f"{PARENT}/operations/")
    # google-cloud-run's generated wait_operation has no response deserializer: it returns the raw bytes.
    raw = run_client.wait_operation(request={"name": name, "timeout": {"seconds": 20}})
    waited = operations_pb2.Operation.FromString(raw)
    assert waited.done and waited.response.type_url == "type.googleapis.com/google.cloud.run.v2.Service"
    listed = run_client.list_operations(request={"name": PARENT})
    assert name in [op.name for op in listed.operations]
    assert run_client.get_operation(request={"name": name}).done
    run_client.delete_operation(request={"name": name})
    with pytest.raises(gexc.NotFound):
        run_client.get_operation(request={"name": name})
