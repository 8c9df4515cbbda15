"""The GPU quota as Cloud Run applies it (gpu_quota.py): per-service ceiling at the request, running floor at start."""

from __future__ import annotations

import random

import pytest
from google.cloud import run_v2

from tgi_operator.emulator import gpu_quota
from tgi_operator.emulator.gpu_quota import GpuDemand
from tgi_operator.emulator.state import QuotaBook, State

MANUAL = run_v2.ServiceScaling.ScalingMode.MANUAL
PROJECT, REGION = "p", "us-central1"


def _gpu(max_instances: int = 0, min_instances: int = 0, zonal: bool = True, scaling: run_v2.ServiceScaling | None = None) -> run_v2.Service:
    return run_v2.Service(
        scaling=scaling,
        template=run_v2.RevisionTemplate(
            scaling=run_v2.RevisionScaling(min_instance_count=min_instances, max_instance_count=max_instances),
            node_selector=run_v2.NodeSelector(accelerator="nvidia-l4"),
            gpu_zonal_redundancy_disabled=not zonal,
            containers=[run_v2.Container(image="tgi", resources=run_v2.ResourceRequirements(
                limits={"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}))],
        ),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("service", "demand"),
    [
        (_gpu(), GpuDemand("nvidia-l4", True, gpu_quota.DEFAULT_MAX_INSTANCES, 0)),  # unset max: Cloud Run's 100
        (_gpu(max_instances=3, zonal=False), GpuDemand("nvidia-l4", False, 3, 0)),
        (_gpu(max_instances=3, min_instances=1), GpuDemand("nvidia-l4", True, 3, 1)),
        (_gpu(scaling=run_v2.ServiceScaling(max_instance_count=5, min_instance_count=2)), GpuDemand("nvidia-l4", True, 5, 2)),
        (_gpu(max_instances=3, scaling=run_v2.ServiceScaling(scaling_mode=MANUAL, manual_instance_count=2)),
         GpuDemand("nvidia-l4", True, 2, 2)),  # manual: exactly this many
        (_gpu(max_instances=3, scaling=run_v2.ServiceScaling(scaling_mode=MANUAL, manual_instance_count=0)),
         GpuDemand("nvidia-l4", True, 0, 0)),  # suspended: holds nothing
        (run_v2.Service(template=run_v2.RevisionTemplate(containers=[run_v2.Container(image="x")])), None),
    ],
)  # fmt: skip
def test_gpu_demand(service: run_v2.Service, demand: GpuDemand | None) -> None:
    assert gpu_quota.gpu_demand(service) == demand


@pytest.mark.parametrize(
    ("service", "limit", "field", "requested"),
    [
        (_gpu(max_instances=3), 10, None, None),
        (_gpu(max_instances=10), 10, None, None),
        (_gpu(max_instances=11), 10, "service.template.scaling.max_instance_count", 11),
        (_gpu(), 10, "service.template.scaling.max_instance_count", 100),  # unset max instances needs 100 GPUs
        (_gpu(scaling=run_v2.ServiceScaling(scaling_mode=MANUAL, manual_instance_count=12)), 10,
         "service.scaling.manual_instance_count", 12),
        (_gpu(scaling=run_v2.ServiceScaling(scaling_mode=MANUAL, manual_instance_count=0)), 0, None, None),
    ],
)  # fmt: skip
def test_request_violation(service: run_v2.Service, limit: int, field: str | None, requested: int | None) -> None:
    quotas = QuotaBook(default_zonal=limit, default_no_zonal=limit)
    found = gpu_quota.request_violation(service, quotas, PROJECT, REGION)
    assert (found.field if found else None) == field
    if found is not None:
        assert found.description.startswith(f"Max instances must be set to {limit} or fewer in order to set GPU requirements. ")
        assert "To request quota: g.co/cloudrun/gpu-quota\n\nQuota violated: " in found.description
        assert found.description.endswith(f"NvidiaL4GpuAllocPerProjectRegion requested: {requested} allowed: {limit}")


def test_request_violation_reads_the_pool_of_the_service() -> None:
    quotas = QuotaBook(default_zonal=10, default_no_zonal=10, limits={(PROJECT, REGION, False): 2})
    assert gpu_quota.request_violation(_gpu(max_instances=3, zonal=True), quotas, PROJECT, REGION) is None
    found = gpu_quota.request_violation(_gpu(max_instances=3, zonal=False), quotas, PROJECT, REGION)
    assert found is not None and "NvidiaL4GpuAllocNoZonalRedundancyPerProjectRegion requested: 3 allowed: 2" in found.description
    assert gpu_quota.request_violation(_gpu(max_instances=3, zonal=False), quotas, "other", REGION) is None


def _serving(state: State, name: str, service: run_v2.Service) -> None:
    state.services[name] = service
    state.serving[name] = service


def test_start_failure_counts_what_must_run_in_the_pool() -> None:
    state = State(quotas=QuotaBook(default_zonal=4, default_no_zonal=4))
    base = f"projects/{PROJECT}/locations/{REGION}/services"
    _serving(state, f"{base}/a", _gpu(max_instances=4, min_instances=2))
    _serving(state, f"{base}/b", _gpu(max_instances=4, scaling=run_v2.ServiceScaling(scaling_mode=MANUAL, manual_instance_count=1)))
    _serving(state, f"{base}/zonal-off", _gpu(max_instances=4, min_instances=4, zonal=False))  # other pool
    _serving(state, f"projects/{PROJECT}/locations/europe-west1/services/far", _gpu(max_instances=4, min_instances=4))
    # Max instances of the others do not count: 2 + 1 running, so one more fits and two do not.
    assert gpu_quota.start_failure(state, f"{base}/new", _gpu(max_instances=4, min_instances=1)) is None
    assert gpu_quota.start_failure(state, f"{base}/new", _gpu(max_instances=4)) is None  # scales from zero
    message = gpu_quota.start_failure(state, f"{base}/new", _gpu(max_instances=4, min_instances=2))
    assert message is not None and message.startswith("Quota exceeded for total allowable count of GPUs per project per region.")
    assert message.endswith("NvidiaL4GpuAllocPerProjectRegion requested: 5 allowed: 4")
    # A service's own old revision is replaced, not added to.
    assert gpu_quota.start_failure(state, f"{base}/a", _gpu(max_instances=4, min_instances=3)) is None


def test_quota_metric_names() -> None:
    assert gpu_quota.quota_metric("nvidia-l4", False) == "NvidiaL4GpuAllocNoZonalRedundancyPerProjectRegion"
    assert gpu_quota.quota_metric("nvidia-rtx-pro-6000", True) == "NvidiaRtxPro6000GpuAllocPerProjectRegion"


def _in_use_by_walking(state: State, name: str, demand: GpuDemand) -> int:
    """The sum RunningGpus keeps, as a walk over every serving revision adds it up."""
    project, region = name.split("/")[1], name.split("/")[3]
    return sum(
        theirs.running
        for other, snapshot in state.serving.items()
        if other != name and other in state.services and (theirs := gpu_quota.gpu_demand(snapshot)) is not None
        and other.split("/")[1] == project and other.split("/")[3] == region and theirs.zonal_redundancy == demand.zonal_redundancy
    )  # fmt: skip


def test_running_gpus_follow_revisions_made_replaced_and_deleted() -> None:
    rng = random.Random(7)
    state = State()
    names = [f"projects/{p}/locations/{r}/services/s{i}" for p in ("p", "q") for r in (REGION, "europe-west1") for i in range(4)]
    for _ in range(120):
        name = rng.choice(names)
        if rng.random() < 0.25:
            for table in (state.services, state.serving):
                table.pop(name, None)  # a delete, as reconcile.py makes it
            continue
        snapshot = rng.choice([
            _gpu(max_instances=4, min_instances=rng.randint(0, 3), zonal=rng.random() < 0.5),
            _gpu(max_instances=4, scaling=run_v2.ServiceScaling(scaling_mode=MANUAL, manual_instance_count=rng.randint(0, 2))),
            run_v2.Service(template=run_v2.RevisionTemplate(containers=[run_v2.Container(image="cpu-only")])),
        ])  # fmt: skip
        state.services[name] = snapshot
        state.serving[name] = snapshot
        for asking in rng.sample(names, 3):
            for zonal in (True, False):
                demand = GpuDemand("nvidia-l4", zonal, 4, 1)
                parsed = asking.split("/")
                pool = (parsed[1], parsed[3], zonal)
                assert state.running_gpus.in_use(pool, excluding=asking) == _in_use_by_walking(state, asking, demand)
