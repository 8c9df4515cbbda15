"""Pure: a TGIService spec to the Cloud Run service and the invoker members it should have.

The seed deployment this reproduces:
  gcloud beta run deploy SERVICE --image=TGI_DLC \
    --args="--model-id=hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4,--quantize=awq,--max-concurrent-requests=64" \
    --port=8080 --cpu=8 --memory=32Gi --no-cpu-throttling --gpu=1 --gpu-type=nvidia-l4 \
    --max-instances=3 --concurrency=64 --region=us-central1 --no-allow-unauthenticated
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.cloud import run_v2
from google.protobuf import duration_pb2

from tgi_operator.gpus import GPU_TYPES
from tgi_operator.models import CONTAINER_PORT, SecretRef, TGIServiceSpec, duration_seconds
from tgi_operator.ownership import OWNER_UID_ANNOTATION
from tgi_operator.naming import DEFAULT_CLUSTER, invoker_account_id, legacy_service_id, owner_labels, service_id

CONTAINER_NAME = "tgi"
INVOKER_ROLE = "roles/run.invoker"
PUBLIC_MEMBER = "allUsers"
# The invoker members this object granted, kept on the service itself so that a member dropped from the
# spec is revoked even after an operator restart, and members granted by others are never touched.
INVOKERS_ANNOTATION = "tgi-operator.dev/invokers"
# The runtime identity the spec asks for ("" = Cloud Run's default), so that removing spec.serviceAccount is a
# difference (Cloud Run fills the default in, which cannot be told from a deliberate choice).
IDENTITY_ANNOTATION = "tgi-operator.dev/runtime-identity"

# Downloading and loading weights takes minutes on a cold instance: TGI answers /health only once the model
# is in GPU memory. 10 s x 180 = 30 minutes, the longest start-up window Cloud Run allows a GPU instance.
STARTUP_PROBE = {"period_seconds": 10, "timeout_seconds": 5, "failure_threshold": 180, "initial_delay_seconds": 0}


@dataclass(frozen=True)
class Target:
    """Where a TGIService lands in Cloud Run."""

    project: str
    region: str
    service_id: str

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    @property
    def name(self) -> str:
        return f"{self.parent}/services/{self.service_id}"


SERVICE_NAME = re.compile(r"^projects/(?P<project>[a-z][a-z0-9-]{4,28}[a-z0-9])/locations/(?P<region>[a-z]+-[a-z]+[0-9]+)"
                          r"/services/(?P<service>[a-z]([a-z0-9-]{0,47}[a-z0-9])?)$")


def recorded_target(namespace: str, name: str, recorded: object) -> Target | None:
    """The service an object's status records, if it is one the operator can have made for that object: a name
    `projects/P/locations/R/services/S` whose S derives from namespace and name. Anything else (a broken or tampered
    status) is ignored, so it can neither stall the object nor point its finalizer at someone else's service."""
    match = SERVICE_NAME.match(recorded) if isinstance(recorded, str) else None
    if match is None or match["service"] not in (service_id(namespace, name), legacy_service_id(namespace, name)):
        return None
    return Target(match["project"], match["region"], match["service"])


def target(namespace: str, name: str, spec: TGIServiceSpec, default_project: str | None,
           recorded: str | None = None) -> Target:
    """Where the object's service lives. A service recorded in its status under the first version's shorter id
    (same project and region) keeps that id: an upgrade never renames, and so never orphans, a serving service."""
    project = spec.project or default_project
    if not project:
        raise ValueError("spec.project is unset and the operator has no default project (TGI_OPERATOR_DEFAULT_PROJECT)")
    kept = recorded_target(namespace, name, recorded)
    if kept and (kept.project, kept.region) == (project, spec.region):
        return kept  # the id it was created under: the first version's shorter one, or today's
    return Target(project, spec.region, service_id(namespace, name))


def launcher_args(spec: TGIServiceSpec) -> list[str]:
    """TGI launcher flags, in a stable order (a reordering would be a spurious diff and a new revision)."""
    model = spec.model
    args = [f"--model-id={model.id}"]
    if model.revision:
        args.append(f"--revision={model.revision}")
    if model.quantize:
        args.append(f"--quantize={model.quantize.value}")
    if model.dtype:
        args.append(f"--dtype={model.dtype.value}")
    args.append(f"--max-concurrent-requests={spec.scaling.concurrency}")
    for flag, value in (
        ("--max-input-tokens", model.max_input_tokens),
        ("--max-total-tokens", model.max_total_tokens),
        ("--max-batch-prefill-tokens", model.max_batch_prefill_tokens),
    ):
        if value is not None:
            args.append(f"{flag}={value}")
    return args


def _secret_env(name: str, secret: SecretRef) -> run_v2.EnvVar:
    """A reference Cloud Run resolves at start-up: the value never passes through the operator."""
    return run_v2.EnvVar(
        name=name,
        value_source=run_v2.EnvVarSource(
            secret_key_ref=run_v2.SecretKeySelector(secret=secret.secret, version=secret.version)
        ),
    )


def _env(spec: TGIServiceSpec) -> list[run_v2.EnvVar]:
    env = [_secret_env(e.name, e.value_from) if e.value_from else run_v2.EnvVar(name=e.name, value=e.value or "")
           for e in spec.env]
    if spec.model.hf_token_secret:
        env.append(_secret_env("HF_TOKEN", spec.model.hf_token_secret))
    return env


