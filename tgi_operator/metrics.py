"""Prometheus metrics of the operator (served by `tgi-operator run --metrics-port`)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

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


def serve(port: int, host: str) -> None:
    start_http_server(port, addr=host)
