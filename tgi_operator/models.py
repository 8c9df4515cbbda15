"""The TGIService API (tgi-operator.dev/v1alpha1): pydantic models of spec and status.

This module is the single source of truth for the API. `crd.py` generates the CRD from these models:
field descriptions feed `kubectl explain`, defaults become API-server defaults, and every rule is
written twice side by side, once as a CEL rule (attached to the JSON schema with `_cel`) that the
API server enforces at admission, and once as a pydantic validator with the same message, so the
operator can explain what is wrong with an object stored before a rule existed.
tests/integration/test_crd_agreement.py checks the two agree.

Field names are snake_case in Python and camelCase in YAML (aliases); the models accept objects
exactly as the API server returns them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

from tgi_operator import API_GROUP, API_VERSION, KIND
from tgi_operator.gpus import DEFAULT_GPU_TYPE, GPU_TYPES, GpuType, cpu_memory_problems, cpu_message, memory_message
from tgi_operator.quantity import is_quantity, parse_quantity

# Hugging Face's TGI Deep Learning Container for Google Cloud (TGI 2.4.0, CUDA 12.4), pinned so an
# operator upgrade never changes a running model server by surprise.
DEFAULT_IMAGE = (
    "us-docker.pkg.dev/deeplearning-platform-release/gcr.io/"
    "huggingface-text-generation-inference-cu124.2-4.ubuntu2204.py311"
)
CONTAINER_PORT = 8080  # the seed's --port=8080; Cloud Run passes it to TGI as PORT

# Environment variables the operator derives from the spec (TGI's launcher reads them), so a user
# may not set them through spec.env: one setting, one place.
OPERATOR_ENV_NAMES: frozenset[str] = frozenset({
    "MODEL_ID", "REVISION", "QUANTIZE", "DTYPE", "MAX_CONCURRENT_REQUESTS",
    "MAX_INPUT_TOKENS", "MAX_INPUT_LENGTH", "MAX_TOTAL_TOKENS", "MAX_BATCH_PREFILL_TOKENS",
    "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
})  # fmt: skip
# Set by Cloud Run itself; Cloud Run refuses them in a revision template.
CLOUD_RUN_ENV_NAMES: frozenset[str] = frozenset({"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"})
RESERVED_ENV_NAMES: frozenset[str] = OPERATOR_ENV_NAMES | CLOUD_RUN_ENV_NAMES

# Regular expressions in the common subset of Python `re`, Go RE2 (CEL `matches`) and Rust `regex`
# (pydantic `pattern`): no look-arounds, no \w or \d (Unicode-aware in some engines), "[.]" for a
# literal dot so no backslash needs escaping inside CEL string literals, and no "'" (CEL quotes).
_DNS_LABEL = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = f"{_DNS_LABEL}([.]{_DNS_LABEL})+"
_EMAIL = f"[A-Za-z0-9._%+-]+@{_DOMAIN}"
PROJECT_ID_REGEX = "^[a-z][a-z0-9-]{4,28}[a-z0-9]$"
PROJECT_ID_RESTRICTED = ("google", "null", "undefined", "ssl")  # Resource Manager's restricted strings
REGION_REGEX = "^[a-z]+-[a-z]+[0-9]+$"
MODEL_ID_REGEX = "^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?/[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$"
REVISION_REGEX = "^[A-Za-z0-9][A-Za-z0-9._/-]*$"
SECRET_REGEX = "^(projects/[a-z0-9][a-z0-9-]*/secrets/)?[A-Za-z0-9_-]{1,255}$"
SECRET_VERSION_REGEX = "^(latest|[1-9][0-9]*)$"
INVOKER_REGEX = f"^((user|group|serviceAccount):{_EMAIL}|domain:{_DOMAIN})$"
SERVICE_ACCOUNT_REGEX = (
    "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?@"
    "([a-z][a-z0-9-]{4,28}[a-z0-9][.]iam|developer|appspot)[.]gserviceaccount[.]com$"
)
ENV_NAME_REGEX = "^[A-Za-z_][A-Za-z0-9_]*$"
_PATH_COMPONENT = "[a-z0-9]+(([.]|_|__|-+)[a-z0-9]+)*"
IMAGE_REGEX = (  # distribution/reference: [domain[:port]/]path[:tag][@digest]
    f"^({_DNS_LABEL}([.]{_DNS_LABEL})*(:[0-9]+)?/)?{_PATH_COMPONENT}(/{_PATH_COMPONENT})*"
    "(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    "(@[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")

GIB = Decimal(1024) ** 3
MAX_TOKENS = 2**31 - 1  # TGI reads token limits as 32-bit integers
MAX_INSTANCES = 1000  # Cloud Run's ceiling for max instances per service
MAX_CONCURRENCY = 1000  # Cloud Run's ceiling for concurrent requests per instance


def _cel(rule: str, message: str, *, field_path: str | None = None) -> dict[str, Any]:
    """One CEL rule on a schema node, written as for `x-kubernetes-validations` (`self`, `oldSelf`); admission.py
    turns them into the TGIService admission policy."""
    validation: dict[str, Any] = {"rule": rule, "message": message}
    if field_path:
        validation["fieldPath"] = field_path
    return validation


def _rules(*validations: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """A `json_schema_extra` that adds CEL rules before those already there (a dict would replace them): the rules
    of the place a type is used are the more specific ones (allUsers is not an invoker, before the invoker format),
    and the admission policy reports the first rule that fails."""

    def add(schema: dict[str, Any]) -> None:
        schema["x-kubernetes-validations"] = copy.deepcopy(list(validations)) + schema.get("x-kubernetes-validations", [])

    return add


def _cel_list(values: Any) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def _format(regex: str, message: str, *, max_length: int, description: str) -> Any:
    """A string that must match `regex`: checked by CEL `matches` with `message`, and by pydantic alike."""
    compiled = re.compile(regex)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(message)
        return value

    return Annotated[
        StrictStr,
        Field(
            max_length=max_length,
            description=description,
            json_schema_extra=_rules(_cel(f"self.matches('{regex}')", message)),
        ),
        AfterValidator(check),
    ]


class _Model(BaseModel):
    """camelCase in YAML, snake_case in Python; unknown spec fields are refused like `kubectl --validate=strict`."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", use_enum_values=False
    )