def _memory(spec: TGIServiceSpec) -> str:
    """Cloud Run wants memory with a unit (32Gi, 20G); normalise any Kubernetes notation to the shortest exact one."""
    size = spec.resources.memory_bytes()
    units = (("Gi", 1024**3), ("Mi", 1024**2), ("G", 10**9), ("M", 10**6), ("Ki", 1024), ("k", 10**3))
    exact = [f"{size // factor}{unit}" for unit, factor in units if size % factor == 0]
    return min(exact, key=len, default=str(size))  # the shortest exact form; binary units win ties


def invoker_service_account(namespace: str, name: str, project: str) -> str:
    return f"{invoker_account_id(namespace, name)}@{project}.iam.gserviceaccount.com"


def invoker_account_display_name(namespace: str, name: str) -> str:
    return f"Invoker of {namespace}/{name}"[:100]  # IAM's limit


def invoker_account_description(namespace: str, name: str) -> str:
    """Also the marker that says the account is this object's (an account without it is never adopted or deleted)."""
    return f"Created by tgi-operator to call TGIService {namespace}/{name}"[:256]  # IAM's limit


def normalized_member(member: str) -> str:
    """IAM compares emails and domains case-insensitively and may answer them lowercased: so do we."""
    kind, _, identity = member.partition(":")
    return f"{kind}:{identity.lower()}" if identity else member


def invoker_members(namespace: str, name: str, spec: TGIServiceSpec, project: str) -> list[str]:
    """Every member this object wants to hold roles/run.invoker, sorted (a stable annotation value)."""
    members = {normalized_member(m) for m in spec.access.invokers}
    if spec.access.create_invoker_service_account:
        members.add(f"serviceAccount:{invoker_service_account(namespace, name, project)}")
    if spec.access.public:
        members.add(PUBLIC_MEMBER)
    return sorted(members)


def _invokers_annotation(members: list[str]) -> dict[str, str]:
    # Left out when empty: an empty annotation value may not survive a round trip through Cloud Run.
    return {INVOKERS_ANNOTATION: ",".join(members)} if members else {}


def render_service(
    namespace: str, name: str, spec: TGIServiceSpec, where: Target, cluster: str = DEFAULT_CLUSTER, owner_uid: str = ""
) -> run_v2.Service:
    """The whole desired Cloud Run service. Fields left unset are Cloud Run's to default. `owner_uid`: the object's
    metadata.uid, the mark that says this object created the service (ownership.py)."""
    resources = spec.resources
    container = run_v2.Container(
        name=CONTAINER_NAME,
        image=spec.image,
        args=launcher_args(spec),
        env=_env(spec),
        ports=[run_v2.ContainerPort(name="http1", container_port=CONTAINER_PORT)],
        resources=run_v2.ResourceRequirements(
            limits={"cpu": str(resources.cpu_count()), "memory": _memory(spec), "nvidia.com/gpu": str(resources.gpu.count)},
            cpu_idle=False,  # --no-cpu-throttling: required with a GPU
            startup_cpu_boost=True,
        ),
        startup_probe=run_v2.Probe(
            http_get=run_v2.HTTPGetAction(path="/health", port=CONTAINER_PORT), **STARTUP_PROBE
        ),
    )
    template = run_v2.RevisionTemplate(
        containers=[container],
        scaling=run_v2.RevisionScaling(
            min_instance_count=spec.scaling.min_instances, max_instance_count=spec.scaling.max_instances
        ),
        max_instance_request_concurrency=spec.scaling.concurrency,
        timeout=duration_pb2.Duration(seconds=duration_seconds(spec.request_timeout)),
        service_account=spec.service_account or "",
        node_selector=run_v2.NodeSelector(accelerator=resources.gpu.type.value),
        gpu_zonal_redundancy_disabled=not resources.gpu.zonal_redundancy,
        labels=owner_labels(namespace, name, cluster),
    )
    service = run_v2.Service(
        description=f"Hugging Face TGI serving {spec.model.id} for TGIService {namespace}/{name}",
        labels=owner_labels(namespace, name, cluster),
        annotations={
            **_invokers_annotation(invoker_members(namespace, name, spec, where.project)),
            IDENTITY_ANNOTATION: spec.service_account or "default",
            **({OWNER_UID_ANNOTATION: owner_uid} if owner_uid else {}),
        },
        ingress=run_v2.IngressTraffic.INGRESS_TRAFFIC_ALL,
        invoker_iam_disabled=False,  # every request is checked against run.invoker
        # A preview GPU type needs the service to opt in to BETA features (gcloud beta run deploy does the same).
        launch_stage=GPU_TYPES[resources.gpu.type.value].launch_stage,
        template=template,
        scaling=_service_scaling(spec),
    )
    return service


def _service_scaling(spec: TGIServiceSpec) -> run_v2.ServiceScaling:
    """Always explicit: an update without a scaling mode keeps the stored one, so a resumed service would stay at zero.
    Suspended: manual scaling to zero instances (max_instance_count=0 would read as "unset" in proto3)."""
    mode = run_v2.ServiceScaling.ScalingMode
    if spec.suspend:
        return run_v2.ServiceScaling(scaling_mode=mode.MANUAL, manual_instance_count=0)
    return run_v2.ServiceScaling(scaling_mode=mode.AUTOMATIC)

