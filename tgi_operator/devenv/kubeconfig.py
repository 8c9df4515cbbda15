"""Writing kubeconfig files: the admin's (client certificate) and a ServiceAccount's (bound token)."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, *, server: str, ca_cert: Path, user: str, credentials: dict[str, str]) -> Path:
    """A self-contained kubeconfig (certificates inlined) with one cluster, user and context."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "tgi-dev", "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": f"{user}@tgi-dev", "context": {"cluster": "tgi-dev", "user": user}}],
        "current-context": f"{user}@tgi-dev",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def admin_credentials(cert: Path, key: Path) -> dict[str, str]:
    return {"client-certificate-data": _b64(cert), "client-key-data": _b64(key)}


def read_server(kubeconfig: Path) -> tuple[str, str]:
    """(server URL, base64 CA data) of a kubeconfig's current context."""
    config = yaml.safe_load(kubeconfig.read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])["context"]
    cluster = next(c for c in config["clusters"] if c["name"] == context["cluster"])["cluster"]
    return cluster["server"], cluster.get("certificate-authority-data", "")
