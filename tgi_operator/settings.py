"""Operator configuration, read from the environment (prefix TGI_OPERATOR_)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from pydantic import Field, ValidationError, field_validator
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
    poll_initial_seconds: float = Field(2.0, gt=0, description="First delay when polling a reconciling service.")
    poll_max_seconds: float = Field(30.0, gt=0, description="Longest delay between polls of a reconciling service.")
    request_timeout_seconds: float = Field(30.0, gt=0, description="Deadline of one Cloud Run / IAM call.")
    max_concurrent_passes: int = Field(
        8, ge=1, le=256, description="Reconcile passes run at once; bounds the operator's Cloud Run, IAM and "
        "Kubernetes API requests in flight.")

    @field_validator("allowed_projects", "allowed_regions", "allowed_image_prefixes", "allowed_service_accounts", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value


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
        what = "; ".join(f"{ENV_PREFIX}{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        return f"not starting: invalid settings: {what}"
    return None
