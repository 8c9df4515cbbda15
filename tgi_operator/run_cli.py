"""`tgi-operator run`: the operator process."""

from __future__ import annotations

import logging
import os

import typer


def run(
    all_namespaces: bool = typer.Option(False, "--all-namespaces", "-A", help="Watch TGIServices in every namespace."),
    namespace: list[str] = typer.Option([], "--namespace", "-n", help="Watch only this namespace (repeatable; globs allowed)."),
    liveness_port: int = typer.Option(0, help="Serve GET /healthz and /readyz on this port (0: off)."),
    liveness_host: str = typer.Option("0.0.0.0", help="Address of the liveness and metrics endpoints (the kubelet probes the pod IP)."),
    metrics_port: int = typer.Option(0, help="Serve Prometheus metrics on this port (0: off)."),
    leader_elect: bool = typer.Option(
        False, "--leader-elect", help="Reconcile only while holding the Lease TGI_OPERATOR_LEASE_NAME (in "
        "POD_NAMESPACE): run two or more replicas, one leads."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
    json_logs: bool = typer.Option(False, "--json-logs", help="One JSON object per log line."),
) -> None:
    """Run the operator (configuration from TGI_OPERATOR_* variables; see settings.py)."""
    if not all_namespaces and not namespace:
        raise typer.BadParameter("pass --all-namespaces or at least one --namespace")
    if namespace and os.environ.get("TGI_OPERATOR_NAMESPACE_SELECTOR"):
        raise typer.BadParameter("a shard (TGI_OPERATOR_NAMESPACE_SELECTOR) picks its namespaces by label: pass "
                                 "--all-namespaces, not --namespace")
    _exit_on_bad_settings(json_logs)
    from tgi_operator.lifecycle import RunOptions, run_operator  # imported here: it reads the settings at import

    run_operator(RunOptions(namespaces=namespace, all_namespaces=all_namespaces, leader_elect=leader_elect,
                            health_port=liveness_port or None, health_host=liveness_host,
                            metrics_port=metrics_port or None), verbose=verbose, json_logs=json_logs)


def _exit_on_bad_settings(json_logs: bool) -> None:
    """Placeholders or invalid values: one log line (JSON with --json-logs) naming the settings, exit 2, no traceback."""
    from tgi_operator.settings import startup_problem

    problem = startup_problem(os.environ)
    if problem:
        import kopf

        kopf.configure(log_format=kopf.LogFormat.JSON if json_logs else kopf.LogFormat.FULL)
        logging.getLogger("tgi_operator").error(problem)
        raise typer.Exit(2)