# ---------------------------------------------------------------------------------------------- enums


class Quantize(str, Enum):
    """TGI's --quantize values."""

    AWQ = "awq"
    GPTQ = "gptq"
    MARLIN = "marlin"
    EETQ = "eetq"
    EXL2 = "exl2"
    FP8 = "fp8"
    COMPRESSED_TENSORS = "compressed-tensors"
    BITSANDBYTES = "bitsandbytes"
    BITSANDBYTES_NF4 = "bitsandbytes-nf4"
    BITSANDBYTES_FP4 = "bitsandbytes-fp4"


class Dtype(str, Enum):
    """TGI's --dtype values."""

    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"


class DeletionPolicy(str, Enum):
    DELETE = "Delete"
    RETAIN = "Retain"


GpuTypeName = Enum("GpuTypeName", {name.upper().replace("-", "_"): name for name in GPU_TYPES}, type=str)  # type: ignore[misc]
GpuTypeName.__doc__ = "A GPU type Cloud Run offers (tgi_operator/gpus.py)."


# ---------------------------------------------------------------------------------------------- spec


ProjectId = _format(
    PROJECT_ID_REGEX,
    "project must be a Google Cloud project ID: 6 to 30 lowercase letters, digits or hyphens, "
    "starting with a letter and not ending with a hyphen",
    max_length=30,
    description="Google Cloud project that hosts the Cloud Run service. Defaults to the operator's "
    "configured project. 6 to 30 lowercase letters, digits or hyphens, starting with a letter.",
)
_PROJECT_RESTRICTED_MESSAGE = (
    "project must not contain the restricted strings " + ", ".join(PROJECT_ID_RESTRICTED)
)

ModelId = _format(
    MODEL_ID_REGEX,
    "model.id must be a Hugging Face repository id 'org/name' made of letters, digits, '-', '_' and '.', "
    "each part starting and ending with a letter or digit",
    max_length=96,
    description="Hugging Face Hub repository of the model, as org/name "
    "(e.g. hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4). Passed to TGI as MODEL_ID.",
)
_MODEL_ID_DOUBLE_MESSAGE = "model.id must not contain '--' or '..' (Hugging Face refuses such names)"

Image = _format(
    IMAGE_REGEX,
    "image must be a container image reference such as registry.example/path/name:tag or name@sha256:<digest>",
    max_length=512,
    description="Container image of the TGI server. Defaults to a pinned Hugging Face TGI Deep Learning "
    "Container for Google Cloud.",
)
ServiceAccountEmail = _format(
    SERVICE_ACCOUNT_REGEX,
    "serviceAccount must be a service-account email such as name@project-id.iam.gserviceaccount.com",
    max_length=128,
    description="Service account the Cloud Run revision runs as (its runtime identity), as an email "
    "(name@project-id.iam.gserviceaccount.com). Unset: Cloud Run's default (the Compute Engine default "
    "service account).",
)
Invoker = _format(
    INVOKER_REGEX,
    "invokers entries must be user:EMAIL, group:EMAIL, serviceAccount:EMAIL or domain:DOMAIN",
    max_length=320,
    description="An IAM member granted roles/run.invoker: user:EMAIL, group:EMAIL, serviceAccount:EMAIL "
    "or domain:DOMAIN.",
)
_PUBLIC_MEMBER_MESSAGE = (
    "invokers must not contain allUsers or allAuthenticatedUsers; set access.public: true for public access"
)


