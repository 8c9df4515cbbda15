"""Pure: which owned fields of a Cloud Run service differ from what the spec renders.

Only what render.py sets is compared; fields Cloud Run fills or defaults (uid, etag, timestamps, generation,
conditions, the default service account when none is asked for, client annotations, ...) are ignored, and so is
launch_stage, which reads back as the stage the features in use need (a GPU that goes GA reads GA although BETA was
sent): it is sent with every update, never a reason for one. So a
freshly read service that matches the spec yields no difference and causes no write.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.cloud import run_v2

from tgi_operator.naming import MANAGED_BY, OWNER_LABELS
from tgi_operator.quantity import parse_quantity

# Annotation/label namespaces only Cloud Run may write (v2 refuses them in a request).
RESERVED_PREFIXES = ("run.googleapis.com/", "cloud.googleapis.com/", "serving.knative.dev/", "autoscaling.knative.dev/")


def copy(service: run_v2.Service) -> run_v2.Service:
    """A deep copy (proto-plus shares the protobuf when one message is built from another)."""
    return run_v2.Service.deserialize(run_v2.Service.serialize(service))


def _drop_reserved(mapping) -> None:
    for key in [k for k in mapping if k.startswith(RESERVED_PREFIXES)]:
        mapping.pop(key)


def _container(service: run_v2.Service) -> run_v2.Container:
    containers = list(service.template.containers)
    return containers[0] if containers else run_v2.Container()


def _env(container: run_v2.Container) -> list[tuple[str, str, str, str]]:
    out = []
    for e in container.env:
        ref = e.value_source.secret_key_ref
        out.append((e.name, e.value, ref.secret, ref.version))
    return out


def _limits(container: run_v2.Container) -> dict[str, Any]:
    """Limits by value, not spelling: Cloud Run may answer "8000m" for "8" or "32768Mi" for "32Gi"."""
    out: dict[str, Any] = {}
    for key, value in container.resources.limits.items():
        try:
            out[key] = parse_quantity(value)
        except ValueError:
            out[key] = value
    return out


def _probe(container: run_v2.Container) -> tuple[Any, ...]:
    p = container.startup_probe
    return (p.http_get.path, p.http_get.port, p.initial_delay_seconds, p.period_seconds, p.timeout_seconds, p.failure_threshold)


def _scaling(service: run_v2.Service) -> tuple[str, int]:
    """Service-level scaling mode and manual instance count; an unspecified mode is Cloud Run's automatic one."""
    s, mode = service.scaling, run_v2.ServiceScaling.ScalingMode
    if s.scaling_mode == mode.MANUAL:
        return "MANUAL", s.manual_instance_count
    return "AUTOMATIC", 0




OWNED_ANNOTATION_PREFIX = "tgi-operator.dev/"


def _owned_keys(desired, observed) -> list[str]:
    """Annotation keys we own: what we set, and anything under our prefix (a stale one must go)."""
    return sorted(set(desired) | {k for k in observed if k.startswith(OWNED_ANNOTATION_PREFIX)})


OwnedKeys = tuple[Iterable[str], Iterable[str], Iterable[str]]  # the label, annotation and template label keys


def owned_keys(desired: run_v2.Service) -> OwnedKeys:
    return desired.labels, desired.annotations, desired.template.labels


