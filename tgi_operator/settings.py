"""Operator configuration, read from the environment (prefix TGI_OPERATOR_)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CommaList = Annotated[list[str], NoDecode]  # "a,b" in the environment, not JSON
ENV_PREFIX = "TGI_OPERATOR_"
# What manifests/base (and the README) ship in place of real values; an overlay sets them. None is a valid value:
# project ids, cluster names and image paths are lower case.
PLACEHOLDERS = ("PROJECT_ID", "CLUSTER_NAME", "REPLACE_ME")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    cloud_run_endpoint: str | None = Field(
        None,
        description="host:port of an insecure gRPC Cloud Run + IAM endpoint (the emulator). "
        "Unset: Google's endpoints with Application Default Credentials / Workload Identity.",
    )
    default_project: str | None = Field(None, description="Project for TGIServices that do not name one.")
    allowed_projects: CommaList = Field(default_factory=list, description="Comma-separated; empty allows any project.")
    allowed_regions: CommaList = Field(default_factory=list, description="Comma-separated; empty allows any region.")
    allow_public_services: bool = Field(False, description="Whether access.public (allUsers invoker) may be granted.")
    allowed_image_prefixes: CommaList = Field(
        default_factory=list, description="Comma-separated image prefixes spec.image must start with; empty allows any.")
    allowed_service_accounts: CommaList = Field(
        default_factory=list, description="Comma-separated runtime identities spec.serviceAccount may name; empty allows any.")
    cluster_name: str = Field(
        "default", pattern=r"^[a-z0-9_-]{1,63}$",
        description="Written into each service's owner labels: give every cluster that shares a project its own name.")
    max_redeploys: int = Field(5, ge=0, description="How often a failed revision of an unchanged spec is deployed again.")
    resync_seconds: float = Field(300.0, gt=0, description="How often every service is re-read to correct drift.")
    model_probe: bool = Field(True, description="Ready also requires the model to answer an authenticated GET /health.")
    preflight: Literal["off", "best-effort", "required"] = Field(
        "best-effort", description="Model preflight on the Hugging Face Hub before deploying: off (clusters without "
        "egress), best-effort (a Hub that cannot be reached does not stop a deployment) or required (it does).")
    hf_endpoint: str | None = Field(
        None, description="Base URL of the Hugging Face Hub the preflight asks (the emulator's in tests and the demo). "
        "Unset: HF_ENDPOINT, else https://huggingface.co.")
    hf_timeout_seconds: float = Field(10.0, gt=0, description="Deadline of one Hugging Face Hub request.")
    pricing_file: str | None = Field(
        None, description="YAML pricing table for the cost estimate in status.cost (the shape of "
        "tgi_operator/data/pricing.yaml). Unset: Cloud Run list prices shipped with the operator.")
    poll_initial_seconds: float = Field(2.0, gt=0, description="First delay when polling a reconciling service.")
    poll_max_seconds: float = Field(30.0, gt=0, description="Longest delay between polls of a reconciling service.")
    request_timeout_seconds: float = Field(30.0, gt=0, description="Deadline of one Cloud Run / IAM call.")
    max_concurrent_passes: int = Field(
        8, ge=1, le=256, description="Reconcile passes run at once; bounds the operator's Cloud Run, IAM and "
        "Kubernetes API requests in flight.")

    namespace_selector: str = Field(
        "", description="A label selector of namespaces: this operator (a shard) handles only TGIServices in the "
        "namespaces it matches; empty handles all. Give each shard its own lease_name.")
    lease_name: str = Field("tgi-operator", pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
                            description="The coordination.k8s.io Lease the replicas elect a leader with (--leader-elect).")
    lease_namespace: str | None = Field(
        None, description="Namespace of the Lease; unset: the pod's own (POD_NAMESPACE, from the downward API).")
    lease_duration_seconds: float = Field(15.0, gt=0, description="How long a standby waits for a silent leader.")
    renew_deadline_seconds: float = Field(10.0, gt=0, description="How long a leader tries to renew before it stops.")
    retry_period_seconds: float = Field(2.0, gt=0, description="How often the Lease is renewed or tried.")

    @field_validator("allowed_projects", "allowed_regions", "allowed_image_prefixes", "allowed_service_accounts", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def _lease_timing_in_order(self) -> Settings:
        # A leader must stop before a standby may take over: client-go refuses the same misconfiguration.
        if not self.retry_period_seconds < self.renew_deadline_seconds < self.lease_duration_seconds:
            raise ValueError(f"leader election needs {ENV_PREFIX}RETRY_PERIOD_SECONDS < {ENV_PREFIX}RENEW_DEADLINE_SECONDS"
                             f" < {ENV_PREFIX}LEASE_DURATION_SECONDS, got {self.retry_period_seconds:g}, "
                             f"{self.renew_deadline_seconds:g}, {self.lease_duration_seconds:g}")
        return self


def startup_problem(environ: Mapping[str, str]) -> str | None:
    """Why the operator must not start with this environment, in one sentence naming each setting; None when fine."""
    fields = Settings.model_fields
    ours = {key.upper().removeprefix(ENV_PREFIX).lower(): value for key, value in environ.items()
            if key.upper().startswith(ENV_PREFIX)}
    ours = {name: value for name, value in ours.items() if name in fields}
    left = [f"{ENV_PREFIX}{name.upper()}={value} ({fields[name].description})"
            for name, value in sorted(ours.items()) if any(p in value for p in PLACEHOLDERS)]
    if left:
        return ("not starting: settings still hold the placeholders of manifests/base; set them in your overlay "
                f"(see manifests/overlays/example): {'; '.join(left)}")
    try:
        Settings(**ours)  # type: ignore[arg-type]  # strings, parsed as the environment would be
    except ValidationError as exc:
        what = "; ".join(f"{ENV_PREFIX}{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" if e["loc"] else e["msg"]
                         for e in exc.errors())
        return f"not starting: invalid settings: {what}"
    return None