def _not_public_member(value: Any) -> Any:
    if isinstance(value, str) and value in PUBLIC_MEMBERS:
        raise ValueError(_PUBLIC_MEMBER_MESSAGE)
    return value


class SecretRef(_Model):
    """A Secret Manager secret version, mounted as an environment variable by Cloud Run."""

    secret: Annotated[
        StrictStr,
        Field(
            pattern=SECRET_REGEX,
            max_length=300,
            description="Secret Manager secret: a secret ID in the service's project, or "
            "projects/PROJECT/secrets/ID (of that same project).",
        ),
    ]
    version: Annotated[
        StrictStr,
        Field(
            pattern=SECRET_VERSION_REGEX,
            max_length=20,
            description="Secret version: 'latest' or a version number.",
        ),
    ] = "latest"


class ModelSpec(_Model):
    """Which model TGI serves and its token limits."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            _cel(
                "!has(self.id) || (!self.id.contains('--') && !self.id.contains('..'))",
                _MODEL_ID_DOUBLE_MESSAGE,
                field_path=".id",
            ),
            _cel(
                "!has(self.quantize) || !has(self.dtype)",
                "dtype must not be set together with quantize: set one of them",
                field_path=".dtype",
            ),
            _cel(
                "!has(self.maxInputTokens) || !has(self.maxTotalTokens) || self.maxInputTokens < self.maxTotalTokens",
                "maxInputTokens must be less than maxTotalTokens",
                field_path=".maxInputTokens",
            ),
            _cel(
                "!has(self.maxInputTokens) || !has(self.maxBatchPrefillTokens) "
                "|| self.maxBatchPrefillTokens >= self.maxInputTokens",
                "maxBatchPrefillTokens must be at least maxInputTokens",
                field_path=".maxBatchPrefillTokens",
            ),
        )
    )

    id: ModelId
    revision: Annotated[
        StrictStr | None,
        Field(
            pattern=REVISION_REGEX,
            max_length=255,
            description="Hub revision to serve: a branch, tag or commit. Unset: the default branch.",
        ),
    ] = None
    quantize: Annotated[
        Quantize | None,
        Field(
            description="TGI quantization method. Unset: TGI reads it from the model's config.json "
            "(quantization_config). Never together with dtype."
        ),
    ] = None
    dtype: Annotated[
        Dtype | None,
        Field(description="Weights dtype for an unquantized model. Never together with quantize."),
    ] = None
    max_input_tokens: Annotated[
        StrictInt | None,
        Field(ge=1, le=MAX_TOKENS, description="Longest prompt TGI accepts, in tokens; less than maxTotalTokens."),
    ] = None
    max_total_tokens: Annotated[
        StrictInt | None,
        Field(ge=1, le=MAX_TOKENS, description="Longest prompt plus generated text of one request, in tokens."),
    ] = None
    max_batch_prefill_tokens: Annotated[
        StrictInt | None,
        Field(
            ge=1,
            le=MAX_TOKENS,
            description="Most tokens TGI prefills in one batch; at least maxInputTokens.",
        ),
    ] = None
    hf_token_secret: Annotated[
        SecretRef | None,
        Field(description="Secret Manager secret with a Hugging Face token, for gated or private models."),
    ] = None

    @model_validator(mode="after")
    def _cross_field_rules(self) -> ModelSpec:
        if "--" in self.id or ".." in self.id:
            raise ValueError(_MODEL_ID_DOUBLE_MESSAGE)
        if self.quantize is not None and self.dtype is not None:
            raise ValueError("dtype must not be set together with quantize: set one of them")
        if (
            self.max_input_tokens is not None
            and self.max_total_tokens is not None
            and self.max_input_tokens >= self.max_total_tokens
        ):
            raise ValueError("maxInputTokens must be less than maxTotalTokens")
        if (
            self.max_input_tokens is not None
            and self.max_batch_prefill_tokens is not None
            and self.max_batch_prefill_tokens < self.max_input_tokens
        ):
            raise ValueError("maxBatchPrefillTokens must be at least maxInputTokens")
        return self


def _quantity_message(field: str) -> str:
    return f"{field} must be a Kubernetes quantity such as " + ("8 or 8000m" if field == "cpu" else "32Gi")


def _quantity_rule(field: str, gpu: GpuType, check: str) -> str:
    """A CEL rule that applies `check` only to this GPU type and to a well-formed quantity (others say so).

    Every field it reads is guarded with has(): on an object stored before a field was defaulted, an absent
    field must let the rule pass, not fail it with "no such key" (a runtime error, which validation ratcheting
    does not forgive, so every update of the object would be refused). New objects always have them (defaults).
    """
    present = " && ".join(f"has(self.{name})" for name in dict.fromkeys(("gpu", "gpu.type", field, "cpu")))
    return f"!({present}) || self.gpu.type != '{gpu.name}' || !isQuantity(string(self.{field})) || {check}"


def _resources_rules() -> list[dict[str, Any]]:
    """CPU and memory as Cloud Run accepts them with each GPU type (the table and its sources: gpus.py)."""
    cpu, memory = "quantity(string(self.cpu))", "quantity(string(self.memory))"
    rules = [
        _cel("!has(self.cpu) || isQuantity(string(self.cpu))", _quantity_message("cpu"), field_path=".cpu"),
        _cel("!has(self.memory) || isQuantity(string(self.memory))", _quantity_message("memory"), field_path=".memory"),
    ]
    for gpu in GPU_TYPES.values():
        choices = " || ".join(f"{cpu}.compareTo(quantity('{n}')) == 0" for n in gpu.cpu_choices)
        rules.append(_cel(_quantity_rule("cpu", gpu, f"({choices})"), cpu_message(gpu), field_path=".cpu"))
        for n in gpu.cpu_choices:
            low, high = gpu.memory_bounds_gib(n)
            bounded = f"({memory}.compareTo(quantity('{low}Gi')) >= 0 && {memory}.compareTo(quantity('{high}Gi')) <= 0)"
            rules.append(_cel(
                _quantity_rule("memory", gpu, f"!isQuantity(string(self.cpu)) || {cpu}.compareTo(quantity('{n}')) != 0 || {bounded}"),
                memory_message(gpu, n), field_path=".memory",
            ))
    return rules


def _int_or_string(value: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError("must be an integer or a string (a Kubernetes quantity)")
    if isinstance(value, str) and len(value) > QUANTITY_MAX_LENGTH:
        raise ValueError(f"must be at most {QUANTITY_MAX_LENGTH} characters")
    return value


QUANTITY_MAX_LENGTH = 32
# A Kubernetes quantity as YAML gives it: 8 or "8", "32Gi" (x-kubernetes-int-or-string in the CRD).
Quantity = Annotated[
    Union[int, str],
    PlainValidator(_int_or_string),
    WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": QUANTITY_MAX_LENGTH}]}),
]


class GpuSpec(_Model):
    """The GPU attached to every instance."""

    type: Annotated[
        GpuTypeName,
        Field(description="Cloud Run GPU type (the run.googleapis.com/accelerator node selector)."),
    ] = GpuTypeName(DEFAULT_GPU_TYPE)  # type: ignore[call-arg]
    count: Annotated[
        StrictInt,
        Field(
            ge=1,
            le=max(g.max_count for g in GPU_TYPES.values()),
            description="GPUs per instance. Cloud Run attaches exactly one.",
        ),
    ] = 1
    zonal_redundancy: Annotated[
        bool,
        Field(
            strict=True,
            description="Reserve GPU capacity in other zones so instances survive a zonal outage "
            "(needs zonal-redundancy GPU quota, and costs more). False: best effort on failover.",
        ),
    ] = False


class ResourcesSpec(_Model):
    """CPU, memory and GPU of each instance."""

    model_config = ConfigDict(json_schema_extra=_rules(*_resources_rules()))

    cpu: Annotated[
        Quantity,
        Field(
            description="vCPUs per instance, a Kubernetes quantity (8 or \"8\"): one Cloud Run offers with the GPU "
            "type (nvidia-l4: 4, 6 or 8; nvidia-rtx-pro-6000: 20).",
        ),
    ] = "8"
    memory: Annotated[
        Quantity,
        Field(
            description="Memory per instance, a Kubernetes quantity (32Gi): at most 4Gi per vCPU and at least the "
            "GPU type's minimum (nvidia-l4: 16Gi, so 16Gi with 4 vCPU, up to 24Gi with 6, 32Gi with 8).",
        ),
    ] = "32Gi"
    gpu: Annotated[GpuSpec, Field(default_factory=GpuSpec, description="The GPU of each instance.")]

    @model_validator(mode="after")
    def _fit_the_gpu(self) -> ResourcesSpec:
        gpu = GPU_TYPES[self.gpu.type.value]
        if not is_quantity(self.cpu):
            raise ValueError(_quantity_message("cpu"))
        if not is_quantity(self.memory):
            raise ValueError(_quantity_message("memory"))
        problems = cpu_memory_problems(gpu, parse_quantity(self.cpu), parse_quantity(self.memory))
        if problems:
            raise ValueError(problems[0][1])
        return self

    def cpu_count(self) -> int:
        """Whole vCPUs, as Cloud Run's resource limit wants them."""
        return int(parse_quantity(self.cpu))

    def memory_bytes(self) -> int:
        return int(parse_quantity(self.memory))


