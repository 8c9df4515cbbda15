"""Deterministic names: the Cloud Run service id and owner labels of a TGIService.

The id is a pure function of namespace and name, so a retried create can never make a second service.
"""

from __future__ import annotations

import hashlib
import re

MAX_SERVICE_ID = 49  # Cloud Run: fewer than 50 characters
OWNER_LABELS = ("tgi-operator-namespace", "tgi-operator-name")
MANAGED_BY = ("managed-by", "tgi-operator")


def service_id(namespace: str, name: str) -> str:
    """`<namespace>-<name>` made Cloud Run-safe: starts with a letter, [a-z0-9-], < 50 chars, no trailing hyphen.

    When anything had to change (dots, a leading digit, the length) a short hash of the original pair keeps
    distinct objects distinct.
    """
    raw = f"{namespace}-{name}"
    cleaned = re.sub(r"[^a-z0-9-]", "-", raw.lower())
    if not cleaned[0].isalpha():
        cleaned = "t" + cleaned
    if cleaned == raw and len(cleaned) <= MAX_SERVICE_ID:
        return cleaned
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:6]
    return f"{cleaned[: MAX_SERVICE_ID - 7].rstrip('-')}-{digest}"


def label_value(text: str) -> str:
    """A GCP label value: lowercase letters, digits, '_' and '-', at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "_", text.lower())[:63]


def owner_labels(namespace: str, name: str) -> dict[str, str]:
    return {
        MANAGED_BY[0]: MANAGED_BY[1],
        OWNER_LABELS[0]: label_value(namespace),
        OWNER_LABELS[1]: label_value(name),
    }


def is_owned_by(labels: dict[str, str], namespace: str, name: str) -> bool:
    expected = owner_labels(namespace, name)
    return all(labels.get(key) == value for key, value in expected.items())


def invoker_account_id(namespace: str, name: str) -> str:
    """IAM service-account id (6-30 chars, [a-z][a-z0-9-]*[a-z0-9]) for a TGIService's invoker account."""
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:8]
    stem = re.sub(r"[^a-z0-9-]", "-", f"inv-{name}".lower())[:21].rstrip("-")
    return f"{stem}-{digest}"
