"""The install manifests: kustomize builds them, the API server accepts them, and RBAC is least privilege for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tgi_operator.devenv import stack
from tgi_operator.devenv.testing import KubeCluster
from tgi_operator.settings import startup_problem

pytestmark = pytest.mark.integration
MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
BASE, CRD, EXAMPLE = MANIFESTS / "base", MANIFESTS / "crd", MANIFESTS / "overlays" / "example"
OPERATOR = f"system:serviceaccount:{stack.OPERATOR_NAMESPACE}:{stack.OPERATOR_SERVICE_ACCOUNT}"
KEEP = {
    "argocd.argoproj.io/sync-options": "Prune=false,Delete=false",
    "kustomize.toolkit.fluxcd.io/prune": "disabled",
    "helm.sh/resource-policy": "keep",
}


def build(cluster: KubeCluster, path: Path) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(cluster.kubectl("kustomize", str(path)).stdout))


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return doc


def container_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The literal values (not those from the downward API, such as POD_NAME)."""
    [container] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def can_i(cluster: KubeCluster, verb: str, resource: str, *scope: str, user: str) -> str:
    """`kubectl auth can-i`; "x/status" means the subresource (kubectl reads "x/y" as the object named y)."""
    resource, _, sub = resource.partition("/")
    flags = [f"--subresource={sub}"] if sub else []
    return cluster.kubectl("auth", "can-i", verb, resource, *flags, *scope, "--as", user, check=False).stdout.strip()


def test_the_crd_is_its_own_unit_and_kept_by_gitops_tools(cluster: KubeCluster) -> None:
    built = build(cluster, CRD)
    # The CRD, the admission policy holding its rules, and the delete protection (each policy with its binding).
    assert sorted((d["kind"], d["metadata"]["name"]) for d in built) == [
        ("CustomResourceDefinition", "tgiservices.tgi-operator.dev"),
        ("ValidatingAdmissionPolicy", "tgi-operator-crd-delete-protection"),
        ("ValidatingAdmissionPolicy", "tgiservices.tgi-operator.dev"),
        ("ValidatingAdmissionPolicyBinding", "tgi-operator-crd-delete-protection"),
        ("ValidatingAdmissionPolicyBinding", "tgiservices.tgi-operator.dev"),
    ]
    for doc in built:  # the rules and the protection are protected from prune too
        assert KEEP.items() <= doc["metadata"]["annotations"].items(), doc["kind"]
    assert "CustomResourceDefinition" not in {d["kind"] for d in build(cluster, BASE)}


def test_the_servicemonitor_component_scrapes_the_metrics_service(cluster: KubeCluster, tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(BASE, overlay)],  # kustomize takes relative paths only
        "components": [os.path.relpath(MANIFESTS / "components" / "servicemonitor", overlay)]}))
    built = build(cluster, overlay)
    monitor, service = one(built, "ServiceMonitor"), one(built, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "interval": "30s"}]
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]