class ScalingSpec(_Model):
    """How many instances run and how many requests each takes."""

    model_config = ConfigDict(
        json_schema_extra=_rules(
            _cel(
                "!has(self.minInstances) || !has(self.maxInstances) || self.minInstances <= self.maxInstances",
                "minInstances must not exceed maxInstances",
                field_path=".minInstances",
            )
        )
    )

    min_instances: Annotated[
        StrictInt,
        Field(ge=0, le=MAX_INSTANCES, description="Instances kept warm. 0 scales to zero when idle (no GPU cost)."),
    ] = 0
    max_instances: Annotated[
        StrictInt,
        Field(
            ge=1,
            le=MAX_INSTANCES,
            description="Most instances Cloud Run starts (bounded by your GPU quota). Use suspend to stop all.",
        ),
    ] = 3
    concurrency: Annotated[
        StrictInt,
        Field(
            ge=1,
            le=MAX_CONCURRENCY,
            description="Concurrent requests per instance: Cloud Run's concurrency and TGI's "
            "--max-concurrent-requests.",
        ),
    ] = 64

    @model_validator(mode="after")
    def _ordered(self) -> ScalingSpec:
        if self.min_instances > self.max_instances:
            raise ValueError("minInstances must not exceed maxInstances")
        return self


class AccessSpec(_Model):
    """Who may call the service."""

    public: Annotated[
        bool,
        Field(
            strict=True,
            description="Grant roles/run.invoker to allUsers (anyone on the internet). Refused unless the "
            "operator allows public services.",
        ),
    ] = False
    invokers: Annotated[
        list[
            Annotated[
                Invoker,
                Field(
                    json_schema_extra=_rules(
                        _cel(
                            "!(self in " + _cel_list(PUBLIC_MEMBERS) + ")",
                            _PUBLIC_MEMBER_MESSAGE
                        )
                    )
                ),
                BeforeValidator(_not_public_member),  # before the format check: the clearer message
            ]
        ],
        Field(
            max_length=64,
            description="IAM members granted roles/run.invoker on the service (user:, group:, "
            "serviceAccount: or domain:).",
            json_schema_extra={"x-kubernetes-list-type": "set"},
        ),
    ] = []
    create_invoker_service_account: Annotated[
        bool,
        Field(
            strict=True,
            description="Create a service account allowed to invoke the service (reported in "
            "status.invokerServiceAccount), for clients that call it with that identity.",
        ),
    ] = False

    @model_validator(mode="after")
    def _unique(self) -> AccessSpec:
        if len(set(self.invokers)) != len(self.invokers):
            raise ValueError("invokers must not contain duplicates")
        return self


