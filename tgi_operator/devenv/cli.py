"""`tgi-operator dev-cluster`: a local kube-apiserver + etcd for development, tests and the demo."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from tgi_operator.devenv.binaries import BinariesUnavailable
from tgi_operator.devenv.cluster import ClusterStartError, DevCluster
from tgi_operator.devenv.serviceaccount import service_account_kubeconfig

dev_cluster_app = typer.Typer(help="A local control plane (kube-apiserver + etcd, no nodes) on loopback.", no_args_is_help=True)
err = Console(stderr=True)

StateDir = typer.Option(Path(".dev-cluster"), "--state-dir", help="Folder holding the cluster's data, certificates, logs and kubeconfig.")


@dev_cluster_app.command()
def up(state_dir: Path = StateDir, timeout: float = typer.Option(120.0, help="Seconds to wait for /readyz.")) -> None:
    """Start the cluster in the background (a no-op when it already runs) and print the KUBECONFIG line."""
    cluster = DevCluster(state_dir)
    try:
        started = cluster.up(timeout=timeout)
    except (BinariesUnavailable, ClusterStartError) as exc:
        err.print(f"[red]dev-cluster up failed:[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(1) from exc
    state = cluster.state()
    err.print(f"{'started' if started else 'already running'}: kube-apiserver {state.server} (state in {cluster.state_dir})")
    print(f"export KUBECONFIG={cluster.kubeconfig}")


@dev_cluster_app.command()
def down(state_dir: Path = StateDir) -> None:
    """Stop the cluster and remove its state dir."""
    DevCluster(state_dir).down()
    err.print(f"stopped and removed {Path(state_dir).resolve()}")


@dev_cluster_app.command()
def status(state_dir: Path = StateDir) -> None:
    """Say whether the cluster runs; exit 1 when it does not."""
    cluster = DevCluster(state_dir)
    if not cluster.running():
        print("not running")
        raise typer.Exit(1)
    print(f"running: {cluster.state().server}  KUBECONFIG={cluster.kubeconfig}")


@dev_cluster_app.command("service-account-kubeconfig")
def sa_kubeconfig(
    name: str = typer.Argument(..., help="ServiceAccount name (created when absent)."),
    namespace: str = typer.Option("default", "-n", "--namespace"),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the kubeconfig."),
    state_dir: Path = StateDir,
) -> None:
    """Write a kubeconfig that authenticates as a ServiceAccount (TokenRequest), to run a process under its RBAC."""
    cluster = DevCluster(state_dir)
    if not cluster.running():
        err.print("the dev cluster is not running: start it with `tgi-operator dev-cluster up`")
        raise typer.Exit(1)
    service_account_kubeconfig(cluster.kubeconfig, namespace, name, output)
    print(f"export KUBECONFIG={output.resolve()}")
