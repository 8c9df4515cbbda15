"""Shared fixtures: one real control plane per test session, one namespace per test.

`cluster` starts kube-apiserver + etcd from the cached binaries (see hack/build-testenv.sh),
or uses the cluster named by TGI_TEST_KUBECONFIG (kind, GKE) when that is set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tgi_operator.devenv.testing import KubeCluster, delete_namespace, started_cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    existing = os.environ.get("TGI_TEST_KUBECONFIG")
    if existing:
        yield KubeCluster(kubeconfig=Path(existing))
        return
    with started_cluster(tmp_path_factory.mktemp("dev-cluster")) as kube:
        yield kube


@pytest.fixture
def namespace(cluster: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, removed afterwards (contents first, then the namespace)."""
    base = request.node.name.lower().replace("_", "-")
    name = "t-" + "".join(c for c in base if c.isalnum() or c == "-")[:40].strip("-") + "-" + uuid.uuid4().hex[:6]
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        release_tgiservices(cluster, name)
        delete_namespace(cluster, name)


def release_tgiservices(cluster: KubeCluster, namespace: str) -> None:
    """Drop the finalizers of a test's TGIServices: its operator (and emulator) may be gone already, and an object
    left Terminating would be picked up by the next module's operator, against another emulator, and would keep
    the CRD from ever being deleted (tests that check a deletion check it themselves, before this). Deleted first,
    so that a running operator does not put its finalizer back."""
    cluster.kubectl("delete", "tgiservices", "--all", "-n", namespace, "--wait=false", check=False)
    listed = cluster.kubectl("get", "tgiservices", "-n", namespace, "-o", "name", check=False)
    for ref in listed.stdout.split() if listed.returncode == 0 else []:
        cluster.kubectl("patch", ref, "-n", namespace, "--type=merge", "-p", '{"metadata":{"finalizers":null}}',
                        check=False)
