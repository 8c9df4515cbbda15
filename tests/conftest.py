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
        delete_namespace(cluster, name)