def owned_fields(service: run_v2.Service, keys: OwnedKeys) -> dict[str, Any]:
    """The fields the operator owns, flattened to comparable values. Labels and annotations: only the `keys` the
    desired service sets (others belong to whoever added them)."""
    label_keys, annotation_keys, template_label_keys = keys
    container, template = _container(service), service.template
    return {
        "labels": {k: service.labels.get(k) for k in label_keys},
        "annotations": {k: service.annotations.get(k) for k in _owned_keys(annotation_keys, service.annotations)},
        "description": service.description,
        "ingress": service.ingress,
        "invokerIamDisabled": service.invoker_iam_disabled,
        "scaling": _scaling(service),
        "template.containers": len(template.containers),
        "template.labels": {k: template.labels.get(k) for k in template_label_keys},
        "template.scaling.minInstanceCount": template.scaling.min_instance_count,
        "template.scaling.maxInstanceCount": template.scaling.max_instance_count,
        "template.maxInstanceRequestConcurrency": template.max_instance_request_concurrency,
        "template.timeout": template.timeout.total_seconds() if "timeout" in template else None,
        "template.nodeSelector.accelerator": template.node_selector.accelerator,
        "template.gpuZonalRedundancyDisabled": template.gpu_zonal_redundancy_disabled,
        "template.containers[0].image": container.image,
        "template.containers[0].args": list(container.args),
        "template.containers[0].env": _env(container),
        "template.containers[0].ports": [p.container_port for p in container.ports],
        "template.containers[0].resources.limits": _limits(container),
        "template.containers[0].resources.cpuIdle": container.resources.cpu_idle,
        "template.containers[0].resources.startupCpuBoost": container.resources.startup_cpu_boost,
        "template.containers[0].startupProbe": _probe(container),
    }


def diff(desired: run_v2.Service, observed: run_v2.Service) -> list[str]:
    """The owned fields whose observed value differs from the desired one (empty: nothing to update)."""
    return changes(owned_fields(desired, owned_keys(desired)), desired.template.service_account, observed)


def changes(wanted: dict[str, Any], service_account: str, observed: run_v2.Service) -> list[str]:
    """diff() from what it needs of the desired service: its owned fields (`wanted`) and its runtime identity."""
    have = owned_fields(observed, (wanted["labels"], wanted["annotations"], wanted["template.labels"]))
    changed = [field for field, value in wanted.items() if have[field] != value]
    # An unset runtime identity means "Cloud Run's default", which the server fills in.
    if service_account and observed.template.service_account != service_account:
        changed.append("template.serviceAccount")
    return changed


def merge_for_update(desired: run_v2.Service, observed: run_v2.Service) -> run_v2.Service:
    """What to send in UpdateService: the desired service, keeping labels and annotations others own
    and the observed etag (so a concurrent change is refused rather than overwritten)."""
    update = copy(desired)
    update.name = observed.name
    update.etag = observed.etag
    for key, value in observed.labels.items():
        update.labels.setdefault(key, value)
    for key, value in observed.annotations.items():
        if not key.startswith(OWNED_ANNOTATION_PREFIX):
            update.annotations.setdefault(key, value)
    _drop_reserved(update.labels)
    _drop_reserved(update.annotations)
    return update


def _resendable(observed: run_v2.Service) -> run_v2.Service:
    """The observed service as it can be sent back: without Cloud Run's reserved metadata, and without a
    revision name someone may have set. Resending a name risks 409 "Revision named ... with different configuration
    already exists" forever; unset, Cloud Run names the revision itself. (Where someone had named the serving
    revision, that may roll out one new revision, the stricter reading the emulator follows: see its ledger.)"""
    update = copy(observed)
    _drop_reserved(update.labels)
    _drop_reserved(update.annotations)
    update.template.revision = ""
    return update


def with_annotation(observed: run_v2.Service, key: str, value: str) -> run_v2.Service:
    """The observed service with one service-level annotation changed: a metadata-only update (no new revision)."""
    update = _resendable(observed)
    update.annotations[key] = value
    return update


def claimed(observed: run_v2.Service, labels: dict[str, str], annotations: dict[str, str]) -> run_v2.Service:
    """The observed service marked as this object's (owner labels, uid, invoker record): a metadata-only update."""
    update = _resendable(observed)
    update.labels.update(labels)
    update.annotations.update(annotations)
    return update


def without_owner(observed: run_v2.Service) -> run_v2.Service:
    """The service as Retain leaves it: the same, minus the service-level labels and annotations that claimed it.
    The revision template is left as it is: changing it would roll out a new revision (a GPU cold start)."""
    released = _resendable(observed)
    for key in (MANAGED_BY[0], *OWNER_LABELS):
        released.labels.pop(key, None)
    for key in [k for k in released.annotations if k.startswith(OWNED_ANNOTATION_PREFIX)]:
        released.annotations.pop(key)
    return released