def test_kustomize_builds_the_operator_install(cluster: KubeCluster) -> None:
    built = build(cluster, BASE)
    kinds = sorted(d["kind"] for d in built)
    assert kinds == ["ClusterRole", "ClusterRole", "ClusterRole", "ClusterRoleBinding", "Deployment", "Namespace",
                     "NetworkPolicy", "PodDisruptionBudget", "Role", "RoleBinding", "Service", "ServiceAccount"]
    deployment = one(built, "Deployment")
    # Metrics: a Service onto the container's metrics port, and a NetworkPolicy that admits only the scraper to it.
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert {"name": "metrics", "containerPort": 9090} in container["ports"] and "--metrics-port=9090" in container["args"]
    service, policy = one(built, "Service")["spec"], one(built, "NetworkPolicy")["spec"]
    assert service["selector"].items() <= pod["metadata"]["labels"].items()
    assert service["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    assert policy["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert policy["policyTypes"] == ["Ingress"]
    [rule] = policy["ingress"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}] and rule["from"][0]["namespaceSelector"]
    # Two replicas behind a Lease: a rollout adds the new pod before the old one goes (it waits for the Lease).
    assert deployment["spec"]["replicas"] == 2 and "--leader-elect" in container["args"]
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate",
                                              "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"] if "valueFrom" in e} == {
        "POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    [role] = [d for d in built if d["kind"] == "Role"]
    assert role["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                              "verbs": ["get", "create", "update"]}]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == stack.OPERATOR_SERVICE_ACCOUNT
    # The API server accepts all of it as written (server-side dry run; the namespace must exist for that).
    stack.install(cluster)
    cluster.kubectl("apply", "--server-side", "--dry-run=server", "-k", str(BASE))


def test_example_overlay_sets_every_installation_value(cluster: KubeCluster) -> None:
    built = build(cluster, EXAMPLE)
    [container] = one(built, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "europe-docker.pkg.dev/acme-ml-prod/tools/tgi-operator:0.1.0"
    env = container_env(built)
    assert env["TGI_OPERATOR_DEFAULT_PROJECT"] == "acme-ml-prod"
    assert env["TGI_OPERATOR_ALLOWED_PROJECTS"] == "acme-ml-prod,acme-ml-staging"
    assert env["TGI_OPERATOR_ALLOWED_REGIONS"] == "europe-west1,europe-west4"
    assert env["TGI_OPERATOR_ALLOWED_IMAGE_PREFIXES"].startswith("us-docker.pkg.dev/deeplearning-platform-release/")
    assert env["TGI_OPERATOR_ALLOWED_SERVICE_ACCOUNTS"].startswith("tgi-runtime@acme-ml-prod.iam.gserviceaccount.com")
    assert env["TGI_OPERATOR_CLUSTER_NAME"] == "gke-europe-west1-prod"
    assert env["TGI_OPERATOR_ALLOW_PUBLIC_SERVICES"] == "false"  # the base's values the overlay leaves alone stay
    pod_name = next(e for e in container["env"] if e["name"] == "POD_NAME")  # events name the pod that posted them
    assert pod_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    service_account = one(built, "ServiceAccount")["metadata"]["annotations"]
    assert service_account["iam.gke.io/gcp-service-account"] == "tgi-operator@acme-ml-prod.iam.gserviceaccount.com"
    # The operator would start with these settings, and refuses the base's placeholders.
    assert startup_problem(env) is None
    assert "TGI_OPERATOR_DEFAULT_PROJECT=PROJECT_ID" in (startup_problem(container_env(build(cluster, BASE))) or "")
    # The real API server accepts CRD + overlay as one server-side apply would send them.
    stack.install(cluster)  # the namespace must exist for a namespaced dry run
    both = cluster.kubectl("kustomize", str(CRD)).stdout + "\n---\n" + cluster.kubectl("kustomize", str(EXAMPLE)).stdout
    out = cluster.kubectl("apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", "-", input=both).stdout
    assert "deployment.apps/tgi-operator serverside-applied (server dry run)" in out
    assert "customresourcedefinition.apiextensions.k8s.io/tgiservices.tgi-operator.dev serverside-applied (server dry run)" in out


@pytest.mark.parametrize("json_logs", [True, False])
def test_placeholders_stop_the_operator_with_one_line(cluster: KubeCluster, json_logs: bool) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("TGI_OPERATOR_")}
    env |= container_env(build(cluster, BASE))  # exactly what the base Deployment would run with
    args = ["run", "--all-namespaces", *(["--json-logs"] if json_logs else [])]
    result = subprocess.run([sys.executable, "-m", "tgi_operator.cli", *args], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    message = yaml.safe_load(lines[0])["message"] if json_logs else lines[0]  # JSON is YAML
    for setting in ("TGI_OPERATOR_DEFAULT_PROJECT=PROJECT_ID", "TGI_OPERATOR_ALLOWED_PROJECTS=PROJECT_ID",
                    "TGI_OPERATOR_CLUSTER_NAME=CLUSTER_NAME", "manifests/overlays/example"):
        assert setting in message
    assert "Traceback" not in message


def test_an_invalid_setting_is_one_line_too() -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("TGI_OPERATOR_")}
    result = subprocess.run([sys.executable, "-m", "tgi_operator.cli", "run", "-A"], capture_output=True, text=True,
                            env={**env, "TGI_OPERATOR_RESYNC_SECONDS": "often"}, timeout=60)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "TGI_OPERATOR_RESYNC_SECONDS" in lines[0], lines


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("list", "tgiservices.tgi-operator.dev", "yes"),
        ("watch", "tgiservices.tgi-operator.dev", "yes"),
        ("patch", "tgiservices.tgi-operator.dev", "yes"),
        ("patch", "tgiservices.tgi-operator.dev/status", "yes"),
        ("update", "tgiservices.tgi-operator.dev/status", "no"),
        ("create", "events", "yes"),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io", "yes"),  # kopf notices a (re)created CRD
        ("delete", "tgiservices.tgi-operator.dev", "no"),  # users delete their objects, not the operator
        ("create", "tgiservices.tgi-operator.dev", "no"),
        ("update", "tgiservices.tgi-operator.dev", "no"),
        ("patch", "events", "no"),
        ("list", "namespaces", "yes"),  # a shard lists and watches the namespaces its selector matches
        ("watch", "namespaces", "yes"),
        ("get", "namespaces", "no"),
        ("update", "namespaces", "no"),
        ("get", "leases.coordination.k8s.io", "no"),  # only in its own namespace (below)
        ("get", "secrets", "no"),
        ("list", "pods", "no"),
        ("create", "serviceaccounts", "no"),
        ("update", "customresourcedefinitions.apiextensions.k8s.io", "no"),
    ],
)
def test_operator_rbac_is_least_privilege(cluster: KubeCluster, verb: str, resource: str, allowed: str) -> None:
    stack.install(cluster)
    assert can_i(cluster, verb, resource, "--all-namespaces", user=OPERATOR) == allowed


