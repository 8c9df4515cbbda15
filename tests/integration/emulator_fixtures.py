"""Fixtures for tests against the Cloud Run emulator, with the real Google clients over real sockets.

Import them into a test module: `from emulator_fixtures import *  # noqa: F403` (pytest puts this
folder on sys.path), or pick names.

- `emulator`: an Emulator on a background thread (own event loop), reconcile 0.2 s, IAM propagation 0.5 s, fresh per test.
- `run_client` / `run_async_client`: google-cloud-run ServicesClient / ServicesAsyncClient on it.
- `iam_client`: google-cloud-iam IAMClient on it.
- `admin`: an AdminApi (requests) for the emulator's /emulator/v1 HTTP API.
- `emulator_process`: a `tgi-operator emulator` subprocess (waits for its JSON ready line).
- `wait_for_account(iam, email)`: poll GetServiceAccount until a new account is visible (IAM is eventually consistent).
- `seed_service()`: the seed's GPU service (Llama 3.1 8B AWQ on one L4, 8 CPU, 32 GiB, concurrency 64, 3 instances).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import iam_admin_v1, run_v2
from google.cloud.run_v2.services.services.transports import ServicesGrpcAsyncIOTransport

from tgi_operator.emulator.server import Emulator, EmulatorConfig
from tgi_operator.emulator.testing import EmulatorProcess, EmulatorThread, SyncClients, start_emulator_process, sync_clients

PROJECT = "emu-project"
REGION = "us-central1"
PARENT = f"projects/{PROJECT}/locations/{REGION}"
OPERATOR = f"tgi-operator@{PROJECT}.iam.gserviceaccount.com"
TGI_IMAGE = "us-docker.pkg.dev/deeplearning-platform-release/gcr.io/huggingface-text-generation-inference-cu124.2-4.ubuntu2204.py311"
MODEL = "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4"

__all__ = [
    "PROJECT", "REGION", "PARENT", "OPERATOR", "MODEL", "AdminApi", "SyncClients", "seed_service", "service_name",
    "sync_clients", "wait_for_account",
    "emulator", "run_client", "run_async_client", "iam_client", "admin", "emulator_process",
]  # fmt: skip


def service_name(service_id: str, parent: str = PARENT) -> str:
    return f"{parent}/services/{service_id}"


def seed_service(max_instances: int = 3, zonal_redundancy: bool = False) -> run_v2.Service:
    """The seed's private GPU service, as the operator renders it."""
    return run_v2.Service(
        labels={"app.kubernetes.io/managed-by": "tgi-operator"},
        ingress=run_v2.IngressTraffic.INGRESS_TRAFFIC_ALL,
        template=run_v2.RevisionTemplate(
            scaling=run_v2.RevisionScaling(min_instance_count=0, max_instance_count=max_instances),
            max_instance_request_concurrency=64,
            node_selector=run_v2.NodeSelector(accelerator="nvidia-l4"),
            gpu_zonal_redundancy_disabled=not zonal_redundancy,
            containers=[
                run_v2.Container(
                    image=TGI_IMAGE,
                    args=["--model-id", MODEL, "--quantize", "awq", "--max-concurrent-requests", "64",
                          "--max-input-tokens", "4096", "--max-total-tokens", "8192"],  # fmt: skip
                    env=[run_v2.EnvVar(name="HF_HUB_ENABLE_HF_TRANSFER", value="1")],
                    ports=[run_v2.ContainerPort(container_port=8080)],
                    resources=run_v2.ResourceRequirements(
                        limits={"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}, cpu_idle=False, startup_cpu_boost=True
                    ),
                    startup_probe=run_v2.Probe(
                        http_get=run_v2.HTTPGetAction(path="/health", port=8080),
                        initial_delay_seconds=0, period_seconds=10, timeout_seconds=5, failure_threshold=60,
                    ),  # fmt: skip
                )
            ],
        ),
    )


class AdminApi:
    """The emulator's HTTP admin API (/emulator/v1), as a test or benchmark calls it."""

    def __init__(self, http_url: str) -> None:
        self.base = http_url.rstrip("/") + "/emulator/v1"

    def _call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        response = requests.request(method, self.base + path, json=body, timeout=10)
        assert response.status_code == expect, response.text
        return response.json()

    def calls(self) -> dict[str, dict[str, int]]:
        return self._call("GET", "/calls")["calls"]

    def reset_calls(self) -> None:
        self._call("DELETE", "/calls")

    def audit(self) -> list[dict[str, Any]]:
        """Every write (Create, Update, Delete, Set...) with its time, resource and caller's user agent."""
        return self._call("GET", "/audit")["entries"]

    def fault(self, method: str, code: str, count: int | None = None, rate: float | None = None) -> Any:
        return self._call("POST", "/faults", {"method": method, "code": code, "count": count, "rate": rate}, expect=201)

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def set_reconcile_seconds(self, seconds: float) -> None:
        self._call("PUT", "/reconcile-seconds", {"seconds": seconds})

    def fail_next_revision(self, service_id: str, message: str = "", project: str = PROJECT, region: str = REGION) -> Any:
        return self._call("POST", f"/services/{project}/{region}/{service_id}:fail-next-revision", {"message": message})

    def set_quota(self, limit: int, zonal_redundancy: bool = False, project: str | None = PROJECT, region: str | None = REGION) -> Any:
        body = {"project": project, "region": region, "zonalRedundancy": zonal_redundancy, "limit": limit}
        return self._call("PUT", "/quotas", body)

    def set_project_roles(self, email: str, roles: list[str]) -> Any:
        return self._call("PUT", "/project-roles", {"email": email, "roles": roles})

    def grant_secret(self, secret: str, accounts: list[str]) -> Any:
        """roles/secretmanager.secretAccessor on `secret` (projects/P/secrets/S) for these account emails."""
        return self._call("PUT", "/secret-accessors", {"secret": secret, "accounts": accounts})

    def token(self, email: str, audience: str) -> str:
        return self._call("POST", "/tokens", {"email": email, "audience": audience})["token"]

    def services(self) -> Any:
        return self._call("GET", "/services")

    def set_iam_propagation_seconds(self, seconds: float) -> Any:
        return self._call("PUT", "/iam-propagation-seconds", {"seconds": seconds})

    def deny_iam(self, permissions: list[str]) -> Any:
        return self._call("PUT", "/iam-denied", {"permissions": permissions})

    def set_act_as(self, email: str, allowed: bool) -> Any:
        return self._call("PUT", "/act-as", {"email": email, "allowed": allowed})

    def set_api(self, service: str, enabled: bool, project: str = PROJECT) -> Any:
        return self._call("PUT", "/apis", {"project": project, "service": service, "enabled": enabled})

    def set_allowed_domains(self, domains: list[str] | None, project: str = PROJECT) -> Any:
        return self._call("PUT", "/org-policy", {"project": project, "allowedDomains": domains})

    def set_group(self, group: str, members: list[str]) -> Any:
        return self._call("PUT", "/groups", {"group": group, "members": members})


def wait_for_account(iam: iam_admin_v1.IAMClient, email: str, timeout: float = 30.0) -> iam_admin_v1.ServiceAccount:
    """GetServiceAccount until the account is visible, as clients of the real IAM must (reads are eventually
    consistent: a new account is PERMISSION_DENIED for a while)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return iam.get_service_account(name=f"projects/-/serviceAccounts/{email}", retry=None)
        except gexc.PermissionDenied:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    config = EmulatorConfig(
        reconcile_seconds=0.2, iam_propagation_seconds=0.5, identity=OPERATOR, project_roles={OPERATOR: {"roles/run.admin"}}
    )
    with EmulatorThread(config) as emu:
        yield emu


@pytest.fixture
def run_client(emulator: Emulator) -> Iterator[run_v2.ServicesClient]:
    with sync_clients(emulator.grpc_endpoint) as clients:
        yield clients.run


@pytest.fixture
async def run_async_client(emulator: Emulator) -> AsyncIterator[run_v2.ServicesAsyncClient]:
    channel = grpc.aio.insecure_channel(emulator.grpc_endpoint)
    transport = ServicesGrpcAsyncIOTransport(channel=channel, credentials=AnonymousCredentials())
    yield run_v2.ServicesAsyncClient(transport=transport)
    await channel.close()


@pytest.fixture
def iam_client(emulator: Emulator) -> Iterator[iam_admin_v1.IAMClient]:
    with sync_clients(emulator.grpc_endpoint) as clients:
        yield clients.iam


@pytest.fixture
def admin(emulator: Emulator) -> AdminApi:
    return AdminApi(emulator.http_url)


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[EmulatorProcess]:
    """`tgi-operator emulator` as its own process; its stderr goes to tmp_path/emulator.log."""
    process = start_emulator_process(
        ["--reconcile-seconds", "0.2", "--identity", OPERATOR], log_file=tmp_path / "emulator.log"
    )
    try:
        yield process
    finally:
        process.stop()
