"""What the test suite needs from a cluster: kubectl and a Python client bound to one kubeconfig."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import kubernetes.client as k8s
import kubernetes.config
from kubernetes.client.rest import ApiException

from tgi_operator.devenv.cluster import DevCluster


class KubectlError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return f"kubectl {' '.join(self.cmd[1:])} exited {self.returncode}: {self.stderr.strip()}"


@dataclass
class KubeCluster:
    kubeconfig: Path
    # Our dev cluster runs no controller-manager, so nothing finalizes deleted namespaces for us.
    runs_namespace_controller: bool = True

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = ["kubectl", f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, argv, result.stdout, result.stderr)
        return result

    def api_client(self, kubeconfig: Path | None = None) -> k8s.ApiClient:
        return kubernetes.config.new_client_from_config(config_file=str(kubeconfig or self.kubeconfig))

    @cached_property
    def _namespaced_resources(self) -> list[str]:
        out = self.kubectl("api-resources", "--namespaced=true", "--verbs=list,delete", "-o", "name").stdout
        return [r for r in out.split() if r not in ("events", "events.events.k8s.io")]


def delete_namespace(cluster: KubeCluster, name: str) -> None:
    """Delete a namespace and, where no namespace controller runs, do its job: empty it, then finalize it."""
    if not cluster.runs_namespace_controller:
        # --wait=false: objects held by a finalizer (e.g. a stopped operator's) must not hang the suite.
        cluster.kubectl("delete", ",".join(cluster._namespaced_resources), "--all", "-n", name,
                        "--wait=false", "--ignore-not-found", check=False)
    cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")
    if cluster.runs_namespace_controller:
        return
    core = k8s.CoreV1Api(cluster.api_client())
    try:
        namespace = core.read_namespace(name)
        namespace.spec.finalizers = []
        core.replace_namespace_finalize(name, namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise


@contextmanager
def started_cluster(state_dir: Path) -> Iterator[KubeCluster]:
    """A dev cluster for the duration of the block; stopped and removed afterwards."""
    dev = DevCluster(state_dir)
    dev.up()
    try:
        yield KubeCluster(kubeconfig=dev.kubeconfig, runs_namespace_controller=False)
    finally:
        dev.down()
