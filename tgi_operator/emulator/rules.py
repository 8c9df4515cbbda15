"""Cloud Run's request rules as pure functions: each returns the field violations it finds.

A violation names the offending field as a proto path relative to the request
(`service.template.containers[0].resources.limits.cpu`), which is what Cloud Run's
`google.rpc.BadRequest` carries. Nothing here touches the store or gRPC, so every rule
has a plain table-driven unit test (tests/unit/test_emulator_rules.py).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Container
from dataclasses import dataclass
from decimal import Decimal

from google.api import launch_stage_pb2
from google.cloud import run_v2

from tgi_operator.gpus import GIB, GPU_TYPES, LAUNCH_STAGE_ORDER, MAX_MEMORY_GIB_PER_CPU, MIN_MEMORY_GIB_FOR_CPU, cpu_memory_problems
from tgi_operator.quantity import parse_quantity

GPU_RESOURCE = "nvidia.com/gpu"
# Prefixes Cloud Run API v2 rejects in user labels and annotations (system metadata lives in fields).
RESERVED_PREFIXES = ("run.googleapis.com/", "cloud.googleapis.com/", "serving.knative.dev/", "autoscaling.knative.dev/")
# Cloud Run sets these itself inside every container.
RESERVED_ENV = ("PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION")
MAX_CONCURRENCY = 1000
MAX_REQUEST_TIMEOUT_S = 3600
MAX_PROBE_SECONDS = 240  # startup probe period/timeout/initial delay ceiling
MAX_STARTUP_WINDOW_SECONDS = 600  # failure_threshold x period_seconds
MAX_STARTUP_WINDOW_GPU_SECONDS = 1800  # the same, for a container with a GPU
# https://cloud.google.com/run/docs/configuring/services/cpu: "The minimum vCPU setting is 0.08 vCPU", fractions
# "in increments of 0.001", "Values greater than 1 must be integer values", the table offers 1, 2, 4, 6, 8.
MIN_CPU = Decimal("0.08")
CPU_STEP = Decimal("0.001")
WHOLE_CPUS = (1, 2, 4, 6, 8)
MIB = 1024**2
# https://cloud.google.com/run/docs/configuring/services/memory-limits and recorded errors ("For 1.0 CPU, memory
# must be between 128Mi and 4Gi inclusive", google/osv.dev#2800; 512Mi with gen2, googleCloudRunner#137).
MIN_MEMORY = 128 * MIB
MIN_MEMORY_GEN2 = 512 * MIB
MAX_ACCOUNT_DISPLAY_NAME = 100  # IAM Admin: ServiceAccount.display_name, UTF-8 bytes
MAX_ACCOUNT_DESCRIPTION = 256  # IAM Admin: ServiceAccount.description, UTF-8 bytes

SERVICE_ID_RULE = (
    "only lowercase, digits, and hyphens; must begin with letter, and cannot end with hyphen; "
    "must be less than 50 characters."
)
_SERVICE_ID = re.compile(r"^[a-z]([a-z0-9-]*[a-z0-9])?$")
_ACCOUNT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_EMAIL = re.compile(r"^[^@\s:]+@[^@\s:]+\.[^@\s:]+$")
_PARENT = re.compile(r"^projects/(?P<project>[^/]+)/locations/(?P<region>[^/]+)$")
_SERVICE_NAME = re.compile(r"^projects/(?P<project>[^/]+)/locations/(?P<region>[^/]+)/services/(?P<service>[^/]+)$")


@dataclass(frozen=True)
class Violation:
    field: str
    description: str


def parse_parent(parent: str) -> tuple[str, str] | None:
    """`projects/P/locations/R` -> (P, R), or None."""
    m = _PARENT.match(parent)
    return (m["project"], m["region"]) if m else None


def parse_service_name(name: str) -> tuple[str, str, str] | None:
    """`projects/P/locations/R/services/S` -> (P, R, S), or None."""
    m = _SERVICE_NAME.match(name)
    return (m["project"], m["region"], m["service"]) if m else None


def project_number(project: str) -> str:
    """A stable 12-digit project number for a project id (Cloud Run puts it in default names)."""
    return str(int.from_bytes(hashlib.sha256(project.encode()).digest()[:8], "big"))[:12].rjust(12, "1")


def check_service_id(service_id: str) -> list[Violation]:
    if len(service_id) < 50 and _SERVICE_ID.match(service_id):
        return []
    return [Violation("service_id", SERVICE_ID_RULE)]


def check_account_id(account_id: str) -> list[Violation]:
    if _ACCOUNT_ID.match(account_id):
        return []
    return [
        Violation(
            "account_id",
            f"Account ID {account_id!r} must be between 6 and 30 characters, start with a lowercase letter, "
            "and contain only lowercase letters, digits and hyphens, ending with a letter or digit.",
        )
    ]


def check_account_text(display_name: str, description: str) -> list[Violation]:
    """IAM's length limits on a new account's free text, counted in UTF-8 bytes as the API reference states
    (the same as characters for ASCII)."""
    found = []
    for field_name, value, limit in (
        ("display_name", display_name, MAX_ACCOUNT_DISPLAY_NAME),
        ("description", description, MAX_ACCOUNT_DESCRIPTION),
    ):
        size = len(value.encode())
        if size > limit:
            found.append(
                Violation(f"service_account.{field_name}", f"Service account {field_name} must be at most {limit} bytes, got {size}.")
            )
    return found


def parse_cpu(value: str) -> Decimal | None:
    """A CPU quantity ("8", "4.5", "8000m") -> vCPU, or None when unparseable or not positive."""
    try:
        cpu = parse_quantity(value)
    except ValueError:
        return None
    return cpu if cpu > 0 else None


def parse_memory(value: str) -> int | None:
    """A memory quantity ("32Gi", "512Mi", "16G") -> bytes, or None when unparseable or not positive."""
    try:
        size = parse_quantity(value)
    except ValueError:
        return None
    return int(size) if size > 0 else None


def check_metadata(prefix: str, labels: dict[str, str], annotations: dict[str, str]) -> list[Violation]:
    """Reserved system prefixes in labels/annotations of the service or of its template."""
    found = []
    for kind, values in (("labels", labels), ("annotations", annotations)):
        for key in sorted(values):
            if key.startswith(RESERVED_PREFIXES):
                found.append(
                    Violation(
                        f"{prefix}.{kind}",
                        f"Cloud Run API v2 does not support {kind} with `run.googleapis.com`, `cloud.googleapis.com`, "
                        f"`serving.knative.dev`, or `autoscaling.knative.dev` namespaces: {key!r}.",
                    )
                )
    return found


def gpu_count(container: run_v2.Container) -> str | None:
    """The raw `nvidia.com/gpu` limit of a container, or None when it asks for no GPU."""
    return container.resources.limits.get(GPU_RESOURCE)


def check_service(service: run_v2.Service, region: str, prefix: str = "service") -> list[Violation]:
    """Every static rule Cloud Run applies to a Service before it accepts the request."""
    found = check_metadata(prefix, dict(service.labels), dict(service.annotations))
    t = service.template
    tp = f"{prefix}.template"
    found += check_metadata(tp, dict(t.labels), dict(t.annotations))
    found += _check_scaling(service, prefix)
    found += check_launch_stage(service, prefix)
    if not t.containers:
        return found + [Violation(f"{tp}.containers", "At least one container must be specified.")]
    found += _check_ports(t, tp)
    found += _check_template_limits(t, tp)
    for i, c in enumerate(t.containers):
        cp = f"{tp}.containers[{i}]"
        if not c.image:
            found.append(Violation(f"{cp}.image", "Container image must be specified."))
        found += _check_env(c, cp)
        found += _check_probe(c, cp)
        found += _check_cpu_memory_syntax(c, cp)
        if gpu_count(c) is None:
            found += check_shape(c, t, cp, tp)
    found += check_gpu(t, region, tp)
    return found


def _check_scaling(service: run_v2.Service, prefix: str) -> list[Violation]:
    found = []
    for path, s in ((f"{prefix}.template.scaling", service.template.scaling), (f"{prefix}.scaling", service.scaling)):
        if s.max_instance_count and s.min_instance_count > s.max_instance_count:
            found.append(
                Violation(f"{path}.min_instance_count", "min_instance_count must not be greater than max_instance_count.")
            )
        if s.min_instance_count < 0 or s.max_instance_count < 0:
            found.append(Violation(path, "Instance counts must not be negative."))
    # ServiceScaling (google/cloud/run/v2/vendor_settings.proto): manual_instance_count is the "total instance count
    # for the service in manual scaling mode"; required there (and not negative), refused otherwise (assumption).
    s, path = service.scaling, f"{prefix}.scaling.manual_instance_count"
    if s.scaling_mode == run_v2.ServiceScaling.ScalingMode.MANUAL:
        if "manual_instance_count" not in s:
            found.append(Violation(path, "manual_instance_count is required when scaling_mode is MANUAL."))
        elif s.manual_instance_count < 0:
            found.append(Violation(path, "manual_instance_count must not be negative."))
    elif "manual_instance_count" in s:
        found.append(Violation(path, "manual_instance_count can only be set when scaling_mode is MANUAL."))
    return found


def check_launch_stage(service: run_v2.Service, prefix: str = "service") -> list[Violation]:
    """service.proto: "Cloud Run supports ALPHA, BETA, and GA. If no value is specified, GA is assumed. Set the launch
    stage to a preview stage on input to allow use of preview features"; a preview GPU type is such a feature
    (https://cloud.google.com/run/docs/configuring/services/gpu: RTX PRO 6000 is Preview)."""
    stage = launch_stage_pb2.LaunchStage.Name(service.launch_stage or launch_stage_pb2.GA)
    if stage not in LAUNCH_STAGE_ORDER:
        return [Violation(f"{prefix}.launch_stage", f"Cloud Run supports ALPHA, BETA, and GA; got {stage}.")]
    accelerator = service.template.node_selector.accelerator if "node_selector" in service.template else ""
    gpu = GPU_TYPES.get(accelerator)
    if gpu is None or LAUNCH_STAGE_ORDER.index(stage) <= LAUNCH_STAGE_ORDER.index(gpu.launch_stage):
        return []
    return [
        Violation(
            f"{prefix}.launch_stage",
            f"The {gpu.name} GPU is in {gpu.launch_stage}: set launch_stage to {gpu.launch_stage} "
            f"(gcloud {gpu.launch_stage.lower()} run deploy) to use it.",
        )
    ]


def _check_ports(t: run_v2.RevisionTemplate, tp: str) -> list[Violation]:
    found = []
    for i, c in enumerate(t.containers):
        if len(c.ports) > 1:
            found.append(Violation(f"{tp}.containers[{i}].ports", "A container may expose at most one port."))
    if len(t.containers) > 1 and sum(1 for c in t.containers if c.ports) != 1:
        found.append(
            Violation(f"{tp}.containers", "Exactly one container must specify a port when there are several containers.")
        )
    return found


def _check_template_limits(t: run_v2.RevisionTemplate, tp: str) -> list[Violation]:
    found = []
    c = t.max_instance_request_concurrency
    if c < 0 or c > MAX_CONCURRENCY:
        found.append(
            Violation(
                f"{tp}.max_instance_request_concurrency",
                f"max_instance_request_concurrency must be between 1 and {MAX_CONCURRENCY} (0 means the default).",
            )
        )
    if "timeout" in t and t.timeout.total_seconds() > MAX_REQUEST_TIMEOUT_S:
        found.append(Violation(f"{tp}.timeout", f"Request timeout must be at most {MAX_REQUEST_TIMEOUT_S} seconds."))
    elif "timeout" in t and t.timeout.total_seconds() <= 0:
        found.append(Violation(f"{tp}.timeout", "Request timeout must be positive."))
    return found


def _check_env(c: run_v2.Container, cp: str) -> list[Violation]:
    found = []
    for j, e in enumerate(c.env):
        if e.name in RESERVED_ENV:
            found.append(
                Violation(
                    f"{cp}.env[{j}].name",
                    f"The following reserved env names were provided: {e.name}. "
                    "These values are automatically set by the system.",
                )
            )
        if "value_source" in e and e.value:
            found.append(Violation(f"{cp}.env[{j}]", "Only one of value and value_source may be set."))
    return found


def _check_probe(c: run_v2.Container, cp: str) -> list[Violation]:
    if "startup_probe" not in c:
        return []
    p, pp = c.startup_probe, f"{cp}.startup_probe"
    found = []
    if not 0 <= p.initial_delay_seconds <= MAX_PROBE_SECONDS:
        found.append(Violation(f"{pp}.initial_delay_seconds", f"initial_delay_seconds must be a number between 0 and {MAX_PROBE_SECONDS}."))
    if p.period_seconds and not 1 <= p.period_seconds <= MAX_PROBE_SECONDS:
        found.append(Violation(f"{pp}.period_seconds", f"period_seconds must be a number between 1 and {MAX_PROBE_SECONDS}."))
    if p.timeout_seconds and not 1 <= p.timeout_seconds <= MAX_PROBE_SECONDS:
        found.append(Violation(f"{pp}.timeout_seconds", f"timeout_seconds must be a number between 1 and {MAX_PROBE_SECONDS}."))
    elif p.timeout_seconds and p.period_seconds and p.timeout_seconds > p.period_seconds:
        found.append(Violation(f"{pp}.timeout_seconds", "timeout_seconds must not be greater than period_seconds."))
    if p.failure_threshold < 0:
        found.append(Violation(f"{pp}.failure_threshold", "failure_threshold must be a positive number."))
    # The whole start-up window (failure_threshold x period_seconds) is bounded too; GPU instances get longer,
    # since loading model weights is slow.
    window_limit = MAX_STARTUP_WINDOW_GPU_SECONDS if "nvidia.com/gpu" in c.resources.limits else MAX_STARTUP_WINDOW_SECONDS
    window = (p.failure_threshold or 3) * (p.period_seconds or 10)
    if window > window_limit:
        found.append(Violation(f"{pp}.failure_threshold",
                               f"failure_threshold * period_seconds must not exceed {window_limit} seconds (it is {window})."))
    return found


def _check_cpu_memory_syntax(c: run_v2.Container, cp: str) -> list[Violation]:
    found = []
    limits = c.resources.limits
    if "cpu" in limits and parse_cpu(limits["cpu"]) is None:
        found.append(Violation(f"{cp}.resources.limits.cpu", f"Invalid value specified for cpu: {limits['cpu']!r}."))
    if "memory" in limits and parse_memory(limits["memory"]) is None:
        found.append(Violation(f"{cp}.resources.limits.memory", f"Invalid value specified for memory: {limits['memory']!r}."))
    return found


def check_gpu(t: run_v2.RevisionTemplate, region: str, tp: str = "service.template") -> list[Violation]:
    """Cloud Run's GPU rules: type vs region, one GPU, one GPU container, CPU/memory bounds, no CPU idling."""
    accelerator = t.node_selector.accelerator if "node_selector" in t else ""
    holders = [i for i, c in enumerate(t.containers) if gpu_count(c) is not None]
    if not accelerator and not holders:
        return []
    found = []
    if accelerator and not holders:
        return [Violation(f"{tp}.node_selector.accelerator", f"An accelerator is selected but no container sets the {GPU_RESOURCE} limit.")]
    if not accelerator:
        return [Violation(f"{tp}.node_selector.accelerator", f"A GPU limit requires node_selector.accelerator; supported types: {', '.join(GPU_TYPES)}.")]
    gpu = GPU_TYPES.get(accelerator)
    if gpu is None:
        return [Violation(f"{tp}.node_selector.accelerator", f"Accelerator type {accelerator!r} is not supported; supported types: {', '.join(GPU_TYPES)}.")]
    if region not in gpu.regions:
        found.append(
            Violation(
                f"{tp}.node_selector.accelerator",
                f"Accelerator type {accelerator!r} is not supported in region {region!r}; supported regions: {', '.join(gpu.regions)}.",
            )
        )
    for extra in holders[1:]:
        found.append(Violation(f"{tp}.containers[{extra}].resources.limits", "The GPU can only be attached to one container."))
    i = holders[0]
    c, cp = t.containers[i], f"{tp}.containers[{i}].resources"
    if gpu_count(c) != str(gpu.max_count):
        found.append(Violation(f"{cp}.limits.{GPU_RESOURCE}", f"Exactly {gpu.max_count} GPU per instance is supported, got {gpu_count(c)!r}."))
    found += _check_gpu_size(c, gpu.name, cp)
    if c.resources.cpu_idle:
        found.append(Violation(f"{cp}.cpu_idle", "CPU must be always allocated (cpu_idle false) to use GPUs."))
    return found


def _check_gpu_size(c: run_v2.Container, gpu_name: str, cp: str) -> list[Violation]:
    """The instance shapes a GPU type allows (the shared table, tgi_operator/gpus.py, names its sources)."""
    cpu = parse_cpu(c.resources.limits.get("cpu", "1"))
    memory = parse_memory(c.resources.limits.get("memory", "512Mi"))
    if cpu is None or memory is None:
        return []  # _check_cpu_memory_syntax names it
    return [Violation(f"{cp}.limits.{field}", message) for field, message in cpu_memory_problems(GPU_TYPES[gpu_name], cpu, memory)]


def _size(size: int) -> str:
    return f"{size // GIB}Gi" if size % GIB == 0 else f"{size // MIB}Mi"


def check_shape(c: run_v2.Container, t: run_v2.RevisionTemplate, cp: str, tp: str) -> list[Violation]:
    """A container without a GPU: the CPU values Cloud Run offers and the memory each allows, and what less than
    1 vCPU requires (https://cloud.google.com/run/docs/configuring/services/cpu, .../memory-limits)."""
    limits = c.resources.limits
    cpu, memory = parse_cpu(limits.get("cpu", "1")), parse_memory(limits.get("memory", "512Mi"))
    if cpu is None or memory is None:
        return []  # _check_cpu_memory_syntax names it
    if not (MIN_CPU <= cpu < 1 and cpu % CPU_STEP == 0) and cpu not in WHOLE_CPUS:
        return [Violation(f"{cp}.resources.limits.cpu",
                          f"Invalid value specified for cpu: {limits.get('cpu')!r}. cpu must be 1, 2, 4, 6 or 8, or "
                          "between 0.08 and 1 in increments of 0.001.")]  # fmt: skip
    gen2 = t.execution_environment == run_v2.ExecutionEnvironment.EXECUTION_ENVIRONMENT_GEN2
    low = max(MIN_MEMORY_GEN2 if gen2 else MIN_MEMORY, MIN_MEMORY_GIB_FOR_CPU.get(int(cpu), 0) * GIB)
    # Less than 1 vCPU: "A minimum of 0.5 vCPU is needed to set a memory limit greater than 512MiB. A minimum of
    # 1 vCPU is needed to set a memory limit greater than 1GiB"; else at most 4 GiB per vCPU.
    high = 512 * MIB if cpu < Decimal("0.5") else GIB if cpu < 1 else int(cpu) * MAX_MEMORY_GIB_PER_CPU * GIB
    found = []
    if not low <= memory <= high:
        found.append(Violation(f"{cp}.resources.limits.memory",
                               f"Invalid value specified for container memory. For {float(cpu)} CPU, memory must be "
                               f"between {_size(low)} and {_size(high)} inclusive."))  # fmt: skip
    if cpu < 1:  # "If you use less than 1 vCPU": concurrency 1, request-based billing, first generation
        if t.max_instance_request_concurrency != 1:
            found.append(Violation(f"{tp}.max_instance_request_concurrency", "Total cpu < 1 is not supported with concurrency > 1."))
        if not c.resources.cpu_idle:
            found.append(Violation(f"{cp}.resources.cpu_idle",
                                   "Total cpu < 1 needs CPU allocated only during request processing (cpu_idle true)."))  # fmt: skip
        if gen2:
            found.append(Violation(f"{tp}.execution_environment", "Total cpu < 1 needs the first generation execution environment."))
    return found


# ---------------------------------------------------------------- IAM

_MEMBER_PREFIXES = ("user:", "serviceAccount:", "group:", "domain:", "deleted:", "principal://", "principalSet://")


def check_member(member: str) -> str | None:
    """None when `member` is a valid IAM principal, else the reason it is not."""
    if member in ("allUsers", "allAuthenticatedUsers"):
        return None
    if member.startswith(("principal://", "principalSet://", "deleted:")):
        return None
    kind, _, value = member.partition(":")
    if f"{kind}:" not in _MEMBER_PREFIXES or not value:
        return f"Invalid member {member!r}: expected user:, serviceAccount:, group:, domain:, allUsers or allAuthenticatedUsers."
    if kind == "domain":
        return None if "." in value and "@" not in value else f"Invalid domain in member {member!r}."
    return None if _EMAIL.match(value) else f"Invalid email address in member {member!r}."


# Service agents and default accounts Google creates and owns: never checked against the emulator's accounts.
_GOOGLE_MANAGED_SA = re.compile(r"^(service-\d+@.*|.+@gcp-sa-[^.@]+\.iam\.gserviceaccount\.com)$")
_USER_MANAGED_SA = re.compile(r"^[^@]+@[^@.]+\.iam\.gserviceaccount\.com$")


def user_managed_account(member: str) -> str | None:
    """The email a `serviceAccount:ID@PROJECT.iam.gserviceaccount.com` member names (lowercased, as IAM compares
    emails), or None for any other member, Google-managed accounts included (`...@developer.gserviceaccount.com`,
    `...@appspot.gserviceaccount.com`, `...@gcp-sa-*.iam.gserviceaccount.com`, `service-NUMBER@...`)."""
    kind, _, email = member.partition(":")
    email = email.lower()
    if kind != "serviceAccount" or not _USER_MANAGED_SA.match(email) or _GOOGLE_MANAGED_SA.match(email):
        return None
    return email


def missing_account(member: str, known: Container[str]) -> str | None:
    """IAM's answer when a policy binds a user-managed service account that does not exist, else None."""
    email = user_managed_account(member)
    if email is None or email in known:
        return None
    return f"Service account {email} does not exist."


# Roles that carry run.routes.invoke, the permission the URL checks (run.developer included).
# Source: https://cloud.google.com/run/docs/securing/managing-access, https://cloud.google.com/iam/docs/roles-permissions/run
INVOKER_ROLES = frozenset(
    {"roles/run.invoker", "roles/run.servicesInvoker", "roles/run.developer", "roles/run.admin", "roles/owner", "roles/editor"}
)
# Roles Cloud Run accepts in a service's policy.
SERVICE_ROLES = INVOKER_ROLES | {"roles/run.viewer", "roles/viewer", "roles/run.sourceViewer"}

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "roles/run.invoker": frozenset({"run.routes.invoke"}),
    "roles/run.servicesInvoker": frozenset({"run.routes.invoke"}),
    "roles/run.viewer": frozenset({"run.services.get", "run.services.list", "run.services.getIamPolicy"}),
    "roles/viewer": frozenset({"run.services.get", "run.services.list", "run.services.getIamPolicy"}),
    "roles/run.developer": frozenset(
        {"run.services.get", "run.services.list", "run.services.create", "run.services.update", "run.services.delete",
         "run.services.getIamPolicy", "run.routes.invoke"}
    ),  # fmt: skip
}
ALL_RUN_PERMISSIONS = frozenset(
    {
        "run.routes.invoke", "run.services.get", "run.services.list", "run.services.create",
        "run.services.update", "run.services.delete", "run.services.getIamPolicy", "run.services.setIamPolicy",
    }
)  # fmt: skip
for _admin in ("roles/run.admin", "roles/owner"):
    ROLE_PERMISSIONS[_admin] = ALL_RUN_PERMISSIONS
