"""A Cloud Run Service as data: its user fields, the defaults Cloud Run fills in, and small helpers.

Shared by services.py (the RPCs) and reconcile.py (revisions, deletion); nothing here touches the store.
"""

from __future__ import annotations

import base64
import datetime
import secrets
from typing import Any

from google.cloud import run_v2
from google.protobuf import duration_pb2

from tgi_operator.gpus import GPU_TYPES
from tgi_operator.emulator import rules

State_ = run_v2.Condition.State
ScalingMode = run_v2.ServiceScaling.ScalingMode
DEFAULT_CONCURRENCY = 80
DEFAULT_PORT = 8080
# Fields the caller may set; everything else on a Service is output only.
USER_FIELDS = (
    "description", "labels", "annotations", "client", "client_version", "ingress", "launch_stage",
    "binary_authorization", "template", "traffic", "scaling", "invoker_iam_disabled", "default_uri_disabled",
    "custom_audiences", "multi_region_settings", "iap_enabled", "build_config", "threat_detection_enabled",
)  # fmt: skip


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def new_etag() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(12)).decode()


def clone(service: run_v2.Service) -> run_v2.Service:
    return run_v2.Service.deserialize(run_v2.Service.serialize(service))


def spec(service: run_v2.Service) -> run_v2.Service:
    """Only the user-settable part of a service: what decides whether a write changed anything."""
    copy = clone(service)
    pb = run_v2.Service.pb(copy)
    for f in pb.DESCRIPTOR.fields:
        if f.name not in USER_FIELDS:
            pb.ClearField(f.name)
    return copy


def template_json(template: run_v2.RevisionTemplate) -> str:
    """A revision's template in a canonical form, to tell whether two revisions are configured alike."""
    return run_v2.RevisionTemplate.to_json(template, sort_keys=True, indent=None)


def ingress_container(template: run_v2.RevisionTemplate) -> run_v2.Container:
    with_ports = [c for c in template.containers if c.ports]
    return with_ports[0] if with_ports else template.containers[0]


def keep_scaling(desired: run_v2.Service, stored: run_v2.Service) -> None:
    """An update whose scaling_mode is SCALING_MODE_UNSPECIFIED keeps the stored mode and manual instance count
    (assumption, the stricter reading of ServiceScaling in google/cloud/run/v2/service.proto: a client that resumes
    from MANUAL must say AUTOMATIC)."""
    if desired.scaling.scaling_mode != ScalingMode.SCALING_MODE_UNSPECIFIED:
        return
    desired.scaling.scaling_mode = stored.scaling.scaling_mode
    if "manual_instance_count" not in desired.scaling and "manual_instance_count" in stored.scaling:
        desired.scaling.manual_instance_count = stored.scaling.manual_instance_count


def apply_defaults(service: run_v2.Service, project: str) -> None:
    """The defaults Cloud Run fills in and returns on reads (the operator's diff must ignore them)."""
    if not service.ingress:
        service.ingress = run_v2.IngressTraffic.INGRESS_TRAFFIC_ALL
    # service.proto, launch_stage: "On read (or output), describes whether the resource uses preview features": a
    # preview GPU reads BETA, anything else GA, whatever the request said (it only opts in on input).
    accelerator = service.template.node_selector.accelerator if "node_selector" in service.template else ""
    gpu = GPU_TYPES.get(accelerator)
    service.launch_stage = gpu.launch_stage if gpu is not None else "GA"
    if not service.scaling.scaling_mode:
        service.scaling.scaling_mode = ScalingMode.AUTOMATIC  # reads say AUTOMATIC for a service created without one
    if not service.traffic:
        service.traffic = [
            run_v2.TrafficTarget(type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST, percent=100)
        ]
    t = service.template
    if "timeout" not in t:
        t.timeout = duration_pb2.Duration(seconds=300)
    if not t.max_instance_request_concurrency:
        t.max_instance_request_concurrency = DEFAULT_CONCURRENCY
    if not t.service_account:
        t.service_account = f"{rules.project_number(project)}-compute@developer.gserviceaccount.com"
    for c in t.containers:
        if "resources" not in c:
            # ResourceRequirements.cpu_idle (google/cloud/run/v2/k8s.min.proto): "true by default. However, if
            # ResourceRequirements is set, the caller must explicitly set this field to true".
            c.resources = run_v2.ResourceRequirements(cpu_idle=True)
        if not c.resources.limits:
            c.resources.limits = {"cpu": "1000m", "memory": "512Mi"}
        if len(t.containers) == 1 and not c.ports:
            c.ports = [run_v2.ContainerPort(name="http1", container_port=DEFAULT_PORT)]
        if c.ports and "startup_probe" not in c:
            port = c.ports[0].container_port or DEFAULT_PORT
            c.startup_probe = run_v2.Probe(
                timeout_seconds=240, period_seconds=240, failure_threshold=1, tcp_socket=run_v2.TCPSocketAction(port=port)
            )


def condition(type_: str, state: State_, message: str = "", **extra: Any) -> run_v2.Condition:
    return run_v2.Condition(type_=type_, state=state, message=message, last_transition_time=now(), **extra)