@pytest.mark.parametrize(("verb", "namespace", "allowed"), [
    ("get", stack.OPERATOR_NAMESPACE, "yes"), ("create", stack.OPERATOR_NAMESPACE, "yes"),
    ("update", stack.OPERATOR_NAMESPACE, "yes"), ("delete", stack.OPERATOR_NAMESPACE, "no"),
    ("list", stack.OPERATOR_NAMESPACE, "no"), ("get", "default", "no"), ("create", "default", "no"),
])
def test_the_operator_holds_a_lease_only_in_its_own_namespace(cluster: KubeCluster, verb: str, namespace: str,
                                                              allowed: str) -> None:
    stack.install(cluster)
    assert can_i(cluster, verb, "leases.coordination.k8s.io", "-n", namespace, user=OPERATOR) == allowed


EDITOR_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}


@pytest.mark.parametrize(("role", "builtin"), [("tgiservice-editor", "edit"), ("tgiservice-editor", "admin"),
                                               ("tgiservice-viewer", "view")])
def test_tenant_roles_aggregate_into_the_builtin_roles(cluster: KubeCluster, role: str, builtin: str) -> None:
    # The clusterrole-aggregation controller (kube-controller-manager) copies the rules into edit/admin/view; this
    # cluster runs none, so check that the built-in role's selector picks our role's labels, and test the rules
    # themselves by binding them (next test).
    stack.install(cluster)
    ours = yaml.safe_load(cluster.kubectl("get", "clusterrole", role, "-o", "yaml").stdout)["metadata"]["labels"]
    selectors = yaml.safe_load(cluster.kubectl("get", "clusterrole", builtin, "-o", "yaml").stdout)["aggregationRule"]
    assert any(s["matchLabels"].items() <= ours.items() for s in selectors["clusterRoleSelectors"])


@pytest.mark.parametrize("role", ["tgiservice-editor", "tgiservice-viewer"])
def test_tenant_roles_grant_exactly_their_verbs(cluster: KubeCluster, namespace: str, role: str) -> None:
    stack.install(cluster)
    user = f"tenant-{role}"
    cluster.kubectl("create", "rolebinding", user, f"--clusterrole={role}", f"--user={user}", "-n", namespace)
    allowed = EDITOR_VERBS if role == "tgiservice-editor" else {"get", "list", "watch"}

    def can(verb: str, resource: str, ns: str = namespace) -> bool:
        return can_i(cluster, verb, resource, "-n", ns, user=user) == "yes"

    for verb in [*EDITOR_VERBS, "deletecollection"]:
        assert can(verb, "tgiservices.tgi-operator.dev") == (verb in allowed), verb
    assert can("get", "tgiservices.tgi-operator.dev/status")
    for verb in ("update", "patch"):
        assert not can(verb, "tgiservices.tgi-operator.dev/status"), verb  # the status is the operator's
    assert not can("get", "tgiservices.tgi-operator.dev", ns="default")  # a RoleBinding grants one namespace
    assert not can("get", "secrets")
