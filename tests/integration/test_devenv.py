"""The local control plane is a real Kubernetes API server: version, namespaces, RBAC, isolation, lifecycle."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import kubernetes.client as k8s
import pytest
import requests

from tgi_operator.devenv.cluster import DevCluster
from tgi_operator.devenv.kubeconfig import read_server
from tgi_operator.devenv.serviceaccount import ca_bundle_file, service_account_kubeconfig, service_account_token
from tgi_operator.devenv.testing import KubeCluster

pytestmark = pytest.mark.integration
HACK_GO_MOD = Path(__file__).resolve().parents[2] / "hack" / "k8s" / "go.mod"


def pinned_kubernetes_version() -> str:
    return re.search(r"^\s*k8s\.io/kubernetes (v[\d.]+)\s*$", HACK_GO_MOD.read_text(), re.M).group(1)


def gone(pid: int) -> bool:
    """No such process, or only a zombie waiting to be reaped by init."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] == "Z"
    except FileNotFoundError:
        return True


def test_server_reports_the_pinned_version(cluster: KubeCluster) -> None:
    if os.environ.get("TGI_TEST_KUBECONFIG"):
        pytest.skip("an external cluster runs its own version")
    out = cluster.kubectl("version", "-o", "json").stdout
    assert f'"gitVersion": "{pinned_kubernetes_version()}"' in out


def test_namespace_through_kubectl_and_python_client(cluster: KubeCluster, namespace: str) -> None:
    core = k8s.CoreV1Api(cluster.api_client())
    assert core.read_namespace(namespace).status.phase == "Active"  # made by the fixture with kubectl
    name = f"{namespace}-py"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name, labels={"made-by": "python"})))
    try:
        listed = cluster.kubectl("get", "namespace", name, "-o", "jsonpath={.metadata.labels.made-by}").stdout
        assert listed == "python"
    finally:
        core.delete_namespace(name)


def test_rbac_is_enforced_for_a_service_account(cluster: KubeCluster, namespace: str, tmp_path: Path) -> None:
    sa = "reader"
    sa_kubeconfig = service_account_kubeconfig(cluster.kubeconfig, namespace, sa, tmp_path / "sa.kubeconfig")
    who = f"system:serviceaccount:{namespace}:{sa}"

    # Without a binding: denied, by impersonation and by a real request with the SA's own token.
    assert cluster.kubectl("auth", "can-i", "list", "secrets", "-n", namespace, "--as", who, check=False).stdout.strip() == "no"
    denied = cluster.kubectl("get", "secrets", "-n", namespace, kubeconfig=sa_kubeconfig, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
    server, _ = read_server(cluster.kubeconfig)
    token = service_account_token(cluster.kubeconfig, namespace, sa)
    raw = requests.get(f"{server}/api/v1/namespaces/{namespace}/secrets", headers={"Authorization": f"Bearer {token}"},
                       verify=str(ca_bundle_file(cluster.kubeconfig)), timeout=10)
    assert raw.status_code == 403
    assert raw.json()["details"]["kind"] == "secrets"

    cluster.kubectl("create", "role", "secret-reader", "--verb=list,get", "--resource=secrets", "-n", namespace)
    cluster.kubectl("create", "rolebinding", "secret-reader", "--role=secret-reader", f"--serviceaccount={namespace}:{sa}", "-n", namespace)

    assert cluster.kubectl("auth", "can-i", "list", "secrets", "-n", namespace, "--as", who, check=False).stdout.strip() == "yes"
    cluster.kubectl("get", "secrets", "-n", namespace, kubeconfig=sa_kubeconfig)
    allowed = requests.get(f"{server}/api/v1/namespaces/{namespace}/secrets", headers={"Authorization": f"Bearer {token}"},
                           verify=str(ca_bundle_file(cluster.kubeconfig)), timeout=10)
    assert allowed.status_code == 200
    # The binding is namespaced: other namespaces stay closed.
    assert cluster.kubectl("auth", "can-i", "list", "secrets", "-n", "default", "--as", who, check=False).stdout.strip() == "no"


@pytest.fixture
def binaries() -> Path:
    from tgi_operator.devenv.binaries import find_binaries

    if os.environ.get("TGI_TEST_KUBECONFIG"):
        pytest.skip("lifecycle tests need the local binaries")
    return find_binaries()


def test_two_state_dirs_are_two_clusters_and_down_leaves_nothing(binaries: Path, tmp_path: Path) -> None:
    first, second = DevCluster(tmp_path / "a", binaries), DevCluster(tmp_path / "b", binaries)
    try:
        assert first.up() and second.up()
        assert first.up() is False  # already running: a no-op
        assert first.state().apiserver_port != second.state().apiserver_port
        KubeCluster(first.kubeconfig).kubectl("create", "namespace", "only-in-a")
        in_b = KubeCluster(second.kubeconfig).kubectl("get", "namespace", "only-in-a", check=False)
        assert in_b.returncode != 0 and "NotFound" in in_b.stderr
        pids = [first.state().etcd_pid, first.state().apiserver_pid]
    finally:
        first.down()
        second.down()
    assert all(gone(pid) for pid in pids)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_up_fails_clearly_when_a_binary_is_missing(tmp_path: Path) -> None:
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "etcd").symlink_to("/bin/true")
    env = {**os.environ, "KUBEBUILDER_ASSETS": str(assets)}
    result = subprocess.run(
        [sys.executable, "-m", "tgi_operator.cli", "dev-cluster", "up", "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert result.returncode == 1
    assert "kube-apiserver" in result.stderr and "KUBEBUILDER_ASSETS" in result.stderr


def test_up_fails_clearly_when_the_build_cannot_run(tmp_path: Path) -> None:
    """No Go toolchain on PATH and nothing cached: the error says what to install."""
    env = {k: v for k, v in os.environ.items() if k != "KUBEBUILDER_ASSETS"}
    env.update(PATH="/usr/bin:/bin", TGI_OPERATOR_CACHE=str(tmp_path / "empty-cache"))
    fake_go_free_path = tmp_path / "bin"
    fake_go_free_path.mkdir()
    for tool in ("bash", "awk", "cut", "mkdir", "dirname"):
        (fake_go_free_path / tool).symlink_to(subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip())
    env["PATH"] = str(fake_go_free_path)
    result = subprocess.run(
        [sys.executable, "-m", "tgi_operator.cli", "dev-cluster", "up", "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert result.returncode == 1
    assert "go is not on PATH" in result.stderr


def test_a_crashed_cluster_is_restarted_by_up(binaries: Path, tmp_path: Path) -> None:
    cluster = DevCluster(tmp_path / "c", binaries)
    try:
        cluster.up()
        os.kill(cluster.state().apiserver_pid, 9)
        deadline = time.monotonic() + 10
        while cluster.running() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not cluster.running()
        assert cluster.up() is True
        assert KubeCluster(cluster.kubeconfig).kubectl("get", "--raw", "/readyz").stdout == "ok"
    finally:
        cluster.down()
