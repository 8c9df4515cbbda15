"""Deterministic names: the Cloud Run service id, owner labels and invoker account id of a TGIService.

The id is a pure function of namespace and name, so a retried create can never make a second service; it always
ends in 80 bits of a hash of `namespace/name`, so `team-a/llama` and `team/a-llama` never share one, and no tenant
can search for a namespace/name whose id is another team's (the 24-bit hash of the first version fell in seconds;
services created under it keep their id: see `recorded_target` in render.py).
"""

from __future__ import annotations

import base64
import hashlib
import re

MAX_SERVICE_ID = 49  # Cloud Run: fewer than 50 characters
MANAGED_BY = ("managed-by", "tgi-operator")
NAMESPACE_LABEL, NAME_LABEL, CLUSTER_LABEL = "tgi-operator-namespace", "tgi-operator-name", "tgi-operator-cluster"
OWNER_LABELS = (NAMESPACE_LABEL, NAME_LABEL, CLUSTER_LABEL)
DEFAULT_CLUSTER = "default"


SERVICE_HASH_CHARS = 16  # base32: 80 bits


def _sha256(namespace: str, name: str) -> bytes:
    return hashlib.sha256(f"{namespace}/{name}".encode()).digest()


def _digest(namespace: str, name: str, length: int) -> str:
    return _sha256(namespace, name).hex()[:length]


def _base32_digest(namespace: str, name: str) -> str:
    return base64.b32encode(_sha256(namespace, name)).decode().lower()[:SERVICE_HASH_CHARS]  # a-z, 2-7: Cloud Run-safe


def _readable(namespace: str, name: str, room: int) -> str:
    cleaned = re.sub(r"[^a-z0-9-]", "-", f"{namespace}-{name}".lower())
    if not cleaned[0].isalpha():
        cleaned = "t" + cleaned
    return cleaned[:room].rstrip("-")


def service_id(namespace: str, name: str) -> str:
    """`<namespace>-<name>-<hash>` made Cloud Run-safe: starts with a letter, [a-z0-9-], < 50 chars, no trailing
    hyphen. The readable part is truncated when long; the hash keeps distinct objects distinct."""
    return f"{_readable(namespace, name, MAX_SERVICE_ID - SERVICE_HASH_CHARS - 1)}-{_base32_digest(namespace, name)}"


def legacy_service_id(namespace: str, name: str) -> str:
    """The id the first version gave (24-bit hex hash): only ever used for services it already created."""
    return f"{_readable(namespace, name, MAX_SERVICE_ID - 7)}-{_digest(namespace, name, 6)}"


def label_value(text: str) -> str:
    """A GCP label value: lowercase letters, digits, '_' and '-', at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "_", text.lower())[:63]


def owner_labels(namespace: str, name: str, cluster: str = DEFAULT_CLUSTER) -> dict[str, str]:
    """Labels that claim a Cloud Run service for one TGIService of one cluster (two clusters sharing a project
    must not fight over a service: give each operator its own TGI_OPERATOR_CLUSTER_NAME)."""
    return {
        MANAGED_BY[0]: MANAGED_BY[1],
        NAMESPACE_LABEL: label_value(namespace),
        NAME_LABEL: label_value(name),
        CLUSTER_LABEL: label_value(cluster),
    }


def is_owned_by(labels: dict[str, str], namespace: str, name: str, cluster: str = DEFAULT_CLUSTER) -> bool:
    expected = owner_labels(namespace, name, cluster)
    return all(labels.get(key) == value for key, value in expected.items())


def invoker_account_id(namespace: str, name: str) -> str:
    """IAM service-account id (6-30 chars, [a-z][a-z0-9-]*[a-z0-9]) for a TGIService's invoker account; 48 bits of
    hash make a deliberate collision with another tenant's account impractical."""
    stem = re.sub(r"[^a-z0-9-]", "-", f"inv-{name}".lower())[:17].rstrip("-")
    return f"{stem}-{_digest(namespace, name, 12)}"
