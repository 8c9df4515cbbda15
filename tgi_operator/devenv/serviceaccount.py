"""A kubeconfig for a ServiceAccount, so a process (the operator, a test) runs under real RBAC."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

import kubernetes.client as k8s
import kubernetes.config
import yaml
from kubernetes.client.rest import ApiException

from tgi_operator.devenv.kubeconfig import read_server


def _core_api(admin_kubeconfig: Path) -> k8s.CoreV1Api:
    return k8s.CoreV1Api(kubernetes.config.new_client_from_config(config_file=str(admin_kubeconfig)))


def ensure_service_account(admin_kubeconfig: Path, namespace: str, name: str) -> None:
    core = _core_api(admin_kubeconfig)
    try:
        core.create_namespaced_service_account(namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name)))
    except ApiException as exc:
        if exc.status != 409:  # already there is fine
            raise


def service_account_token(admin_kubeconfig: Path, namespace: str, name: str, expiration_seconds: int = 86400,
                          bound_secret: str | None = None) -> str:
    """A bound token from the TokenRequest API (what a Pod's projected volume would receive). `bound_secret`: the
    token dies with that Secret (of the same namespace), as a Pod's token dies with the Pod: a rotation, on demand."""
    bound = None
    if bound_secret:
        secret = _core_api(admin_kubeconfig).read_namespaced_secret(bound_secret, namespace)
        bound = k8s.V1BoundObjectReference(api_version="v1", kind="Secret", name=bound_secret, uid=secret.metadata.uid)
    request = k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec(
        audiences=[], expiration_seconds=expiration_seconds, bound_object_ref=bound))
    response = _core_api(admin_kubeconfig).create_namespaced_service_account_token(name, namespace, request)
    return response.status.token


def service_account_kubeconfig(
    admin_kubeconfig: Path, namespace: str, name: str, out: Path, expiration_seconds: int = 86400,
    bound_secret: str | None = None,
) -> Path:
    """Create the ServiceAccount if needed and write a kubeconfig that authenticates as it."""
    ensure_service_account(admin_kubeconfig, namespace, name)
    token = service_account_token(admin_kubeconfig, namespace, name, expiration_seconds, bound_secret)
    server, ca_data = read_server(admin_kubeconfig)
    user = f"system:serviceaccount:{namespace}:{name}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": {"server": server, "certificate-authority-data": ca_data}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": "cluster", "user": user, "namespace": namespace}}],
        "current-context": name,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    out.chmod(0o600)
    return out


def ca_bundle_file(kubeconfig: Path) -> Path:
    """The cluster CA as a file (for plain HTTPS clients such as `requests`)."""
    _, ca_data = read_server(kubeconfig)
    handle = tempfile.NamedTemporaryFile("wb", suffix=".crt", delete=False)
    handle.write(base64.b64decode(ca_data))
    handle.close()
    return Path(handle.name)