def _not_reserved_env(value: str) -> str:
    if value in RESERVED_ENV_NAMES:
        raise ValueError(_RESERVED_ENV_MESSAGE)
    return value


_RESERVED_ENV_MESSAGE = (
    "env name must not be one Cloud Run or the operator sets: "
    + ", ".join(sorted(RESERVED_ENV_NAMES))
    + " (use the matching spec field instead)"
)
_ENV_SOURCE_MESSAGE = "set exactly one of value (a literal) or valueFrom (a Secret Manager secret)"


class EnvVar(_Model):
    """An extra environment variable for TGI (e.g. a launcher option the spec does not cover)."""

    # No API-server default for value: it would make every valueFrom entry carry both.
    model_config = ConfigDict(json_schema_extra=_rules(_cel("has(self.value) != has(self.valueFrom)", _ENV_SOURCE_MESSAGE)))

    name: Annotated[
        StrictStr,
        Field(
            pattern=ENV_NAME_REGEX,
            max_length=256,
            description="Variable name: letters, digits and '_', not starting with a digit. Not one the "
            "operator or Cloud Run sets (PORT, MODEL_ID, ...).",
            json_schema_extra=_rules(
                _cel(
                    "!(self in " + _cel_list(sorted(RESERVED_ENV_NAMES)) + ")",
                    _RESERVED_ENV_MESSAGE,
                )
            ),
        ),
        AfterValidator(_not_reserved_env),
    ]
    value: Annotated[
        StrictStr | None,
        Field(max_length=32768, description="Variable value, a literal stored in the Cloud Run configuration. "
              "For anything secret use valueFrom."),
    ] = None
    value_from: Annotated[
        SecretRef | None,
        Field(description="A Secret Manager secret version Cloud Run reads at start-up: the value never passes "
              "through Kubernetes or the operator."),
    ] = None

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if (self.value is None) == (self.value_from is None):
            raise ValueError(_ENV_SOURCE_MESSAGE)
        return self


