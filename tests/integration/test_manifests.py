"""The install manifests: kustomize builds them, and the operator's RBAC is least privilege for real."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tgi_operator.devenv import stack
from tgi_operator.devenv.testing import KubeCluster

pytestmark = pytest.mark.integration
BASE = Path(__file__).resolve().parents[2] / "manifests" / "base"
OPERATOR = f"system:serviceaccount:{stack.OPERATOR_NAMESPACE}:{stack.OPERATOR_SERVICE_ACCOUNT}"


def test_kustomize_builds_the_whole_install(cluster: KubeCluster) -> None:
    built = list(yaml.safe_load_all(cluster.kubectl("kustomize", str(BASE)).stdout))
    kinds = sorted(d["kind"] for d in built)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Deployment", "Namespace", "ServiceAccount"]
    deployment = next(d for d in built if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == stack.OPERATOR_SERVICE_ACCOUNT
    # The API server accepts all of it as written (server-side dry run; the namespace must exist for that).
    stack.install(cluster)
    cluster.kubectl("apply", "--dry-run=server", "-k", str(BASE))


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("watch", "tgiservices.tgi-operator.dev", "yes"),
        ("patch", "tgiservices.tgi-operator.dev", "yes"),
        ("patch", "tgiservices.tgi-operator.dev/status", "yes"),
        ("create", "events", "yes"),
        ("delete", "tgiservices.tgi-operator.dev", "no"),  # users delete their objects, not the operator
        ("create", "tgiservices.tgi-operator.dev", "no"),
        ("get", "secrets", "no"),
        ("list", "pods", "no"),
        ("create", "serviceaccounts", "no"),
        ("update", "customresourcedefinitions.apiextensions.k8s.io", "no"),
    ],
)
def test_operator_rbac_is_least_privilege(cluster: KubeCluster, verb: str, resource: str, allowed: str) -> None:
    stack.install(cluster)
    answer = cluster.kubectl("auth", "can-i", verb, resource, "--all-namespaces", "--as", OPERATOR, check=False).stdout.strip()
    assert answer == allowed