ROLE_PERMISSIONS["roles/editor"] = ALL_RUN_PERMISSIONS - {"run.services.setIamPolicy"}


def check_role(role: str) -> str | None:
    if role in SERVICE_ROLES:
        return None
    return f"Role {role} is not supported for this resource."


def permissions_of(roles: set[str]) -> set[str]:
    return set().union(*(ROLE_PERMISSIONS.get(r, frozenset()) for r in roles)) if roles else set()


def outside_domains(member: str, domains: Container[str]) -> bool:
    """Whether iam.allowedPolicyMemberDomains refuses `member` when only `domains` are allowed: user:/group: emails
    and domain: outside them, allUsers and allAuthenticatedUsers (https://cloud.google.com/resource-manager/docs/
    organization-policy/restricting-domains). Service accounts pass (assumption: the organization's own projects);
    deleted: members are what the policy already held; principal:// identities are refused (assumption, stricter)."""
    kind, _, value = member.partition(":")
    if member in ("allUsers", "allAuthenticatedUsers") or member.startswith(("principal://", "principalSet://")):
        return True
    if kind in ("user", "group"):
        return value.rpartition("@")[2].lower() not in domains
    if kind == "domain":
        return value.lower() not in domains
    return False


def members_for(email: str) -> set[str]:
    """The policy members that name this caller; "" is an anonymous caller (groups: access.Access.members_for)."""
    if not email:
        return {"allUsers"}
    return {f"user:{email}", f"serviceAccount:{email}", "allUsers", "allAuthenticatedUsers"}
