"""Prometheus metrics of the operator (served by `tgi-operator run --metrics-port`).

Reconcile metrics have controller-runtime's names and labels (`controller_runtime_reconcile_total{controller,
result}`, `..._errors_total`, `..._time_seconds`, `..._active_workers`, `workqueue_depth`), so the dashboards
and alerts written for Go operators work unchanged; the rest are ours (`tgi_operator_*`).
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTROLLER = "tgiservice"  # the `controller` label, as controller-runtime names a controller by its kind

RECONCILES = Counter(
    "tgi_operator_reconciles_total", "Reconcile passes by outcome (ready, progressing, stalled, transient_error).", ["outcome"]
)
RECONCILE_SECONDS = Histogram(
    "tgi_operator_reconcile_duration_seconds", "Duration of one reconcile pass, cloud calls included.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CLOUD_WRITES = Counter(
    "tgi_operator_cloud_writes_total", "Writes the operator started on Cloud Run, by kind (Creating, Updating, ...).", ["kind"]
)
STALLS = Counter("tgi_operator_stalls_total", "Transitions to Stalled, by reason.", ["reason"])

# controller-runtime's shapes (sigs.k8s.io/controller-runtime/pkg/internal/controller/metrics).
RECONCILE_TOTAL = Counter(
    "controller_runtime_reconcile_total", "Total number of reconciliations per controller.", ["controller", "result"])
RECONCILE_ERRORS = Counter(
    "controller_runtime_reconcile_errors_total", "Total number of reconciliation errors per controller.", ["controller"])
RECONCILE_TIME = Histogram(
    "controller_runtime_reconcile_time_seconds", "Length of time per reconciliation per controller.", ["controller"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
ACTIVE_WORKERS = Gauge(
    "controller_runtime_active_workers", "Number of currently used workers per controller.", ["controller"])
MAX_WORKERS = Gauge(
    "controller_runtime_max_concurrent_reconciles", "Maximum number of concurrent reconciles per controller.",
    ["controller"])

# client-go's leader-election gauge (k8s.io/component-base/metrics/prometheus/clientgo/leaderelection), which
# dashboards for Go operators chart: 1 while this process holds the Lease `name`.
LEADER = Gauge("leader_election_master_status", "Whether this process holds the leader-election Lease (1) or not (0).",
               ["name"])

CLOUD_REQUESTS = Counter(
    "tgi_operator_cloud_requests_total", "Cloud Run and IAM requests by API, method and gRPC code.",
    ["api", "method", "code"])
CLOUD_REQUEST_SECONDS = Histogram(
    "tgi_operator_cloud_request_duration_seconds", "Latency of Cloud Run and IAM requests.", ["api", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


# status.cost's fields by the `bound` label of tgi_operator_estimated_hourly_cost_usd (exported at scrape time).
COST_BOUNDS = {"instance": "instanceHourly", "min": "minimumHourly", "max": "maximumHourly"}


def observe_cloud_call(api: str, method: str, code: str, started: float) -> None:
    CLOUD_REQUESTS.labels(api, method, code).inc()
    CLOUD_REQUEST_SECONDS.labels(api, method).observe(time.monotonic() - started)


class ObjectsCollector(Collector):
    """At scrape time, from the operator's own snapshots (no API call, no series kept per object between scrapes):
    how many objects are in each state of each condition, each object's estimated hourly cost (status.cost), and
    how many checks are due and waiting for a worker (`workqueue_depth`). `objects`: (namespace, name, status)."""

    def __init__(self, objects: Callable[[], Iterable[tuple[str, str, Mapping[str, Any]]]],
                 due: Callable[[], int]) -> None:
        self._objects = objects
        self._due = due

    def collect(self) -> Iterator[GaugeMetricFamily]:
        tally: Tally[tuple[str, str, str]] = Tally()
        cost = GaugeMetricFamily(
            "tgi_operator_estimated_hourly_cost_usd", "Estimated Cloud Run cost per hour of each TGIService "
            "(status.cost): bound is instance (one), min (minInstances, idle) or max (maxInstances).",
            labels=["namespace", "name", "bound"])
        for namespace, name, status in self._objects():
            for condition in status.get("conditions") or []:
                if isinstance(condition, Mapping):
                    tally[(str(condition.get("type")), str(condition.get("status")), str(condition.get("reason")))] += 1
            for bound, amount in _usd(status.get("cost")):
                cost.add_metric([namespace, name, bound], amount)
        objects = GaugeMetricFamily("tgi_operator_objects", "TGIServices by condition, status and reason.",
                                    labels=["condition", "status", "reason"])
        for (kind, state, reason), count in sorted(tally.items()):
            objects.add_metric([kind, state, reason], count)
        yield objects
        yield cost
        depth = GaugeMetricFamily("workqueue_depth", "Current depth of workqueue: checks due and not started.",
                                  labels=["name"])
        depth.add_metric([CONTROLLER], self._due())
        yield depth


def _usd(cost: Any) -> Iterator[tuple[str, float]]:
    """(bound, amount) of a status.cost in USD (the metric's unit); nothing for another currency or a broken one."""
    if not isinstance(cost, Mapping) or cost.get("currency") != "USD":
        return
    for bound, key in COST_BOUNDS.items():
        try:
            yield bound, float(cost[key])
        except (KeyError, TypeError, ValueError):
            continue


def watch_objects(collector: ObjectsCollector) -> None:
    REGISTRY.register(collector)


def serve(port: int, host: str) -> None:
    start_http_server(port, addr=host)
