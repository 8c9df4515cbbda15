"""Cloud Run's GPU quota: "Total Nvidia L4 GPU allocation, per project per region", one pool per zonal-redundancy
setting (https://cloud.google.com/run/docs/configuring/services/gpu, https://cloud.google.com/run/quotas).

Two checks, as Cloud Run makes them:
- at the request (`request_violation`): a GPU service whose own ceiling (manual instance count in MANUAL scaling,
  else max instances, else Cloud Run's default 100, times GPUs per instance) exceeds the pool's limit is refused
  with INVALID_ARGUMENT; other services' ceilings do not count;
- when a revision starts (`start_failure`): what *must run* (min instances in AUTOMATIC scaling, the manual count
  in MANUAL) across the project, region and pool must fit, else the revision fails (RESOURCE_EXHAUSTED).
  The serving revisions' share is kept as a running total per pool (`RunningGpus`, an index of `State.serving`),
  so a revision start costs the same with ten services or ten thousand.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from google.cloud import run_v2

from tgi_operator.emulator import rules
from tgi_operator.emulator.rules import Violation

if TYPE_CHECKING:  # state.py indexes its serving revisions with RunningGpus
    from tgi_operator.emulator.state import QuotaBook, State

DEFAULT_MAX_INSTANCES = 100  # what Cloud Run assumes when max_instance_count is unset
MANUAL = run_v2.ServiceScaling.ScalingMode.MANUAL
QUOTA_TEXT = (
    "Quota exceeded for total allowable count of GPUs per project per region. To request quota: g.co/cloudrun/gpu-quota"
)


@dataclass(frozen=True)
class GpuDemand:
    """What one GPU service may hold (`count`) and must hold while it serves (`running`), in GPUs."""

    gpu_type: str
    zonal_redundancy: bool
    count: int  # ceiling: max instances (or the manual count) x GPUs per instance
    running: int = 0  # floor: min instances (or the manual count) x GPUs per instance
    per_instance: int = 1


def gpu_demand(service: run_v2.Service) -> GpuDemand | None:
    """The GPUs a service counts against its pool, or None when it has no GPU."""
    t = service.template
    holders = [c for c in t.containers if rules.gpu_count(c) is not None]
    if not holders or "node_selector" not in t:
        return None
    try:
        per_instance = int(rules.gpu_count(holders[0]) or "1")
    except ValueError:
        per_instance = 1  # check_gpu refuses anything but "1"
    if service.scaling.scaling_mode == MANUAL:
        ceiling = floor = service.scaling.manual_instance_count  # exactly this many, e.g. 0 for a suspended service
    else:
        ceiling = t.scaling.max_instance_count or service.scaling.max_instance_count or DEFAULT_MAX_INSTANCES
        floor = max(t.scaling.min_instance_count, service.scaling.min_instance_count)
    return GpuDemand(t.node_selector.accelerator, not t.gpu_zonal_redundancy_disabled, ceiling * per_instance,
                     floor * per_instance, per_instance)  # fmt: skip


def quota_metric(gpu_type: str, zonal_redundancy: bool) -> str:
    """Cloud Run's quota metric name, e.g. NvidiaL4GpuAllocNoZonalRedundancyPerProjectRegion."""
    base = "".join(part.capitalize() if part.isalpha() else part.upper() for part in gpu_type.split("-"))
    return f"{base}GpuAlloc{'' if zonal_redundancy else 'NoZonalRedundancy'}PerProjectRegion"


def request_violation(service: run_v2.Service, quotas: QuotaBook, project: str, region: str, prefix: str = "service") -> Violation | None:
    """A service whose own GPU ceiling exceeds its pool's limit, refused at the request (gcloud shows Cloud Run's
    "Max instances must be set to N or fewer in order to set GPU requirements"; contract wording)."""
    demand = gpu_demand(service)
    if demand is None:
        return None
    limit = quotas.limit(project, region, demand.zonal_redundancy)
    if demand.count <= limit:
        return None
    manual = service.scaling.scaling_mode == MANUAL
    field = f"{prefix}.scaling.manual_instance_count" if manual else f"{prefix}.template.scaling.max_instance_count"
    return Violation(
        field,
        f"Max instances must be set to {limit // demand.per_instance} or fewer in order to set GPU requirements. "
        f"{QUOTA_TEXT}\n\nQuota violated: {quota_metric(demand.gpu_type, demand.zonal_redundancy)} "
        f"requested: {demand.count} allowed: {limit}",
    )


def start_message(demand: GpuDemand, requested: int, limit: int) -> str:
    return (
        "Quota exceeded for total allowable count of GPUs per project per region.\n"
        "To request quota: g.co/cloudrun/gpu-quota\n\n"
        f"Quota violated:\n{quota_metric(demand.gpu_type, demand.zonal_redundancy)} requested: {requested} allowed: {limit}"
    )


Pool = tuple[str, str, bool]  # (project, region, zonal redundancy): what the start-time check adds up


class RunningGpus:
    """An index of the serving revisions (`State.serving`, service name -> the service as its revision was made):
    the GPUs that must run, per pool. Snapshots are records of made revisions and are not changed in place (only
    their URL is), so what each holds is read once, when it is stored."""

    def __init__(self) -> None:
        self._totals: Counter[Pool] = Counter()
        self._held: dict[str, tuple[Pool, int]] = {}  # service name -> (its pool, the GPUs its revision must run)

    def put(self, name: str, old: run_v2.Service | None, snapshot: run_v2.Service) -> None:
        self.drop(name, old)
        demand = gpu_demand(snapshot)
        parsed = rules.parse_service_name(name)
        if demand is None or parsed is None:
            return
        pool = (parsed[0], parsed[1], demand.zonal_redundancy)
        self._held[name] = (pool, demand.running)
        self._totals[pool] += demand.running

    def drop(self, name: str, old: run_v2.Service | None) -> None:
        held = self._held.pop(name, None)
        if held is not None:
            self._totals[held[0]] -= held[1]

    def in_use(self, pool: Pool, excluding: str) -> int:
        """The GPUs the serving revisions in `pool` must run, but for those of service `excluding` (a service's
        new revision replaces its old one)."""
        own_pool, own = self._held.get(excluding, (None, 0))
        return self._totals[pool] - (own if own_pool == pool else 0)


def start_failure(state: State, name: str, service: run_v2.Service) -> str | None:
    """Why the revision of `name` cannot start its instances: the instances that must run in its project, region
    and pool (its own, plus every other serving revision's) would exceed the limit. None when they fit.
    (A serving revision belongs to a service the state holds: a delete removes both at once, reconcile.py.)"""
    demand = gpu_demand(service)
    parsed = rules.parse_service_name(name)
    if demand is None or demand.running == 0 or parsed is None:
        return None
    project, region, _ = parsed
    in_use = state.running_gpus.in_use((project, region, demand.zonal_redundancy), excluding=name)
    limit = state.quotas.limit(project, region, demand.zonal_redundancy)
    if in_use + demand.running > limit:
        return start_message(demand, in_use + demand.running, limit)
    return None