DURATION_REGEX = "^([0-9]{1,4}h)?([0-9]{1,6}m)?([0-9]{1,7}s)?$"
MAX_REQUEST_TIMEOUT_SECONDS = 3600  # Cloud Run services: https://cloud.google.com/run/docs/configuring/request-timeout
_DURATION_MESSAGE = "requestTimeout must be a duration in whole seconds such as 300s, 15m or 1h"
_TIMEOUT_RANGE_MESSAGE = f"requestTimeout must be between 1s and {MAX_REQUEST_TIMEOUT_SECONDS}s (1h)"


def duration_seconds(value: str) -> int:
    """Seconds of a duration as CEL's duration() reads it, restricted to h/m/s parts ("1h30m" ► 5400)."""
    match = re.fullmatch(DURATION_REGEX, value)
    if not value or match is None:
        raise ValueError(_DURATION_MESSAGE)
    hours, minutes, seconds = (int(part[:-1]) if part else 0 for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _request_timeout(value: str) -> str:
    if not 1 <= duration_seconds(value) <= MAX_REQUEST_TIMEOUT_SECONDS:
        raise ValueError(_TIMEOUT_RANGE_MESSAGE)
    return value


def _immutable_rules() -> list[dict[str, Any]]:
    """Where the service lives cannot change in place: a move would orphan the old service (and its GPUs)."""
    return [
        # An object stored without a region, or with one that is not a string (under an older, looser CRD), may
        # be given one: it cannot have made a service.
        _cel("!has(oldSelf.region) || type(oldSelf.region) != string || !has(self.region) "
             "|| self.region == oldSelf.region",
             "region is immutable: create a new TGIService in the new region and delete this one",
             field_path=".region"),
        _cel("(has(oldSelf.project) && type(oldSelf.project) != string) || (has(self.project) == has(oldSelf.project) "
             "&& (!has(self.project) || self.project == oldSelf.project))",
             "project is immutable: create a new TGIService in the new project and delete this one",
             field_path=".project"),
    ]


def _region_rules() -> list[dict[str, Any]]:
    return [
        _cel(
            # has() guards: absent inputs pass (see _quantity_rule); `required` still demands region of new writes.
            "!(has(self.region) && has(self.resources) && has(self.resources.gpu) && has(self.resources.gpu.type)) "
            f"|| self.resources.gpu.type != '{gpu.name}' || self.region in {_cel_list(gpu.regions)}",
            _region_message(gpu),
            field_path=".region",
        )
        for gpu in GPU_TYPES.values()
    ]


def _region_message(gpu: GpuType) -> str:
    return f"region must be one that offers {gpu.name} GPUs: " + ", ".join(gpu.regions)


class TGIServiceSpec(_Model):
    """Desired state: one Cloud Run GPU service running Hugging Face TGI."""

    model_config = ConfigDict(json_schema_extra=_rules(*_region_rules(), *_immutable_rules()))

    project: Annotated[
        ProjectId | None,
        Field(
            json_schema_extra=_rules(
                _cel(
                    " && ".join(f"!self.contains('{s}')" for s in PROJECT_ID_RESTRICTED),
                    _PROJECT_RESTRICTED_MESSAGE,
                )
            )
        ),
    ] = None
    region: Annotated[
        StrictStr,
        Field(
            pattern=REGION_REGEX,
            max_length=32,
            description="Cloud Run region (e.g. us-central1); it must offer the chosen GPU type.",
        ),
    ]
    image: Image = DEFAULT_IMAGE
    model: Annotated[ModelSpec, Field(description="The model TGI serves.")]
    resources: Annotated[
        ResourcesSpec,
        Field(default_factory=ResourcesSpec, description="CPU, memory and GPU of each instance."),
    ]
    scaling: Annotated[
        ScalingSpec,
        Field(default_factory=ScalingSpec, description="Instance counts and per-instance concurrency."),
    ]
    access: Annotated[
        AccessSpec,
        Field(default_factory=AccessSpec, description="Who may invoke the service. Private by default."),
    ]
    service_account: Annotated[ServiceAccountEmail | None, Field()] = None
    env: Annotated[
        list[EnvVar],
        Field(
            max_length=64,
            description="Extra environment variables for the TGI container.",
            json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        ),
    ] = []
    request_timeout: Annotated[
        StrictStr,
        Field(
            min_length=2,
            max_length=16,
            description="How long Cloud Run lets one request run, streamed generations included, before it answers "
            "504: a duration in whole seconds such as 300s, 15m or 1h, from 1s to 1h (Cloud Run's limits).",
            json_schema_extra=_rules(
                _cel(f"self.matches('{DURATION_REGEX}')", _DURATION_MESSAGE),
                _cel(f"!self.matches('{DURATION_REGEX}') || (duration(self) >= duration('1s') "
                     f"&& duration(self) <= duration('{MAX_REQUEST_TIMEOUT_SECONDS}s'))", _TIMEOUT_RANGE_MESSAGE),
            ),
        ),
        AfterValidator(_request_timeout),
    ] = "300s"
    suspend: Annotated[
        bool,
        Field(
            strict=True,
            description="True: scale the service to zero instances and keep everything else (no GPU cost).",
        ),
    ] = False
    deletion_policy: Annotated[
        DeletionPolicy,
        Field(
            description="What happens to the Cloud Run service when this object is deleted: Delete it, or "
            "Retain it (and its IAM bindings)."
        ),
    ] = DeletionPolicy.DELETE

    @model_validator(mode="after")
    def _cross_field_rules(self) -> TGIServiceSpec:
        if self.project is not None and any(s in self.project for s in PROJECT_ID_RESTRICTED):
            raise ValueError(_PROJECT_RESTRICTED_MESSAGE)
        gpu = GPU_TYPES[self.resources.gpu.type.value]
        if self.region not in gpu.regions:
            raise ValueError(_region_message(gpu))
        names = [e.name for e in self.env]
        if len(set(names)) != len(names):
            raise ValueError("env names must be unique")
        return self


# ---------------------------------------------------------------------------------------------- status


class _Status(BaseModel):
    """Status parts: camelCase, and tolerant of fields other writers (kopf) add."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class ConditionStatus(str, Enum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(_Status):
    """A kstatus condition (Ready, Reconciling, Stalled), shaped like metav1.Condition."""

    type: Annotated[
        str,
        Field(
            pattern="^[A-Za-z][A-Za-z0-9]*$",
            max_length=64,
            description="Condition type: Ready, Reconciling or Stalled.",
        ),
    ]
    status: Annotated[ConditionStatus, Field(description="True, False or Unknown.")]
    reason: Annotated[
        str | None,
        Field(max_length=1024, description="CamelCase reason for the last transition."),
    ] = None
    message: Annotated[str | None, Field(max_length=32768, description="Human-readable details.")] = None
    last_transition_time: Annotated[
        str | None,
        Field(
            json_schema_extra={"format": "date-time"},
            description="When the status last changed (RFC 3339).",
        ),
    ] = None
    observed_generation: Annotated[
        int | None,
        Field(ge=0, description="metadata.generation this condition was computed from."),
    ] = None


class ModelStatus(_Status):
    """What the running TGI reports about itself (its /info endpoint)."""

    id: Annotated[str | None, Field(description="Model id TGI serves.")] = None
    max_concurrent_requests: Annotated[int | None, Field(description="TGI's max concurrent requests.")] = None
    max_input_tokens: Annotated[int | None, Field(description="TGI's max input tokens.")] = None
    max_total_tokens: Annotated[int | None, Field(description="TGI's max total tokens.")] = None
    version: Annotated[str | None, Field(description="TGI version.")] = None
    revision: Annotated[
        str | None,
        Field(description="Cloud Run revision whose model answered; it is not probed again (a probe would keep a "
              "scale-to-zero service awake)."),
    ] = None


class PreflightStatus(_Status):
    """What the model preflight found on the Hugging Face Hub before anything was deployed."""

    result: Annotated[
        str,
        Field(description="Passed (the model runs on this GPU), Partial (nothing found that stops it; the message says "
              "what could not be checked), Failed (the Stalled condition says what to change) or Skipped (the Hub could "
              "not be asked)."),
    ]
    generation: Annotated[int | None, Field(description="metadata.generation the model was checked for.")] = None
    revision: Annotated[str | None, Field(description="Hub commit that was checked.")] = None
    required_gpu_memory: Annotated[
        str | None,
        Field(description="GPU memory TGI needs for the weights, the overhead and one request of maxTotalTokens "
              "(a quantity, e.g. 7.3Gi)."),
    ] = None
    gpu_memory: Annotated[str | None, Field(description="Memory of the GPU type (a quantity).")] = None
    full_length_requests: Annotated[
        int | None,
        Field(description="Requests of maxTotalTokens tokens the KV cache holds at once (more wait in TGI's queue)."),
    ] = None
    message: Annotated[str | None, Field(max_length=32768, description="The estimate, with its figures.")] = None


class CostStatus(_Status):
    """Estimated hourly cost on Cloud Run (list prices of the operator's pricing table; instance-based billing)."""

    currency: Annotated[str | None, Field(description="Currency of the amounts, e.g. USD.")] = None
    instance_hourly: Annotated[str | None, Field(description="One instance, per hour.")] = None
    minimum_hourly: Annotated[
        str | None, Field(description="minInstances, per hour: what the service costs while idle.")
    ] = None
    maximum_hourly: Annotated[str | None, Field(description="maxInstances, per hour: the most it can cost.")] = None
    basis: Annotated[str | None, Field(description="Which prices: tier, region, source and the date they were read.")] = None


class TGIServiceStatus(_Status):
    """Observed state, written by the operator."""

    observed_generation: Annotated[
        int | None, Field(ge=0, description="metadata.generation last reconciled.")
    ] = None
    url: Annotated[str | None, Field(description="HTTPS URL of the Cloud Run service.")] = None
    service_name: Annotated[
        str | None,
        Field(description="Cloud Run service resource name: projects/P/locations/R/services/S."),
    ] = None
    latest_ready_revision: Annotated[
        str | None, Field(description="Cloud Run revision that serves traffic.")
    ] = None
    invoker_service_account: Annotated[
        str | None,
        Field(description="Email of the invoker service account the operator created (access.createInvokerServiceAccount); "
              "recorded just before it is created, so that deletion removes it whatever happens in between."),
    ] = None
    model: Annotated[ModelStatus | None, Field(description="What the running TGI reports (/info).")] = None
    preflight: Annotated[
        PreflightStatus | None, Field(description="The model checked on the Hugging Face Hub before deploying.")
    ] = None
    cost: Annotated[CostStatus | None, Field(description="Estimated hourly cost of the service on Cloud Run.")] = None
    conditions: Annotated[
        list[Condition],
        Field(
            description="Ready, Reconciling and Stalled (kstatus).",
            json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        ),
    ] = []

    @classmethod
    def lenient(cls, raw: Any) -> TGIServiceStatus:
        """The status as stored, keeping each field that parses and dropping those that do not (a status written by
        hand, or by another version): a broken field is observed afresh instead of failing every pass."""
        if not isinstance(raw, Mapping):
            return cls()
        try:
            return cls.model_validate(_plain(raw))
        except ValidationError:
            kept: dict[str, Any] = {}
            for key, value in _plain(raw).items():
                try:
                    cls.model_validate({key: value})
                except ValidationError:
                    continue
                kept[key] = value
            return cls.model_validate(kept)

    def to_k8s(self) -> dict[str, Any]:
        """The status as the API server stores it (camelCase, unset fields left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# ---------------------------------------------------------------------------------------------- object


class ObjectMeta(BaseModel):
    """The metadata the operator uses."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    name: str
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class TGIService(BaseModel):
    """A whole TGIService object, as the API server returns it."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    api_version: str = Field(default=f"{API_GROUP}/{API_VERSION}", alias="apiVersion")
    kind: str = KIND
    metadata: ObjectMeta
    spec: TGIServiceSpec
    status: TGIServiceStatus = Field(default_factory=TGIServiceStatus)

    @classmethod
    def from_k8s(cls, body: Mapping[str, Any]) -> TGIService:
        """Parse an object from the API server or kopf (a kopf Body is a Mapping); ValidationError if invalid."""
        return cls.model_validate(_plain(body))


def _plain(value: Any) -> Any:
    """Deep-copy Mappings (e.g. kopf's Body views) into plain dicts for pydantic."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def parse_spec(spec: Mapping[str, Any]) -> TGIServiceSpec:
    return TGIServiceSpec.model_validate(_plain(spec))


def describe_errors(error: ValidationError, prefix: str = "spec") -> list[str]:
    """One line per problem, naming the field in YAML terms: "spec.model.id: <message>"."""
    lines = []
    for problem in error.errors():
        path = prefix
        for part in problem["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {message}")
    return lines


__all__ = [
    "CLOUD_RUN_ENV_NAMES",
    "CONTAINER_PORT",
    "DEFAULT_IMAGE",
    "OPERATOR_ENV_NAMES",
    "RESERVED_ENV_NAMES",
    "AccessSpec",
    "Condition",
    "ConditionStatus",
    "CostStatus",
    "DeletionPolicy",
    "Dtype",
    "EnvVar",
    "GpuSpec",
    "GpuTypeName",
    "ModelSpec",
    "ModelStatus",
    "ObjectMeta",
    "PreflightStatus",
    "Quantize",
    "ResourcesSpec",
    "ScalingSpec",
    "SecretRef",
    "TGIService",
    "TGIServiceSpec",
    "TGIServiceStatus",
    "describe_errors",
    "duration_seconds",
    "parse_spec",
]
